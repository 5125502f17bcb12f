"""Captions that agree with the concept detector: rerank candidates by concept agreement.

Caption leaders use retrieval of similar training captions and concept-guided decoding
(REFERENCE §6). Both come down to choosing, among several candidate captions for an image,
the one that best fits what the concept detector found. Candidates are either

- the N beams of a captioner (``num_return_sequences``): ``medcap predict captions --rerank
  concepts``, mixed with each beam's normalised score; or
- the captions of the image's ``k`` nearest training images (cosine on a detector's
  embeddings, as the nearest-neighbour baseline) and their leading sentences: the
  **concept-consistent retrieval** recipe (:class:`ConsistentRetrieval`), mixed with each
  candidate's consensus (its mean unigram F1 with the other neighbours' captions: the caption
  the neighbourhood agrees on, Devlin et al. 2015's consensus reranking of retrieved captions,
  a minimum-Bayes-risk choice for ROUGE-1). A caption cut after its first sentence keeps the
  image's description and drops case details the reference rarely shares, so the leading
  sentences are candidates of their own.

``score = weight * agreement + (1 - weight) * other``, where ``agreement`` is the F1 between
the concepts the candidate names (the fact-checker's dictionary matcher, medcap.factcheck)
and the detected concepts that have a name to match; ``weight`` (and ``k``) are chosen on the
validation split by ROUGE-1 (REFERENCE §4), or by ROUGE-1 + approximate UMLS F1 when a guard
scores factuality too, never on test.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from ..metrics.textscores import rouge1_tokens, unigram_f1

WEIGHTS = tuple(np.round(np.arange(0.0, 1.0 + 1e-9, 0.1), 2))


def concept_agreement(caption: str, detected: Iterable[str], matcher, nameable: frozenset[str]) -> float:
    """F1 between the CUIs ``caption`` names and the ``detected`` CUIs that have a name (both
    empty: 1)."""
    named = matcher.cuis(caption)
    want = {c for c in detected if c in nameable}
    if not named and not want:
        return 1.0
    hit = len(named & want)
    return 2 * hit / (len(named) + len(want))


def normalise(scores: Sequence[float]) -> np.ndarray:
    """Min-max to [0, 1] within one image's candidates (all equal: 1)."""
    s = np.asarray(scores, dtype=np.float64)
    span = s.max() - s.min() if len(s) else 0.0
    return (s - s.min()) / span if span > 0 else np.ones_like(s)


def pick(candidates: Sequence[str], detected: Iterable[str], other: Sequence[float], weight: float, matcher,
         nameable: frozenset[str]) -> int:
    """Index of the best candidate: ``weight * agreement + (1 - weight) * other`` (first on ties)."""
    detected = list(detected)
    agree = np.array([concept_agreement(c, detected, matcher, nameable) for c in candidates])
    return int(np.argmax(weight * agree + (1 - weight) * np.asarray(other, dtype=np.float64)))


def concept_matcher(cui_names: Mapping[str, str] | None, vocabulary: Iterable[str] | None = None):
    """(the fact-checker's matcher, the CUIs it can name [within ``vocabulary``])."""
    from ..factcheck import knowledge_base

    kb = knowledge_base(cui_names)
    nameable = frozenset(kb.synonyms)
    if vocabulary is not None:
        nameable &= frozenset(vocabulary)
    return kb.matcher, nameable


def caption_name_matcher(cui_names: Mapping[str, str], captions: Iterable[str],
                         vocabulary: Iterable[str] | None = None):
    """(the approximate UMLS F1's name matcher, the CUIs that ``captions`` name by it [within
    ``vocabulary``]).

    Agreement measured this way counts a concept when a caption names it the way the caption
    evaluation finds it (medcap.metrics.scorers.ConceptNameMatcher); the fact-checker's wider
    dictionary (:func:`concept_matcher`) also counts synonyms that evaluation does not see.
    """
    from ..metrics.scorers import ConceptNameMatcher

    matcher = ConceptNameMatcher(cui_names)
    nameable = frozenset().union(*(matcher.cuis(c) for c in captions))
    if vocabulary is not None:
        nameable &= frozenset(vocabulary)
    return matcher, nameable


def choose_weight(candidates: Sequence[Sequence[str]], other: Sequence[Sequence[float]],
                  detected: Sequence[Iterable[str]], gold: Sequence[str], matcher, nameable,
                  weights=WEIGHTS, guard: Sequence[Sequence[float]] | None = None) -> tuple[float, dict]:
    """The weight with the best mean ROUGE-1 (unigram F1) against ``gold`` -> (weight, {w: score}).

    ``guard``: per image, a second score of each candidate (e.g. its UMLS F1 against the gold
    caption); then ``{w: score}`` holds (ROUGE-1, mean guard score) pairs and the weight is
    chosen by ROUGE-1 only (the caller applies the guard's floor).
    """
    gold_tokens = [rouge1_tokens(g) for g in gold]
    cand_tokens = [[rouge1_tokens(c) for c in cands] for cands in candidates]
    agree = [np.array([concept_agreement(c, list(d), matcher, nameable) for c in cands])
             for cands, d in zip(candidates, detected, strict=True)]
    table, guarded = {}, {}
    for w in weights:
        scores, second = [], []
        for n, (a, o, toks, g) in enumerate(zip(agree, other, cand_tokens, gold_tokens, strict=True)):
            i = int(np.argmax(w * a + (1 - w) * np.asarray(o)))
            scores.append(unigram_f1(toks[i], g))
            if guard is not None:
                second.append(guard[n][i])
        table[float(w)] = float(np.mean(scores)) if scores else 0.0
        guarded[float(w)] = float(np.mean(second)) if second else 0.0
    best = max(table, key=lambda w: (table[w], -abs(w - 0.5)))
    if guard is not None:
        return best, {w: (table[w], guarded[w]) for w in table}
    return best, table


# ------------------------------------------------------------------------------------------
# Concept-reranked beams
# ------------------------------------------------------------------------------------------

def beam_candidates(captioner, images: Sequence, concepts: Sequence[Iterable[str]] | None, num_beams: int = 5,
                    batch_size: int = 8, retrieved: Sequence[Sequence[str]] | None = None
                    ) -> list[tuple[list[str], np.ndarray]]:
    """Per PIL image: (its ``num_beams`` best beams, their normalised scores in [0, 1]); ``retrieved``:
    each image's nearest training captions for a retrieval-prompted captioner (retrieved by the
    captioner itself when None)."""

    from ..models.generation import eval_batches

    def batch(part: slice) -> list:
        # BLIP or a vision-language captioner: both give each image's beams, best first
        rows = None if concepts is None else concepts[part]
        near = None if retrieved is None else retrieved[part]
        return [(texts, normalise(scores)) for texts, scores in captioner.beams(images[part], rows, near, num_beams)]

    return eval_batches(captioner.model, len(images), batch_size, batch)


def rerank_beams(candidates: Sequence[tuple[list[str], np.ndarray]], detected: Sequence[Iterable[str]],
                 weight: float, matcher, nameable) -> list[str]:
    """The chosen beam of each image: ``weight * agreement + (1 - weight) * beam score``."""
    return [beams[pick(beams, d, scores, weight, matcher, nameable)]
            for (beams, scores), d in zip(candidates, detected, strict=True)]
