"""Caption training and prediction on top of the shared engine and :class:`Captioner`.

- :class:`CaptionConfig`: every setting of a caption run (named configs in
  ``configs/captions/*.yaml``: ``paper``, ``authors-code``, ``demo``);
- :func:`build_captioner`: the model a config asks for (a hub name, a folder or
  ``scratch:SIZE``);
- :class:`CaptionTask`: the engine's Task protocol (loaders, ``training_step``, ``evaluate``
  with validation loss and ROUGE-1 on a subset, ``save_best``); :func:`train_captioner` runs it
  through :class:`medcap.training.engine.Trainer`, the one training loop of the project.

Prediction: :mod:`medcap.inference.captions`; baselines: :mod:`medcap.methods.baselines`.

Bad input: an empty caption or a non-UTF-8 caption file stops at reading the dataset with
the file and line (:func:`medcap.data.read_dataset`); captions longer than ``max_length``
tokens are truncated (their final [SEP] kept) and counted in the log and the model folder's
``medcap_captioner.json``; an unreadable image stops training or prediction with its path;
nothing is written half (model folders, checkpoints and submissions are atomic).
"""
from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import load_config, resolve_config, save_config
from ..errors import MedcapError
from ..models.captioner import DEFAULT_MODEL, Captioner, GenerationSettings
from .engine import TrainConfig

PROCESSOR_DIR = "processor"   # the run's tokenizer + image processor, reused by --resume


@dataclass
class CaptionConfig(TrainConfig):
    """Settings of a caption run: the training-loop keys of :class:`medcap.training.engine.TrainConfig`
    (with the caption defaults below) and the model / generation / data keys."""
    # engine defaults for captioning (REFERENCE §1; the other TrainConfig keys keep theirs)
    epochs: int = 2                  # REFERENCE §1
    lr: float = 1e-5                 # REFERENCE §1
    weight_decay: float = 0.01       # torch AdamW's default, what the authors' code used
    optimizer: str = "adamw"         # REFERENCE §1
    schedule: str = "constant"       # the authors' code has no schedule
    patience: int = 0                # early stopping (0 = never)
    name: str = ""                   # the config's name (set from the file name)
    # model
    model: str = DEFAULT_MODEL       # hub name, model folder, or scratch:tiny|small|base|large
    image_size: int = 224            # REFERENCE §1: 224 px; position embeddings interpolated if needed
    pre_resize: int = 0              # squash images to this size before the processor (0: no)
    max_length: int = 200            # REFERENCE §1: captions truncated to 200 tokens
    padding: str = "max_length"      # max_length (REFERENCE §1: padded to 200) | longest (same loss, faster)
    vocab_size: int = 4000           # scratch models: WordPiece vocabulary learned from the captions
    patch_size: int = 0              # scratch models: ViT patch size (0: the size's, 16)
    lowercase: bool = True           # scratch models: uncased tokenizer, like blip-large's
    dropout: float = 0.0             # scratch models: dropout in both transformers (BLIP's default: 0)
    prompt: str = ""                 # text the decoder starts from (cut from the output)
    gradient_checkpointing: bool = False  # recompute activations: less memory, slower steps
    freeze_vision: bool = False      # train the text decoder only
    concept_loss: float = 0.0        # weight of the auxiliary concept probe (medcap.models.guided; 0: off)
    concept_prompt: bool = False     # the decoder starts from the image's concept names (ConceptPrompt)
    concept_prompt_tokens: int = 24  # longest concept prompt, in tokens
    concept_prompt_drop: float = 0.0  # training: leave each gold concept out of the prompt with this probability
    retrieval_prompt: bool = False   # the prompt also holds the captions of the nearest training images
    retrieval_neighbours: int = 1    # how many retrieved captions, nearest first
    retrieval_prompt_tokens: int = 32  # WordPieces the retrieved captions share
    retrieval_model: str = ""        # concept model (run) folder whose embeddings retrieve ("": a plain backbone)
    retrieval_backbone: str = "resnet18"  # the plain backbone (random weights from `seed`) without retrieval_model
    retrieval_image_size: int = 224  # the plain backbone's image size
    # generation (REFERENCE §2: the authors' run)
    num_beams: int = 5               # beam width of predictions (1 = greedy)
    no_repeat_ngram_size: int = 2    # no n-gram of this size twice in a caption
    max_new_tokens: int = 200        # longest predicted caption, in tokens
    # data
    batch_size: int = 4              # training batch size (REFERENCE §1)
    num_workers: int | str = "auto"  # DataLoader workers: a number, or auto (medcap.data.loading)
    max_train_images: int = 0        # 0 = all (a smaller number for quick trials)
    allow_missing_images: bool = False  # train although over 1% of the label rows are dropped (data.drops)
    # validation each epoch, on a fixed random subset of the valid split
    eval_images: int = 200           # 0 = no validation (the last epoch is kept)
    eval_num_beams: int = 1          # greedy while training: fast; predictions use num_beams
    eval_max_new_tokens: int = 60    # longest validation caption, in tokens
    monitor: str = "rouge1"          # rouge1 (higher is better) | valid_loss (lower is better)

    def __post_init__(self):
        super().__post_init__()   # the engine keys, before any data is read or model built
        if self.padding not in ("max_length", "longest"):
            raise MedcapError(f"padding: expected max_length or longest, got {self.padding!r}")
        if self.monitor not in ("rouge1", "valid_loss"):
            raise MedcapError(f"monitor: expected rouge1 or valid_loss, got {self.monitor!r}")
        if self.max_length < 4 or self.batch_size < 1 or self.image_size < 16:
            raise MedcapError("max_length must be at least 4, batch_size at least 1, image_size at least 16")
        if not 0 <= self.dropout < 1 or self.concept_loss < 0 or not 0 <= self.concept_prompt_drop < 1:
            raise MedcapError("dropout and concept_prompt_drop must be in [0, 1), concept_loss at least 0")
        if self.concept_prompt and (self.prompt or self.concept_prompt_tokens < 1):
            raise MedcapError("concept_prompt: needs concept_prompt_tokens >= 1 and no text prompt (prompt: \"\")")
        if self.retrieval_prompt and (self.prompt or self.retrieval_prompt_tokens < self.retrieval_neighbours):
            raise MedcapError("retrieval_prompt: needs retrieval_prompt_tokens >= retrieval_neighbours and no text "
                              "prompt (prompt: \"\")")

    @property
    def generation(self) -> GenerationSettings:
        return GenerationSettings(num_beams=self.num_beams, no_repeat_ngram_size=self.no_repeat_ngram_size,
                                  max_new_tokens=self.max_new_tokens, prompt=self.prompt)


