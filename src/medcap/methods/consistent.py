"""Concept-consistent retrieval captions, chosen on validation (REFERENCE §6).

Among the captions of an image's ``k`` nearest training images (cosine on a detector's
embeddings, as the nearest-neighbour baseline) and their leading sentences, the one that names
the detected concepts and that the neighbourhood agrees on. A candidate's consensus is its mean
unigram F1 with the *other* neighbours' captions (the caption the neighbourhood agrees on,
Devlin et al. 2015's consensus reranking of retrieved captions, a minimum-Bayes-risk choice for
ROUGE-1). A caption cut after its first sentence keeps the image's description and drops case
details the reference rarely shares, so the leading sentences are candidates of their own.

``score = weight * agreement + (1 - weight) * consensus`` (agreement:
:func:`medcap.inference.rerank.concept_agreement`); ``k`` and ``weight`` are chosen on the
validation split by ROUGE-1, or by ROUGE-1 + approximate UMLS F1 when a guard scores factuality
too, never on test. :func:`fit_rerank_weight` chooses the weight of reranked beams
(``medcap predict captions --rerank concepts``) on validation in the same way.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from ..errors import MedcapError
from ..inference.rerank import WEIGHTS, beam_candidates, choose_weight, concept_matcher, pick
from ..metrics.textscores import rouge1_tokens, unigram_f1
from ..models.retrieval import nearest_neighbours

RETRIEVAL_KS = (1, 3, 5, 10, 20)


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
    toks = [rouge1_tokens(c) for c in neighbours]
    texts, source = [], []
    for a, caption in enumerate(neighbours):
        for text in (sentence_prefixes(caption) if prefixes else [caption]):
            texts.append(text)
            source.append(a)
    f1 = np.array([[unigram_f1(rouge1_tokens(t), tb) for tb in toks] for t in texts]).reshape(len(texts), len(toks))
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


def consistent_retrieval_captions(dataset, embed_model, detected_valid: dict[str, list[str]],
                                  detected_test: dict[str, list[str]], test_ids: list[str],
                                  log: Callable[[str], None] = print,
                                  embeddings=None, **options) -> tuple[dict[str, str], dict]:
    """Concept-consistent retrieval captions for ``test_ids`` -> ({ID: caption}, choices on validation).

    ``embed_model``: a detector or ensemble (its backbone embeds the images); ``detected_*``:
    the concepts it predicts for the validation and test images; ``embeddings``: a shared
    :class:`medcap.methods.baselines.SplitEmbeddings` of the same backbone, if one exists; ``options``:
    fields of :class:`medcap.methods.consistent.ConsistentRetrieval` (``prefixes``, ``guard_weight``).
    """
    from ..inference.rerank import caption_name_matcher, concept_matcher
    from .baselines import SplitEmbeddings

    train, valid, test = dataset.split("train"), dataset.split("valid"), dataset.split("test")
    if train.captions is None or valid.captions is None:
        raise MedcapError("concept-consistent retrieval needs training and validation captions")
    train_ids = train.labelled_ids("captions")
    valid_ids = [i for i in valid.labelled_ids("captions") if i in detected_valid]
    embed = embeddings or SplitEmbeddings(embed_model)
    emb = {name: embed(split, ids) for name, split, ids in
           (("train", train, train_ids), ("valid", valid, valid_ids), ("test", test, test_ids))}
    vocabulary, train_captions = getattr(embed_model.vocabulary, "cuis", None), [train.captions[i] for i in train_ids]
    # Agreement counts concepts with the fact-checker's dictionary, or with the concept names the
    # caption evaluation finds (medcap.inference.rerank.caption_name_matcher): whichever scores
    # better on validation. With concept names, the approximate UMLS F1 guards every choice
    # (not below the nearest-neighbour caption's on validation) and the score is ROUGE-1 + it
    # (ConsistentRetrieval.fit); without them, ROUGE-1 alone.
    matchers = {"fact-checker": concept_matcher(dataset.cui_names, vocabulary)}
    guard = None
    if dataset.cui_names:
        matchers["concept names"] = caption_name_matcher(dataset.cui_names, train_captions, vocabulary)
        guard = matchers["concept names"][0].scores
    fitted = {}
    for name, (matcher, nameable) in matchers.items():
        method = ConsistentRetrieval(emb["train"], train_captions, matcher, nameable, **options)
        method.fit(emb["valid"], [detected_valid[i] for i in valid_ids], [valid.captions[i] for i in valid_ids],
                   guard=guard)
        fitted[name] = (method, next(r for r in method.table if r["k"] == method.k))
    name = max(fitted, key=lambda n: fitted[n][0].valid_score)
    method, row = fitted[name]
    chosen = {"k": method.k, "weight": method.weight, "matcher": name, "valid_rouge1": row["rouge1"],
              "valid_umls_f1_approx": row.get("guard"), "nearest_neighbour_umls_f1_approx": row.get("guard_floor"),
              "table": [{"matcher": n, **{k: v for k, v in r.items() if k != "by_weight"}}
                        for n, (m, _) in fitted.items() for r in m.table]}
    guarded = "" if guard is None else (f", UMLS F1 approx. {row['guard']:.4f} against the nearest neighbour's "
                                        f"{row['guard_floor']:.4f}")
    log(f"concept-consistent retrieval: k={method.k}, weight {method.weight}, {name} "
        f"(validation ROUGE-1 {chosen['valid_rouge1']:.4f}{guarded})")
    captions = method.predict(emb["test"], [detected_test[i] for i in test_ids])
    return dict(zip(test_ids, captions, strict=True)), chosen
