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
- ``encode_captions``: the training targets, with padding masked to -100 in the labels (the
  authors' code left padding in the loss, REFERENCE §2) and the first token set to ``[DEC]``,
  the token generation starts from (as in the original BLIP);
- ``generate``: greedy or beam search, batched, with an optional text prompt that is cut
  from the output, and decoded text repaired (:mod:`medcap.text`);
- ``concept_prompt`` (:class:`ConceptPrompt`, optional): knowledge-guided captions, the
  decoder starts from the names of each image's concepts (gold ones in training, a concept
  detector's in prediction);
- ``save_pretrained(folder)``: model + processor + ``medcap_captioner.json`` (image size,
  caption length, generation settings), written atomically.

Image size is a setting: when it differs from the size the vision encoder was built for
(blip-large: 384 px; the paper trains at 224 px) the position embeddings are interpolated
(``interpolate_pos_encoding=True``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import MedcapError, MissingWeightsError
from ..fileio import atomic_dir, write_text_atomic
from ..text import postprocess_caption

DEFAULT_MODEL = "Salesforce/blip-image-captioning-large"
METADATA_FILE = "medcap_captioner.json"
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]")  # [PAD] gets id 0
LARGE_SIZES_FILE = "blip-large-sizes.json"


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

_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class GenerationSettings:
    """How captions are generated (defaults: the authors' submitted run, REFERENCE §2)."""
    num_beams: int = 5                  # 1 = greedy
    no_repeat_ngram_size: int = 2       # 0 = off
    max_new_tokens: int = 200
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0
    prompt: str = ""                    # text the decoder continues; cut from the output
    postprocess: bool = True            # repair WordPiece spacing, restore acronyms (medcap.text)

    @classmethod
    def from_dict(cls, values: dict | None) -> GenerationSettings:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (values or {}).items() if k in names})


def large_sizes_config() -> dict:
    """blip-image-captioning-large's architecture (a BlipConfig dict), from the repo's JSON file."""
    res = resources.files("medcap") / "configs" / "captions" / LARGE_SIZES_FILE
    config = json.loads(res.read_text(encoding="utf-8"))
    return {k: v for k, v in config.items() if not k.startswith("_")}  # "_comment"


def train_wordpiece(captions: Iterable[str], vocab_size: int = 4000, lowercase: bool = True,
                    max_length: int = 200):
    """A BERT WordPiece tokenizer whose vocabulary is learned from ``captions``, set up as BLIP expects.

    The vocabulary: BLIP's special tokens, every character seen (as a word start and as a
    ``##`` continuation, so no word is unknown), then the most frequent words, ties in
    alphabetical order, up to ``vocab_size``. A word outside it is spelled in pieces. It is
    built here rather than with the ``tokenizers`` WordPiece trainer because that trainer is
    not deterministic (three runs on the same captions gave three different vocabularies: it
    breaks ties in hash-map order), and a seed must give the same model.

    ``[DEC]`` is the beginning-of-sequence token generation starts from, ``[SEP]`` ends a
    caption, ``[PAD]`` (id 0) pads. transformers 5 ignores ``vocab_file=`` on BertTokenizer, so
    the vocabulary is passed as a dict (``vocab=``).
    """
    from collections import Counter

    from tokenizers import normalizers, pre_tokenizers
    from transformers import BertTokenizer

    normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    splitter = pre_tokenizers.BertPreTokenizer()
    words: Counter[str] = Counter()
    for caption in captions:
        if caption and caption.strip():
            words.update(w for w, _ in splitter.pre_tokenize_str(normalizer.normalize_str(caption)))
    if not words:
        raise MedcapError("cannot build a tokenizer: no non-empty training captions")
    chars = sorted({ch for w in words for ch in w})
    vocab = list(SPECIAL_TOKENS) + chars + [f"##{ch}" for ch in chars]
    known = set(vocab)
    for word, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= vocab_size:
            break
        if word not in known:
            vocab.append(word)
    return BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=lowercase, bos_token="[DEC]",
                         model_max_length=max_length)


