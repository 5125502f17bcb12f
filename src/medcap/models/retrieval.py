"""Retrieval for captions: nearest training images and their captions as part of the decoder's prompt.

- :func:`nearest_neighbours`: cosine kNN on L2-normalised embeddings (the kNN and retrieval
  baselines, the concept ensemble and the retrieval prompt share it);
- :func:`plain_backbone`: a backbone without a trained head, shaped like a ConceptDetector;
- :class:`RetrievalPrompt`: the retrieval index of a captioner (every training caption and its
  image embedding) and the embedder that made it; an image's prompt gets the captions of its
  ``neighbours`` nearest training images (retrieval-augmented captioning, as the caption
  winners of ImageCLEFmedical did). Saved in the captioner folder: ``retrieval_index.safetensors``
  (embeddings + captions), the embedder (a copy of the concept detector folder in
  ``retrieval_embedder/``, or a plain backbone's spec) in ``medcap_captioner.json``.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import MedcapError

INDEX_FILE = "retrieval_index.safetensors"
EMBEDDER_DIR = "retrieval_embedder"


def nearest_neighbours(train_embeddings: np.ndarray, query_embeddings: np.ndarray, k: int,
                       exclude_self: bool = False, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Cosine kNN (embeddings are L2-normalised) -> (indices [Q, k], similarities [Q, k]).

    ``exclude_self``: the queries are the training images themselves, in the same order; each
    one's own row is never its neighbour (training a retrieval prompt, choosing k on training).
    """
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


def plain_backbone(name: str = "resnet18", image_size: int = 224, pretrained: bool = False,
                   pretrained_path: str | None = None):
    """A backbone without a trained head, shaped like a ConceptDetector for image embeddings."""
    from .backbones import create_backbone
    from .processing import ConceptProcessor

    backbone = create_backbone(name, pretrained=pretrained, pretrained_path=pretrained_path)
    backbone.preprocessing = ConceptProcessor.from_settings(image_size, "squash", "imagenet").to_dict()
    return backbone


