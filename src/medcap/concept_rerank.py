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

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from .errors import MedcapError

WEIGHTS = tuple(np.round(np.arange(0.0, 1.0 + 1e-9, 0.1), 2))
RETRIEVAL_KS = (1, 3, 5, 10, 20)


def concept_agreement(caption: str, detected: Iterable[str], matcher, nameable: frozenset[str]) -> float:
    """F1 between the CUIs ``caption`` names and the ``detected`` CUIs that have a name (both
    empty: 1)."""
    named = matcher.cuis(caption)
    want = {c for c in detected if c in nameable}
    if not named and not want:
        return 1.0
    hit = len(named & want)
    return 2 * hit / (len(named) + len(want))


@lru_cache(maxsize=1 << 14)
def _tokens(caption: str) -> Counter:
    """The caption's token multiset after the official preprocessing (cached: do not change it)."""
    from .metrics.captions import preprocess_caption

    return Counter(preprocess_caption(caption).split())


def unigram_f1(a: Counter, b: Counter) -> float:
    """ROUGE-1 F-measure of two token multisets (the official preprocessing applied before)."""
    if not a and not b:
        return 1.0
    small, large = (a, b) if len(a) <= len(b) else (b, a)
    overlap = sum(min(n, large[w]) for w, n in small.items() if w in large)   # |a & b|, without a new Counter
    return 0.0 if overlap == 0 else 2 * overlap / (a.total() + b.total())


def consensus_scores(candidates: Sequence[str]) -> np.ndarray:
    """Each candidate's mean unigram F1 with the other candidates (0.5 for a lone candidate)."""
    return _consensus(*_candidate_table(tuple(candidates), prefixes=False), len(candidates))[1]


_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def sentence_prefixes(caption: str) -> list[str]:
    """The caption's first sentence, its first two, ..., all of it (the last is the caption)."""
    parts = _SENTENCE_BREAK.split(caption.strip())
    return [" ".join(parts[:n]) for n in range(1, len(parts) + 1)]


@lru_cache(maxsize=1024)
def _candidate_table(neighbours: tuple[str, ...], prefixes: bool):
    """(candidate texts, the neighbour each comes from, unigram F1 of each with every neighbour's
    caption [C, n]): one table per image, cut to each k by :func:`_consensus` (cached, so the
    second matcher's fit reuses it: do not change the arrays)."""
    toks = [_tokens(c) for c in neighbours]
    texts, source = [], []
    for a, caption in enumerate(neighbours):
        for text in (sentence_prefixes(caption) if prefixes else [caption]):
            texts.append(text)
            source.append(a)
    f1 = np.array([[unigram_f1(_tokens(t), tb) for tb in toks] for t in texts]).reshape(len(texts), len(toks))
    return texts, np.asarray(source, dtype=int), f1


def _consensus(texts: list[str], source: np.ndarray, f1: np.ndarray, k: int) -> tuple[list[str], np.ndarray]:
    """The candidates from the first ``k`` neighbours and their mean F1 with the other ``k - 1``."""
    if k < 2:   # a lone neighbour: its caption, as the nearest-neighbour baseline gives it
        last = [i for i, a in enumerate(source) if a == 0][-1:]
        return [texts[i] for i in last], np.full(len(last), 0.5)
    keep = np.flatnonzero(source < k)
    part = f1[keep, :k]
    own = part[np.arange(len(keep)), source[keep]]
    return [texts[i] for i in keep], (part.sum(axis=1) - own) / (k - 1)


def retrieval_candidates(neighbours: Sequence[str], prefixes: bool = True) -> tuple[list[str], np.ndarray]:
    """One image's candidates from its neighbours' captions -> (candidates, their consensus).

    A candidate's consensus is its mean unigram F1 with the *other* neighbours' captions (its
    expected ROUGE-1 if the reference were one of them). ``prefixes``: each caption's leading
    sentences (:func:`sentence_prefixes`) are candidates too. A lone neighbour is its own
    candidate (consensus 0.5), so ``k = 1`` is the nearest-neighbour caption.
    """
    return _consensus(*_candidate_table(tuple(neighbours), prefixes), len(neighbours))