def load_caption_config(name_or_path: str | Path = "paper", overrides: dict | list[str] | None = None) -> CaptionConfig:
    return load_config(CaptionConfig, name_or_path, "captions", overrides)


def build_captioner(cfg: CaptionConfig, train_captions: Sequence[str] = (), tokenizer=None) -> Captioner:
    """The model ``cfg.model`` names: ``scratch:SIZE`` (tokenizer from ``train_captions``) or pretrained."""
    if cfg.model.startswith("scratch:"):
        return Captioner.from_scratch(cfg.model.split(":", 1)[1], train_captions, image_size=cfg.image_size,
                                      vocab_size=cfg.vocab_size, max_length=cfg.max_length,
                                      lowercase=cfg.lowercase, seed=cfg.seed, generation=cfg.generation,
                                      tokenizer=tokenizer, patch_size=cfg.patch_size or None,
                                      dropout=cfg.dropout)
    captioner = Captioner.from_pretrained(cfg.model, image_size=cfg.image_size, max_length=cfg.max_length,
                                          generation=cfg.generation, pre_resize=cfg.pre_resize or None)
    if tokenizer is not None:
        captioner.processor.tokenizer = tokenizer
    return captioner


# -- data ---------------------------------------------------------------------------------------
class CaptionDataset:
    """(pixel tensor [3, S, S], caption, index, concepts, prompt) for each image ID of a split.

    ``concepts``: an optional multi-hot matrix [len(ids), K] (the concept probe's targets);
    ``prompt``: an optional :class:`ConceptPrompt` with the ``tokenizer`` to encode it and
    ``cuis`` (each image's CUIs), of which each is left out with probability ``drop`` (training
    only: the detector misses concepts at prediction time); ``retrieval``: an optional
    :class:`~medcap.models.retrieval.RetrievalPrompt` with ``retrieved`` (each image's nearest
    training captions), appended after the concept prompt. Absent items are None.
    """

    def __init__(self, split, ids: Sequence[str], transform, concepts=None, prompt=None, tokenizer=None,
                 cuis: Sequence[Sequence[str]] | None = None, drop: float = 0.0, retrieval=None,
                 retrieved: Sequence[Sequence[str]] | None = None):
        self.split, self.ids, self.transform, self.concepts = split, list(ids), transform, concepts
        self.prompt, self.tokenizer, self.cuis, self.drop = prompt, tokenizer, cuis, drop
        self.retrieval, self.retrieved = retrieval, retrieved

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        image_id = self.ids[i]
        # draft_size: a large JPEG is decoded at a reduced DCT scale, still >= the model's size
        image = self.split.load_image(image_id, draft_size=self.transform.draft_size)
        concepts = None if self.concepts is None else self.concepts[i]
        prompt = None
        if self.prompt is not None:
            cuis = [c for c in self.cuis[i] if not self.drop or random.random() >= self.drop]
            prompt = self.prompt.ids(self.tokenizer, cuis)
        if self.retrieval is not None:  # [concepts] [SEP] [retrieved captions] [SEP]
            prompt = (prompt or []) + self.retrieval.ids(self.tokenizer, self.retrieved[i])
        return self.transform([image])[0], self.split.captions[image_id], i, concepts, prompt


