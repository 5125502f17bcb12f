"""Knowledge-guided, fact-checked captions: a post-hoc pass over ANY captioner's output.

The paper's captioner scored 16.72 on the UMLS concept F1 and its authors propose, as future
work, to "infuse external medical knowledge" and to add "a fact-checking module ... which would
validate generated statements against a trusted medical knowledge base" (paper section 7.2);
the captioning leaders use concept-guided decoding and retrieval-augmented captions (REFERENCE §6).
This module does both after decoding, so it composes with any captioner and any concept
detector:

1. **Extract** the concepts a caption names: dictionary matching at word boundaries
   (:class:`MentionMatcher`, the offline UMLS matcher :class:`~medcap.metrics.scorers.ConceptNameMatcher`
   given several names per concept and character spans). The knowledge base
   (:func:`knowledge_base`) holds the ``cui_mapping.csv`` canonical names, the synonyms of
   :data:`medcap.synth.CATALOG` and two groups of mutually exclusive concepts: the 7 imaging
   modalities and the 8 body regions of the official secondary score (REFERENCE §4). A figure
   normally shows one modality (and mostly one region).
2. **Verify** each mention against the concept detector's probabilities (the JSON written by
   ``medcap predict concepts --json``): ``supported`` (the detector predicts it: probability at
   or above the model's threshold), ``contradicted`` (a modality / region the detector rejects
   while it is confident of another member of the same group: the alternative's probability is
   at least ``repair_min_probability`` and its own threshold, and beats the mentioned one by
   ``margin``), ``unsupported`` (not predicted, no confident alternative) or ``unverifiable``
   (the CUI is not in the detector's vocabulary, when the JSON says what that is).
3. **Act** (``mode``): ``report`` changes nothing; ``repair`` replaces each contradicted
   modality / region phrase by a phrase of the detector's confident concept (whole words only,
   same form where the knowledge base has one: "abdominal" -> "thoracic", "MR image" -> "CT
   image"); ``augment`` appends one sentence naming confidently detected concepts the caption
   omits ("Nodule and pleural effusion are seen."); ``repair+augment`` does both.

Defaults (:class:`FactCheckSettings`) were chosen on the synthetic VALIDATION split with a
simulated detector (bench/factcheck_synthetic.py; BENCHMARKS.md "Fact-checked captions"); they
are settings, not constants of nature: re-tune them for a real detector.

Python API::

    from medcap.factcheck import FactCheckSettings, fact_check, knowledge_base, read_concept_probabilities
    kb = knowledge_base(read_cui_mapping("data/cui_mapping.csv"))
    evidence = read_concept_probabilities("probs.json")
    results = fact_check(captions, evidence, kb, FactCheckSettings(mode="repair+augment"))
    new_captions = {r.image_id: r.new_caption for r in results}
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

from .errors import MedcapError
from .metrics.scorers import ConceptNameMatcher

MODES = ("report", "repair", "augment", "repair+augment")
VERDICTS = ("supported", "unsupported", "contradicted", "unverifiable")

# Phrases ending in these nouns keep them when repaired ("MR image" -> "CT image").
_GENERIC_NOUNS = ("image", "scan")
# Adjectival forms ("abdominal", "sonographic", "mammary") are swapped for adjectives.
_ADJECTIVE_ENDINGS = ("al", "ic", "ary")


# ---------------------------------------------------------------------------------------
# Knowledge base
# ---------------------------------------------------------------------------------------

def exclusive_groups() -> dict[str, tuple[str, ...]]:
    """The mutually exclusive concept groups: the modality and body-region CUIs of the
    official secondary score (REFERENCE §4), split by kind with the synthetic catalogue's labels."""
    from .synth.catalog import CATALOG, SECONDARY_CUIS

    groups = {kind: tuple(c for c in SECONDARY_CUIS if CATALOG[c].kind == kind) for kind in ("modality", "region")}
    assert len(groups["modality"]) == 7 and len(groups["region"]) == 8, groups  # REFERENCE §4: 7 + 8 = 15
    return groups


def _plurals(phrase: str) -> list[str]:
    """The phrase and its regular plurals ("nodule" -> "nodules", "mass" -> "masses")."""
    if not phrase[-1:].isalpha():
        return [phrase]
    return [phrase, phrase + "s", phrase + "es"]


