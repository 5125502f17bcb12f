"""Vision-language captioners: any image-text-to-text model of ``transformers``, optionally with LoRA.

One generic path for Qwen2-VL / Qwen2.5-VL, Idefics3 / SmolVLM, Gemma3 / MedGemma and the
like: the model comes from ``AutoModelForImageTextToText``, its inputs from ``AutoProcessor``
and the prompt from the model's own chat template. The user turn holds the image, an
instruction and, optionally, the image's concept names (:class:`~.prompting.ConceptPrompt`)
and its nearest training captions (:class:`~.retrieval.RetrievalPrompt`); the assistant turn
is the caption. Training labels are the caption tokens (and the end-of-turn token) only: the
prompt and the image tokens are masked with -100. Sequences are padded on the left, so
training batches and generation batches have the same layout (the caption is always last).

Nothing depends on the family beyond :data:`FAMILY_DEFAULTS` (image side, LoRA targets).

The model folder (``VLMCaptioner.save_pretrained``) holds either the whole model
(``config.json`` + ``model.safetensors``, e.g. ``vlm-tiny`` trained from scratch) or a peft
adapter (``adapter_config.json`` + ``adapter_model.safetensors``) with the base model's hub
id or path; plus the processor files, ``generation_config.json`` and ``medcap_vlm.json``
(instruction, image size, caption length, prompts, training summary). :func:`merge_folder`
(``medcap export --merge``) writes the adapter merged into a plain ``transformers`` folder.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import MedcapError, MissingWeightsError, first_line
from ..fileio import atomic_dir, read_json, write_text_atomic
from .card import load_provenance, write_model_files
from .generation import GenerationSettings, beam_kwargs, eval_batches, generation_kwargs, split_beams
from .hub import hub_access
from .location import is_hub_id, missing_weights_message, resolve_model_folder
from .prompting import ConceptPrompt
from .retrieval import RetrievalPrompt
from .weights import fit_report, quiet_transformers, read_safetensors, verified, write_checksums

METADATA_FILE = "medcap_vlm.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
DEFAULT_INSTRUCTION = "Write the caption of this medical image."
_ATTENTION = r"\.(q_proj|k_proj|v_proj|o_proj)$"
# Per-family defaults: the side images are resized to (the pixel budget: Qwen2-VL turns every
# 28 x 28 px into one token) and the LoRA targets (the language model's attention projections;
# the vision tower's projections share these names in some families, so they are excluded).
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "qwen2_vl": {"image_size": 448, "lora_targets": r".*language_model.*" + _ATTENTION},
    "qwen2_5_vl": {"image_size": 448, "lora_targets": r".*language_model.*" + _ATTENTION},
    "idefics3": {"image_size": 512, "lora_targets": r".*text_model.*" + _ATTENTION},
    "smolvlm": {"image_size": 512, "lora_targets": r".*text_model.*" + _ATTENTION},
    "gemma3": {"image_size": 896, "lora_targets": r".*language_model.*" + _ATTENTION},
}
_FALLBACK = {"image_size": 448, "lora_targets": r".*(language_model|text_model).*" + _ATTENTION}


def family_defaults(model_type: str) -> dict[str, Any]:
    return FAMILY_DEFAULTS.get(model_type, _FALLBACK)


def is_vlm_folder(folder: str | Path) -> bool:
    return (Path(folder) / METADATA_FILE).is_file()


@dataclasses.dataclass
class LoraSettings:
    """peft LoRA settings; ``r`` 0 = full fine-tuning; ``targets`` "" = the family's default, else a
    comma-separated list of module names or a regular expression."""
    r: int = 0
    alpha: int = 16
    dropout: float = 0.05
    targets: str = ""

    def peft_config(self, model_type: str):
        from peft import LoraConfig

        targets: str | list[str] = self.targets or family_defaults(model_type)["lora_targets"]
        if self.targets and not any(ch in self.targets for ch in "*()|\\$"):
            targets = [t.strip() for t in self.targets.split(",") if t.strip()]
        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=targets,
                          task_type="CAUSAL_LM")


class VLMCaptioner:
    """A vision-language model (maybe a peft model), its processor and the settings to caption with it.

    ``base_model``: the hub id or folder the weights (or the adapter's base) come from.
    """

    def __init__(self, model, processor, *, instruction: str = DEFAULT_INSTRUCTION, image_size: int = 448,
                 max_length: int = 200, generation: GenerationSettings | None = None, base_model: str = "",
                 source: str = "", concept_prompt: ConceptPrompt | None = None,
                 retrieval_prompt: RetrievalPrompt | None = None):
        self.model, self.processor = model, processor
        self.instruction, self.image_size, self.max_length = instruction, int(image_size), int(max_length)
        self.generation = generation or GenerationSettings(num_beams=1, no_repeat_ngram_size=0, max_new_tokens=64)
        self.base_model, self.source = base_model, source
        self.concept_prompt, self.retrieval_prompt = concept_prompt, retrieval_prompt
        self.provenance: dict | None = None   # provenance.json: training data, scores, config (models.card)
        self.tokenizer.padding_side = "left"   # the caption is the last thing in every row

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_scratch(cls, family: str, captions: Iterable[str], *, image_size: int = 64, vocab_size: int = 2000,
                     max_length: int = 64, seed: int | None = None, instruction: str = DEFAULT_INSTRUCTION,
                     generation: GenerationSettings | None = None, processor=None,
                     dropout: float = 0.0) -> VLMCaptioner:
        """A tiny random model of ``family`` (:mod:`.vlm_tiny`) with a tokenizer from ``captions``."""
        from .vlm_tiny import build_tiny

        model, processor = build_tiny(family, captions, image_size=image_size, vocab_size=vocab_size,
                                      max_length=max_length, seed=seed, instruction=instruction,
                                      processor=processor, dropout=dropout)
        return cls(model, processor, instruction=instruction, image_size=image_size, max_length=max_length,
                   generation=generation, base_model=f"scratch:{family}", source=f"scratch:{family}")

    @classmethod
    def from_pretrained(cls, name_or_folder: str | Path, *, dtype=None, quantization: str = "none",
                        trainable: bool = False, **settings) -> VLMCaptioner:
        """A medcap VLM folder (or its run folder), a plain ``transformers`` folder or a hub id.

        ``settings`` (instruction, image_size, max_length, generation) override what the folder
        says. ``trainable``: a saved adapter stays trainable (to continue training it).
        """
        # a hub id goes to transformers as is: it fetches every file the model and processor need
        name = str(name_or_folder)
        where: str | Path = name if is_hub_id(name) else resolve_model_folder(name_or_folder, "captions")
        meta: dict[str, Any] = {}
        if isinstance(where, Path) and is_vlm_folder(where):
            meta = _read_metadata(where / METADATA_FILE)
        adapter = isinstance(where, Path) and (where / ADAPTER_CONFIG).is_file()
        # the weights' origin: an adapter's base model, else this folder (absolute: runs move) or hub id
        local = isinstance(where, Path)
        base = str(meta.get("base_model", "")) if adapter else str(where.resolve() if local else where)
        if adapter and not base:
            raise MedcapError("the adapter folder does not say its base model (base_model)", file=where / METADATA_FILE)
        # a saved folder's weight files are hashed (checksums.json) while the model is built and read
        checked = verified(where) if isinstance(where, Path) else contextlib.nullcontext()
        with quiet_transformers(), checked:
            model = load_model(base if adapter else where, dtype=dtype, quantization=quantization)
            if adapter:
                model = load_adapter(model, where, trainable)
            processor = load_processor(where)
        if isinstance(where, Path):
            from .nonfinite import check_finite_weights

            check_finite_weights(model.state_dict().values(), where, "the captioner")
        values = {"instruction": meta.get("instruction", DEFAULT_INSTRUCTION),
                  "image_size": meta.get("image_size") or family_defaults(_model_type(model))["image_size"],
                  "max_length": meta.get("max_length", 200), "base_model": base,
                  "source": meta.get("source", str(name_or_folder))}
        if isinstance(where, Path) and meta:
            values["generation"] = GenerationSettings.from_pretrained(where)
            values["concept_prompt"] = (ConceptPrompt.from_dict(meta["concept_prompt"])
                                        if meta.get("concept_prompt") else None)
            values["retrieval_prompt"] = RetrievalPrompt.from_settings(where, meta.get("retrieval_prompt"))
        values.update({k: v for k, v in settings.items() if v is not None})
        captioner = cls(model, processor, **values)
        captioner.provenance = load_provenance(where) if isinstance(where, Path) else None
        return captioner

    def add_lora(self, lora: LoraSettings, gradient_checkpointing: bool = False) -> None:
        """Wrap the model in a fresh peft LoRA adapter (only the adapter trains)."""
        from peft import get_peft_model

        if hasattr(self.model, "peft_config"):
            raise MedcapError("this model already carries a LoRA adapter: merge it first (`medcap export --merge "
                              "RUN OUT`) and train on the merged folder")
        if gradient_checkpointing:  # the frozen embeddings' output must carry gradients through checkpoints
            self.model.enable_input_require_grads()
        self.model = get_peft_model(self.model, lora.peft_config(_model_type(self.model)))

    def enable_gradient_checkpointing(self) -> None:
        """Recompute activations in the backward pass: less memory, about a third more time."""
        self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    # -- properties ---------------------------------------------------------------------------
    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def is_adapter(self) -> bool:
        return hasattr(self.model, "peft_config")

    @property
    def device(self):
        return next(self.model.parameters()).device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def caption_lengths(self, captions: Sequence[str]) -> list[int]:
        """Tokens of each caption with its end-of-turn token (before truncation)."""
        return [len(ids) + 1 for ids in self.tokenizer(list(captions), add_special_tokens=False)["input_ids"]]

    # -- inputs -------------------------------------------------------------------------------
    def prompt_text(self, concepts: Iterable[str] | None = None, retrieved: Sequence[str] | None = None) -> str:
        """The user turn (image, instruction, concept names, retrieved captions) in the chat template."""
        text = self.instruction
        if self.concept_prompt is not None and concepts is not None:
            names = self.concept_prompt.text(concepts)
            text += f"\nConcepts: {names}." if names else ""
        if retrieved:  # each retrieved caption cut to its share of the words (max_tokens of RetrievalPrompt)
            share = max(1, (self.retrieval_prompt.max_tokens if self.retrieval_prompt else 32) // len(retrieved))
            text += "\nCaptions of similar images: " + " | ".join(" ".join(c.split()[:share]) for c in retrieved)
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def prompts(self, n: int, concepts: Sequence[Iterable[str]] | None = None,
                retrieved: Sequence[Sequence[str]] | None = None) -> list[str]:
        if self.concept_prompt is not None and concepts is None:
            raise MedcapError("this captioner was trained with concept prompts: give the images' concepts "
                              "(--concepts FILE from `medcap predict concepts`)")
        return [self.prompt_text(None if concepts is None else concepts[i], None if retrieved is None else retrieved[i])
                for i in range(n)]

    def encode(self, images: Sequence, prompts: Sequence[str], captions: Sequence[str] | None = None) -> dict:
        """Model inputs for images (PIL) and their prompt texts, left-padded; with ``captions`` the
        caption tokens + end-of-turn follow each prompt and ``labels`` hold them alone (-100 elsewhere)."""
        import torch

        images = [im.convert("RGB").resize((self.image_size, self.image_size)) for im in images]
        enc = dict(self.processor(text=list(prompts), images=[[im] for im in images], return_tensors="pt",
                                  padding=True, add_special_tokens=False))
        enc.pop("token_type_ids", None)
        if captions is None:
            return enc
        ids, mask = enc.pop("input_ids"), enc.pop("attention_mask")
        per_token = {k: enc.pop(k) for k in list(enc) if torch.is_tensor(enc[k]) and enc[k].shape == ids.shape}
        tok = self.tokenizer
        tails = [t[:self.max_length - 1] + [tok.eos_token_id]
                 for t in tok(list(captions), add_special_tokens=False)["input_ids"]]
        rows = []
        for b, tail in enumerate(tails):
            keep = mask[b].bool()
            prompt = ids[b][keep]
            row = {"input_ids": torch.cat([prompt, torch.tensor(tail)]),
                   "labels": torch.cat([torch.full_like(prompt, -100), torch.tensor(tail)])}
            row.update({k: torch.cat([v[b][keep], v.new_zeros(len(tail))]) for k, v in per_token.items()})
            rows.append(row)
        enc.update(left_pad(rows, {"input_ids": tok.pad_token_id, "labels": -100}))
        return enc

    # -- training -----------------------------------------------------------------------------
    def loss(self, model, batch: dict):
        """Mean cross-entropy of the caption tokens (transformers shifts the labels)."""
        return model(**{k: v for k, v in batch.items() if k not in ("index",)}).loss

    # -- generation ---------------------------------------------------------------------------
    def generate_ids(self, batch: dict, model=None, return_beams: int = 0, **overrides):
        """Generated token ids after the (left-padded) prompts, greedy or beam search; n-gram repeats are
        counted over the caption only (:class:`~.generation.GeneratedNoRepeatNGram`). ``return_beams``:
        the best ``return_beams`` beams of each image and their scores, as BLIP's."""
        settings = dataclasses.replace(self.generation, **overrides)
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "index")}
        model = model or self.model
        start = inputs["input_ids"].shape[1]
        kwargs = generation_kwargs(settings, start)
        if return_beams:
            kwargs.update(beam_kwargs(settings, return_beams))
        out = model.generate(**inputs, **kwargs, eos_token_id=self.tokenizer.eos_token_id,
                             pad_token_id=self.tokenizer.pad_token_id)
        if return_beams:
            return out.sequences[:, start:], out.sequences_scores
        return out[:, start:]

    def beams(self, images: Sequence, concepts: Sequence[Iterable[str]] | None = None,
              retrieved: Sequence[Sequence[str]] | None = None, num_beams: int = 5) -> list[tuple[list[str], object]]:
        """Per PIL image: its ``num_beams`` best captions (best first) and their length-normalised
        log-probabilities, as :meth:`medcap.models.captioner.Captioner.beams`; one batch."""
        if retrieved is None and self.retrieval_prompt is not None:
            retrieved = self.retrieval_prompt.retrieve_images(images)
        batch = self.encode(images, self.prompts(len(images), concepts, retrieved))
        ids, scores = self.generate_ids({k: v.to(self.device) for k, v in batch.items()}, return_beams=num_beams)
        return split_beams(self.decode(ids), scores, num_beams)

    def decode(self, ids, postprocess: bool | None = None) -> list[str]:
        from ..text import postprocess_caption

        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        repair = self.generation.postprocess if postprocess is None else postprocess
        return [postprocess_caption(t) if repair else " ".join(t.split()) for t in texts]

    def generate(self, images: Sequence, batch_size: int = 8, concepts: Sequence[Iterable[str]] | None = None,
                 retrieved: Sequence[Sequence[str]] | None = None, **overrides) -> list[str]:
        """Captions for PIL images, ``batch_size`` at a time (left padding, one batched generate each)."""
        if retrieved is None and self.retrieval_prompt is not None:
            retrieved = self.retrieval_prompt.retrieve_images(images)
        prompts = self.prompts(len(images), concepts, retrieved)
        postprocess = overrides.pop("postprocess", None)

        def caption(part: slice) -> list[str]:
            batch = {k: v.to(self.device) for k, v in self.encode(images[part], prompts[part]).items()}
            return self.decode(self.generate_ids(batch, **overrides), postprocess)

        return eval_batches(self.model, len(images), batch_size, caption)

    # -- folders ------------------------------------------------------------------------------
    def metadata(self) -> dict:
        from .. import __version__

        return {"format": 1, "medcap_version": __version__, "kind": "vlm", "source": self.source,
                "base_model": self.base_model, "instruction": self.instruction, "image_size": self.image_size,
                "max_length": self.max_length,
                "concept_prompt": self.concept_prompt.to_dict() if self.concept_prompt else None,
                "retrieval_prompt": self.retrieval_prompt.settings() if self.retrieval_prompt else None}

    def write_folder(self, folder: str | Path, model=None, training: dict | None = None,
                     provenance: dict | None = None) -> None:
        """The model (or its adapter), processor, generation settings and medcap_vlm.json into
        ``folder``; provenance.json and the model card (models.card; ``provenance``: training data
        and scores, default the loaded folder's), then checksums.json of every weight file."""
        folder, model = Path(folder), model or self.model
        with quiet_transformers():
            model.save_pretrained(folder)
            self.processor.save_pretrained(folder)
        base = getattr(model, "generation_config", None)
        self.generation.save_pretrained(folder, base=base)
        if self.retrieval_prompt is not None:
            self.retrieval_prompt.save_pretrained(folder)
        meta = self.metadata()
        if training:
            meta["training"] = training
        write_text_atomic(folder / METADATA_FILE, json.dumps(meta, indent=1) + "\n")
        write_model_files(folder, provenance or self.provenance, "captioner")
        write_checksums(folder)

    def save_pretrained(self, folder: str | Path, **extra) -> Path:
        with atomic_dir(Path(folder)) as tmp:
            self.write_folder(tmp, **extra)
        return Path(folder)

    def merged(self) -> VLMCaptioner:
        """The same captioner with its LoRA adapter merged into the weights (a plain model)."""
        model = self.model.merge_and_unload() if self.is_adapter else self.model
        return VLMCaptioner(model, self.processor, instruction=self.instruction, image_size=self.image_size,
                            max_length=self.max_length, generation=self.generation, base_model=self.base_model,
                            source=self.source, concept_prompt=self.concept_prompt,
                            retrieval_prompt=self.retrieval_prompt)


