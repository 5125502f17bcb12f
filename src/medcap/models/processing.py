"""Processors: what a model does to an image (and a caption) before the network sees it.

Kept beside the models and saved in their folders, as timm's data config and transformers'
processors are, so training, prediction, explanations, baselines, the report and the web
app all read the preprocessing from the model instead of rebuilding it (REFERENCE §9).

- :class:`ConceptProcessor`: the concept detector's image size, resize mode (squash or pad),
  mean/std normalisation (or none: inputs in [0, 1], the authors' code) and JPEG draft size;
  saved as ``preprocessor_config.json`` (folders written before it hold ``preprocessing.json``,
  which is still read);
- :class:`CaptionProcessor`: the BLIP image processor and tokenizer with what a caption model
  adds to them: the optional pre-resize, the caption length, the text prompt and the
  :class:`~medcap.models.prompting.ConceptPrompt` and the
  :class:`~medcap.models.retrieval.RetrievalPrompt`; turns images into pixel values, captions
  into training targets and generated ids back into captions.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..errors import MedcapError
from ..fileio import read_json, write_text_atomic
from .prompting import CaptionEncoder, ConceptPrompt

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PROCESSOR_FILE = "preprocessor_config.json"
LEGACY_PROCESSOR_FILE = "preprocessing.json"     # concept folders written before ConceptProcessor
PROCESSOR_CLASS = "ConceptProcessor"


@dataclass
class ConceptProcessor:
    """PIL images -> the concept detector's input [B, 3, S, S] (REFERENCE §1: 224 px, ImageNet mean/std).

    ``resize``: "squash" (ignore the aspect ratio, as the paper) or "pad" (letterbox);
    ``mean``/``std``: None for inputs in [0, 1]; ``draft_size``: the smallest side a JPEG is
    decoded at (None: ``image_size``).
    """
    image_size: int = 224
    resize: str = "squash"
    mean: list[float] | None = None
    std: list[float] | None = None
    draft_size: int | None = None

    def __post_init__(self):
        if self.resize not in ("squash", "pad"):
            raise MedcapError(f"resize: expected squash or pad, got {self.resize!r}")
        if (self.mean is None) != (self.std is None):
            raise MedcapError("mean and std: give both or neither")
        self.image_size = int(self.image_size)
        self.mean = None if self.mean is None else [float(v) for v in self.mean]
        self.std = None if self.std is None else [float(v) for v in self.std]

    @classmethod
    def from_settings(cls, image_size: int = 224, resize: str = "squash", normalize: str = "imagenet"):
        """From a concept config's ``image_size``, ``resize`` and ``normalize`` (imagenet | none)."""
        imagenet = normalize == "imagenet"
        return cls(image_size, resize, list(IMAGENET_MEAN) if imagenet else None,
                   list(IMAGENET_STD) if imagenet else None)

    # -- the dict form (what medcap.data.items / transforms take) -----------------------------
    def to_dict(self) -> dict:
        out = {"image_size": self.image_size, "resize": self.resize, "mean": self.mean, "std": self.std}
        if self.draft_size is not None:
            out["draft_size"] = self.draft_size
        return out

    @classmethod
    def from_dict(cls, values: dict, label: str | Path | None = None) -> ConceptProcessor:
        from ..config import check_keys

        if not isinstance(values, dict):
            raise MedcapError("expected a JSON object of preprocessing settings", file=label)
        values = {k: v for k, v in values.items() if k != "processor_class"}
        check_keys(values, [f.name for f in fields(cls)], label, what="preprocessing key")
        if "image_size" not in values:
            raise MedcapError("preprocessing: image_size is missing", file=label)
        try:
            return cls(**values)
        except (TypeError, ValueError) as e:
            raise MedcapError(f"preprocessing: {e}", file=label) from None

    # -- images -------------------------------------------------------------------------------
    def resize_image(self, image):
        """PIL RGB -> uint8 tensor [3, S, S]."""
        from ..data.transforms import resize_image

        return resize_image(image, self.to_dict())

    def normalize(self, x):
        """uint8 [B, 3, S, S] -> float model input."""
        from ..data.transforms import normalize_batch

        return normalize_batch(x, self.to_dict())

    def preprocess(self, images: Sequence):
        """PIL RGB images -> model input [B, 3, S, S] (float32)."""
        import torch

        return self.normalize(torch.stack([self.resize_image(im) for im in images]))

    __call__ = preprocess

    # -- folders ------------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path) -> Path:
        path = Path(folder) / PROCESSOR_FILE
        write_text_atomic(path, json.dumps({"processor_class": PROCESSOR_CLASS, **asdict(self)}, indent=2) + "\n")
        return path

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> ConceptProcessor:
        """Read ``preprocessor_config.json`` (or an older folder's ``preprocessing.json``)."""
        folder = Path(folder)
        for name in (PROCESSOR_FILE, LEGACY_PROCESSOR_FILE):
            path = folder / name
            if path.is_file():
                return cls.from_dict(read_json(path, expect=None), path)  # damaged -> one line naming it
        raise MedcapError(f"model folder is missing {PROCESSOR_FILE}", file=folder)