@dataclass
class KnowledgeBase:
    """What the fact-checker knows about concepts.

    ``names``: CUI -> canonical name; ``synonyms``: CUI -> every phrase a caption may use for
    it (matched); ``words``: CUI -> the phrases the fact-checker writes for it (the catalogue's
    caption words, plainest first; the canonical name otherwise); ``groups``: name ->
    mutually exclusive CUIs; ``qualifiers``: CUIs that only qualify another concept (right,
    left, ...), never written alone by ``augment``; ``kinds``: CUI -> the catalogue's kind.
    """

    names: dict[str, str]
    synonyms: dict[str, list[str]]
    groups: dict[str, tuple[str, ...]]
    words: dict[str, tuple[str, ...]] = field(default_factory=dict)
    qualifiers: frozenset[str] = frozenset()
    kinds: dict[str, str] = field(default_factory=dict)

    @cached_property
    def matcher(self) -> MentionMatcher:
        return MentionMatcher(self.synonyms)

    @cached_property
    def _group_of(self) -> dict[str, str]:
        return {c: g for g, members in self.groups.items() for c in members}

    def group_of(self, cui: str) -> str | None:
        return self._group_of.get(cui)

    def name(self, cui: str) -> str:
        return self.names.get(cui, cui)

    def phrase_for_augment(self, cui: str) -> str | None:
        """The words ``augment`` writes for a concept (None when it has no name): a finding's
        plain caption word ("nodule"), else the canonical name in lower case."""
        if self.kinds.get(cui) == "finding" and self.words.get(cui):
            return self.words[cui][0]
        name = self.names.get(cui)
        if not name:
            return None
        # "Pleural Effusion" -> "pleural effusion"; acronyms and mixed case ("X-Ray", "HbA1c") stay.
        return " ".join(w.lower() if w[:1].isupper() and w[1:].islower() else w for w in name.split())

    def replacement(self, mention_text: str, cui: str, sentence_start: bool = False) -> str:
        """The phrase that replaces ``mention_text`` when it must name ``cui`` instead.

        Among the concept's ``words``: an adjective for an adjective, one ending in the same
        generic noun ("image", "scan"), then the closest number of words, then the plainest
        (earliest). A generic noun the choice lacks is kept, and a capital at a sentence start.
        """
        candidates = list(self.words.get(cui) or [self.name(cui)])
        words = mention_text.split()
        is_adj = _is_adjective(mention_text)
        noun = _generic_noun(mention_text)

        def written(cand: str) -> str:
            return f"{cand} {words[-1]}" if noun and _generic_noun(cand) != noun else cand

        def cost(item):
            i, cand = item
            return (_is_adjective(cand) != is_adj, _generic_noun(cand) != noun,
                    abs(len(written(cand).split()) - len(words)), i)

        best = written(min(enumerate(candidates), key=cost)[1])
        if sentence_start and best[:1].islower():
            best = best[0].upper() + best[1:]
        elif not sentence_start and best[:1].isupper() and best[1:2].islower() and best.split()[0][1:].islower():
            best = best[0].lower() + best[1:]  # "Thoracic" mid-sentence -> "thoracic"
        return best


def _generic_noun(phrase: str) -> str | None:
    last = phrase.split()[-1].lower() if phrase.split() else ""
    return last if last in _GENERIC_NOUNS else None


def _is_adjective(phrase: str) -> bool:
    last = phrase.split()[-1].lower() if phrase.split() else ""
    return len(last) > 4 and last.endswith(_ADJECTIVE_ENDINGS)