class ConceptPrompt:
    """An image's concepts as the decoder's prompt (knowledge-guided captioning, the paper's future work).

    The prompt is the canonical names of the image's CUIs, the most frequent in training first,
    joined by "; " and cut to ``max_tokens`` WordPieces, then [SEP]; the caption follows it.
    Training uses each image's gold CUIs, prediction a concept detector's (a concept
    submission), so the caption can name what the detector found. CUIs not seen in training
    are left out (the model never learned them). ``concepts``: (CUI, name) pairs in prompt
    order. Kept in the model folder's medcap_captioner.json.
    """

    def __init__(self, concepts: Sequence[tuple[str, str]], max_tokens: int = 24):
        if max_tokens < 1:
            raise MedcapError(f"concept prompts need at least 1 token, got max_tokens={max_tokens}")
        self.concepts = [(str(c), str(n)) for c, n in concepts]
        self.max_tokens = int(max_tokens)
        self.rank = {c: i for i, (c, _) in enumerate(self.concepts)}
        self.names = dict(self.concepts)

    @classmethod
    def from_vocabulary(cls, vocab, max_tokens: int = 24) -> ConceptPrompt:
        """From a :class:`~medcap.data.vocab.ConceptVocabulary`: most frequent CUI first, its
        name from cui_mapping.csv (the CUI itself where the mapping has none)."""
        order = sorted(vocab.cuis, key=lambda c: (-vocab.counts.get(c, 0), c))
        return cls([(c, vocab.names.get(c, c)) for c in order], max_tokens)

    def text(self, cuis: Iterable[str]) -> str:
        known = sorted({c for c in cuis if c in self.rank}, key=self.rank.__getitem__)
        return "; ".join(self.names[c] for c in known)

    def ids(self, tokenizer, cuis: Iterable[str]) -> list[int]:
        """Token ids of the prompt (without [DEC]): at most ``max_tokens`` WordPieces, then [SEP]."""
        text = self.text(cuis)
        pieces = tokenizer(text, add_special_tokens=False)["input_ids"][:self.max_tokens] if text else []
        return pieces + [tokenizer.sep_token_id]

    def to_dict(self) -> dict:
        return {"max_tokens": self.max_tokens, "concepts": [list(pair) for pair in self.concepts]}

    @classmethod
    def from_dict(cls, values: dict) -> ConceptPrompt:
        try:
            return cls([tuple(pair) for pair in values["concepts"]], int(values["max_tokens"]))
        except (KeyError, TypeError, ValueError) as e:
            raise MedcapError(f"concept_prompt: expected max_tokens and (CUI, name) pairs ({e})") from None


class GeneratedNoRepeatNGram:
    """``no_repeat_ngram_size`` over the generated tokens only (a transformers LogitsProcessor).

    transformers' own processor also counts the prompt, so a caption could not repeat a
    concept name its prompt holds: with n = 3, a prompt "plain x-ray" made the decoder write
    "plain x 2.8 cm-ray" and "optical coherence tomography" became "optical coherence
    publication". ``start``: the number of prompt columns in ``input_ids``.
    """

    def __init__(self, n: int, start: int):
        self.n, self.start = int(n), int(start)

    def __call__(self, input_ids, scores):
        n = self.n
        generated = input_ids[:, self.start:].tolist()
        for row, tokens in enumerate(generated):
            if len(tokens) < n:  # no whole n-gram generated yet
                continue
            prefix = tuple(tokens[len(tokens) - n + 1:]) if n > 1 else ()
            banned = {tokens[i + n - 1] for i in range(len(tokens) - n + 1) if tuple(tokens[i:i + n - 1]) == prefix}
            if banned:
                scores[row, list(banned)] = -float("inf")
        return scores


class ImageTransform:
    """PIL RGB images -> BLIP pixel values [B, 3, S, S] (resize, rescale, CLIP mean/std)."""

    def __init__(self, image_processor, pre_resize: int | None = None):
        self.image_processor, self.pre_resize = image_processor, pre_resize

    @property
    def draft_size(self) -> int:
        """The smallest side a JPEG may be decoded at (medcap.data.images.load_image's draft_size)."""
        size = self.image_processor.size
        return min(self.pre_resize or 10**6, size["height"] if isinstance(size, dict) else size.height)

    def __call__(self, images: Sequence) -> torch.Tensor:  # noqa: F821
        if self.pre_resize:  # the authors' code squashed every image to 224 px before the processor
            images = [im.resize((self.pre_resize, self.pre_resize)) for im in images]
        return self.image_processor(list(images), return_tensors="pt")["pixel_values"]


