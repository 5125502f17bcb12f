"""Verify each concept mention against the detector, then act: report, repair contradicted
modality / region phrases, augment with omitted confident findings (see :mod:`medcap.factcheck`)."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

from ..errors import MedcapError
from .evidence import ConceptEvidence
from .knowledge import KnowledgeBase, Mention

MODES = ("report", "repair", "augment", "repair+augment")
VERDICTS = ("supported", "unsupported", "contradicted", "unverifiable")

# ---------------------------------------------------------------------------------------
# Verification and the three actions
# ---------------------------------------------------------------------------------------

@dataclass
class FactCheckSettings:
    """How the fact-checker decides and acts.

    The defaults were chosen on the synthetic VALID split, pooled over two captioners, with a
    calibrated simulated detector (bench/factcheck_synthetic.py): repair settings by ROUGE-1 +
    the offline UMLS F1 approximation; the augment probability as the lowest at which at least
    80 % of the added concepts were right. Re-tune them for a real detector on its valid split.

    Attributes:
        mode: "report" (change nothing), "repair", "augment" or "repair+augment".
        margin: a modality / region mention is contradicted when the detector's confident
            concept of the same group beats the mentioned concept's probability by at least this.
        repair_min_probability: ... and that confident concept's probability is at least this
            (and at least its own threshold).
        augment_min_probability: ``augment`` names an omitted concept only with a probability
            at least this (and at least its threshold).
        max_added: at most this many concepts in the appended sentence (most probable first).
    """

    mode: str = "report"
    margin: float = 0.3
    repair_min_probability: float = 0.5
    augment_min_probability: float = 0.7
    max_added: int = 3

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise MedcapError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        for name in ("margin", "repair_min_probability", "augment_min_probability"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise MedcapError(f"{name.replace('_', '-')} must be a number from 0 to 1, got {v!r}")
        if isinstance(self.max_added, bool) or not isinstance(self.max_added, int) or self.max_added < 0:
            raise MedcapError(f"max-added must be a whole number >= 0, got {self.max_added!r}")

    @property
    def repairs(self) -> bool:
        return self.mode in ("repair", "repair+augment")

    @property
    def augments(self) -> bool:
        return self.mode in ("augment", "repair+augment")


@dataclass
class Check:
    """The verdict on one concept of one mention."""

    start: int
    end: int
    text: str
    cui: str
    name: str
    verdict: str  # one of VERDICTS
    probability: float  # exact, or an upper bound when not ``exact``
    exact: bool
    threshold: float
    group: str | None = None
    alternative: str | None = None  # contradicted: the detector's confident concept of the group
    alternative_probability: float | None = None
    action: str = ""  # "replaced", or why a contradicted phrase was kept


@dataclass
class FactCheckResult:
    """One image: the caption before and after, the verdicts, and what was changed or added."""

    image_id: str
    caption: str
    new_caption: str
    checks: list[Check]
    replacements: list[dict] = field(default_factory=list)  # {"start", "end", "old", "new", "cui", "by"}
    added: list[str] = field(default_factory=list)  # CUIs named by the appended sentence
    added_sentence: str = ""

    def to_dict(self) -> dict:
        return {"caption": self.caption, "new_caption": self.new_caption,
                "mentions": [asdict(c) for c in self.checks], "replacements": self.replacements,
                "added": self.added, "added_sentence": self.added_sentence}


def _verify(mentions: list[Mention], image_id: str, evidence: ConceptEvidence, kb: KnowledgeBase,
            settings: FactCheckSettings) -> list[Check]:
    ev = evidence.images[image_id]
    checks = []
    for m in mentions:
        for cui in m.cuis:
            p, exact = evidence.probability(image_id, cui)
            t = evidence.threshold(cui)
            group = kb.group_of(cui)
            check = Check(m.start, m.end, m.text, cui, kb.name(cui), "unsupported", round(p, 6), exact, t, group)
            if evidence.vocabulary is not None and cui not in evidence.vocabulary:
                check.verdict = "unverifiable"
            elif cui in ev.predicted or (exact and p >= t):
                check.verdict = "supported"
            elif group is not None:
                # The detector's most confident other member of the exclusive group.
                others = [(q, c) for c, q in ev.probabilities.items() if kb.group_of(c) == group and c != cui]
                if others:
                    q, alt = max(others)
                    if q >= max(evidence.threshold(alt), settings.repair_min_probability) and q - p >= settings.margin:
                        check.verdict = "contradicted"
                        check.alternative, check.alternative_probability = alt, round(q, 6)
            checks.append(check)
    return checks


def _repair(caption: str, mentions: list[Mention], checks: list[Check], kb: KnowledgeBase) -> tuple[str, list[dict]]:
    """Replace contradicted modality / region phrases (whole mentions only, right to left)."""
    mentioned = {c for m in mentions for c in m.cuis}
    by_span: dict[tuple[int, int], list[Check]] = {}
    for c in checks:
        by_span.setdefault((c.start, c.end), []).append(c)
    edits: list[tuple[int, int, str, str]] = []  # (start, end, contradicted CUI, replacing CUI)
    for (start, end), span_checks in sorted(by_span.items()):
        bad = next((c for c in span_checks if c.verdict == "contradicted"), None)
        if bad is None:
            continue
        if any(c.verdict == "supported" for c in span_checks):
            bad.action = "kept: another concept of this phrase is supported"
        elif bad.alternative in mentioned:
            bad.action = "kept: the caption already names the detector's concept"
        else:
            bad.action = "replaced"
            prev = edits[-1] if edits else None
            # "T2-weighted MR image": neighbouring phrases of one concept become one phrase.
            if prev and prev[2:] == (bad.cui, bad.alternative) and caption[prev[1]:start].strip(" -") == "":
                edits[-1] = (prev[0], end, bad.cui, bad.alternative)
            else:
                edits.append((start, end, bad.cui, bad.alternative))
    replacements = []
    out = caption
    for start, end, cui, alt in reversed(edits):
        old = caption[start:end]
        before = caption[:start].rstrip(" \"'([")
        new = kb.replacement(old, alt, sentence_start=not before or before[-1] in ".!?:")
        out = out[:start] + new + out[end:]
        replacements.append({"start": start, "end": end, "old": old, "new": new, "cui": cui, "by": alt})
    return out, replacements[::-1]


def _join_names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _augment(caption: str, image_id: str, evidence: ConceptEvidence, kb: KnowledgeBase,
             settings: FactCheckSettings) -> tuple[str, list[str], str]:
    """Append "X and Y are seen." for confident concepts the caption does not name."""
    if settings.max_added == 0:
        return caption, [], ""
    named = kb.matcher.cuis(caption)
    ev = evidence.images[image_id]
    candidates = []
    for cui, p in ev.probabilities.items():
        if cui in named or cui in kb.qualifiers or kb.group_of(cui) is not None:
            continue  # modality / region are repaired, not added; "right" alone says nothing
        if p >= max(evidence.threshold(cui), settings.augment_min_probability):
            phrase = kb.phrase_for_augment(cui)
            if phrase:
                candidates.append((-p, cui, phrase))
    candidates.sort()
    chosen, phrases = [], []
    for _, cui, phrase in candidates:
        if phrase.lower() in (x.lower() for x in phrases):
            continue
        chosen.append(cui)
        phrases.append(phrase)
        if len(chosen) == settings.max_added:
            break
    if not chosen:
        return caption, [], ""
    plural = len(phrases) > 1 or (phrases[0].endswith("s") and not phrases[0].endswith(("ss", "is", "us")))
    text = _join_names(phrases)
    sentence = f"{text[0].upper()}{text[1:]} {'are' if plural else 'is'} seen."
    base = caption.rstrip()
    if base and base[-1] not in ".!?":
        base += "."
    return (f"{base} {sentence}" if base else sentence), chosen, sentence


def fact_check_caption(image_id: str, caption: str, evidence: ConceptEvidence, kb: KnowledgeBase,
                       settings: FactCheckSettings | None = None) -> FactCheckResult:
    """Verify one caption against the detector and, by ``settings.mode``, repair / augment it."""
    settings = settings or FactCheckSettings()
    if image_id not in evidence.images:
        raise MedcapError(f"no concept probabilities for image {image_id!r}")
    mentions = kb.matcher.find(caption)
    checks = _verify(mentions, image_id, evidence, kb, settings)
    new, replacements = caption, []
    if settings.repairs:
        new, replacements = _repair(caption, mentions, checks, kb)
    else:
        for c in checks:
            if c.verdict == "contradicted":
                c.action = "kept: report mode" if settings.mode == "report" else "kept: repair is off"
    added, sentence = [], ""
    if settings.augments:
        new, added, sentence = _augment(new, image_id, evidence, kb, settings)
    return FactCheckResult(image_id, caption, new, checks, replacements, added, sentence)


def fact_check(captions: Mapping[str, str], evidence: ConceptEvidence, kb: KnowledgeBase,
               settings: FactCheckSettings | None = None) -> list[FactCheckResult]:
    """Fact-check every caption (``{ID: caption}``); every ID needs the detector's probabilities."""
    missing = [i for i in captions if i not in evidence.images]
    if missing:
        raise MedcapError(f"{len(missing)} caption image IDs have no concept probabilities, e.g. {missing[0]!r}: "
                          "run `medcap predict concepts --json` on the same images")
    settings = settings or FactCheckSettings()
    return [fact_check_caption(i, c, evidence, kb, settings) for i, c in captions.items()]


