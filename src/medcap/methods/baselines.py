"""Baselines that give the models' numbers a meaning (standard in ImageCLEFmedical, REFERENCE §6).

Concepts:
- most frequent: the k most frequent training concepts for every image, k chosen on
  validation by the official per-image F1;
- kNN retrieval: the k nearest training images by backbone embedding (cosine), concepts
  kept when at least a share ``vote`` of the neighbours carry them; k and vote chosen on
  validation.
Captions:
- constant: the training caption with the best mean ROUGE-1 against the other training
  captions (on a sample of :data:`CONSTANT_CAPTION_SAMPLE`), for every image;
- retrieval: the caption of the nearest training image.

Embeddings come from :func:`image_embeddings`: global-average-pooled backbone features of
a trained concept detector (``medcap train concepts``) or of a plain backbone.

The last section builds each baseline from dataset splits (:func:`most_frequent_baseline`,
:func:`knn_baseline`, :func:`constant_caption_baseline`, :func:`retrieval_caption_baseline`):
the CLI (``medcap baseline``), the demo and the report all call these, so a baseline is the
same wherever its score is shown; :func:`caption_baseline` writes a caption baseline's submission.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import MedcapError
from ..inference.concepts import image_embeddings
from ..metrics.concepts import evaluate_concepts
from ..models.retrieval import nearest_neighbours, plain_backbone

KNN_KS = (1, 3, 5, 10, 20, 50)
KNN_VOTES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
# Candidates and references of the constant caption: 150 x 150 ROUGE-1 comparisons (a quarter of
# the time of 300 x 300; the demo's budget) already find a typical caption.
CONSTANT_CAPTION_SAMPLE = 150


def _f1(gold: Mapping[str, Sequence[str]], pred: Mapping[str, Sequence[str]]) -> float:
    return evaluate_concepts(gold, pred)["primary_f1"] or 0.0


# ------------------------------------------------------------------------------------------
# Most frequent concepts
# ------------------------------------------------------------------------------------------

def most_frequent_concepts(train_concepts: Mapping[str, Sequence[str]]) -> list[str]:
    """Training CUIs by number of images carrying them, most frequent first (ties by CUI)."""
    counts = Counter(c.strip().upper() for cuis in train_concepts.values() for c in set(cuis) if c.strip())
    return [c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def fit_most_frequent(train_concepts, valid_concepts, max_k: int = 10) -> tuple[list[str], dict]:
    """-> (the concepts to predict for every image, report with F1 per k on validation)."""
    ranked = most_frequent_concepts(train_concepts)
    scores = {k: _f1(valid_concepts, {i: ranked[:k] for i in valid_concepts}) for k in range(1, max_k + 1)}
    best_k = max(scores, key=lambda k: (scores[k], -k))
    return ranked[:best_k], {"k": best_k, "valid_f1": scores[best_k], "f1_by_k": scores}


# ------------------------------------------------------------------------------------------
# Embeddings and kNN
# ------------------------------------------------------------------------------------------

def knn_vote(neighbour_concepts: Sequence[Sequence[Sequence[str]]], vote: float) -> list[list[str]]:
    """Per query, the CUIs carried by at least ``vote`` of its neighbours (most votes first)."""
    out = []
    for lists in neighbour_concepts:
        counts = Counter(c for cuis in lists for c in set(cuis))
        need = vote * len(lists)
        out.append([c for c, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= need][:100])
    return out


def fit_knn(train_embeddings, train_lists: Sequence[Sequence[str]], valid_embeddings, valid_ids: Sequence[str],
            valid_concepts: Mapping[str, Sequence[str]], ks=KNN_KS, votes=KNN_VOTES) -> dict:
    """Choose k and vote on validation -> {"k", "vote", "valid_f1", "table"}."""
    idx, _ = nearest_neighbours(train_embeddings, valid_embeddings, max(ks))
    table = []
    for k in ks:
        neighbours = [[train_lists[j] for j in row[:k]] for row in idx]
        for v in votes:
            pred = dict(zip(valid_ids, knn_vote(neighbours, v), strict=True))
            table.append({"k": k, "vote": v, "f1": _f1(valid_concepts, pred)})
    best = max(table, key=lambda r: r["f1"])
    return {"k": best["k"], "vote": best["vote"], "valid_f1": best["f1"], "table": table}


def knn_concepts(train_embeddings, train_lists, query_embeddings, k: int, vote: float) -> list[list[str]]:
    idx, _ = nearest_neighbours(train_embeddings, query_embeddings, k)
    return knn_vote([[train_lists[j] for j in row] for row in idx], vote)


# ------------------------------------------------------------------------------------------
# Caption baselines
# ------------------------------------------------------------------------------------------

def retrieval_captions(train_embeddings: np.ndarray, train_captions: Sequence[str],
                       query_embeddings: np.ndarray) -> list[str]:
    """The caption of each query's nearest training image (cosine on L2-normalised embeddings)."""
    if len(train_embeddings) != len(train_captions):
        raise ValueError("one training caption per training embedding expected")  # a caller's bug
    idx, _ = nearest_neighbours(train_embeddings, query_embeddings, 1)
    return [train_captions[j] for j in idx[:, 0]]


