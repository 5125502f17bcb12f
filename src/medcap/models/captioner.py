"""BLIP image captioner: transformers' ``BlipForConditionalGeneration`` + ``BlipProcessor``.

The paper fine-tunes ``Salesforce/blip-image-captioning-large`` (ViT-L/16 image encoder, a
BERT-base decoder with cross-attention to the image) on the ImageCLEF captions (REFERENCE §1).
:class:`Captioner` wraps the model and its processor with what a caption run needs:

- ``Captioner.from_pretrained(name_or_folder)``: a hub name or a local folder; offline and
  without the weights it raises :class:`~medcap.errors.MissingWeightsError` saying how to get
  them;
- ``Captioner.from_scratch(size, captions)``: a randomly initialised BLIP of a named size
  (``tiny``, ``small``, ``base``, ``large``) with a WordPiece tokenizer trained on the given
  captions, for offline runs, tests and the demo; ``large`` has blip-large's sizes, read from
  ``configs/captions/blip-large-sizes.json`` (446 M parameters), for honest speed and memory
  measurements;
- ``loss``: the training loss of a batch from ``encode_captions`` (:class:`~.prompting.CaptionEncoder`);
- ``generate``: greedy or beam search, batched (:mod:`.generation`), decoded and repaired;
- ``save_pretrained(folder)``: model + :class:`~.processing.CaptionProcessor` files +
  ``generation_config.json`` (:class:`~.generation.GenerationSettings`) + ``medcap_captioner.json``
  (image size, pre-resize, caption length, concept prompt, training summary) + provenance.json and
  the README.md model card (:mod:`.card`), atomically.

Beside it: :mod:`.tokenization`, :mod:`.processing`, :mod:`.prompting`, :mod:`.generation`, :mod:`.location`.

Image size is a setting: when it differs from the vision encoder's (blip-large: 384 px; the paper
trains at 224 px) the position embeddings are interpolated (``interpolate_pos_encoding=True``).
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import MedcapError, first_line
from ..fileio import atomic_dir, write_text_atomic
from .card import load_provenance, write_model_files
from .generation import (
    GeneratedNoRepeatNGram,
    GenerationSettings,
    eval_batches,
    generate_ids,
    prompt_inputs,
    split_beams,
)
from .hub import cached, offline
from .processing import CaptionProcessor, ImageTransform
from .prompting import CaptionEncoder, ConceptPrompt
from .retrieval import RetrievalPrompt
from .tokenization import SPECIAL_TOKENS, train_wordpiece
from .weights import fit_report, verified, write_checksums
from .weights import quiet_transformers as _quiet_progress

__all__ = ["DEFAULT_MODEL", "METADATA_FILE", "SIZES", "SPECIAL_TOKENS", "CaptionEncoder", "Captioner", "ConceptPrompt",
           "GeneratedNoRepeatNGram", "GenerationSettings", "ImageTransform", "count_parameters",
           "large_sizes_config", "train_wordpiece"]

DEFAULT_MODEL = "Salesforce/blip-image-captioning-large"
METADATA_FILE = "medcap_captioner.json"
LARGE_SIZES_FILE = "blip-large-sizes.json"
METADATA_KEYS = ("format", "medcap_version", "source", "image_size", "pre_resize", "max_length", "concept_prompt",
                 "retrieval_prompt", "training",
                 "generation")   # generation: folders written before generation_config.json



def _layers(hidden: int, layers: int, heads: int, intermediate: int) -> dict[str, int]:
    return {"hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
            "intermediate_size": intermediate}


# Named sizes of a from-scratch BLIP: vision encoder and text decoder settings. ``large`` comes
# from LARGE_SIZES_FILE. ``small`` is the CPU demo model, sized after REFERENCE §8's
# prototype (hidden 192, 3 layers, 16 px patches); ``base`` is blip-image-captioning-base's
# ViT-B/16 + BERT-base.
SIZES: dict[str, dict[str, dict[str, int]]] = {
    "tiny": {"vision": {**_layers(32, 2, 2, 64), "patch_size": 8}, "text": _layers(32, 2, 2, 64)},
    "small": {"vision": {**_layers(192, 3, 3, 768), "patch_size": 16}, "text": _layers(192, 3, 3, 768)},
    "base": {"vision": {**_layers(768, 12, 12, 3072), "patch_size": 16}, "text": _layers(768, 12, 12, 3072)},
}


def large_sizes_config() -> dict:
    """blip-image-captioning-large's architecture (a BlipConfig dict), from the repo's JSON file."""
    res = resources.files("medcap") / "configs" / "captions" / LARGE_SIZES_FILE
    config = json.loads(res.read_text(encoding="utf-8"))
    return {k: v for k, v in config.items() if not k.startswith("_")}  # "_comment"


def size_config(size: str | dict, image_size: int) -> dict:
    """A BlipConfig dict of a named size (SIZES, or ``large``) or a copy of a given dict."""
    if isinstance(size, dict):
        config_dict = json.loads(json.dumps(size))
    elif size == "large":
        config_dict = large_sizes_config()
    elif size in SIZES:
        config_dict = {"vision_config": dict(SIZES[size]["vision"], image_size=image_size),
                       "text_config": dict(SIZES[size]["text"])}
    else:
        raise MedcapError(f"unknown captioner size {size!r}; expected one of: {', '.join([*SIZES, 'large'])}")
    config_dict.setdefault("text_config", {})
    config_dict.setdefault("vision_config", {})
    return config_dict


def fit_to_tokenizer(config_dict: dict, tokenizer, image_size: int, max_length: int, patch_size: int | None = None,
                     dropout: float = 0.0) -> dict:
    """``config_dict`` with the tokenizer's special-token ids and vocabulary, for a from-scratch model."""
    text_cfg, vision_cfg = config_dict["text_config"], config_dict["vision_config"]
    fixed_vocab = text_cfg.get("vocab_size")
    ids = tokenizer.convert_tokens_to_ids
    text_cfg.update(
        vocab_size=max(len(tokenizer), fixed_vocab or 0),
        encoder_hidden_size=vision_cfg.get("hidden_size", 768),
        bos_token_id=ids("[DEC]"), eos_token_id=ids("[SEP]"), sep_token_id=ids("[SEP]"),
        pad_token_id=ids("[PAD]"),
        max_position_embeddings=max(text_cfg.get("max_position_embeddings", 512), max_length + 64),
    )
    # blip's vision config defaults to initializer_range 1e-10 (it is always loaded from
    # pretrained weights): a model trained from scratch needs the usual 0.02.
    vision_cfg.setdefault("initializer_range", 0.02)
    vision_cfg.setdefault("image_size", image_size)
    if patch_size:
        vision_cfg["patch_size"] = patch_size
    if dropout:  # BLIP's configs default to no dropout (pretrained on 129 M pairs)
        text_cfg.update(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
        vision_cfg.update(attention_dropout=dropout)
    return config_dict


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


class Captioner:
    """A BLIP captioning model with its processor and the settings to run it.

    Attributes: ``model`` (BlipForConditionalGeneration), ``processor``
    (:class:`~.processing.CaptionProcessor`: image processor, tokenizer, ``image_size``,
    ``max_length``, ``pre_resize``, ``concept_prompt``, all also readable here) and
    ``generation`` (:class:`GenerationSettings`). A model trained with a
    :class:`ConceptPrompt` needs every image's concepts.
    """

    def __init__(self, model, processor, *, image_size: int | None = None, max_length: int = 200,
                 pre_resize: int | None = None, generation: GenerationSettings | None = None, source: str = "",
                 concept_prompt: ConceptPrompt | None = None):
        self.model = model
        if not isinstance(processor, CaptionProcessor):  # a transformers BlipProcessor
            processor = CaptionProcessor(processor, max_length, pre_resize, concept_prompt=concept_prompt)
        self.processor = processor
        self.image_size = image_size or model.config.vision_config.image_size
        self.max_length = int(max_length)
        self.pre_resize = pre_resize
        self.generation = generation or GenerationSettings()
        self.source = source
        self.provenance: dict | None = None   # provenance.json: training data, scores, config (models.card)
        if concept_prompt is not None:
            self.concept_prompt = concept_prompt

    # settings kept by the processor (what it does to images and captions)
    image_size = property(lambda self: self.processor.image_size,
                          lambda self, v: setattr(self.processor, "image_size", v))
    max_length = property(lambda self: self.processor.max_length,
                          lambda self, v: setattr(self.processor, "max_length", v))
    pre_resize = property(lambda self: self.processor.pre_resize,
                          lambda self, v: setattr(self.processor, "pre_resize", v))
    concept_prompt = property(lambda self: self.processor.concept_prompt,
                              lambda self, v: setattr(self.processor, "concept_prompt", v))

    @property
    def generation(self) -> GenerationSettings:
        return self._generation

    @generation.setter
    def generation(self, settings: GenerationSettings) -> None:
        self._generation = settings
        self.processor.prompt = settings.prompt  # the text prompt is an input as well

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_scratch(cls, size: str | dict = "tiny", captions: Iterable[str] = (), *, image_size: int = 96,
                     vocab_size: int = 4000, max_length: int = 200, lowercase: bool = True, seed: int | None = None,
                     generation: GenerationSettings | None = None, tokenizer=None,
                     patch_size: int | None = None, dropout: float = 0.0) -> Captioner:
        """A randomly initialised BLIP of a named size (or a BlipConfig dict), tokenizer from ``captions``.

        ``large`` keeps blip-large's vocabulary size (30524) and builds the vision encoder for
        384 px; every other size is built for ``image_size`` and a vocabulary of at most
        ``vocab_size`` WordPieces learned from ``captions``.
        """
        import torch
        from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

        config_dict = size_config(size, image_size)
        fixed_vocab = config_dict["text_config"].get("vocab_size")
        if tokenizer is None:
            tokenizer = train_wordpiece(captions, vocab_size=min(vocab_size, fixed_vocab or vocab_size),
                                        lowercase=lowercase, max_length=max_length)
        config = BlipConfig(**fit_to_tokenizer(config_dict, tokenizer, image_size, max_length, patch_size, dropout))
        if seed is not None:
            torch.manual_seed(seed)
        model = BlipForConditionalGeneration(config)
        image_processor = BlipImageProcessor(size={"height": image_size, "width": image_size})
        processor = BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)
        return cls(model, processor, image_size=image_size, max_length=max_length, generation=generation,
                   source=f"scratch:{size if isinstance(size, str) else 'custom'}")

    @classmethod
    def from_pretrained(cls, name_or_folder: str | Path = DEFAULT_MODEL, *, image_size: int | None = None,
                        max_length: int | None = None, generation: GenerationSettings | None = None,
                        pre_resize: int | None = None, revision: str | None = None) -> Captioner:
        """Load a hub model (``Salesforce/blip-image-captioning-large``), a saved folder or a run folder.

        Where the model is: :func:`~.location.resolve_model_folder` (a hub id at ``revision``).
        Settings saved by medcap in the folder are used unless given here. A hub name whose weights
        are not on this machine (no network, nothing in the Hugging Face cache) raises
        MissingWeightsError; a folder missing a file raises MedcapError naming it.
        """
        from transformers import BlipForConditionalGeneration

        from .location import VLM_MARKER, resolve_model_folder

        # resolve_model_folder also restores a folder a crash left mid-swap (.model.old)
        where = resolve_model_folder(name_or_folder, "captions", revision=revision)
        if (where / VLM_MARKER).is_file():  # else BLIP's config reader fails on it with a misleading line
            raise MedcapError(f"this is a vision-language captioner ({VLM_MARKER}), not a BLIP one: load it with "
                              "medcap.inference.captions.load_captioner or VLMCaptioner.from_pretrained", file=where)
        meta: dict[str, Any] = {}
        from .nonfinite import check_finite_weights

        _check_model_folder(where)
        if (where / METADATA_FILE).is_file():
            meta = _read_metadata(where / METADATA_FILE)
        try:
            # verified: checksums.json; the load report is an error here, never a warning (weights.py)
            with verified(where), _quiet_progress():
                model, report = BlipForConditionalGeneration.from_pretrained(
                    where, output_loading_info=True, ignore_mismatched_sizes=True)
                fit_report(report.get("missing_keys", ()), report.get("unexpected_keys", ()),
                           report.get("mismatched_keys", ()), where, "captioner of config.json")
                processor = CaptionProcessor.from_pretrained(where, meta, label=where / METADATA_FILE)
                processor.retrieval_prompt = RetrievalPrompt.from_settings(where, meta.get("retrieval_prompt"))
        except MedcapError:
            raise
        except Exception as e:  # a damaged file raises whatever its reader raises (safetensors: its own type)
            raise MedcapError(f"cannot load the captioner from this folder (a file is damaged, truncated or "
                              f"not a BLIP model): {first_line(e)}", file=where) from None
        check_finite_weights(model.state_dict().values(), where, "the captioner")
        if generation is None:
            generation = GenerationSettings.from_pretrained(where, meta.get("generation"), where / METADATA_FILE)
        size = processor.image_processor.size
        image_size = image_size or meta.get("image_size") or getattr(size, "height", None) or size["height"]
        captioner = cls(model, processor, image_size=image_size, max_length=max_length or processor.max_length,
                        pre_resize=pre_resize if pre_resize is not None else processor.pre_resize,
                        generation=generation or GenerationSettings(), source=meta.get("source", str(name_or_folder)))
        captioner.provenance = load_provenance(where)
        return captioner

    def save_pretrained(self, folder: str | Path, **extra) -> Path:
        """Write model (safetensors), processor and medcap settings; the folder appears whole or not at all."""
        folder = Path(folder)
        with atomic_dir(folder) as tmp:
            self.write_folder(tmp, **extra)
        return folder

    def write_folder(self, folder: Path, model=None, training: dict | None = None,
                     provenance: dict | None = None) -> None:
        """Write the model folder's files into an existing (temporary) folder; ``model``: another
        module with the same architecture (the engine's unwrapped training model); ``provenance``:
        training data and scores (models.card; default: the loaded folder's)."""
        model = model or self.model
        with _quiet_progress():
            model.save_pretrained(folder)
            self.processor.save_pretrained(folder, retrieval=True)
        # after the model's own generation_config.json: ours keeps its token ids, adds the settings
        self.generation.save_pretrained(folder, base=getattr(model, "generation_config", None))
        meta = self.metadata()
        if training:
            meta["training"] = training
        write_text_atomic(Path(folder) / METADATA_FILE, json.dumps(meta, indent=1) + "\n")
        write_model_files(folder, provenance or self.provenance, "captioner")
        write_checksums(folder)

    def metadata(self) -> dict:
        """medcap_captioner.json: the processor's settings and where the model came from
        (generation settings: generation_config.json)."""
        from .. import __version__

        return {"format": 2, "medcap_version": __version__, "source": self.source, **self.processor.settings()}

    # -- properties ---------------------------------------------------------------------------
    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def interpolate_pos_encoding(self) -> bool:
        """True when images are fed at another size than the vision encoder was built for."""
        return self.image_size != self.model.config.vision_config.image_size

    @property
    def device(self):
        return next(self.model.parameters()).device

    def num_parameters(self) -> int:
        return count_parameters(self.model)

    # -- inputs (CaptionProcessor) ------------------------------------------------------------
    def image_transform(self) -> ImageTransform:
        """A picklable images -> pixel tensor function (for DataLoader workers)."""
        return self.processor.image_transform()

    def pixel_values(self, images: Sequence):
        """PIL images (RGB) -> normalised tensor [B, 3, image_size, image_size]."""
        return self.processor(images)

    def caption_lengths(self, captions: Sequence[str]) -> list[int]:
        """Token count of each caption with its [DEC] and [SEP] tokens (before truncation)."""
        return self.processor.caption_lengths(captions)

    def caption_encoder(self, padding: str = "longest") -> CaptionEncoder:
        """A picklable captions -> training targets function (for DataLoader workers)."""
        return self.processor.caption_encoder(self.model.config.text_config.bos_token_id, padding)

    def encode_captions(self, captions: Sequence[str], padding: str = "longest") -> dict:
        """Training targets ``input_ids``, ``attention_mask``, ``labels`` [B, T]: see :class:`CaptionEncoder`."""
        return self.caption_encoder(padding)(captions)

    def concept_prompt_ids(self, concepts: Sequence[Iterable[str]] | None, n_images: int,
                           retrieved: Sequence[Sequence[str]] | None = None) -> list[list[int]] | None:
        """Each image's concept and retrieval prompt ids, or None for a model without either."""
        return self.processor.concept_prompt_ids(concepts, n_images, retrieved)

    # -- training -----------------------------------------------------------------------------
    def loss(self, model, batch: dict):
        """Mean token cross-entropy of a batch from :meth:`encode_captions` + ``pixel_values``."""
        return model(pixel_values=batch["pixel_values"], input_ids=batch["input_ids"],
                     attention_mask=batch["attention_mask"], labels=batch["labels"],
                     interpolate_pos_encoding=self.interpolate_pos_encoding).loss

    # -- generation ---------------------------------------------------------------------------
    def generate_ids(self, pixel_values, model=None, prompts: Sequence[Sequence[int]] | None = None,
                     return_beams: int = 0, **overrides):
        """Generated token ids [B, T] after the prompt (:func:`~.generation.generate_ids`; with
        ``return_beams``: the beams and their scores).

        ``prompts``: one concept prompt per image (:meth:`concept_prompt_ids`), else the text prompt.
        """
        import dataclasses

        settings = dataclasses.replace(self.generation, **overrides)
        text_cfg = self.model.config.text_config
        input_ids, attention_mask = prompt_inputs(pixel_values, self.processor.prompt_ids(), prompts,
                                                  text_cfg.bos_token_id, self.tokenizer.sep_token_id,
                                                  self.tokenizer.pad_token_id)
        return generate_ids(model or self.model, pixel_values, input_ids, attention_mask, settings,
                            self.interpolate_pos_encoding, return_beams)

    def beams(self, images: Sequence, concepts: Sequence[Iterable[str]] | None = None,
              retrieved: Sequence[Sequence[str]] | None = None, num_beams: int = 5) -> list[tuple[list[str], object]]:
        """Per PIL image: its ``num_beams`` best captions (best first) and their length-normalised
        log-probabilities (medcap.inference.rerank picks among them); one batch, no autograd."""
        if retrieved is None and self.processor.retrieval_prompt is not None:
            retrieved = self.processor.retrieval_prompt.retrieve_images(images)
        pixels = self.pixel_values(images).to(self.device)
        ids, scores = self.generate_ids(pixels, prompts=self.concept_prompt_ids(concepts, len(images), retrieved),
                                        return_beams=num_beams)
        return split_beams(self.decode(ids), scores, num_beams)

    def decode(self, ids, postprocess: bool | None = None) -> list[str]:
        """Token ids -> caption strings (special tokens dropped, spacing repaired)."""
        return self.processor.decode(ids, self.generation.postprocess if postprocess is None else postprocess)

    def generate(self, images: Sequence, batch_size: int = 8, concepts: Sequence[Iterable[str]] | None = None,
                 retrieved: Sequence[Sequence[str]] | None = None, **overrides) -> list[str]:
        """Captions for PIL images, ``batch_size`` at a time. ``concepts``: each image's CUIs (needed by
        a model trained with concept prompts); ``retrieved``: each image's nearest training captions
        (a retrieval-prompted model; retrieved from ``images`` when None). ``overrides``: GenerationSettings."""

        if retrieved is None and self.processor.retrieval_prompt is not None:  # retrieved here when not given
            retrieved = self.processor.retrieval_prompt.retrieve_images(images)
        prompts = self.concept_prompt_ids(concepts, len(images), retrieved)
        postprocess = overrides.pop("postprocess", None)

        def caption(part: slice) -> list[str]:
            pixels = self.pixel_values(images[part]).to(self.device)
            rows = None if prompts is None else prompts[part]
            return self.decode(self.generate_ids(pixels, prompts=rows, **overrides), postprocess)

        return eval_batches(self.model, len(images), batch_size, caption)

    def image_embedder(self):
        """The image encoder as an embedder for :func:`medcap.inference.concepts.image_embeddings`: patch
        tokens reshaped to a feature map [B, C, h, w] (the embedding is their mean)."""
        import torch

        captioner = self

        class BlipImageFeatures(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.vision = captioner.model.vision_model
                self.preprocessing = captioner.processor.embedding_processor().to_dict()

            def forward_features(self, x):
                tokens = self.vision(pixel_values=x, interpolate_pos_encoding=captioner.interpolate_pos_encoding)
                patches = tokens.last_hidden_state[:, 1:]                     # [B, h*w, C] (no [CLS])
                side = round(patches.shape[1] ** 0.5)
                return patches.transpose(1, 2).reshape(x.shape[0], -1, side, patches.shape[1] // side)

        return BlipImageFeatures()

    # -- training options ---------------------------------------------------------------------
    def freeze_vision(self) -> None:
        """Train only the text decoder (the image encoder keeps its weights)."""
        for p in self.model.vision_model.parameters():
            p.requires_grad_(False)

    def enable_gradient_checkpointing(self) -> None:
        """Recompute activations in the backward pass: less memory, about a third more time."""
        kwargs = {"use_reentrant": False}
        enable = getattr(self.model, "activation_checkpointing_enable", None)  # transformers >= 5.x
        if enable is not None:
            enable(activation_checkpointing_kwargs=kwargs)
        else:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        self.model.config.text_config.use_cache = False


# -- helpers ----------------------------------------------------------------------------------
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json",
                 "pytorch_model.bin", "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")
_IMAGE_PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


def _check_model_folder(folder: Path) -> None:
    """MedcapError naming every missing file of a model folder (before transformers is asked)."""
    if not folder.is_dir():
        raise MedcapError("expected a model folder, got a file", file=folder)
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    for group in (_WEIGHT_FILES, _TOKENIZER_FILES, _IMAGE_PROCESSOR_FILES):
        if not any((folder / f).is_file() for f in group):
            missing.append(" or ".join(group[:2]))
    if missing:
        raise MedcapError(f"not a complete captioner folder: missing {', '.join(missing)} "
                          "(a folder written by `medcap train captions` or Captioner.save_pretrained has them all)",
                          file=folder)


def _read_metadata(path: Path) -> dict:
    from ..fileio import read_json

    meta = read_json(path)  # damaged, truncated, unreadable or not an object: one line naming it
    from ..config import check_keys
    from ..config_checks import check_mapping

    check_keys(meta, METADATA_KEYS, path, what="key")
    check_mapping(meta, {"image_size": int | None, "max_length": int | None, "pre_resize": int | None}, str(path))
    return meta


def check_pretrained_available(name: str) -> None:
    """MissingWeightsError now, before any data is read, when the hub model ``name`` is not in the
    cache and the hub cannot be reached (offline, HF_HUB_OFFLINE=1). Folders and cached ids pass."""
    from ..errors import MissingWeightsError
    from .location import is_hub_id, missing_weights_message

    if is_hub_id(str(name)) and offline() and not cached(str(name), ("config.json",)):
        raise MissingWeightsError(missing_weights_message(str(name)))