class CaptionEncoder:
    """Captions -> training targets: ``input_ids``, ``attention_mask`` and ``labels`` (tensors [B, T]).

    With ``prompts`` (one list of token ids per caption, from :meth:`ConceptPrompt.ids`) each
    sequence is [DEC] + its prompt + the caption; the prompt is an input, not a target.

    Captions are truncated to ``max_length`` tokens (the final [SEP] kept). ``padding`` is
    "longest" (pad to the batch's longest caption) or "max_length" (to ``max_length``, as the
    paper did); with the padding masked out of the loss both give the same loss. Labels:
    padding and the prompt are -100 (ignored by the loss; the authors' code trained on the
    padding, REFERENCE §2). The first token is [DEC], the token generation starts from (BLIP's
    generate() puts it in place of [CLS]).
    """

    def __init__(self, tokenizer, bos_token_id: int, max_length: int, prompt: str = "", padding: str = "longest"):
        self.tokenizer, self.bos_token_id, self.max_length = tokenizer, bos_token_id, max_length
        self.prompt, self.padding = prompt.strip(), padding
        # [DEC] + the prompt's tokens (without [CLS] / [SEP]) are inputs, not targets
        self.prompt_length = len(tokenizer(self.prompt)["input_ids"]) - 1 if self.prompt else 0

    def __call__(self, captions: Sequence[str], prompts: Sequence[Sequence[int]] | None = None) -> dict:
        if prompts is not None:
            return self._with_prompts(captions, prompts)
        texts = [f"{self.prompt} {c}".strip() if self.prompt else c for c in captions]
        enc = self.tokenizer(texts, padding=self.padding, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        input_ids, attention_mask = enc["input_ids"], enc["attention_mask"]
        input_ids[:, 0] = self.bos_token_id
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        labels[:, :self.prompt_length] = -100
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    def _with_prompts(self, captions: Sequence[str], prompts: Sequence[Sequence[int]]) -> dict:
        """[DEC] + prompt + caption tokens (caption truncated to max_length), padded on the right."""
        import torch

        caption_ids = self.tokenizer(list(captions), truncation=True, max_length=self.max_length)["input_ids"]
        rows = [[self.bos_token_id, *p, *ids[1:]] for p, ids in zip(prompts, caption_ids)]
        starts = [1 + len(p) for p in prompts]           # first caption token: the first target
        longest = max(len(r) for r in rows)
        width = longest if self.padding == "longest" else max(longest, self.max_length + max(starts) - 1)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, (row, start) in enumerate(zip(rows, starts)):
            input_ids[i, :len(row)] = torch.tensor(row)
            attention_mask[i, :len(row)] = 1
            labels[i, start:len(row)] = input_ids[i, start:len(row)]
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


class Captioner:
    """A BLIP captioning model with its processor and the settings to run it.

    Attributes: ``model`` (BlipForConditionalGeneration), ``processor`` (BlipProcessor),
    ``image_size`` (pixels fed to the model), ``max_length`` (caption tokens, longer ones are
    truncated), ``pre_resize`` (None, or a square size every image is first squashed to, as the
    authors' code did before the processor), ``generation`` (:class:`GenerationSettings`),
    ``concept_prompt`` (None, or the :class:`ConceptPrompt` the model was trained with: then
    every image needs its concepts).
    """

    def __init__(self, model, processor, *, image_size: int | None = None, max_length: int = 200,
                 pre_resize: int | None = None, generation: GenerationSettings | None = None, source: str = "",
                 concept_prompt: ConceptPrompt | None = None):
        self.model = model
        self.processor = processor
        self.image_size = image_size or model.config.vision_config.image_size
        self.max_length = int(max_length)
        self.pre_resize = pre_resize
        self.generation = generation or GenerationSettings()
        self.source = source
        self.concept_prompt = concept_prompt
        processor.tokenizer.model_max_length = self.max_length

    @property
    def image_size(self) -> int:
        return self._image_size

    @image_size.setter
    def image_size(self, size: int) -> None:
        self._image_size = int(size)
        self.processor.image_processor.size = {"height": self._image_size, "width": self._image_size}

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
        from transformers import (
            BlipConfig,
            BlipForConditionalGeneration,
            BlipImageProcessor,
            BlipProcessor,
        )

        if isinstance(size, dict):
            config_dict = json.loads(json.dumps(size))
        elif size == "large":
            config_dict = large_sizes_config()
        elif size in SIZES:
            config_dict = {"vision_config": dict(SIZES[size]["vision"], image_size=image_size),
                           "text_config": dict(SIZES[size]["text"])}
        else:
            raise MedcapError(f"unknown captioner size {size!r}; expected one of: {', '.join([*SIZES, 'large'])}")
        text_cfg = config_dict.setdefault("text_config", {})
        vision_cfg = config_dict.setdefault("vision_config", {})
        fixed_vocab = text_cfg.get("vocab_size")
        if tokenizer is None:
            tokenizer = train_wordpiece(captions, vocab_size=min(vocab_size, fixed_vocab or vocab_size),
                                        lowercase=lowercase, max_length=max_length)
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
        config = BlipConfig(**config_dict)
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
                        pre_resize: int | None = None) -> Captioner:
        """Load a hub model (``Salesforce/blip-image-captioning-large``) or a saved folder.

        Settings saved by medcap in the folder are used unless given here. A hub name whose
        weights are not on this machine (no network, nothing in the Hugging Face cache) raises
        MissingWeightsError; a folder missing a file raises MedcapError naming it.
        """
        from transformers import BlipForConditionalGeneration, BlipProcessor

        name = str(name_or_folder)
        folder = Path(name).expanduser()
        meta: dict[str, Any] = {}
        if folder.exists():
            _check_model_folder(folder)
            if (folder / METADATA_FILE).is_file():
                meta = _read_metadata(folder / METADATA_FILE)
            try:
                with _quiet_progress():
                    model = BlipForConditionalGeneration.from_pretrained(folder)
                    processor = BlipProcessor.from_pretrained(folder)
            except (OSError, ValueError, KeyError) as e:
                raise MedcapError(f"cannot load the captioner from this folder: {_first_line(e)}", file=folder) from None
        elif _HUB_NAME.match(name) and not name.startswith((".", "/", "~")):
            try:
                model = BlipForConditionalGeneration.from_pretrained(name)
                processor = BlipProcessor.from_pretrained(name)
            except (OSError, ValueError) as e:
                raise MissingWeightsError(missing_weights_message(name, e)) from None
        else:
            raise MedcapError("model folder not found (expected a folder written by `medcap train captions` "
                              f"or a Hugging Face hub name such as {DEFAULT_MODEL})", file=name)
        if generation is None:
            generation = GenerationSettings.from_dict(meta.get("generation"))
        tok_max = getattr(processor.tokenizer, "model_max_length", 200)
        max_length = max_length or meta.get("max_length") or (tok_max if tok_max < 100_000 else 200)
        size = processor.image_processor.size
        image_size = image_size or meta.get("image_size") or getattr(size, "height", None) or size["height"]
        pre_resize = pre_resize if pre_resize is not None else meta.get("pre_resize")
        concept_prompt = None
        if meta.get("concept_prompt"):
            try:
                concept_prompt = ConceptPrompt.from_dict(meta["concept_prompt"])
            except MedcapError as e:
                raise MedcapError(str(e), file=folder / METADATA_FILE) from None
        return cls(model, processor, image_size=image_size, max_length=max_length, pre_resize=pre_resize,
                   generation=generation, source=meta.get("source", name), concept_prompt=concept_prompt)

    def save_pretrained(self, folder: str | Path, **extra) -> Path:
        """Write model (safetensors), processor and medcap settings; the folder appears whole or not at all."""
        folder = Path(folder)
        with atomic_dir(folder) as tmp:
            self.write_folder(tmp, **extra)
        return folder

    def write_folder(self, folder: Path, model=None, training: dict | None = None) -> None:
        """Write the model folder's files into an existing (temporary) folder; ``model``: another
        module with the same architecture (the engine's unwrapped training model)."""
        with _quiet_progress():
            (model or self.model).save_pretrained(folder)
            self.processor.save_pretrained(folder)
        meta = self.metadata()
        if training:
            meta["training"] = training
        write_text_atomic(Path(folder) / METADATA_FILE, json.dumps(meta, indent=1) + "\n")

    def metadata(self) -> dict:
        from .. import __version__

        meta = {"format": 1, "medcap_version": __version__, "source": self.source, "image_size": self.image_size,
                "pre_resize": self.pre_resize, "max_length": self.max_length,
                "generation": dataclasses.asdict(self.generation)}
        if self.concept_prompt is not None:
            meta["concept_prompt"] = self.concept_prompt.to_dict()
        return meta

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

    # -- inputs -------------------------------------------------------------------------------
    def image_transform(self) -> ImageTransform:
        """A picklable images -> pixel tensor function (for DataLoader workers)."""
        return ImageTransform(self.processor.image_processor, self.pre_resize)

    def pixel_values(self, images: Sequence) -> torch.Tensor:  # noqa: F821
        """PIL images (RGB) -> normalised tensor [B, 3, image_size, image_size]."""
        return self.image_transform()(images)

    def caption_lengths(self, captions: Sequence[str]) -> list[int]:
        """Token count of each caption with its [DEC] and [SEP] tokens (before truncation)."""
        enc = self.tokenizer(list(captions), truncation=False, verbose=False)  # verbose: no too-long warning
        return [len(ids) for ids in enc["input_ids"]]

    def caption_encoder(self, padding: str = "longest") -> CaptionEncoder:
        """A picklable captions -> training targets function (for DataLoader workers)."""
        return CaptionEncoder(self.tokenizer, self.model.config.text_config.bos_token_id, self.max_length,
                              self.generation.prompt, padding)

    def encode_captions(self, captions: Sequence[str], padding: str = "longest") -> dict:
        """Training targets ``input_ids``, ``attention_mask``, ``labels`` [B, T]: see :class:`CaptionEncoder`."""
        return self.caption_encoder(padding)(captions)

    def _prompt_ids(self) -> list[int]:
        """[CLS] prompt [SEP] ids; BLIP's generate() swaps [CLS] for [DEC] and drops the [SEP]."""
        return self.tokenizer(self.generation.prompt.strip())["input_ids"]

    def concept_prompt_ids(self, concepts: Sequence[Iterable[str]] | None, n_images: int) -> list[list[int]] | None:
        """Each image's concept prompt ids (:class:`ConceptPrompt`), or None for a model without one.

        A model trained with concept prompts needs ``concepts`` (one CUI list per image); a model
        without them ignores ``concepts``.
        """
        if self.concept_prompt is None:
            return None
        if concepts is None:
            raise MedcapError("this captioner was trained with concept prompts: give every image's concepts "
                              "(a concept submission, e.g. --concepts from `medcap predict concepts`)")
        if len(concepts) != n_images:
            raise MedcapError(f"got concepts for {len(concepts)} images, expected {n_images}")
        return [self.concept_prompt.ids(self.tokenizer, cuis) for cuis in concepts]

    # -- training -----------------------------------------------------------------------------
    def loss(self, model, batch: dict) -> torch.Tensor:  # noqa: F821
        """Mean token cross-entropy of a batch from :meth:`encode_captions` + ``pixel_values``."""
        return model(pixel_values=batch["pixel_values"], input_ids=batch["input_ids"],
                     attention_mask=batch["attention_mask"], labels=batch["labels"],
                     interpolate_pos_encoding=self.interpolate_pos_encoding).loss

    # -- generation ---------------------------------------------------------------------------
    def generate_ids(self, pixel_values, model=None, prompts: Sequence[Sequence[int]] | None = None,
                     return_beams: int = 0, **overrides) -> torch.Tensor:  # noqa: F821
        """Generated token ids [B, T] after the prompt (batched greedy or beam search).

        ``prompts``: one concept prompt per image (:meth:`concept_prompt_ids`). They are padded
        on the left, so every caption starts right after its own prompt; generate() numbers the
        positions from the attention mask, which gives each token the position it had in
        training (prompt and caption padded on the right there).
        ``return_beams`` > 0: the best ``return_beams`` beams of each image ([B * n, T], image by
        image, best first) and their length-normalised log-probabilities [B * n]
        (medcap.concept_rerank picks among them).
        """
        import torch

        model = model or self.model
        g = dataclasses.replace(self.generation, **overrides)
        attention_mask = None
        if prompts is None:
            prompt = self._prompt_ids()
            input_ids = torch.tensor([prompt] * pixel_values.shape[0], device=pixel_values.device)
        else:  # [PAD]... [DEC] prompt [SEP]; BLIP's generate() drops the last column, the way it drops [SEP]
            bos, sep, pad = self.model.config.text_config.bos_token_id, self.tokenizer.sep_token_id, \
                self.tokenizer.pad_token_id
            rows = [[bos, *p, sep] for p in prompts]
            width = max(len(r) for r in rows)
            input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=pixel_values.device)
            attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows],
                                          device=pixel_values.device)
        kwargs = {"num_beams": g.num_beams, "max_new_tokens": g.max_new_tokens, "do_sample": False,
                  "repetition_penalty": g.repetition_penalty}
        if g.num_beams > 1:
            kwargs["length_penalty"] = g.length_penalty
        # n-gram repeats are counted over the caption, not the prompt (GeneratedNoRepeatNGram); 0 keeps
        # transformers' own rule (or a value in the model's generation_config) from applying too
        kwargs["no_repeat_ngram_size"] = 0
        if g.no_repeat_ngram_size > 0:
            from transformers import LogitsProcessorList

            kwargs["logits_processor"] = LogitsProcessorList(
                [GeneratedNoRepeatNGram(g.no_repeat_ngram_size, input_ids.shape[1] - 1)])
        if return_beams:
            kwargs.update(num_beams=max(g.num_beams, return_beams), num_return_sequences=return_beams,
                          output_scores=True, return_dict_in_generate=True, length_penalty=g.length_penalty)
        unwrapped = getattr(model, "module", model)
        out = unwrapped.generate(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask,
                                 interpolate_pos_encoding=self.interpolate_pos_encoding, **kwargs)
        if return_beams:
            return out.sequences[:, input_ids.shape[1] - 1:], out.sequences_scores
        return out[:, input_ids.shape[1] - 1:]   # generate() was given all columns but the last

    def decode(self, ids, postprocess: bool | None = None) -> list[str]:
        """Token ids -> caption strings (special tokens dropped, spacing repaired)."""
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        post = self.generation.postprocess if postprocess is None else postprocess
        return [postprocess_caption(t) if post else " ".join(t.split()) for t in texts]

    def generate(self, images: Sequence, batch_size: int = 8, concepts: Sequence[Iterable[str]] | None = None,
                 **overrides) -> list[str]:
        """Captions for PIL images, ``batch_size`` at a time. ``concepts``: each image's CUIs (needed by
        a model trained with concept prompts). ``overrides``: GenerationSettings fields."""
        import torch

        prompts = self.concept_prompt_ids(concepts, len(images))
        postprocess = overrides.pop("postprocess", None)
        was_training = self.model.training
        self.model.eval()
        captions: list[str] = []
        try:
            with torch.inference_mode():
                for start in range(0, len(images), batch_size):
                    pixels = self.pixel_values(images[start:start + batch_size]).to(self.device)
                    rows = None if prompts is None else prompts[start:start + batch_size]
                    captions += self.decode(self.generate_ids(pixels, prompts=rows, **overrides), postprocess)
        finally:
            self.model.train(was_training)
        return captions

    def caption_files(self, paths: Sequence[str | Path], batch_size: int = 8, progress: bool = False,
                      concepts: Sequence[Iterable[str]] | None = None, **overrides) -> list[str]:
        """Captions for image files (JPEG, PNG, DICOM, ... via medcap.data.images.load_image)."""
        from tqdm.auto import tqdm

        from ..data.images import load_image

        out: list[str] = []
        starts = range(0, len(paths), batch_size)
        for start in tqdm(starts, desc="captioning", disable=not progress, unit="batch"):
            images = [load_image(p) for p in paths[start:start + batch_size]]
            batch_concepts = None if concepts is None else concepts[start:start + batch_size]
            out += self.generate(images, batch_size=batch_size, concepts=batch_concepts, **overrides)
        return out

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
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")
_IMAGE_PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


@contextlib.contextmanager
def _quiet_progress():
    """No per-shard progress bars while reading or writing a local folder (it takes a moment)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


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
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MedcapError(f"not valid JSON: {e}", file=path) from None
    if not isinstance(meta, dict):
        raise MedcapError("expected a JSON object", file=path)
    return meta


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def missing_weights_message(name: str, error: BaseException | None = None) -> str:
    why = f" ({_first_line(error)[:160]})" if error is not None else ""
    return (f"the pretrained weights {name!r} are not on this machine and cannot be downloaded from here{why}. "
            f"On a machine with internet run `hf download {name}` (older huggingface_hub: "
            f"`huggingface-cli download {name}`), then either copy its Hugging Face cache "
            "(~/.cache/huggingface) here and set HF_HOME to the copy, or save the model folder and pass "
            "its path instead of the hub name (e.g. --set model=/path/to/blip-image-captioning-large)")