class _RememberedNames:
    """A concept matcher whose ``cuis(text)`` is computed once per text: the same candidates
    come back for every k and weight."""

    def __init__(self, matcher):
        self.matcher, self.seen = matcher, {}

    def cuis(self, text: str):
        if text not in self.seen:
            self.seen[text] = self.matcher.cuis(text)
        return self.seen[text]


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
    from .factcheck import knowledge_base

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
    from .metrics.scorers import ConceptNameMatcher

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
    gold_tokens = [_tokens(g) for g in gold]
    cand_tokens = [[_tokens(c) for c in cands] for cands in candidates]
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
# Concept-consistent retrieval
# ------------------------------------------------------------------------------------------

@dataclass
class ConsistentRetrieval:
    """Among the captions of the ``k`` nearest training images and their leading sentences, the
    one that names the detected concepts and that the neighbourhood agrees on (module
    docstring); ``k`` and ``weight`` chosen on validation."""

    train_embeddings: np.ndarray
    train_captions: list[str]
    matcher: object
    nameable: frozenset
    k: int = 5
    weight: float = 0.5
    prefixes: bool = True
    guard_weight: float = 1.0        # the guard's share of the validation score (fit); 0: ROUGE-1 only
    table: list[dict] = field(default_factory=list)
    valid_score: float | None = None   # the chosen option's validation score (fit)

    def candidates(self, query_embeddings: np.ndarray, k: int | None = None,
                   exclude_self: bool = False) -> list[list[str]]:
        """Each query's ``k`` nearest training captions, nearest first."""
        from .baselines import nearest_neighbours

        idx, _ = nearest_neighbours(self.train_embeddings, query_embeddings, k or self.k, exclude_self=exclude_self)
        return [[self.train_captions[j] for j in row] for row in idx]

    def fit(self, valid_embeddings: np.ndarray, valid_detected: Sequence[Iterable[str]], valid_gold: Sequence[str],
            ks=RETRIEVAL_KS, weights=WEIGHTS, guard=None) -> ConsistentRetrieval:
        """Choose ``k`` and ``weight`` on validation: by ROUGE-1 (unigram F1 on the official
        preprocessing) or, with ``guard``, by ROUGE-1 + the guard's mean.

        ``guard``: a caption scorer ``(gold captions, predicted captions) -> per-pair scores``
        (e.g. the approximate UMLS F1, medcap.metrics.scorers.ConceptNameMatcher.scores). Only
        choices whose validation mean of it is not below the nearest-neighbour caption's (k = 1,
        always allowed) are eligible: more ROUGE-1 is not bought with fewer right concepts.
        Among them the best ROUGE-1 + ``guard_weight`` x guard wins: with the UMLS F1, one
        relevance and one factuality measure, weighted equally (``guard_weight`` 1) as the
        official Overall = mean(Relevance, Factuality) (REFERENCE §4).
        """
        if len(valid_gold) == 0:
            raise MedcapError("concept-consistent retrieval is tuned on validation: no validation captions")
        ks = sorted({min(k, len(self.train_captions)) for k in ks} | ({1} if guard is not None else set()))
        pool = self.candidates(valid_embeddings, max(ks))
        tables = [_candidate_table(tuple(c), self.prefixes) for c in pool]
        expanded = {k: [_consensus(*t, k) for t in tables] for k in ks}
        matcher = _RememberedNames(self.matcher)
        second = floor = None
        if guard is not None:   # each distinct candidate's guard score against its image's gold caption, once
            texts = [sorted({t for k in ks for t in expanded[k][n][0]}) for n in range(len(pool))]
            flat = [(g, t) for g, ts in zip(valid_gold, texts, strict=True) for t in ts]
            values = iter(np.asarray(guard([g for g, _ in flat], [t for _, t in flat]), dtype=np.float64))
            scored = [{t: next(values) for t in ts} for ts in texts]
            second = {k: [[scored[n][t] for t in expanded[k][n][0]] for n in range(len(pool))] for k in ks}
            floor = float(np.mean([scored[n][c[0]] for n, c in enumerate(pool)]))   # the nearest neighbour's

        def score(o):   # (k, weight, ROUGE-1, guard mean)
            return o[2] + (self.guard_weight * o[3] if floor is not None else 0.0)

        self.table, options = [], []
        for k in ks:
            cands, other = [c for c, _ in expanded[k]], [o for _, o in expanded[k]]
            _, by_w = choose_weight(cands, other, valid_detected, valid_gold, matcher, self.nameable, weights,
                                    None if second is None else second[k])
            for w, value in by_w.items():
                rouge, umls = value if second is not None else (value, None)
                options.append((k, w, rouge, umls))
            eligible = [o for o in options if o[0] == k and (floor is None or o[3] >= floor - 1e-12)]
            best_k = max(eligible, key=lambda o: (score(o), -abs(o[1] - 0.5))) if eligible else None
            row = {"k": k, "weight": best_k[1] if best_k else None, "rouge1": best_k[2] if best_k else None,
                   "by_weight": {w: v for (kk, w, *v) in options if kk == k}}
            if floor is not None:
                row["guard"] = best_k[3] if best_k else None
                row["guard_floor"] = floor
            self.table.append(row)
        eligible = [o for o in options if floor is None or o[3] >= floor - 1e-12]
        best = max(eligible, key=lambda o: (score(o), -abs(o[1] - 0.5), -o[0]))
        self.k, self.weight, self.valid_score = best[0], best[1], score(best)
        return self

    def predict(self, query_embeddings: np.ndarray, detected: Sequence[Iterable[str]]) -> list[str]:
        out = []
        for neighbours, d in zip(self.candidates(query_embeddings), detected, strict=True):
            cands, other = retrieval_candidates(neighbours, self.prefixes)
            out.append(cands[pick(cands, d, other, self.weight, self.matcher, self.nameable)])
        return out