def merge_folder(run_or_folder: str | Path, out: str | Path) -> Path:
    """``medcap export --merge``: a plain transformers folder (weights with the adapter merged in)."""
    captioner = VLMCaptioner.from_pretrained(run_or_folder)
    if not captioner.is_adapter:
        raise MedcapError("this captioner has no LoRA adapter to merge (it is a full model folder already)",
                          file=run_or_folder)
    return captioner.merged().save_pretrained(out)


def left_pad(rows: Sequence[dict], pads: dict[str, int]) -> dict:
    """Per-row 1-D tensors (same keys) -> [B, T] tensors padded on the left (``pads[key]``, else 0),
    plus the ``attention_mask`` (0 on the padding)."""
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    out = {key: torch.stack([torch.cat([r[key].new_full((width - len(r[key]),), pads.get(key, 0)), r[key]])
                             for r in rows]) for key in rows[0]}
    out["attention_mask"] = torch.stack([torch.cat([torch.zeros(width - len(r["input_ids"]), dtype=torch.long),
                                                    torch.ones(len(r["input_ids"]), dtype=torch.long)]) for r in rows])
    return out


def prompt_part(batch: dict, pad_id: int) -> dict:
    """A training batch (:meth:`VLMCaptioner.encode` with captions) cut back to its prompts, left-padded:
    the inputs generation starts from (the images' tensors unchanged)."""
    import torch

    ids = batch["input_ids"]
    keep = (batch["labels"] == -100) & (batch["attention_mask"] == 1)
    per_token = [k for k, v in batch.items() if torch.is_tensor(v) and v.shape == ids.shape
                 and k not in ("labels", "attention_mask")]
    rows = [{k: batch[k][b][keep[b]] for k in per_token} for b in range(len(ids))]
    out = {k: v for k, v in batch.items() if k not in (*per_token, "labels", "attention_mask", "index")}
    return {**out, **left_pad(rows, {"input_ids": pad_id})}