class ImageTransform:
    """PIL RGB images -> BLIP pixel values [B, 3, S, S] (resize, rescale, CLIP mean/std); picklable."""

    def __init__(self, image_processor, pre_resize: int | None = None):
        self.image_processor, self.pre_resize = image_processor, pre_resize

    @property
    def draft_size(self) -> int:
        """The smallest side a JPEG may be decoded at (medcap.data.images.load_image's draft_size)."""
        size = self.image_processor.size
        return min(self.pre_resize or 10**6, size["height"] if isinstance(size, dict) else size.height)

    def __call__(self, images: Sequence):
        if self.pre_resize:  # the authors' code squashed every image to 224 px before the processor
            images = [im.resize((self.pre_resize, self.pre_resize)) for im in images]
        return self.image_processor(list(images), return_tensors="pt")["pixel_values"]


class CaptionProcessor:
    """BLIP image processor + tokenizer + prompt building: everything a captioner does to its inputs.

    ``blip`` is a transformers ``BlipProcessor``; ``max_length`` the longest caption in tokens
    (REFERENCE §1: 200); ``pre_resize`` None or a square size images are first squashed to;
    ``prompt`` text the decoder continues (cut from the output); ``concept_prompt`` None or the
    :class:`ConceptPrompt` of a knowledge-guided model; ``retrieval_prompt`` None or the
    :class:`~.retrieval.RetrievalPrompt` of a retrieval-augmented one. Saved with :meth:`save_pretrained`
    (the BLIP processor's files; medcap's settings go in the captioner's metadata file).
    """

    def __init__(self, blip, max_length: int = 200, pre_resize: int | None = None, prompt: str = "",
                 concept_prompt: ConceptPrompt | None = None, retrieval_prompt=None):
        self.blip, self.pre_resize, self.prompt = blip, pre_resize, prompt
        self.concept_prompt, self.retrieval_prompt = concept_prompt, retrieval_prompt
        self.max_length = max_length

    @property
    def tokenizer(self):
        return self.blip.tokenizer

    @tokenizer.setter
    def tokenizer(self, tokenizer) -> None:
        self.blip.tokenizer = tokenizer
        tokenizer.model_max_length = self.max_length

    @property
    def image_processor(self):
        return self.blip.image_processor

    @property
    def max_length(self) -> int:
        return self._max_length

    @max_length.setter
    def max_length(self, value: int) -> None:
        self._max_length = int(value)
        self.blip.tokenizer.model_max_length = self._max_length

    @property
    def image_size(self) -> int:
        size = self.image_processor.size
        return size["height"] if isinstance(size, dict) else size.height

    @image_size.setter
    def image_size(self, size: int) -> None:
        self.image_processor.size = {"height": int(size), "width": int(size)}

    # -- images -------------------------------------------------------------------------------
    def image_transform(self) -> ImageTransform:
        """A picklable images -> pixel tensor function (for DataLoader workers)."""
        return ImageTransform(self.image_processor, self.pre_resize)

    def preprocess(self, images: Sequence):
        """PIL images (RGB) -> normalised pixel values [B, 3, S, S]."""
        return self.image_transform()(images)

    __call__ = preprocess

    def embedding_processor(self) -> ConceptProcessor:
        """The image size and mean/std as a :class:`ConceptProcessor` (squashed), for embedding
        images with the captioner's image encoder (the retrieval baseline)."""
        ip = self.image_processor
        return ConceptProcessor(self.image_size, "squash", list(ip.image_mean), list(ip.image_std))

    # -- text ---------------------------------------------------------------------------------
    def caption_lengths(self, captions: Sequence[str]) -> list[int]:
        """Token count of each caption with its [DEC] and [SEP] tokens (before truncation)."""
        enc = self.tokenizer(list(captions), truncation=False, verbose=False)  # verbose: no too-long warning
        return [len(ids) for ids in enc["input_ids"]]

    def caption_encoder(self, bos_token_id: int, padding: str = "longest") -> CaptionEncoder:
        """A picklable captions -> training targets function (for DataLoader workers)."""
        return CaptionEncoder(self.tokenizer, bos_token_id, self.max_length, self.prompt, padding)

    def prompt_ids(self) -> list[int]:
        """[CLS] prompt [SEP] ids; BLIP's generate() swaps [CLS] for [DEC] and drops the [SEP]."""
        return self.tokenizer(self.prompt.strip())["input_ids"]

    def concept_prompt_ids(self, concepts: Sequence[Iterable[str]] | None, n_images: int,
                           retrieved: Sequence[Sequence[str]] | None = None) -> list[list[int]] | None:
        """Each image's prompt ids, or None for a model without concept or retrieval prompts.

        The layout: [concept names] [SEP] [retrieved caption] [SEP] ... (either part absent when
        the model has no such prompt). A model trained with concept prompts needs ``concepts``
        (one CUI list per image), one trained with retrieval prompts ``retrieved`` (each image's
        nearest training captions, :meth:`RetrievalPrompt.retrieve`); a model ignores the other.
        """
        if self.concept_prompt is None and self.retrieval_prompt is None:
            return None
        rows = self._concept_rows(concepts, n_images) if self.concept_prompt is not None else [[]] * n_images
        if self.retrieval_prompt is None:
            return rows
        if retrieved is None or len(retrieved) != n_images:
            raise MedcapError("this captioner was trained with retrieval prompts: give every image's retrieved "
                              f"captions (got {'none' if retrieved is None else len(retrieved)}, expected {n_images})")
        index = self.retrieval_prompt
        return [row + index.ids(self.tokenizer, caps) for row, caps in zip(rows, retrieved, strict=True)]

    def _concept_rows(self, concepts, n_images: int) -> list[list[int]]:
        if concepts is None:
            raise MedcapError("this captioner was trained with concept prompts: give every image's concepts "
                              "(a concept submission, e.g. --concepts from `medcap predict concepts`)")
        if len(concepts) != n_images:
            raise MedcapError(f"got concepts for {len(concepts)} images, expected {n_images}")
        return [self.concept_prompt.ids(self.tokenizer, cuis) for cuis in concepts]

    def decode(self, ids, postprocess: bool = True) -> list[str]:
        """Token ids -> caption strings (special tokens dropped, spacing repaired by medcap.text)."""
        from ..text import postprocess_caption

        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return [postprocess_caption(t) if postprocess else " ".join(t.split()) for t in texts]

    # -- folders ------------------------------------------------------------------------------
    def settings(self) -> dict:
        """What the captioner's metadata file keeps of the processor."""
        out = {"image_size": self.image_size, "pre_resize": self.pre_resize, "max_length": self.max_length}
        if self.concept_prompt is not None:
            out["concept_prompt"] = self.concept_prompt.to_dict()
        if self.retrieval_prompt is not None:
            out["retrieval_prompt"] = self.retrieval_prompt.settings()
        return out

    def save_pretrained(self, folder: str | Path, retrieval: bool = False) -> None:
        """The BLIP processor's files (tokenizer, image processor) into ``folder``; ``retrieval``:
        also the retrieval index and embedder (a model folder, not a run's processor/)."""
        self.blip.save_pretrained(folder)
        if retrieval and self.retrieval_prompt is not None:
            self.retrieval_prompt.save_pretrained(folder)

    @classmethod
    def from_pretrained(cls, folder: str | Path, settings: dict | None = None, prompt: str = "",
                        label: str | Path | None = None) -> CaptionProcessor:
        """The BLIP processor of ``folder`` (or a hub id) with medcap's ``settings`` (metadata file)."""
        from transformers import BlipProcessor

        settings = settings or {}
        blip = BlipProcessor.from_pretrained(folder)
        tok_max = getattr(blip.tokenizer, "model_max_length", 200)
        max_length = settings.get("max_length") or (tok_max if tok_max < 100_000 else 200)
        concept_prompt = None
        if settings.get("concept_prompt"):
            try:
                concept_prompt = ConceptPrompt.from_dict(settings["concept_prompt"])
            except MedcapError as e:
                raise MedcapError(str(e), file=label) from None
        # the retrieval prompt (medcap.models.retrieval) is loaded by Captioner.from_pretrained
        return cls(blip, max_length, settings.get("pre_resize"), prompt, concept_prompt)