class CaptionCollator:
    """Stacks images and turns captions into input_ids / attention_mask / labels (-100 on padding);
    ``concepts`` [B, K] and ``prompts`` (a list of token-id lists) when the dataset has them."""

    def __init__(self, encode):
        self.encode = encode    # a CaptionEncoder

    def __call__(self, items):
        import torch

        pixels, captions, index, concepts, prompts = zip(*items, strict=True)
        prompts = None if prompts[0] is None else list(prompts)
        batch = self.encode(list(captions), prompts)
        batch["pixel_values"] = torch.stack(pixels)
        batch["index"] = torch.tensor(index)
        if concepts[0] is not None:
            batch["concepts"] = torch.stack([torch.as_tensor(k) for k in concepts])
        if prompts is not None:
            batch["prompts"] = prompts
        return batch


def _labelled_ids(split, limit: int = 0, seed: int = 0) -> list[str]:
    if split.captions is None:
        raise MedcapError(f"the {split.name} split has no captions file", file=split.image_dir)
    ids = split.labelled_ids("captions")
    if limit and limit < len(ids):
        # the same subset as sample(ids, limit) (sample picks by position), in split order without
        # ids.index: that was O(limit x N), 8 s for 20,000 of 80,000 training images
        ids = [ids[i] for i in sorted(random.Random(seed).sample(range(len(ids)), limit))]
    return ids