# -- loading ------------------------------------------------------------------------------------
def _model_type(model) -> str:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.config.model_type


def load_model(where: str | Path, dtype=None, quantization: str = "none"):
    """AutoModelForImageTextToText from a folder or hub id; missing weights: MissingWeightsError."""
    from transformers import AutoModelForImageTextToText

    kwargs: dict[str, Any] = {}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if quantization == "4bit":  # quantised while loading, straight onto this process's GPU (DDP: LOCAL_RANK)
        import os

        kwargs.update(quantization_config=four_bit_config(), device_map={"": int(os.environ.get("LOCAL_RANK", "0"))})
    try:
        if quantization != "none" or not (isinstance(where, Path) or Path(str(where)).exists()):
            # a hub id (offline: the cache only, at once, no retry loop; models.hub); or 4-bit,
            # whose packed tensors never have the checkpoint's shapes
            with _hub_access(where):
                return AutoModelForImageTextToText.from_pretrained(str(where), **kwargs)
        # a local folder: transformers' load report is an error here, never a warning (weights.py)
        model, report = AutoModelForImageTextToText.from_pretrained(
            str(where), output_loading_info=True, ignore_mismatched_sizes=True, **kwargs)
        fit_report(report.get("missing_keys", ()), report.get("unexpected_keys", ()),
                   report.get("mismatched_keys", ()), where, "vision-language model of config.json")
        return model
    except (OSError, ValueError) as e:
        if isinstance(where, Path) or Path(str(where)).exists():
            raise MedcapError(f"cannot load the model from this folder: {first_line(e)}", file=where) from None
        raise MissingWeightsError(missing_weights_message(str(where), e)) from None