def knowledge_base(cui_names: Mapping[str, str] | None = None, *, catalog: bool = True) -> KnowledgeBase:
    """The knowledge base from ``cui_mapping.csv`` names (CUI -> canonical name) and, with
    ``catalog``, the synonyms of :data:`medcap.synth.CATALOG` (real UMLS CUIs; their words are
    the phrases ROCOv2-style captions use: "CT", "computed tomography", "thoracic", ...)."""
    from .synth.catalog import CATALOG

    names = {c.strip().upper(): n.strip() for c, n in (cui_names or {}).items() if n and n.strip()}
    words: dict[str, tuple[str, ...]] = {}
    kinds: dict[str, str] = {}
    if catalog:
        for concept in CATALOG.values():
            names.setdefault(concept.cui, concept.name)
            words[concept.cui] = concept.words
            kinds[concept.cui] = concept.kind
    synonyms = {cui: list(dict.fromkeys([name, *words.get(cui, ())])) for cui, name in names.items()}
    qualifiers = frozenset(c for c, k in kinds.items() if k == "location")
    return KnowledgeBase(names, synonyms, exclusive_groups(), words, qualifiers, kinds)


# ---------------------------------------------------------------------------------------
# Mentions: dictionary matching at word boundaries
# ---------------------------------------------------------------------------------------

# The same words as ConceptNameMatcher's: runs of [0-9a-z] in the lower-cased text, so
# "fracture" is one word and "CT" can never match inside it; "X-ray" is "x" "ray".
_WORD = re.compile(r"[0-9a-z]+")


def _lower_same_length(text: str) -> str:
    # str.lower() may lengthen a few characters ("İ"); keep offsets valid by leaving those.
    return "".join(ch.lower() if len(ch.lower()) == 1 else ch for ch in text)


@dataclass(frozen=True)
class Mention:
    """A concept phrase found in a caption: ``text == caption[start:end]``."""

    start: int
    end: int
    text: str
    cuis: tuple[str, ...]


class MentionMatcher(ConceptNameMatcher):
    """:class:`ConceptNameMatcher` (longest match first, whole words) with several names per
    concept and character spans (:meth:`find`), so that a phrase can be verified and replaced.
    ``cuis(text)`` is the inherited one and agrees with :meth:`find`."""

    def __init__(self, synonyms: Mapping[str, Iterable[str]]):
        super().__init__({})
        for cui, phrases in synonyms.items():
            for phrase in phrases:
                for variant in _plurals(phrase):
                    words = tuple(_WORD.findall(_lower_same_length(variant)))
                    if words:
                        self.phrases.setdefault(words, set()).add(cui.strip().upper())
        self.max_words = max((len(p) for p in self.phrases), default=0)

    def find(self, text: str) -> list[Mention]:
        """Every concept phrase in ``text``, left to right, longest match first, no overlaps."""
        tokens = list(_WORD.finditer(_lower_same_length(text)))
        found: list[Mention] = []
        for i, n, hit in self.longest_matches([t.group() for t in tokens]):
            start, end = tokens[i].start(), tokens[i + n - 1].end()
            found.append(Mention(start, end, text[start:end], tuple(sorted(hit))))
        return found


# ---------------------------------------------------------------------------------------
# The detector's evidence (``medcap predict concepts --json``)
# ---------------------------------------------------------------------------------------

@dataclass
class ImageEvidence:
    """What the concept detector says about one image.

    ``probabilities``: CUIs whose probability is known; ``predicted``: the CUIs it predicts
    (after its thresholds); ``ceiling``: every CUI not listed has at most this probability
    (the lowest of the listed top-k), None when unknown.
    """

    probabilities: dict[str, float]
    predicted: frozenset[str]
    ceiling: float | None = None


@dataclass
class ConceptEvidence:
    """A detector's output for many images, with its thresholds."""

    global_threshold: float
    images: dict[str, ImageEvidence]
    per_concept: dict[str, float] = field(default_factory=dict)
    vocabulary: frozenset[str] | None = None  # None: the JSON does not say

    def threshold(self, cui: str) -> float:
        return self.per_concept.get(cui, self.global_threshold)

    def probability(self, image_id: str, cui: str) -> tuple[float, bool]:
        """-> (probability, exact). An unlisted CUI gets an upper bound: below its threshold
        (it is not predicted) and at most the image's ``ceiling``."""
        ev = self.images[image_id]
        if cui in ev.probabilities:
            return ev.probabilities[cui], True
        bound = self.threshold(cui) if cui not in ev.predicted else 1.0
        if ev.ceiling is not None:
            bound = min(bound, ev.ceiling)
        if self.vocabulary is not None and cui not in self.vocabulary:
            bound = 0.0
        return bound, False