class CaptionTask:
    """The engine's Task for captioning (see medcap.training.engine): the model, its loaders, the loss."""

    def __init__(self, cfg: CaptionConfig, dataset, captioner: Captioner | None = None, tokenizer=None,
                 log=print):
        self.cfg, self.root = cfg, dataset.root
        train = dataset.split("train")
        self.train_ids = _labelled_ids(train, cfg.max_train_images, cfg.seed)
        if not self.train_ids:
            raise MedcapError("no training images with a caption", file=dataset.root)
        captions = [train.captions[i] for i in self.train_ids]
        self.prompt = self._concept_prompt(train, dataset.cui_names)
        self.retrieved: dict[str, list[list[str]]] = {}
        self.retrieval = self._retrieval_prompt(train, captions, log)
        train_concepts = self._build_model(train, captions, captioner, tokenizer, log)
        lengths = self.captioner.caption_lengths(captions)
        self.n_truncated = sum(n > cfg.max_length for n in lengths)
        log(f"{len(self.train_ids)} training captions, {self.n_truncated} longer than {cfg.max_length} tokens "
            f"(truncated), longest {max(lengths)} tokens; model {self.captioner.source} "
            f"({self.captioner.num_parameters() / 1e6:.1f} M parameters), {cfg.image_size} px")
        self._build_loaders(dataset, train, train_concepts, log)
        self.monitor = cfg.monitor
        self.monitor_mode = "max" if cfg.monitor == "rouge1" else "min"

    def _concept_prompt(self, train, cui_names):
        """Knowledge-guided captions: the names of the gold concepts as the prompt (or None)."""
        if not self.cfg.concept_prompt:
            return None
        from ..data.vocab import ConceptVocabulary
        from ..models.prompting import ConceptPrompt

        known = self._concepts(train, self.train_ids, "concept_prompt", self.root)
        return ConceptPrompt.from_vocabulary(ConceptVocabulary.from_concepts(known, cui_names),
                                             self.cfg.concept_prompt_tokens)

    def _retrieval_prompt(self, train, captions, log):
        """Retrieval-augmented captions: the index of the training captions and their embeddings
        (the retrieval model's or a plain backbone's); None without a retrieval prompt."""
        if not self.cfg.retrieval_prompt:
            return None
        from ..data.items import ImageFolderItems
        from ..inference.concepts import image_embeddings, load_detector
        from ..models.location import resolve_model_folder
        from ..models.retrieval import RetrievalPrompt

        cfg, source = self.cfg, None
        if cfg.retrieval_model:
            source = resolve_model_folder(cfg.retrieval_model, "concepts")
            spec, embedder = {"kind": "detector"}, load_detector(source)
        else:
            spec, embedder = RetrievalPrompt.backbone_spec(cfg.retrieval_backbone, cfg.retrieval_image_size,
                                                           cfg.seed)
        _, emb = image_embeddings(embedder, ImageFolderItems.from_split(train, self.train_ids),
                                  batch_size=max(cfg.batch_size, 32), progress=cfg.progress)
        prompt = RetrievalPrompt(captions, emb, cfg.retrieval_neighbours, cfg.retrieval_prompt_tokens, spec)
        prompt.embedder_model, prompt.embedder_source = embedder, source
        log(f"retrieval prompt: {cfg.retrieval_neighbours} nearest of {len(captions)} training captions by "
            f"{'the concept model ' + str(source) if source else 'a plain ' + cfg.retrieval_backbone}, "
            f"{cfg.retrieval_prompt_tokens} tokens")
        self.retrieved["train"] = prompt.retrieve(emb, exclude_self=True)  # never an image's own caption
        return prompt

    def _retrieved_of(self, split, ids) -> list[list[str]]:
        """Each image's nearest training captions (training images: their neighbours but themselves)."""
        if split.name == "train" and list(ids) == self.train_ids:
            return self.retrieved["train"]
        from ..data.items import ImageFolderItems
        from ..inference.concepts import image_embeddings

        _, emb = image_embeddings(self.retrieval.embedder_model, ImageFolderItems.from_split(split, ids),
                                  batch_size=max(self.cfg.batch_size, 32))
        return self.retrieval.retrieve(emb)

    def _build_model(self, train, captions, captioner, tokenizer, log):
        """The captioner (seeded), its training options and the optional concept probe;
        returns the probe's targets [N, K] (None without a probe)."""
        from .engine import seed_everything

        cfg, prompt = self.cfg, self.prompt
        seed_everything(cfg.seed)
        vocab_text = captions + [prompt.text(c for c, _ in prompt.concepts)] if prompt else captions
        self.captioner = captioner or build_captioner(cfg, vocab_text, tokenizer=tokenizer)
        self.captioner.concept_prompt = prompt
        self.captioner.processor.retrieval_prompt = self.retrieval
        if cfg.freeze_vision:
            self.captioner.freeze_vision()
        if cfg.gradient_checkpointing:
            self.captioner.enable_gradient_checkpointing()
        self.model = self.captioner.model
        if cfg.concept_loss <= 0:
            return None
        from ..data.vocab import ConceptVocabulary
        from ..models.guided import ConceptGuidedBlip

        known = self._concepts(train, self.train_ids, "concept_loss", self.root)
        vocab = ConceptVocabulary.from_concepts(known)
        train_concepts, _ = vocab.encode_many(known.values())
        self.model = ConceptGuidedBlip(self.captioner.model, len(vocab), cfg.concept_loss)
        log(f"concept probe: {len(vocab)} CUIs, weight {cfg.concept_loss}")
        return train_concepts

    def _prompts_of(self, split, ids, drop: float = 0.0) -> dict:
        """CaptionDataset's concept- and retrieval-prompt arguments (none without prompts)."""
        out: dict[str, Any] = {}
        if self.prompt is not None:
            known = self._concepts(split, ids, "concept_prompt", self.root)
            out.update(prompt=self.prompt, cuis=[known[i] for i in ids], drop=drop)
        if self.retrieval is not None:
            out.update(retrieval=self.retrieval, retrieved=self._retrieved_of(split, ids))
        return {**out, "tokenizer": self.captioner.tokenizer} if out else out

    def _build_loaders(self, dataset, train, train_concepts, log) -> None:
        """Training loader and, with a valid split and eval_images > 0, the validation loader."""
        from torch.utils.data import DataLoader

        from ..data.loading import loader_options, resolve_workers

        cfg = self.cfg
        device = "cpu" if cfg.cpu else None
        loader = loader_options(resolve_workers(cfg.num_workers, len(self.train_ids), device), device, train=True)
        collate = CaptionCollator(self.captioner.caption_encoder(cfg.padding))
        transform = self.captioner.image_transform()
        self.train_loader = DataLoader(CaptionDataset(train, self.train_ids, transform, train_concepts,
                                                      **self._prompts_of(train, self.train_ids,
                                                                         cfg.concept_prompt_drop)),
                                       batch_size=cfg.batch_size,
                                       shuffle=True, collate_fn=collate, **loader)
        self.valid_loader = None
        self.valid_ids: list[str] = []
        if cfg.eval_images > 0 and "valid" in dataset:
            valid = dataset.split("valid")
            self.valid_ids = _labelled_ids(valid, cfg.eval_images, cfg.seed)
            self.valid_captions = [valid.captions[i] for i in self.valid_ids]
            if self.valid_ids:  # a concept-prompted model is validated with the valid split's gold concepts
                self.valid_loader = DataLoader(CaptionDataset(valid, self.valid_ids, transform,
                                                              **self._prompts_of(valid, self.valid_ids)),
                                               batch_size=cfg.batch_size, shuffle=False,
                                               collate_fn=collate, **loader)
        if self.valid_loader is None:
            log("no validation (no valid split with captions, or eval_images=0): the last epoch is kept")

    @staticmethod
    def _concepts(split, ids: Sequence[str], setting: str, root) -> dict[str, list[str]]:
        """{ID: gold CUIs} of ``ids``; MedcapError when the split has no concepts."""
        if split.concepts is None:
            raise MedcapError(f"{setting} needs the {split.name} split's concepts ({split.name}_concepts.csv, or a "
                              "concepts column in parquet data)", file=root)
        return {i: split.concepts.get(i, []) for i in ids}

    def training_step(self, model, batch):
        if "concepts" in batch:  # a ConceptGuidedBlip: caption loss + weighted probe loss
            return model(**{k: batch[k] for k in ("pixel_values", "input_ids", "attention_mask", "labels",
                                                  "concepts")},
                         interpolate_pos_encoding=self.captioner.interpolate_pos_encoding)[0]
        return self.captioner.loss(model, batch)

    def evaluate(self, model, loader, accelerator) -> dict[str, float]:
        """Validation loss (mean over tokens) and ROUGE-1 of greedy captions (official preprocessing)."""
        import torch

        from ..metrics.textscores import rouge1_scores
        from ..models.guided import captioning_model

        model = captioning_model(model)  # validation scores the caption model alone
        token_loss, token_count, rouge = [], [], []
        for batch in loader:
            with accelerator.autocast():
                loss = self.captioner.loss(model, batch)
                ids = self.captioner.generate_ids(batch["pixel_values"], model=model, prompts=batch.get("prompts"),
                                                  num_beams=self.cfg.eval_num_beams,
                                                  max_new_tokens=self.cfg.eval_max_new_tokens)
            n = (batch["labels"][:, 1:] != -100).sum()
            token_loss.append(accelerator.gather_for_metrics((loss.float() * n).reshape(1)))
            token_count.append(accelerator.gather_for_metrics(n.reshape(1)))
            preds = self.captioner.decode(ids)
            gold = [self.valid_captions[i] for i in batch["index"].tolist()]
            scores = torch.tensor(rouge1_scores(gold, preds), device=batch["labels"].device)
            rouge.append(accelerator.gather_for_metrics(scores))
        self.valid_scores = {"valid_loss": (torch.cat(token_loss).sum() / torch.cat(token_count).sum()).item(),
                             "rouge1": torch.cat(rouge).mean().item()}
        return dict(self.valid_scores)

    def save_best(self, model, folder: Path) -> None:
        from ..models.guided import captioning_model

        self.captioner.write_folder(folder, model=captioning_model(model), training=self.training_summary(),
                                    provenance=self.provenance())

    def provenance(self) -> dict:
        """provenance.json of the saved model: data, sizes, this validation's scores, the config."""
        from ..data.provenance import dataset_provenance
        from ..models.card import make_provenance

        data = dataset_provenance(self.root, train_images=len(self.train_ids), valid_images=len(self.valid_ids))
        base = None if self.cfg.model.startswith("scratch:") else self.cfg.model
        return make_provenance("captioner", data, getattr(self, "valid_scores", None), dataclasses.asdict(self.cfg),
                               base_model=base)

    def training_summary(self) -> dict[str, Any]:
        return {"config": self.cfg.name, "train_images": len(self.train_ids), "concept_loss": self.cfg.concept_loss,
                "concept_prompt": self.cfg.concept_prompt, "retrieval_prompt": self.cfg.retrieval_prompt,
                "captions_truncated": self.n_truncated, "max_length": self.cfg.max_length}


