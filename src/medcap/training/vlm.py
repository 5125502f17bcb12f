"""Vision-language captioner training (:class:`~medcap.models.vlm.VLMCaptioner`) on the shared engine.

The same run as a BLIP caption run (:mod:`medcap.training.captions`): :class:`medcap.training.engine.Trainer`
with its time budget, ``--resume``, non-finite guard, run lock, ``metrics.csv`` and validation
ROUGE-1 for early stopping; the same concept and retrieval prompts (as text in the chat
template here). What differs is the model: any ``AutoModelForImageTextToText`` (a hub id or
folder), a medcap VLM run folder, or ``scratch:qwen2_vl`` / ``scratch:idefics3`` (a tiny random
model with a tokenizer learned from the captions, :mod:`medcap.models.vlm_tiny`), optionally
with a LoRA adapter (``lora_r`` > 0) and 4-bit base weights (``quantization: 4bit``, QLoRA).

A config is a VLM config when it says ``captioner: vlm`` (:func:`load_any_caption_config`).
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import _config_source, load_config, save_config
from ..errors import MedcapError
from ..models.generation import GenerationSettings
from ..models.vlm import DEFAULT_INSTRUCTION, LoraSettings, VLMCaptioner
from .captions import (
    PROCESSOR_DIR,
    CaptionConfig,
    CaptionTask,
    _labelled_ids,
    load_caption_config,
    open_caption_run,
)
from .engine import TrainConfig


@dataclass
class VLMCaptionConfig(CaptionConfig):
    """A caption run with a vision-language model: :class:`CaptionConfig`'s keys (``model``: a hub
    id, a folder, a run folder or scratch:qwen2_vl|idefics3; ``image_size``: the side images are
    resized to) and the keys below."""
    captioner: str = "vlm"             # marks a VLM config (BLIP configs have no such key)
    instruction: str = DEFAULT_INSTRUCTION  # the user turn's text before concepts / retrieved captions
    lora_r: int = 0                    # LoRA rank (0: full fine-tuning)
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: str = ""      # "" = the family's (language model attention); names or a regex
    quantization: str = "none"         # none | 4bit (QLoRA: bitsandbytes NF4 base weights; CUDA only)
    bf16: bool = False                 # load the weights in bfloat16 (with mixed_precision: bf16 on a GPU)
    image_size: int = 448              # images are resized to this side (the pixel budget; Qwen2-VL: 256 tokens)
    lr: float = 2e-4                   # LoRA's usual rate (full fine-tuning: lower it)
    num_beams: int = 1
    no_repeat_ngram_size: int = 0
    max_new_tokens: int = 96
    max_length: int = 128

    def __post_init__(self):
        super().__post_init__()
        if self.captioner != "vlm":
            raise MedcapError(f"captioner: expected vlm, got {self.captioner!r}")
        if self.quantization not in ("none", "4bit"):
            raise MedcapError(f"quantization: expected none or 4bit, got {self.quantization!r}")
        if self.lora_r < 0 or not 0 <= self.lora_dropout < 1:
            raise MedcapError("lora_r must be at least 0 (0: full fine-tuning), lora_dropout in [0, 1)")
        if self.quantization == "4bit" and self.lora_r == 0:
            raise MedcapError("quantization=4bit trains a LoRA adapter on frozen 4-bit weights: set lora_r > 0")
        if self.concept_loss > 0 or self.freeze_vision or self.prompt:
            raise MedcapError("concept_loss, freeze_vision and prompt are BLIP settings; a VLM config uses "
                              "instruction, concept_prompt, retrieval_prompt and lora_*")

    @property
    def lora(self) -> LoraSettings:
        return LoraSettings(self.lora_r, self.lora_alpha, self.lora_dropout, self.lora_target_modules)

    @property
    def generation(self) -> GenerationSettings:
        return GenerationSettings(num_beams=self.num_beams, no_repeat_ngram_size=self.no_repeat_ngram_size,
                                  max_new_tokens=self.max_new_tokens)


def load_any_caption_config(name_or_path: str | Path = "paper", overrides: list[str] | None = None):
    """A :class:`VLMCaptionConfig` when the config (or ``--set``) says ``captioner: vlm``, else a BLIP
    :class:`CaptionConfig`."""
    import yaml

    text, _ = _config_source(name_or_path, "captions")
    values = yaml.safe_load(text) or {}
    kind = values.get("captioner", "blip") if isinstance(values, dict) else "blip"
    for item in overrides or []:
        key, _, value = item.partition("=")
        if key.strip() == "captioner":
            kind = value.strip()
    if kind == "vlm":
        return load_config(VLMCaptionConfig, name_or_path, "captions", overrides)
    return load_caption_config(name_or_path, overrides)


def build_vlm_captioner(cfg: VLMCaptionConfig, train_captions: Sequence[str] = (), processor=None) -> VLMCaptioner:
    """The model ``cfg.model`` names (scratch:FAMILY, a hub id, a folder or run folder), with its LoRA adapter."""
    import torch

    if cfg.model.startswith("scratch:"):
        captioner = VLMCaptioner.from_scratch(cfg.model.split(":", 1)[1], train_captions,
                                              image_size=cfg.image_size, vocab_size=cfg.vocab_size,
                                              max_length=cfg.max_length, seed=cfg.seed, instruction=cfg.instruction,
                                              generation=cfg.generation, processor=processor, dropout=cfg.dropout)
    else:
        captioner = VLMCaptioner.from_pretrained(cfg.model, dtype=torch.bfloat16 if cfg.bf16 else None,
                                                 quantization=cfg.quantization, instruction=cfg.instruction,
                                                 image_size=cfg.image_size, max_length=cfg.max_length,
                                                 generation=cfg.generation)
        if processor is not None:
            captioner.processor = processor
    if cfg.gradient_checkpointing:
        captioner.enable_gradient_checkpointing()
    if cfg.quantization == "4bit":
        from peft import prepare_model_for_kbit_training

        captioner.model = prepare_model_for_kbit_training(captioner.model, cfg.gradient_checkpointing)
    if cfg.lora_r > 0:
        captioner.add_lora(cfg.lora, cfg.gradient_checkpointing)
    return captioner


class VLMCaptionDataset:
    """(PIL image, caption, index, prompt text) of each image ID; the prompt holds the image's
    concept names (each gold one left out with probability ``drop``) and retrieved captions."""

    def __init__(self, split, ids: Sequence[str], captioner: VLMCaptioner, cuis=None, retrieved=None,
                 drop: float = 0.0):
        self.split, self.ids, self.captioner = split, list(ids), captioner
        self.cuis, self.retrieved, self.drop = cuis, retrieved, drop

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        image_id = self.ids[i]
        image = self.split.load_image(image_id, draft_size=self.captioner.image_size)
        cuis = None
        if self.cuis is not None:
            cuis = [c for c in self.cuis[i] if not self.drop or random.random() >= self.drop]
        prompt = self.captioner.prompt_text(cuis, None if self.retrieved is None else self.retrieved[i])
        return image, self.split.captions[image_id], i, prompt


class VLMCollator:
    """Images, prompts and captions -> a left-padded batch with caption-only labels (VLMCaptioner.encode)."""

    def __init__(self, captioner: VLMCaptioner):
        self.captioner = captioner

    def __call__(self, items):
        import torch

        images, captions, index, prompts = zip(*items, strict=True)
        batch = self.captioner.encode(list(images), list(prompts), list(captions))
        batch["index"] = torch.tensor(index)
        return batch


class VLMCaptionTask(CaptionTask):
    """:class:`CaptionTask` with a :class:`VLMCaptioner`: the same prompts, loaders and validation."""

    def _build_model(self, train, captions, captioner, processor, log):
        from .engine import seed_everything

        cfg, prompt = self.cfg, self.prompt
        seed_everything(cfg.seed)
        vocab_text = captions + [prompt.text(c for c, _ in prompt.concepts)] if prompt else captions
        self.captioner = captioner or build_vlm_captioner(cfg, vocab_text, processor=processor)
        self.captioner.concept_prompt, self.captioner.retrieval_prompt = prompt, self.retrieval
        self.model = self.captioner.model
        if self.captioner.is_adapter:
            trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
            log(f"LoRA r={cfg.lora_r}: {trainable / 1e6:.2f} M trainable parameters")
        return None

    def _build_loaders(self, dataset, train, train_concepts, log) -> None:
        from torch.utils.data import DataLoader

        # batches are built in this process (num_workers 0, whatever cfg.num_workers says): the collator
        # holds the captioner, whose processor turns images and prompts into the model's inputs
        cfg, collate = self.cfg, VLMCollator(self.captioner)
        self.train_loader = DataLoader(self._dataset(train, self.train_ids, cfg.concept_prompt_drop),
                                       batch_size=cfg.batch_size, shuffle=True, num_workers=0, collate_fn=collate)
        self.valid_loader, self.valid_ids = None, []
        if cfg.eval_images > 0 and "valid" in dataset:
            valid = dataset.split("valid")
            self.valid_ids = _labelled_ids(valid, cfg.eval_images, cfg.seed)
            self.valid_captions = [valid.captions[i] for i in self.valid_ids]
            if self.valid_ids:
                self.valid_loader = DataLoader(self._dataset(valid, self.valid_ids), batch_size=cfg.batch_size,
                                               shuffle=False, num_workers=0, collate_fn=collate)
        if self.valid_loader is None:
            log("no validation (no valid split with captions, or eval_images=0): the last epoch is kept")

    def _dataset(self, split, ids, drop: float = 0.0) -> VLMCaptionDataset:
        cuis = retrieved = None
        if self.prompt is not None:
            known = self._concepts(split, ids, "concept_prompt", self.root)
            cuis = [known[i] for i in ids]
        if self.retrieval is not None:
            retrieved = self._retrieved_of(split, ids)
        return VLMCaptionDataset(split, ids, self.captioner, cuis, retrieved, drop)

    def training_step(self, model, batch):
        return self.captioner.loss(model, batch)

    def evaluate(self, model, loader, accelerator) -> dict[str, float]:
        """Validation loss (mean over caption tokens) and ROUGE-1 of greedy captions (official preprocessing)."""
        import torch

        from ..metrics.textscores import rouge1_scores
        from ..models.vlm import prompt_part

        model = accelerator.unwrap_model(model)
        token_loss, token_count, rouge = [], [], []
        for batch in loader:
            with accelerator.autocast():
                loss = self.captioner.loss(model, batch)
                prompt = prompt_part(batch, self.captioner.tokenizer.pad_token_id)
                ids = self.captioner.generate_ids(prompt, model=model, num_beams=self.cfg.eval_num_beams,
                                                  max_new_tokens=self.cfg.eval_max_new_tokens)
            n = (batch["labels"][:, 1:] != -100).sum()
            token_loss.append(accelerator.gather_for_metrics((loss.float() * n).reshape(1)))
            token_count.append(accelerator.gather_for_metrics(n.reshape(1)))
            gold = [self.valid_captions[i] for i in batch["index"].tolist()]
            scores = torch.tensor(rouge1_scores(gold, self.captioner.decode(ids)), device=batch["labels"].device)
            rouge.append(accelerator.gather_for_metrics(scores))
        self.valid_scores = {"valid_loss": (torch.cat(token_loss).sum() / torch.cat(token_count).sum()).item(),
                             "rouge1": torch.cat(rouge).mean().item()}
        return dict(self.valid_scores)

    def save_best(self, model, folder: Path) -> None:
        self.captioner.write_folder(folder, model=model, training=self.training_summary(),
                                    provenance=self.provenance())

    def training_summary(self) -> dict[str, Any]:
        return {**super().training_summary(), "lora_r": self.cfg.lora_r, "quantization": self.cfg.quantization}


def train_vlm_captioner(cfg: VLMCaptionConfig, data: str | Path, out: str | Path, resume: bool = False, log=print):
    """Train with the shared engine; the best model folder is ``out/model``. Returns TrainResult."""
    from ..fileio import atomic_dir
    from .engine import Trainer

    out = Path(out)
    dataset = open_caption_run(cfg, data, out, resume, log)  # the BLIP run's checks, before `out` is touched
    processor, processor_dir = None, out / PROCESSOR_DIR
    if resume and processor_dir.is_dir():  # the same tokenizer as the interrupted run
        from ..models.vlm import load_processor

        processor = load_processor(processor_dir)
    task = VLMCaptionTask(cfg, dataset, tokenizer=processor, log=log)
    if not resume or not processor_dir.is_dir():
        with atomic_dir(processor_dir) as tmp:
            task.captioner.processor.save_pretrained(tmp)
    save_config(cfg, out)
    return Trainer(task, TrainConfig.from_config(cfg), out).fit(resume=resume)
