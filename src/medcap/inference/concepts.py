"""Prediction with a trained concept detector: images in, probabilities and decisions out.

Shared by the CLI, the baselines, explain, the report, the web app and the demo; training
lives in ``medcap.training``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..data.items import ConceptImageDataset, ImageFolderItems
from ..data.transforms import normalize_batch
from ..device import resolve_device


def load_detector(model_or_dir):
    """A ConceptDetector or ConceptEnsemble as is, or loaded from its folder or run folder
    (models.location); an ensemble folder is told by config.json's model_type (medcap.models.ensemble)."""
    from ..models.concept_detector import ConceptDetector
    from ..models.ensemble import ConceptEnsemble, is_ensemble_folder
    from ..models.location import resolve_model_folder

    if isinstance(model_or_dir, (ConceptDetector, ConceptEnsemble)):
        return model_or_dir
    folder = resolve_model_folder(model_or_dir, "concepts")  # a hub id or a folder left mid-swap: either kind
    if is_ensemble_folder(folder):
        return ConceptEnsemble.from_pretrained(folder)
    return ConceptDetector.from_pretrained(folder)


def probability_fn(model) -> Callable:
    """Normalised batch -> probabilities [B, K]: an ensemble fuses its members' directly."""
    return getattr(model, "probabilities", None) or (lambda x: model(x).sigmoid())


def image_items(images) -> ImageFolderItems:
    """Folders / files / PIL images / numpy arrays (or a list of them) / an ImageFolderItems ->
    ImageFolderItems (ID = file name stem, or image-N for an in-memory image: its place in the list)."""
    return ImageFolderItems.from_images(images)


def map_images(fn: Callable, images, prep: dict, batch_size: int = 32, device=None,
               num_workers: int | str | None = "auto", progress: bool = False,
               desc: str = "predict") -> tuple[list[str], np.ndarray]:
    """Run ``fn`` (normalised input batch -> [B, ...] tensor) over images in batches, without
    autograd -> (IDs, stacked float32 results). Models must already be on ``device``.

    ``num_workers``: data-loader workers decoding beside the model (``auto``: see
    :mod:`medcap.data.loading`); the results do not depend on it. Inside
    :func:`medcap.data.loading.sharded_prediction` under ``accelerate launch``, each process runs
    its block of the images and every process returns all of them, in order.
    """
    import torch

    from ..data.loading import gather_in_order, loader_options, process_shard, resolve_workers, worker_errors
    from ..progress import bar

    items = image_items(images)
    mine = process_shard(len(items.ids), device, batch_size)
    shard = items if len(mine) == len(items.ids) else ImageFolderItems(items.ids[mine.start:mine.stop], items.load)
    workers = resolve_workers(num_workers, len(shard.ids), device)
    loader = torch.utils.data.DataLoader(ConceptImageDataset(shard, prep), batch_size=batch_size,
                                         **loader_options(workers, device))
    out = []
    with torch.inference_mode(), worker_errors():
        for x, _, _ in bar(loader, desc=desc, show=progress):  # on a terminal only
            out.append(fn(normalize_batch(x.to(device, non_blocking=True), prep)).float().cpu().numpy())
    blocks = [b for b in gather_in_order([np.concatenate(out)] if out else [], device) if len(b)]
    return items.ids, np.concatenate(blocks) if blocks else np.zeros((0, 0), np.float32)


def predict_probabilities(model_or_dir, images, batch_size: int = 32, device: str | None = None,
                          num_workers: int | str | None = "auto",
                          progress: bool = False) -> tuple[list[str], np.ndarray]:
    """-> (image IDs, probabilities [N, K] over ``model.vocabulary.cuis``)."""
    dev = resolve_device(device)
    model = load_detector(model_or_dir).to(dev).eval()
    return map_images(probability_fn(model), images, model.preprocessing, batch_size, dev, num_workers,
                      progress)


def decide(model, probs: np.ndarray) -> list[list[tuple[str, float]]]:
    """Apply the model's saved thresholds -> per image [(CUI, prob), ...], most probable first."""
    from ..thresholds import Thresholds

    th = Thresholds.from_json(model.thresholds, model.vocabulary.cuis)
    pred = th.apply(probs)
    cuis = model.vocabulary.cuis
    out = []
    for row, p in zip(pred, probs, strict=True):
        cols = np.flatnonzero(row)
        cols = cols[np.argsort(-p[cols], kind="stable")][:100]  # REFERENCE §4: at most 100 per image
        out.append([(cuis[k], float(p[k])) for k in cols])
    return out


def predict_concepts(model_or_dir, images, batch_size: int = 32, device: str | None = None,
                     num_workers: int | str | None = "auto",
                     progress: bool = False) -> dict[str, list[tuple[str, float]]]:
    """Images (folders, files, PIL images, numpy arrays) -> {ID: [(CUI, probability), ...]} with the
    saved thresholds (in-memory images: the IDs image-1, image-2, ...)."""
    model = load_detector(model_or_dir)
    ids, probs = predict_probabilities(model, images, batch_size, device, num_workers, progress)
    return dict(zip(ids, decide(model, probs), strict=True))


def probabilities_json(model, ids: list[str], probs: np.ndarray, top: int = 10, full: bool = False) -> dict:
    """The --json file: thresholds, and per image the predicted concepts and the top candidates.

    ``full``: also the top-level ``vocabulary`` and every probability of every image (per image
    ``probabilities: {CUI: p}``), which makes the fact-check exact (medcap.factcheck reads both);
    about 20 bytes per image and concept.
    """
    decided = decide(model, probs)
    vocab = model.vocabulary
    images = {}
    for image_id, p, chosen in zip(ids, probs, decided, strict=True):
        best = np.argsort(-p, kind="stable")[:top]
        images[image_id] = {
            "predicted": [{"cui": c, "name": vocab.name(c), "probability": round(q, 6)} for c, q in chosen],
            "top": [{"cui": vocab.cuis[k], "probability": round(float(p[k]), 6)} for k in best]}
        if full:
            images[image_id]["probabilities"] = {c: round(float(q), 6) for c, q in zip(vocab.cuis, p, strict=True)}
    data = {"thresholds": model.thresholds, "images": images}
    if full:
        data["vocabulary"] = list(vocab.cuis)
    return data


def image_embeddings(model, images, batch_size: int = 32, device: str | None = None,
                     num_workers: int | str | None = "auto", progress: bool = False) -> tuple[list[str], np.ndarray]:
    """Images -> (IDs, L2-normalised embeddings [N, C]).

    ``model``: a ConceptDetector (object or folder) or :func:`medcap.models.retrieval.plain_backbone`; the embedding is
    the global average of its last feature map. ``images``: folders/files, or
    ``ImageFolderItems`` (e.g. ``ImageFolderItems.from_split(split)`` for a dataset split).
    """
    import torch

    if not isinstance(model, torch.nn.Module):
        model = load_detector(model)
    dev = resolve_device(device)
    model = model.to(dev).eval()
    features = model.forward_features if hasattr(model, "forward_features") else model

    def embed(x):
        f = features(x).float().mean(dim=(2, 3))                                    # [B, C]
        return torch.nn.functional.normalize(f, dim=1)

    return map_images(embed, images, model.preprocessing, batch_size, dev, num_workers, progress, desc="embed")
