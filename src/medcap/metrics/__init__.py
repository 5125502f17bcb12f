"""Official ImageCLEFmedical 2025 scores (REFERENCE §4).

- :mod:`medcap.metrics.concepts`: per-image F1 (primary, secondary), vectorised;
- :mod:`medcap.metrics.captions`: text preprocessing, ROUGE-1, BERTScore and the
  Relevance / Factuality / Overall aggregates;
- :mod:`medcap.metrics.scorers`: the optional caption scorers (BLEURT, AlignScore,
  MedCAT UMLS F1, MedImageInsight similarity) and the offline UMLS F1 approximation.

Importing is cheap: torch, transformers and the scorer packages load when used.
"""
from .captions import (
    DEFAULT_BERTSCORE_MODEL,
    RELEVANCE_TERMS,
    BertScorer,
    CaptionScores,
    aggregate_scores,
    evaluate_captions,
    find_minilm_model,
    preprocess_caption,
    rouge1_scores,
    score_captions,
)
from .concepts import (
    SECONDARY_CUIS,
    ConceptScores,
    evaluate_concepts,
    mean_per_image_f1,
    normalize_cui,
    per_image_f1_matrix,
    score_concepts,
)
from .scorers import ConceptNameMatcher, ScorerUnavailable

__all__ = [
    "DEFAULT_BERTSCORE_MODEL",
    "RELEVANCE_TERMS",
    "SECONDARY_CUIS",
    "BertScorer",
    "CaptionScores",
    "ConceptNameMatcher",
    "ConceptScores",
    "ScorerUnavailable",
    "aggregate_scores",
    "evaluate_captions",
    "evaluate_concepts",
    "find_minilm_model",
    "mean_per_image_f1",
    "normalize_cui",
    "per_image_f1_matrix",
    "preprocess_caption",
    "rouge1_scores",
    "score_captions",
    "score_concepts",
]