def constant_caption(train_captions: Mapping[str, str] | Sequence[str], sample: int = CONSTANT_CAPTION_SAMPLE,
                     seed: int = 0) -> str:
    """The training caption with the best mean ROUGE-1 (official preprocessing) against the others.

    Candidates and references are random samples of ``sample`` captions each (all when fewer).
    """
    from ..metrics.textscores import rouge1_scores

    captions = list(train_captions.values()) if isinstance(train_captions, Mapping) else list(train_captions)
    captions = [c for c in captions if c.strip()]
    if not captions:
        raise MedcapError("no training captions to choose a constant caption from")
    rng = np.random.default_rng(seed)
    cand_idx = rng.permutation(len(captions))[:sample]
    ref_idx = rng.permutation(len(captions))[:sample]
    best, best_score = captions[cand_idx[0]], -1.0
    for i in cand_idx:
        refs = [captions[j] for j in ref_idx if j != i]  # the others: never the caption itself
        if not refs:
            return captions[i]
        score = float(np.mean(rouge1_scores(refs, [captions[i]] * len(refs))))
        if score > best_score:
            best, best_score = captions[i], score
    return best


# ------------------------------------------------------------------------------------------
# Baselines from dataset splits: one definition for the CLI, the demo and the report
# ------------------------------------------------------------------------------------------

class SplitEmbeddings:
    """:func:`image_embeddings` of one dataset's splits with one embedder: every image of a split
    is embedded once, and each call selects the rows of its IDs. The kNN and retrieval baselines,
    the concept ensemble and the retrieval captions of one run share them."""

    def __init__(self, embedder, batch_size: int = 32, progress: bool = False, num_workers: int | str = "auto"):
        self.embedder, self.batch_size, self.progress, self.num_workers = embedder, batch_size, progress, num_workers
        self._cache: dict[str, tuple[dict[str, int], np.ndarray]] = {}

    def _embed(self, split, ids: list[str]) -> np.ndarray:
        from ..data.items import ImageFolderItems

        return image_embeddings(self.embedder, ImageFolderItems.from_split(split, ids),
                                batch_size=self.batch_size, num_workers=self.num_workers, progress=self.progress)[1]

    def __call__(self, split, ids: Sequence[str]) -> np.ndarray:
        if split.name not in self._cache:
            every = split.image_ids()
            self._cache[split.name] = ({i: n for n, i in enumerate(every)}, self._embed(split, every))
        pos, emb = self._cache[split.name]
        if any(i not in pos for i in ids):  # IDs outside the split's list: embedded on their own
            return self._embed(split, list(ids))
        return emb[[pos[i] for i in ids]]


def _need(split, labels: str) -> None:
    if getattr(split, labels) is None:
        raise MedcapError(f"the {split.name} split has no {labels} file")