# ------------------------------------------------------------------------------------------
# Concept-reranked beams
# ------------------------------------------------------------------------------------------

def beam_candidates(captioner, images: Sequence, concepts: Sequence[Iterable[str]] | None, num_beams: int = 5,
                    batch_size: int = 8, retrieved: Sequence[Sequence[str]] | None = None
                    ) -> list[tuple[list[str], np.ndarray]]:
    """Per PIL image: (its ``num_beams`` best beams, their normalised scores in [0, 1]); ``retrieved``:
    each image's nearest training captions for a retrieval-prompted captioner."""
    import torch

    index = captioner.processor.retrieval_prompt
    if retrieved is None and index is not None:
        retrieved = index.retrieve_images(images)
    prompts = captioner.concept_prompt_ids(concepts, len(images), retrieved)
    out = []
    was_training = captioner.model.training
    captioner.model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                pixels = captioner.pixel_values(images[start:start + batch_size]).to(captioner.device)
                rows = None if prompts is None else prompts[start:start + batch_size]
                ids, scores = captioner.generate_ids(pixels, prompts=rows, return_beams=num_beams)
                texts, scores = captioner.decode(ids), scores.float().cpu().numpy()
                for b in range(len(pixels)):
                    part = slice(b * num_beams, (b + 1) * num_beams)
                    out.append((texts[part], normalise(scores[part])))
    finally:
        captioner.model.train(was_training)
    return out


def rerank_beams(candidates: Sequence[tuple[list[str], np.ndarray]], detected: Sequence[Iterable[str]],
                 weight: float, matcher, nameable) -> list[str]:
    """The chosen beam of each image: ``weight * agreement + (1 - weight) * beam score``."""
    return [beams[pick(beams, d, scores, weight, matcher, nameable)]
            for (beams, scores), d in zip(candidates, detected, strict=True)]


def fit_rerank_weight(captioner, images: Sequence, detected: Sequence[Iterable[str]], gold: Sequence[str],
                      cui_names: Mapping[str, str] | None = None, num_beams: int = 5, batch_size: int = 8,
                      prompt_concepts: Sequence[Iterable[str]] | None = None) -> tuple[float, dict]:
    """The reranking weight with the best ROUGE-1 on VALIDATION images -> (weight, {weight: ROUGE-1}).

    ``detected``: the detector's concepts for those images (also the prompts of a
    concept-prompted captioner unless ``prompt_concepts`` is given).
    """
    matcher, nameable = concept_matcher(cui_names)
    cands = beam_candidates(captioner, images, prompt_concepts if prompt_concepts is not None else detected,
                            num_beams, batch_size)
    return choose_weight([c for c, _ in cands], [s for _, s in cands], detected, gold, matcher, nameable)