def open_caption_run(cfg: CaptionConfig, data: str | Path, out: Path, resume: bool, log=print):
    """What every caption run (BLIP or VLM) checks before it writes anything -> the dataset: the run
    folder (``--resume``), the pretrained weights (offline), then each split's dropped rows."""
    from ..data import read_dataset
    from ..data.drops import check_drops
    from .checkpoints import check_run_folder

    check_run_folder(out, resume)  # before anything in `out` is touched
    if not cfg.model.startswith("scratch:"):
        from ..models.captioner import check_pretrained_available

        check_pretrained_available(cfg.model)   # before the data is read
    dataset = read_dataset(data)
    for name in ("train", "valid"):
        if name in dataset:  # one summary line each; more than 1% of the rows dropped: refused
            check_drops(dataset.split(name), cfg.allow_missing_images, log,
                        concept_rows=bool(cfg.concept_prompt or cfg.concept_loss))  # else concepts are not read
    return dataset


def train_captioner(config: str | Path | CaptionConfig, data: str | Path, out: str | Path,
                    overrides: dict | list[str] | None = None, resume: bool = False, log=print):
    """Train with the shared engine; the best model folder is ``out/model``. Returns TrainResult.

    ``config``: a named config (``"demo"``), a YAML path or a :class:`CaptionConfig`; ``overrides``:
    ``{"epochs": 3}`` or ``["epochs=3"]``, applied to any of them (as :func:`train_concepts`)."""
    from ..fileio import atomic_dir
    from .engine import Trainer

    cfg = resolve_config(CaptionConfig, config, "captions", overrides)
    out = Path(out)
    dataset = open_caption_run(cfg, data, out, resume, log)
    tokenizer = None
    processor_dir = out / PROCESSOR_DIR
    if resume and processor_dir.is_dir():  # the same tokenizer as the interrupted run
        from transformers import BlipProcessor

        from ..fileio import read_json

        tokenizer = BlipProcessor.from_pretrained(processor_dir).tokenizer
        saved = read_json(processor_dir / "tokenizer_config.json")
        for key in set(tokenizer.init_kwargs) - set(saved):  # loading adds is_local, local_files_only: the
            tokenizer.init_kwargs.pop(key)                  # resumed model folder must equal a clean run's
    task = CaptionTask(cfg, dataset, tokenizer=tokenizer, log=log)
    if not resume or not processor_dir.is_dir():
        with atomic_dir(processor_dir) as tmp:
            task.captioner.processor.save_pretrained(tmp)
    save_config(cfg, out)   # config.yaml, as concept runs (older caption runs wrote config.json)
    return Trainer(task, TrainConfig.from_config(cfg), out).fit(resume=resume)


train_captions = train_captioner  # the name that matches train_concepts and `medcap train captions`