def most_frequent_baseline(train, valid=None, max_k: int = 10) -> tuple[list[str], dict]:
    """-> (the CUIs predicted for every image, report). k is chosen on ``valid`` by the official
    F1; without a labelled validation split, the median number of concepts per training image."""
    _need(train, "concepts")
    if valid is not None and valid.concepts:
        return fit_most_frequent(train.concepts, valid.concepts, max_k)
    sizes = sorted(len(v) for v in train.concepts.values())
    k = max(1, sizes[len(sizes) // 2]) if sizes else 1
    return most_frequent_concepts(train.concepts)[:k], {"k": k, "valid_f1": None}


def knn_baseline(embed: SplitEmbeddings, train, valid, target, ks=KNN_KS,
                 votes=KNN_VOTES) -> tuple[dict[str, list[str]], dict]:
    """kNN concept retrieval for ``target``'s images, k and vote chosen on ``valid`` -> (predictions, report)."""
    _need(train, "concepts")
    _need(valid, "concepts")
    train_ids, valid_ids, target_ids = train.labelled_ids("concepts"), valid.labelled_ids("concepts"), \
        target.image_ids()
    train_emb, train_lists = embed(train, train_ids), [train.concepts[i] for i in train_ids]
    report = fit_knn(train_emb, train_lists, embed(valid, valid_ids), valid_ids, valid.concepts, ks=ks, votes=votes)
    preds = knn_concepts(train_emb, train_lists, embed(target, target_ids), report["k"], report["vote"])
    return dict(zip(target_ids, preds, strict=True)), report


def constant_caption_baseline(train, target_ids: Sequence[str],
                              sample: int = CONSTANT_CAPTION_SAMPLE) -> tuple[dict[str, str], str]:
    """The constant caption for every ID of ``target_ids`` -> (predictions, the caption)."""
    _need(train, "captions")
    caption = constant_caption({i: train.captions[i] for i in train.ids if i in train.captions}, sample=sample)
    return {i: caption for i in target_ids}, caption


def retrieval_caption_baseline(embed: SplitEmbeddings, train, target) -> dict[str, str]:
    """The caption of the nearest training image, for each of ``target``'s images."""
    _need(train, "captions")
    train_ids, target_ids = train.labelled_ids("captions"), target.image_ids()
    # Same (split, IDs) as the kNN baseline's when every training image has both: embedded once.
    captions = retrieval_captions(embed(train, train_ids), [train.captions[i] for i in train_ids],
                                  embed(target, target_ids))
    return dict(zip(target_ids, captions, strict=True))


def load_embedder(model: str | Path | None = None, backbone: str = "resnet18", image_size: int = 224,
                  pretrained: bool = False):
    """An image embedder: a captioner folder (its image encoder), a concept-detector folder (its
    backbone), or else a plain timm backbone (random weights unless ``pretrained``)."""
    from ..inference.concepts import load_detector
    from ..models.captioner import Captioner
    from ..models.location import VLM_MARKER, model_kind, resolve_model_folder

    if model is None:
        return plain_backbone(backbone, image_size, pretrained)
    folder = resolve_model_folder(model, kind=None)
    if (folder / VLM_MARKER).is_file():
        raise MedcapError("--model: a vision-language captioner has no image embedder here; give a BLIP captioner "
                          "or a concept detector folder (or none: --backbone)", file=folder)
    if model_kind(folder) == "captions":
        return Captioner.from_pretrained(folder).image_embedder()
    return load_detector(folder)


def caption_baseline(kind: str, data: str | Path, out: str | Path, split: str = "test", *, embedder=None,
                     batch_size: int = 32, progress: bool = False, order: Sequence[str] | None = None,
                     edition: int | None = None) -> dict[str, str]:
    """Write a baseline caption submission for ``split`` and return it (``medcap baseline captions``).

    ``constant``: :func:`constant_caption_baseline` for every image of the split. ``retrieval``:
    :func:`retrieval_caption_baseline` with ``embedder``'s image embeddings (see
    :func:`load_embedder`). ``order`` and ``edition`` as in
    :func:`medcap.inference.captions.predict_captions`.
    """
    from ..data import read_dataset
    from ..submission import write_caption_submission

    dataset = read_dataset(data)
    train, target = dataset.split("train"), dataset.split(split)
    if kind == "constant":
        result, _ = constant_caption_baseline(train, target.ids)
    elif kind == "retrieval":
        embed = SplitEmbeddings(embedder if embedder is not None else load_embedder(), batch_size, progress)
        result = retrieval_caption_baseline(embed, train, target)
    else:
        raise MedcapError(f"unknown caption baseline {kind!r}; expected constant or retrieval")
    write_caption_submission(out, result, gold_ids=order, edition=edition)
    return result