_SIZE_MISMATCH = re.compile(r"size mismatch for (\S+?): copying a param with shape torch\.Size\(\[([\d, ]*)\]\) "
                            r"from checkpoint, the shape in current model is torch\.Size\(\[([\d, ]*)\]\)")


def load_adapter(model, where: Path, trainable: bool = False):
    """The peft LoRA adapter of folder ``where`` on ``model``. Its tensors must fit the base
    model's LoRA layers: missing, unexpected (peft ignores them) or wrong-shaped (peft raises
    a long RuntimeError) tensors are one error naming the folder, count and first key."""
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict

    what = "base model (the adapter's LoRA tensors)"
    try:
        with warnings.catch_warnings():  # its missing-keys warning: the fit check below says it in one line
            warnings.filterwarnings("ignore", message="Found missing adapter keys")
            model = PeftModel.from_pretrained(model, str(where), is_trainable=trainable)
    except (RuntimeError, ValueError, KeyError) as e:
        shapes = [(k, _dims(a), _dims(b)) for k, a, b in _SIZE_MISMATCH.findall(str(e))]
        fit_report((), (), shapes, where, what)
        raise MedcapError(f"cannot load the adapter onto its base model: {first_line(e)}", file=where) from None
    weights_file = where / ADAPTER_WEIGHTS
    if weights_file.is_file():
        saved = set(read_safetensors(weights_file))
        own = set(get_peft_model_state_dict(model))
        fit_report(own - saved, saved - own, (), where, what)
    return model