def _seeded_backbone(spec: dict):
    """The plain backbone of ``spec`` (name, image_size, seed), random weights from the seed."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(spec["seed"]))
        return plain_backbone(spec["backbone"], int(spec["image_size"]))


def _checksum(model) -> float:
    return float(sum(p.detach().double().abs().sum() for p in model.parameters()))


class RetrievalPrompt:
    """The captions of an image's nearest training images, as decoder prompt tokens.

    ``captions`` [N] and ``embeddings`` [N, C] (L2-normalised): the index; ``neighbours``: how
    many captions go in a prompt, nearest first; ``max_tokens``: the WordPiece budget they
    share (each gets ``max_tokens // neighbours``, then [SEP]); ``embedder``: the spec
    (``{"kind": "detector"}``: the copy in ``retrieval_embedder/``; ``{"kind": "backbone",
    "backbone", "image_size", "seed", "checksum"}``: a plain backbone rebuilt from its seed).
    """

    def __init__(self, captions: Sequence[str], embeddings: np.ndarray, neighbours: int = 1, max_tokens: int = 32,
                 embedder: dict | None = None):
        if neighbours < 1 or max_tokens < neighbours:
            raise MedcapError(f"retrieval prompts need neighbours >= 1 and max_tokens >= neighbours, got "
                              f"neighbours={neighbours}, max_tokens={max_tokens}")
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or len(embeddings) != len(captions) or not len(captions):
            raise MedcapError(f"retrieval index: expected one embedding per caption, got {len(captions)} captions "
                              f"and embeddings of shape {tuple(embeddings.shape)}")
        self.captions, self.embeddings = [str(c) for c in captions], embeddings
        self.neighbours, self.max_tokens = int(neighbours), int(max_tokens)
        self.embedder = dict(embedder or {"kind": "detector"})
        self.embedder_model = None      # the loaded embedder (set in training; loaded on demand)
        self.embedder_source: Path | None = None  # the detector folder copied in at save
        self.folder: Path | None = None           # the captioner folder it was loaded from

    # -- neighbours and prompt tokens ---------------------------------------------------------
    def retrieve(self, query_embeddings: np.ndarray, exclude_self: bool = False) -> list[list[str]]:
        """Each query's ``neighbours`` nearest training captions, nearest first. ``exclude_self``:
        the queries are the index's own images in order (training: never an image's own caption)."""
        idx, _ = nearest_neighbours(self.embeddings, np.asarray(query_embeddings, np.float32), self.neighbours,
                                    exclude_self=exclude_self)
        return [[self.captions[j] for j in row] for row in idx]

    def retrieve_images(self, images: Sequence) -> list[list[str]]:
        """:meth:`retrieve` for PIL images (the web app, reranking): embedded as
        ``medcap.inference.concepts.image_embeddings`` embeds files, with the embedder's preprocessing."""
        import torch

        from .processing import ConceptProcessor

        model = self.load_embedder().eval()
        prep = ConceptProcessor.from_dict(model.preprocessing)
        features = model.forward_features if hasattr(model, "forward_features") else model
        with torch.inference_mode():
            f = features(prep(images).to(next(model.parameters()).device)).float().mean(dim=(2, 3))
            emb = torch.nn.functional.normalize(f, dim=1).cpu().numpy()
        return self.retrieve(emb)

    def ids(self, tokenizer, captions: Sequence[str]) -> list[int]:
        """Token ids of the retrieved ``captions``: each cut to its share of ``max_tokens``, then [SEP]."""
        share = max(1, self.max_tokens // max(1, len(captions)))
        out: list[int] = []
        for caption in captions:
            pieces = tokenizer(caption, add_special_tokens=False, truncation=True, max_length=share)["input_ids"]
            out += pieces[:share] + [tokenizer.sep_token_id]
        return out

    # -- the embedder ---------------------------------------------------------------------------
    @classmethod
    def backbone_spec(cls, name: str, image_size: int, seed: int) -> tuple[dict, object]:
        """(spec, model) of a plain backbone with random weights from ``seed``."""
        spec = {"kind": "backbone", "backbone": name, "image_size": int(image_size), "seed": int(seed)}
        model = _seeded_backbone(spec)
        spec["checksum"] = _checksum(model)
        return spec, model

    def load_embedder(self, folder: str | Path | None = None):
        """The embedder (a ConceptDetector, ensemble or plain backbone); ``folder``: the captioner's."""
        if self.embedder_model is not None:
            return self.embedder_model
        if self.embedder.get("kind") == "backbone":
            model = _seeded_backbone(self.embedder)
            if not np.isclose(_checksum(model), self.embedder.get("checksum", np.nan), rtol=1e-6):
                raise MedcapError("the retrieval prompt's plain backbone could not be rebuilt with the weights it "
                                  "was trained with (another timm/torch version?): retrain with retrieval_model",
                                  file=folder)
        else:
            from .concept_detector import ConceptDetector
            from .ensemble import ConceptEnsemble, is_ensemble_folder

            folder = folder or self.folder
            where = Path(folder or ".") / EMBEDDER_DIR
            if not where.is_dir():
                raise MedcapError(f"the captioner folder is missing {EMBEDDER_DIR}/ (its retrieval embedder)",
                                  file=folder)
            model = (ConceptEnsemble if is_ensemble_folder(where) else ConceptDetector).from_pretrained(where)
        self.embedder_model = model
        return model

    # -- folders ------------------------------------------------------------------------------
    def settings(self) -> dict:
        return {"neighbours": self.neighbours, "max_tokens": self.max_tokens, "embedder": self.embedder}

    def save_pretrained(self, folder: str | Path) -> None:
        """The index (and a detector embedder's folder) into an existing (temporary) model folder."""
        import shutil

        from safetensors.numpy import save_file

        folder = Path(folder)
        save_file({"embeddings": self.embeddings}, str(folder / INDEX_FILE),
                  metadata={"captions": json.dumps(self.captions)})
        if self.embedder.get("kind") != "backbone":
            if self.embedder_source is not None:
                shutil.copytree(self.embedder_source, folder / EMBEDDER_DIR, dirs_exist_ok=True)
            elif self.embedder_model is not None:
                self.embedder_model.save_pretrained(folder / EMBEDDER_DIR)

    @classmethod
    def from_settings(cls, folder: str | Path, settings) -> RetrievalPrompt | None:
        """The captioner folder's retrieval prompt (None when its metadata has none)."""
        if not settings:
            return None
        if not isinstance(settings, dict):
            raise MedcapError("retrieval_prompt: expected neighbours, max_tokens and embedder",
                              file=Path(folder) / "medcap_captioner.json")
        return cls.from_pretrained(folder, settings)

    @classmethod
    def from_pretrained(cls, folder: str | Path, settings: dict) -> RetrievalPrompt:
        from safetensors import SafetensorError, safe_open
        from safetensors.numpy import load_file

        path = Path(folder) / INDEX_FILE
        if not path.is_file():
            raise MedcapError(f"the captioner was trained with retrieval prompts but its folder is missing "
                              f"{INDEX_FILE}", file=folder)
        try:
            with safe_open(str(path), "np") as f:
                captions = json.loads((f.metadata() or {})["captions"])
            embeddings = load_file(str(path))["embeddings"]
            prompt = cls(captions, embeddings, int(settings["neighbours"]), int(settings["max_tokens"]),
                         settings.get("embedder"))
        except (SafetensorError, OSError, KeyError, TypeError, ValueError) as e:
            raise MedcapError(f"cannot read the retrieval index ({type(e).__name__}: {e})", file=path) from None
        prompt.folder = Path(folder)
        return prompt
