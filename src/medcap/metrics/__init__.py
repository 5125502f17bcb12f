"""Official ImageCLEFmedical 2025 scores (FACTS 4).

- :mod:`medcap.metrics.concepts`: per-image F1 (primary, secondary), vectorised;
- :mod:`medcap.metrics.captions`: text preprocessing, ROUGE-1, BERTScore, optional
  scorers and the Relevance / Factuality / Overall aggregates.
"""
from .concepts import (
    SECONDARY_CUIS,
    ConceptScores,
    evaluate_concepts,
    mean_per_image_f1,
    normalize_cui,
    per_image_f1_matrix,
    score_concepts,
)

__all__ = [
    "SECONDARY_CUIS",
    "ConceptScores",
    "evaluate_concepts",
    "mean_per_image_f1",
    "normalize_cui",
    "per_image_f1_matrix",
    "score_concepts",
]
