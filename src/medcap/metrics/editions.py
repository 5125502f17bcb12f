"""The caption aggregate of each ImageCLEFmedical edition, as named presets (REFERENCE §4, §7).

- ``public-2025``: Relevance = mean(Similarity, BERTScore, ROUGE-1), the 2025 public code;
- ``paper``: the same with BLEURT as a fourth term, what the 2025 paper's numbers fit;
- ``2026``: Relevance = mean(BERTScore F1, ROUGE-1, Similarity, BLEURT), with the image side
  of the similarity precomputed once per test set (MedImageInsight, ``2.5 * max(cos, 0)``,
  an empty caption scores 0).

Factuality = mean(UMLS concept F1 with MedCAT restricted to the MEDCON types, AlignScore)
and Overall = mean(Relevance, Factuality) in all three. The per-metric scores come from
:func:`medcap.metrics.captions.score_captions`; this module only adds the precomputed-image
similarity and averages by preset, so the scorers themselves stay as they are. The presets
themselves (which scorers, how they aggregate) are :data:`medcap.metrics.registry.PRESETS`.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import MedcapError
from .registry import PRESETS, CaptionPreset
from .scorers import ScorerUnavailable, load_medimageinsight, similarity_empty_rule


def caption_preset(name: str | None = None, *, edition=None) -> CaptionPreset:
    """The preset called ``name``, or the default of ``edition`` (a year; None = the latest)."""
    if name is None:
        from ..editions import edition_rules

        name = edition_rules(edition).caption_preset
    if name not in PRESETS:
        raise MedcapError(f"unknown caption preset {name!r}; expected one of {', '.join(PRESETS)}")
    return PRESETS[name]


def aggregate_preset(means: Mapping[str, float | None], preset: str | CaptionPreset, *,
                     partial: bool = False) -> dict:
    """Relevance, Factuality and Overall of ``preset`` from the per-metric means.

    An aggregate is None when one of its terms is None, unless ``partial``: then it is the
    mean of the terms present, labelled ``<name>_partial``. ``<name>_terms`` lists the terms
    averaged, ``<name>_missing`` the ones not available (same keys as ``aggregate_scores``).
    """
    from .captions import aggregate_scores

    p = preset if isinstance(preset, CaptionPreset) else caption_preset(preset)
    return aggregate_scores(means, preset=p, partial=partial)


# ---------------------------------------------------------------------------------------
# Image-caption similarity from precomputed image embeddings (2026)
# ---------------------------------------------------------------------------------------

def load_image_embeddings(path: str | Path) -> dict[str, np.ndarray]:
    """``{ID: vector}`` from an ``.npz`` file with one array per image ID (the layout of the
    organisers' ``precompute_embeddings.py`` output)."""
    path = Path(path)
    if not path.is_file():
        raise MedcapError("image embeddings file not found", file=path)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: np.asarray(data[k], dtype=np.float64).reshape(-1) for k in data.files}
    except (OSError, ValueError) as e:
        raise MedcapError(f"not an .npz file of image embeddings (one array per image ID): {e}", file=path) from None