def summarize(results: Iterable[FactCheckResult]) -> dict:
    """Counts over all images: mentions by verdict, phrases replaced, captions changed, concepts added."""
    results = list(results)
    verdicts = {v: 0 for v in VERDICTS}
    for r in results:
        for c in r.checks:
            verdicts[c.verdict] += 1
    return {
        "n_images": len(results),
        "n_mentions": sum(verdicts.values()),
        "verdicts": verdicts,
        "n_replaced": sum(len(r.replacements) for r in results),
        "n_captions_repaired": sum(bool(r.replacements) for r in results),
        "n_captions_augmented": sum(bool(r.added) for r in results),
        "n_concepts_added": sum(len(r.added) for r in results),
        "n_captions_changed": sum(r.new_caption != r.caption for r in results),
    }


def report_json(results: list[FactCheckResult], settings: FactCheckSettings) -> dict:
    """The ``--report`` JSON: settings, summary, and per image its mentions and changes."""
    return {"settings": asdict(settings), "summary": summarize(results),
            "images": {r.image_id: r.to_dict() for r in results}}


REPORT_COLUMNS = ("ID", "start", "end", "text", "CUI", "name", "verdict", "probability", "exact", "threshold",
                  "alternative", "alternative_probability", "action")


def report_rows(results: Iterable[FactCheckResult]) -> list[dict]:
    """The ``--report`` CSV: one row per verdict, plus one per concept ``augment`` added."""
    rows = []
    for r in results:
        for c in r.checks:
            rows.append({"ID": r.image_id, "start": c.start, "end": c.end, "text": c.text, "CUI": c.cui,
                         "name": c.name, "verdict": c.verdict, "probability": c.probability, "exact": c.exact,
                         "threshold": c.threshold, "alternative": c.alternative,
                         "alternative_probability": c.alternative_probability, "action": c.action})
        for cui in r.added:
            rows.append({"ID": r.image_id, "CUI": cui, "verdict": "omitted", "action": "added"})
    return rows
