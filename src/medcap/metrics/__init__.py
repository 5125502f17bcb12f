"""Official ImageCLEFmedical 2025 scores (REFERENCE §4).

- :mod:`medcap.metrics.concepts`: per-image F1 (primary, secondary), vectorised;
- :mod:`medcap.metrics.captions`: a submission's caption scores and the Relevance /
  Factuality / Overall aggregates (:func:`score_captions`, :class:`CaptionSettings`);
- :mod:`medcap.metrics.textscores`: the official text preprocessing, ROUGE-1, BERTScore;
- :mod:`medcap.metrics.scorers`: the optional caption scorers (BLEURT, AlignScore,
  MedCAT UMLS F1, MedImageInsight similarity) and the offline UMLS F1 approximation;
- :mod:`medcap.metrics.registry`: one scorer object per caption metric and the presets;
- :mod:`medcap.metrics.tables`: metric titles and the plain-text score tables.

Importing is cheap: torch, transformers and the scorer packages load when used.
"""
from .captions import (
    DEFAULT_BERTSCORE_MODEL,
    RELEVANCE_TERMS,
    CaptionScores,
    aggregate_scores,
    evaluate_captions,
    preprocess_caption,
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
from .textscores import BertScorer, find_minilm_model, rouge1_scores

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