def _probability(value, where: str, path) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0.0 <= value <= 1.0:
        raise MedcapError(f"{where}: expected a probability from 0 to 1, got {value!r}", file=path)
    return float(value)


def _cui_list(items, where: str, path) -> dict[str, float]:
    if not isinstance(items, list):
        raise MedcapError(f"{where}: expected a list of {{\"cui\": ..., \"probability\": ...}}", file=path)
    out: dict[str, float] = {}
    for k, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("cui"), str) or not item["cui"].strip():
            raise MedcapError(f"{where}[{k}]: expected {{\"cui\": \"C...\", \"probability\": ...}}", file=path)
        out[item["cui"].strip().upper()] = _probability(item.get("probability"), f"{where}[{k}].probability", path)
    return out


def parse_concept_probabilities(data, path: str | Path | None = None) -> ConceptEvidence:
    """:class:`ConceptEvidence` from the parsed ``--json`` of ``medcap predict concepts``::

        {"thresholds": {"global": 0.35, "per_concept": {CUI: t}, "never_empty": false},
         "images": {ID: {"predicted": [{"cui", "name", "probability"}, ...],
                         "top": [{"cui", "probability"}, ...]}}}

    Optional (written by ``predict concepts --json F --all-probabilities``): per image
    ``"probabilities": {CUI: p}`` with every probability, and a top-level ``"vocabulary": [CUI, ...]``;
    with them every probability is exact, without them an unlisted CUI gets an upper bound.
    """
    if not isinstance(data, dict) or not isinstance(data.get("images"), dict):
        raise MedcapError("expected a JSON object with an \"images\" object (the --json file of "
                          "`medcap predict concepts`)", file=path)
    th = data.get("thresholds")
    if not isinstance(th, dict) or "global" not in th:
        raise MedcapError("expected \"thresholds\": {\"global\": ...} (the model's decision threshold, written by "
                          "`medcap predict concepts --json`)", file=path)
    global_t = _probability(th["global"], "thresholds.global", path)
    per = th.get("per_concept") or {}
    if not isinstance(per, dict):
        raise MedcapError("thresholds.per_concept: expected an object {CUI: threshold}", file=path)
    per_concept = {str(c).strip().upper(): _probability(v, f"thresholds.per_concept.{c}", path) for c, v in per.items()}
    vocabulary = None
    if "vocabulary" in data:
        if not isinstance(data["vocabulary"], list) or not all(isinstance(c, str) for c in data["vocabulary"]):
            raise MedcapError("vocabulary: expected a list of CUIs", file=path)
        vocabulary = frozenset(c.strip().upper() for c in data["vocabulary"])
    images: dict[str, ImageEvidence] = {}
    for image_id, entry in data["images"].items():
        where = f"images[{image_id!r}]"
        if not isinstance(entry, dict) or "predicted" not in entry:
            raise MedcapError(f"{where}: expected an object with \"predicted\" (and \"top\")", file=path)
        predicted = _cui_list(entry["predicted"], f"{where}.predicted", path)
        top = _cui_list(entry.get("top", []), f"{where}.top", path)
        probs = {**top, **predicted}
        ceiling = min(top.values()) if top else None
        full = entry.get("probabilities")
        if full is not None:
            if not isinstance(full, dict):
                raise MedcapError(f"{where}.probabilities: expected an object {{CUI: probability}}", file=path)
            probs.update({str(c).strip().upper(): _probability(v, f"{where}.probabilities.{c}", path)
                          for c, v in full.items()})
            ceiling = 0.0  # every probability is there: an unlisted CUI is not in the vocabulary
        images[str(image_id)] = ImageEvidence(probs, frozenset(predicted), ceiling)
    return ConceptEvidence(global_t, images, per_concept, vocabulary)


def read_concept_probabilities(path: str | Path) -> ConceptEvidence:
    """Read the ``--json`` file of ``medcap predict concepts`` (one-line MedcapError if malformed)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MedcapError("file not found", file=path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise MedcapError(f"cannot read the file: {e}", file=path) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise MedcapError(f"not valid JSON: {e.msg} (column {e.colno})", file=path, line=e.lineno) from None
    return parse_concept_probabilities(data, path)


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
