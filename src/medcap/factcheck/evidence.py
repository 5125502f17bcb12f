"""The concept detector's evidence: the ``--json`` of ``medcap predict concepts`` read into
per-image probabilities, thresholds and (when written) the detector's vocabulary."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MedcapError

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
