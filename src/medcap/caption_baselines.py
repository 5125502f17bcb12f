"""Caption baselines: the constant caption and nearest-neighbour retrieval.

The building blocks (``constant_caption``, ``image_embeddings``, ``retrieval_captions``) are in
:mod:`medcap.baselines`; :func:`caption_baseline` runs one on a dataset split and writes its
submission, for the CLI, the demo and the report alike.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .errors import MedcapError
from .models.captioner import Captioner


def load_embedder(model: str | Path | None = None, backbone: str = "resnet18", image_size: int = 224,
                  pretrained: bool = False):
    """An image embedder: a captioner folder (its image encoder), a concept-detector folder (its
    backbone), or else a plain timm backbone (random weights unless ``pretrained``)."""
    from .baselines import plain_backbone
    from .inference import load_detector
    from .models.location import model_kind, resolve_model_folder

    if model is None:
        return plain_backbone(backbone, image_size, pretrained)
    folder = resolve_model_folder(model, kind=None)
    if model_kind(folder) == "captions":
        return Captioner.from_pretrained(folder).image_embedder()
    return load_detector(folder)


def caption_baseline(kind: str, data: str | Path, out: str | Path, split: str = "test", *, embedder=None,
                     batch_size: int = 32, progress: bool = False, order: Sequence[str] | None = None,
                     edition: int | None = None) -> dict[str, str]:
    """Write a baseline caption submission for ``split`` and return it.

    ``constant``: the training caption with the best mean ROUGE-1 against the other training
    captions, for every image. ``retrieval``: the caption of the most similar training image
    (cosine of ``embedder``'s image embeddings, see :func:`load_embedder`). ``order`` and
    ``edition`` as in :func:`medcap.inference_captions.predict_captions`.
    """
    from . import baselines
    from .data import read_dataset
    from .data.items import ImageFolderItems
    from .submission import write_caption_submission

    dataset = read_dataset(data)
    train, target = dataset.split("train"), dataset.split(split)
    if train.captions is None:
        raise MedcapError("the train split has no captions file", file=dataset.root)
    if kind == "constant":
        caption = baselines.constant_caption(train.captions)
        result = {i: caption for i in target.ids}
    elif kind == "retrieval":
        embedder = embedder if embedder is not None else load_embedder()
        train_ids = [i for i in train.ids if i in train.captions and train.has_image(i)]
        _, train_emb = baselines.image_embeddings(embedder, ImageFolderItems.from_split(train, train_ids),
                                                  batch_size=batch_size, progress=progress)
        target_ids, target_emb = baselines.image_embeddings(embedder, ImageFolderItems.from_split(target),
                                                            batch_size=batch_size, progress=progress)
        captions = baselines.retrieval_captions(train_emb, [train.captions[i] for i in train_ids], target_emb)
        result = dict(zip(target_ids, captions))
    else:
        raise MedcapError(f"unknown caption baseline {kind!r}; expected constant or retrieval")
    write_caption_submission(out, result, gold_ids=order, edition=edition)
    return result
