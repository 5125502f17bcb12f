"""Baselines that give the models' numbers a meaning (standard in ImageCLEFmedical, REFERENCE §6).

Concepts:
- most frequent: the k most frequent training concepts for every image, k chosen on
  validation by the official per-image F1;
- kNN retrieval: the k nearest training images by backbone embedding (cosine), concepts
  kept when at least a share ``vote`` of the neighbours carry them; k and vote chosen on
  validation.
Captions (used by ``medcap.caption_baselines``):
- constant: the training caption with the best mean ROUGE-1 against the other training
  captions (on a sample), for every image;
- retrieval: the caption of the nearest training image.

Embeddings come from :func:`image_embeddings`: global-average-pooled backbone features of
a trained concept detector (``medcap train concepts``) or of a plain backbone.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from .errors import MedcapError
from .metrics.concepts import evaluate_concepts

KNN_KS = (1, 3, 5, 10, 20, 50)
KNN_VOTES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


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

def plain_backbone(name: str = "resnet18", image_size: int = 224, pretrained: bool = False,
                   pretrained_path: str | None = None):
    """A backbone without a trained head, shaped like a ConceptDetector for image_embeddings."""
    from .models.backbones import create_backbone
    from .models.processing import ConceptProcessor

    backbone = create_backbone(name, pretrained=pretrained, pretrained_path=pretrained_path)
    backbone.preprocessing = ConceptProcessor.from_settings(image_size, "squash", "imagenet").to_dict()
    return backbone


def image_embeddings(model, images, batch_size: int = 32, device: str | None = None,
                     num_workers: int = 0, progress: bool = False) -> tuple[list[str], np.ndarray]:
    """Images -> (IDs, L2-normalised embeddings [N, C]).

    ``model``: a ConceptDetector (object or folder) or :func:`plain_backbone`; the embedding is
    the global average of its last feature map. ``images``: folders/files, or
    ``ImageFolderItems`` (e.g. ``ImageFolderItems.from_split(split)`` for a dataset split).
    """
    import torch

    from .inference import load_detector, map_images, resolve_device

    if not isinstance(model, torch.nn.Module):
        model = load_detector(model)
    dev = resolve_device(device)
    model = model.to(dev).eval()
    features = model.forward_features if hasattr(model, "forward_features") else model

    def embed(x):
        f = features(x).float().mean(dim=(2, 3))                                    # [B, C]
        return torch.nn.functional.normalize(f, dim=1)

    return map_images(embed, images, model.preprocessing, batch_size, dev, num_workers, progress, desc="embed")


def nearest_neighbours(train_embeddings: np.ndarray, query_embeddings: np.ndarray, k: int,
                       exclude_self: bool = False, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Cosine kNN (embeddings are L2-normalised) -> (indices [Q, k], similarities [Q, k])."""
    k = min(k, len(train_embeddings) - int(exclude_self))
    if k < 1:
        raise MedcapError("kNN needs at least one training image")
    idx, sims = [], []
    for s in range(0, len(query_embeddings), chunk):
        sim = query_embeddings[s:s + chunk] @ train_embeddings.T                    # [q, N]
        if exclude_self:
            np.fill_diagonal(sim[:, s:s + chunk], -np.inf)
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sim, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        idx.append(top)
        sims.append(np.take_along_axis(sim, top, axis=1))
    return np.concatenate(idx), np.concatenate(sims)


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
            pred = dict(zip(valid_ids, knn_vote(neighbours, v)))
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
        raise ValueError("one training caption per training embedding expected")
    idx, _ = nearest_neighbours(train_embeddings, query_embeddings, 1)
    return [train_captions[j] for j in idx[:, 0]]


def constant_caption(train_captions: Mapping[str, str] | Sequence[str], sample: int = 300, seed: int = 0) -> str:
    """The training caption with the best mean ROUGE-1 (official preprocessing) against the others.

    Candidates and references are random samples of ``sample`` captions each (all when fewer).
    """
    from .metrics.captions import rouge1_scores

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
