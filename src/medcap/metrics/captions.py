"""Caption prediction scores, as the ImageCLEFmedical 2025 evaluator computes them (REFERENCE §4).

Per image pair (gold caption, predicted caption), then averaged over images:

- text preprocessing for ROUGE, BERTScore and BLEURT (:func:`preprocess_caption`):
  lower-case, then every digit run -> "number", then ASCII punctuation removed, in
  this order (so "1.5" becomes "numbernumber");
- ROUGE-1 F-measure (rouge-score, no stemming);
- BERTScore (bert-score; microsoft/deberta-xlarge-mnli, idf weights from all preprocessed
  gold captions, no baseline rescaling); the organisers' public code takes F1, the paper
  says recall: ``bertscore_measure``. Computed in batches, equal to their pair-by-pair
  calls (tested within 1e-6);
- optional scorers (:mod:`medcap.metrics.scorers`): BLEURT, image-text similarity,
  MedCAT UMLS concept F1, AlignScore, each only when its package and model are present;
- a pair whose two raw captions are both empty scores 1 (ROUGE, BERTScore, UMLS F1,
  AlignScore); BLEURT has no such rule; the similarity of an empty caption follows the
  preset's edition's code (2025: two empty captions 1, an empty prediction encoded; 2026: 0),
  or the written rules with ``empty_similarity="rules"`` (REFERENCE §10);
- Relevance = mean(Similarity, BERTScore, ROUGE-1[, BLEURT]): the public 2025 code leaves
  BLEURT out, the paper's numbers fit four terms (``relevance=``); Factuality =
  mean(UMLS concept F1, AlignScore). The evaluator returns these two as ``score`` and
  ``score_secondary`` (both keys are in the summary); Overall = mean(Relevance, Factuality)
  is the leaderboard's convention, not an output of the evaluator.

An aggregate whose terms did not all run is ``None``, unless ``partial_aggregates=True``
asks for the mean of the terms that ran, which the result then labels as partial.

The text scores live in :mod:`medcap.metrics.textscores`, the scorer objects and the presets
(which scorers, how they aggregate) in :mod:`medcap.metrics.registry`; this module runs a
preset over a submission (:func:`score_captions`, settings in :class:`CaptionSettings`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import MedcapError
from .registry import (
    DEFAULT_PRESET,
    EVALUATOR_NAMES,
    OVERALL_NOTE,
    PRESETS,
    SCORERS,
    CaptionPairs,
    CaptionPreset,
)
from .scorers import DEFAULT_BLEURT_MODEL, SIMILARITY_EMPTY_MODES, ScorerUnavailable, both_empty
from .textscores import DEFAULT_BERTSCORE_MODEL, preprocess_caption

RELEVANCE_TERMS = {name: preset.relevance for name, preset in PRESETS.items()}
FACTUALITY_TERMS = PRESETS[DEFAULT_PRESET].factuality
SCORE_KEYS = PRESETS[DEFAULT_PRESET].scorers
AGGREGATE_KEYS = tuple(name for name, _ in PRESETS[DEFAULT_PRESET].aggregates)

# ---------------------------------------------------------------------------------------
# Aggregates
# ---------------------------------------------------------------------------------------

def aggregate_scores(scores: Mapping[str, float | None], *, relevance: str = DEFAULT_PRESET,
                     partial: bool = False, preset: CaptionPreset | None = None) -> dict:
    """The aggregates (Relevance, Factuality, Overall) of ``preset``, or of the preset named
    ``relevance`` (public-2025, paper, 2026), from the per-metric means (REFERENCE §4, §7).

    Each aggregate is None when one of its terms is None, unless ``partial=True``: then it
    is the mean of the terms present and ``<name>_partial`` is True. ``<name>_terms`` lists
    the terms actually averaged, ``<name>_missing`` the ones that were not available.
    """
    if preset is None:
        if relevance not in PRESETS:
            raise MedcapError(f"relevance must be one of {', '.join(PRESETS)}, got {relevance!r}")
        preset = PRESETS[relevance]
    out: dict = {}
    values = dict(scores)
    for name, terms in preset.aggregates:
        present = [t for t in terms if values.get(t) is not None]
        missing = [t for t in terms if values.get(t) is None]
        value = None
        if present and (not missing or partial):
            value = float(np.mean([values[t] for t in present]))
        values[name] = out[name] = value
        out[f"{name}_terms"] = present if value is not None else []
        out[f"{name}_missing"] = missing
        out[f"{name}_partial"] = bool(value is not None and missing)
    # The evaluator's own two outputs, under its names (REFERENCE §10): the same values.
    for name, evaluator_name in EVALUATOR_NAMES.items():
        if name in out:
            out[evaluator_name] = out[name]
    return out


# ---------------------------------------------------------------------------------------
# Evaluation of a whole submission
# ---------------------------------------------------------------------------------------

@dataclass
class CaptionScores:
    """Per-image scores (None for a scorer that did not run) and the summary."""

    ids: list[str]
    gold: list[str]
    pred: list[str]
    per_image: dict[str, np.ndarray | None]
    summary: dict = field(default_factory=dict)

    def per_image_rows(self) -> list[dict]:
        rows = []
        ran = [k for k in SCORE_KEYS if self.per_image.get(k) is not None]
        for i, image_id in enumerate(self.ids):
            row = {"ID": image_id, "gold": self.gold[i], "pred": self.pred[i]}
            for k in ran:
                row[k] = float(self.per_image[k][i])
            rows.append(row)
        return rows


def _check_ids(gold: Mapping[str, str], pred: Mapping[str, str], allow_missing: bool) -> None:
    extra = [i for i in pred if i not in gold]
    if extra:
        raise MedcapError(f"{len(extra)} predicted image IDs are not in the gold file, e.g. {extra[0]!r}")
    missing = [i for i in gold if i not in pred]
    if missing and not allow_missing:
        raise MedcapError(f"{len(missing)} gold image IDs have no caption, e.g. {missing[0]!r} "
                          "(the official evaluator needs every ID exactly once)")
    if not gold:
        raise MedcapError("the gold file has no images")


@dataclass
class CaptionSettings:
    """How :func:`score_captions` scores.

    ``bertscore_model``: a model name or a local folder (None skips BERTScore);
    ``cui_names`` (``{CUI: name}`` from cui_mapping.csv) enables ``umls_f1_approx``;
    ``bleurt_model`` (None skips it), ``alignscore_checkpoint``, ``medcat_model``,
    ``medimageinsight_dir`` + ``images_dir`` enable the optional scorers when their packages
    are installed. ``allow_missing`` scores an image without a prediction as an empty caption.
    Models are looked up locally only (a folder or the Hugging Face cache) unless ``download``.
    ``relevance``: the name of the preset (:data:`medcap.metrics.registry.PRESETS`: which scorers
    run and how they aggregate, and whose empty-caption rules apply): public-2025 (default),
    paper or 2026. ``empty_similarity``: the similarity of an empty prediction as the
    preset's edition's code scores it (``organisers-code``, default) or as the written rules
    say (``rules``; REFERENCE §10).
    """

    bertscore_model: str | Path | None = DEFAULT_BERTSCORE_MODEL
    bertscore_num_layers: int | None = None
    bertscore_measure: str = "f1"
    batch_size: int = 32
    device: str | None = None
    images_dir: str | Path | None = None
    cui_names: Mapping[str, str] | None = None
    bleurt_model: str | None = DEFAULT_BLEURT_MODEL
    alignscore_checkpoint: str | Path | None = None
    medcat_model: str | Path | None = None
    medimageinsight_dir: str | Path | None = None
    relevance: str = DEFAULT_PRESET
    partial_aggregates: bool = False
    allow_missing: bool = False
    download: bool = False
    empty_similarity: str = "organisers-code"

    def __post_init__(self) -> None:
        if self.relevance not in PRESETS:
            raise MedcapError(f"relevance must be one of {', '.join(PRESETS)}, got {self.relevance!r}")
        if self.empty_similarity not in SIMILARITY_EMPTY_MODES:
            raise MedcapError(f"empty_similarity must be one of {', '.join(SIMILARITY_EMPTY_MODES)}, "
                              f"got {self.empty_similarity!r}")


def _pairs(gold: Mapping[str, str], pred: Mapping[str, str], settings: CaptionSettings) -> CaptionPairs:
    """The pairs in gold order; an image without a prediction gets the empty caption."""
    ids = list(gold)
    g = [gold[i] for i in ids]
    p = [pred.get(i, "") for i in ids]
    return CaptionPairs(ids, g, p, [preprocess_caption(c) for c in g], [preprocess_caption(c) for c in p], settings)


def _run_scorers(pairs: CaptionPairs, keys: Sequence[str]) -> tuple[dict[str, np.ndarray | None], dict[str, str]]:
    """-> (key -> per-image scores or None, key -> how to enable each scorer that did not run)."""
    per_image: dict[str, np.ndarray | None] = {k: None for k in keys}
    not_available: dict[str, str] = {}
    for key in keys:
        try:
            per_image[key] = np.asarray(SCORERS[key].score(pairs), dtype=np.float64)
        except ScorerUnavailable as e:
            not_available[key] = str(e)
    return per_image, not_available


def _summary(pairs: CaptionPairs, per_image: Mapping[str, np.ndarray | None], not_available: dict[str, str]) -> dict:
    """Means, aggregates, counts and the settings: the JSON of ``medcap evaluate captions``."""
    s = pairs.settings
    means = {k: (None if v is None else float(np.mean(v))) for k, v in per_image.items()}
    summary: dict = dict(means)
    summary.update(aggregate_scores(means, preset=PRESETS[s.relevance], partial=s.partial_aggregates))
    summary.update({
        "n_images": len(pairs.ids),
        "n_both_empty": sum(both_empty(a, b) for a, b in zip(pairs.gold, pairs.pred, strict=True)),
        "n_empty_pred": sum(len(b) == 0 for b in pairs.pred),
        "n_empty_gold": sum(len(a) == 0 for a in pairs.gold),
        "overall_note": OVERALL_NOTE,
        "not_available": not_available,
        "umls_f1_approx_note": "approximation: cui_mapping.csv names matched in both captions, not MedCAT",
        "settings": {
            "bertscore_model": None if s.bertscore_model is None else str(s.bertscore_model),
            "bertscore_num_layers": pairs.info.get("bertscore_num_layers", s.bertscore_num_layers),
            "bertscore_measure": s.bertscore_measure,
            "bertscore_idf": "preprocessed gold captions",
            "relevance": s.relevance,
            "empty_caption_rules": f"{PRESETS[s.relevance].edition} organisers' code",
            "empty_similarity": s.empty_similarity,
            "partial_aggregates": s.partial_aggregates,
        },
    })
    return summary


def score_captions(gold: Mapping[str, str], pred: Mapping[str, str], settings: CaptionSettings | None = None,
                   **options) -> CaptionScores:
    """Every caption score of the preset, per image and averaged.

    ``settings`` (:class:`CaptionSettings`), or its fields as keyword arguments.
    """
    if settings is None:
        settings = CaptionSettings(**options)
    elif options:
        settings = dataclasses.replace(settings, **options)
    _check_ids(gold, pred, settings.allow_missing)
    pairs = _pairs(gold, pred, settings)
    per_image, not_available = _run_scorers(pairs, PRESETS[settings.relevance].scorers)
    return CaptionScores(pairs.ids, pairs.gold, pairs.pred, per_image, _summary(pairs, per_image, not_available))


def evaluate_captions(gold: Mapping[str, str], pred: Mapping[str, str], **settings) -> dict:
    """Summary of :func:`score_captions`: one key per metric (None when it did not run),
    ``relevance``, ``factuality``, ``overall`` with their terms, ``not_available`` (how to
    enable each missing scorer) and ``settings``."""
    return score_captions(gold, pred, **settings).summary