def similarity_from_embeddings(ids: Sequence[str], pred: Sequence[str], image_embeddings: Mapping[str, np.ndarray],
                               encode_texts: Callable[[list[str]], np.ndarray], batch_size: int = 32,
                               fixed: Mapping[int, float] | None = None) -> np.ndarray:
    """``2.5 * max(cos(image, caption), 0)`` per image (REFERENCE §7).

    ``encode_texts`` maps a list of captions to their embeddings, one row each. ``fixed``:
    ``{pair index: score}`` of the pairs an empty-caption rule scores
    (:func:`~medcap.metrics.scorers.similarity_empty_rule`); default: the 2026 code's rule,
    an empty caption scores 0.
    """
    missing = [i for i in ids if i not in image_embeddings]
    if missing:
        raise MedcapError(f"{len(missing)} images have no precomputed embedding, e.g. {missing[0]!r}: "
                          "compute the embeddings for this gold file's images")
    if fixed is None:
        fixed = {k: 0.0 for k in range(len(ids)) if len(pred[k]) == 0}
    scores = np.zeros(len(ids), dtype=np.float64)
    for k, value in fixed.items():
        scores[k] = value
    todo = [k for k in range(len(ids)) if k not in fixed]
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        c = np.asarray(encode_texts([pred[k] for k in chunk]), dtype=np.float64)        # (B, D)
        v = np.stack([np.asarray(image_embeddings[ids[k]], dtype=np.float64) for k in chunk])  # (B, D)
        cos = (v * c).sum(1) / (np.linalg.norm(v, axis=1) * np.linalg.norm(c, axis=1))
        scores[chunk] = 2.5 * np.maximum(cos, 0.0)
    return scores


def medimageinsight_text_encoder(model_dir: str | Path | None) -> Callable[[list[str]], np.ndarray]:
    """The MedImageInsight text encoder of a checkout of its repository (``--medimageinsight``)."""
    model = load_medimageinsight(model_dir, " for the caption side")
    return lambda texts: np.asarray(model.encode(texts=texts)["text_embeddings"], dtype=np.float64)


# ---------------------------------------------------------------------------------------
# Scoring a submission with a preset
# ---------------------------------------------------------------------------------------

def score_captions_preset(gold: Mapping[str, str], pred: Mapping[str, str], *, preset: str | None = None,
                          edition=None, image_embeddings: Mapping[str, np.ndarray] | None = None,
                          text_encoder: Callable[[list[str]], np.ndarray] | None = None,
                          partial_aggregates: bool = False, **settings):
    """:func:`~medcap.metrics.captions.score_captions` with the aggregates of ``preset``
    (default: the one of ``edition``). With ``image_embeddings`` (``{ID: vector}``) the
    similarity uses them and ``text_encoder`` (default: MedImageInsight from
    ``medimageinsight_dir``) instead of encoding the images. A scorer that cannot run is
    listed in ``summary["not_available"]`` with how to enable it, never scored 0.
    """
    from .captions import SCORE_KEYS, score_captions

    p = caption_preset(preset, edition=edition)
    measure = settings.setdefault("bertscore_measure", p.bertscore_measure or "f1")
    if p.bertscore_measure is not None and measure != p.bertscore_measure:
        raise MedcapError(f"the {p.name} preset is defined with BERTScore {p.bertscore_measure}, not {measure}")
    if image_embeddings is not None:
        settings["images_dir"] = None  # the image side comes from the embeddings
    settings["relevance"] = p.name  # the scorers follow this preset's edition (its empty-caption rules)
    scores = score_captions(gold, pred, partial_aggregates=partial_aggregates, **settings)
    s = scores.summary
    if image_embeddings is not None:
        try:
            encode = text_encoder or medimageinsight_text_encoder(settings.get("medimageinsight_dir"))
            fixed = similarity_empty_rule(scores.gold, scores.pred, edition=p.edition,
                                          mode=settings.get("empty_similarity", "organisers-code"))
            values = similarity_from_embeddings(scores.ids, scores.pred, image_embeddings, encode, fixed=fixed)
            scores.per_image["similarity"] = values
            s["similarity"] = float(values.mean())
            s["not_available"].pop("similarity", None)
        except ScorerUnavailable as e:
            s["not_available"]["similarity"] = str(e)
    elif "similarity" in s["not_available"]:
        s["not_available"]["similarity"] += " (or precomputed image embeddings: --image-embeddings FILE.npz)"
    s.update(aggregate_preset({k: s.get(k) for k in SCORE_KEYS}, p, partial=partial_aggregates))
    s["preset"] = p.name
    s["settings"]["relevance"] = p.name
    s["settings"]["similarity_images"] = "precomputed embeddings" if image_embeddings is not None else "encoded"
    return scores