def _hub_access(where: str | Path):
    """models.hub's offline rule around a hub id's download (a local folder never asks the network)."""
    local = isinstance(where, Path) or Path(str(where)).exists()
    return contextlib.nullcontext() if local else hub_access()


def _dims(text: str) -> tuple[int, ...]:
    return tuple(int(d) for d in text.split(",") if d.strip())


def load_processor(where: str | Path):
    from transformers import AutoProcessor

    try:
        with _hub_access(where):
            return AutoProcessor.from_pretrained(str(where))
    except (OSError, ValueError) as e:
        if isinstance(where, Path):
            raise MedcapError(f"cannot load the processor from this folder: {first_line(e)}", file=where) from None
        raise MissingWeightsError(missing_weights_message(str(where), e)) from None


def four_bit_config():
    """QLoRA's 4-bit NF4 weights with bf16 compute (bitsandbytes; CUDA only)."""
    import torch

    if not torch.cuda.is_available():
        raise MedcapError("quantization=4bit needs a CUDA GPU (bitsandbytes 4-bit); on a CPU use "
                          "--set quantization=none")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def _read_metadata(path: Path) -> dict:
    meta = read_json(path, expect=None)  # the safe reader: unreadable or damaged -> one line naming it
    if not isinstance(meta, dict) or not re.fullmatch(r"\d+", str(meta.get("format", ""))):
        raise MedcapError("expected a medcap VLM metadata object with a format number", file=path)
    return meta
