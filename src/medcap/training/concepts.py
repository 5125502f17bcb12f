"""Concept detection glue: config, datasets, the engine Task and training (prediction: medcap.inference.concepts).

Python API (the CLI in ``medcap.cli.concepts`` is a thin layer over it)::

    from medcap.training.concepts import train_concepts
    from medcap.inference.concepts import predict_concepts
    result = train_concepts("demo", "synth-data", "runs/demo", overrides=["epochs=3"])
    preds = predict_concepts("runs/demo/model", ["synth-data/test"])   # {id: [(cui, prob), ...]}

A named config (``medcap/configs/concepts/<name>.yaml``) sets fields of :class:`ConceptConfig`:
the training-loop fields of :class:`medcap.training.engine.TrainConfig`, the loss fields of
:class:`medcap.training.losses.LossConfig`, and the model / data / threshold fields below.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..config import load_config, resolve_config
from ..data.items import ConceptImageDataset, ImageFolderItems
from ..data.transforms import normalize_batch
from ..errors import MedcapError
from ..fileio import write_text_atomic
from ..models.concept_detector import DetectorConfig
from .engine import TrainConfig, Trainer, TrainResult, seed_everything
from .losses import LossConfig

TASK = "concepts"
# UMLS Right (C0205090) and Left (C0205091): the side labels a left-right flip swaps.
SIDE_PAIRS = "C0205090:C0205091"


@dataclass
class ConceptConfig(TrainConfig, LossConfig):
    """Every key a concept config may set (named configs: medcap/configs/concepts/*.yaml)."""
    name: str = ""                    # the config's name (set from the file name)
    # -- model: the network's config, nested as transformers nests its configs. Its keys may be
    # written at the top level (backbone: resnet18, --set head=csra) or under model: / model.KEY.
    model: DetectorConfig = field(default_factory=DetectorConfig)
    pretrained: bool = False          # ImageNet weights from the local cache (REFERENCE §1: yes)
    pretrained_path: str = ""         # ... or from this file
    # -- images ---------------------------------------------------------------------------------
    image_size: int = 224             # square input side (REFERENCE §1: 224)
    resize: str = "squash"            # squash (ignore aspect ratio) | pad (letterbox)
    normalize: str = "imagenet"       # imagenet (mean/std) | none (inputs in [0, 1], authors' code)
    crop_scale_min: float = 1.0       # RandomResizedCrop scale (min, 1); 1 = no crop
    hflip: bool = False               # random horizontal flip (never when sides are labels)
    lateral_flip: bool = False        # flip half the images and swap their side labels (LateralMirror)
    lateral_pairs: str = SIDE_PAIRS   # "CUI:CUI,...": the side labels lateral_flip swaps
    rotation: float = 0.0             # random rotation, degrees
    translate: float = 0.0            # random shift, up to this share of the side (0.06 = 4 px at 64)
    color_jitter: float = 0.0         # brightness/contrast/saturation jitter
    cache_images: bool = False        # keep decoded, resized images in memory (small datasets)
    num_workers: int | str = "auto"   # DataLoader workers: a number, or auto (medcap.data.loading)
    # -- data -----------------------------------------------------------------------------------
    batch_size: int = 16              # training batch size (REFERENCE §1: 16)
    eval_batch_size: int = 64         # validation batch size
    min_concept_count: int = 1        # vocabulary: CUIs in at least this many training images
    valid_fraction: float = 0.0       # hold out this share of train when there is no valid split
    allow_missing_images: bool = False  # train although over 1% of the label rows are dropped (data.drops)
    # -- thresholds (medcap.thresholds) ------------------------------------------------------
    threshold_grid: str = "paper"     # paper (0.05..0.55 step 0.05) | fine (0.01 steps)
    never_empty: str = "auto"         # top-1 when nothing passes: auto (chosen on valid) | on | off
    per_concept_thresholds: bool = False  # tune a threshold per concept on validation (else one global)
    per_concept_min_positives: int = 10   # ... only for concepts with this many validation positives
    per_concept_shrinkage: float = 10.0   # pull per-concept thresholds towards the global one

    def __post_init__(self):
        super().__post_init__()
        choices = {"resize": ("squash", "pad"), "normalize": ("imagenet", "none"),
                   "threshold_grid": ("paper", "fine"), "never_empty": ("auto", "on", "off")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise MedcapError(f"{key}: expected one of {', '.join(allowed)}, got {getattr(self, key)!r}")
        if self.hflip and self.lateral_flip:
            raise MedcapError("hflip and lateral_flip: choose one (lateral_flip also swaps the side labels)")
        side_pairs(self.lateral_pairs)  # checked now, not at the first batch
        if not 0 <= self.valid_fraction < 1:
            raise MedcapError(f"valid_fraction: expected a number in [0, 1), got {self.valid_fraction}")


def load_concept_config(name_or_path: str | Path, overrides: dict | list[str] | None = None) -> ConceptConfig:
    return load_config(ConceptConfig, name_or_path, TASK, overrides)


def detector_config(cfg: ConceptConfig, num_classes: int) -> DetectorConfig:
    """The config's network with one output per concept of the vocabulary."""
    return dataclasses.replace(cfg.model, num_classes=num_classes)


# ------------------------------------------------------------------------------------------
# Images: decode + resize (cached), augment, normalise (on the device)
# ------------------------------------------------------------------------------------------

def concept_processor(cfg: ConceptConfig):
    """The model's :class:`~medcap.models.processing.ConceptProcessor`: everything prediction must
    do to an image, saved in the model folder (preprocessor_config.json)."""
    from ..models.processing import ConceptProcessor

    return ConceptProcessor.from_settings(cfg.image_size, cfg.resize, cfg.normalize)


def preprocessing_of(cfg: ConceptConfig) -> dict:
    """The processor's dict form (what medcap.data.items takes)."""
    return concept_processor(cfg).to_dict()


def side_pairs(text: str) -> list[tuple[str, str]]:
    """``lateral_pairs`` ("C0205090:C0205091,...") -> [(CUI, CUI), ...]."""
    from ..data.csvio import normalize_cui

    pairs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        sides = [normalize_cui(c) for c in part.split(":")]
        if len(sides) != 2 or not all(sides) or sides[0] == sides[1]:
            raise MedcapError(f"lateral_pairs: expected CUI:CUI pairs separated by commas, got {part!r}")
        pairs.append((sides[0], sides[1]))
    return pairs


def lateral_mirror(cfg: ConceptConfig, vocabulary):
    """The training set's :class:`~medcap.data.items.LateralMirror`, or None when lateral_flip is off."""
    from ..data.items import LateralMirror

    if not cfg.lateral_flip:
        return None
    column = {c: i for i, c in enumerate(vocabulary.cuis)}
    return LateralMirror([(column.get(a), column.get(b)) for a, b in side_pairs(cfg.lateral_pairs)])


def train_augmentation(cfg: ConceptConfig) -> Callable | None:
    """Augmentations on uint8 tensors (authors' code: RandomResizedCrop 0.8-1, flip, rotation 15,
    colour jitter 0.2, REFERENCE §2). None when every one is off."""
    from torchvision.transforms import v2

    steps = []
    if cfg.crop_scale_min < 1:
        steps.append(v2.RandomResizedCrop(cfg.image_size, scale=(cfg.crop_scale_min, 1.0), antialias=True))
    if cfg.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if cfg.rotation > 0:
        steps.append(v2.RandomRotation(cfg.rotation))
    if cfg.translate > 0:  # a shift keeps sizes (which tell a nodule from a mass), unlike a crop
        steps.append(v2.RandomAffine(degrees=0, translate=(cfg.translate, cfg.translate)))
    if cfg.color_jitter > 0:
        j = cfg.color_jitter
        steps.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j))
    return v2.Compose(steps) if steps else None


# ------------------------------------------------------------------------------------------
# The engine Task
# ------------------------------------------------------------------------------------------

@dataclass
class ConceptData:
    """Training and validation data encoded over the training vocabulary."""
    vocabulary: Any
    train: ImageFolderItems
    train_targets: np.ndarray
    valid: ImageFolderItems
    valid_targets: np.ndarray
    valid_gold_sizes: np.ndarray      # |G| per validation image, unknown CUIs included (REFERENCE §4)
    valid_unknown: list[str]          # validation CUIs that no training image has
    root: Path | None = None          # the dataset folder (recorded in the model's provenance.json)


def load_concept_data(data_dir: str | Path, cfg: ConceptConfig, log: Callable = print) -> ConceptData:
    from ..data.csvio import normalize_cui
    from ..data.dataset import read_dataset
    from ..data.drops import check_drops
    from ..data.vocab import ConceptVocabulary

    ds = read_dataset(data_dir)
    train = ds.split("train")
    if train.concepts is None:
        raise MedcapError("the training split has no concepts file (train_concepts.csv)", file=ds.root)
    for split in (train, *([ds.split("valid")] if "valid" in ds else [])):
        check_drops(split, cfg.allow_missing_images, log)  # one summary line each; >1% dropped: refused
    train_ids = [i for i in train.ids if i in train.concepts]
    if "valid" in ds and ds.split("valid").concepts is not None:
        valid = ds.split("valid")
        valid_ids = [i for i in valid.ids if i in valid.concepts]
        valid_concepts, valid_split = valid.concepts, valid
    elif cfg.valid_fraction > 0:
        rng = np.random.default_rng(cfg.seed)
        held = set(rng.permutation(train_ids)[: max(1, round(len(train_ids) * cfg.valid_fraction))].tolist())
        valid_ids = [i for i in train_ids if i in held]
        train_ids = [i for i in train_ids if i not in held]
        valid_concepts, valid_split = train.concepts, train
        log(f"no validation split: holding out {len(valid_ids)} training images (valid_fraction "
            f"{cfg.valid_fraction})")
    else:
        raise MedcapError("the data folder has no validation split with concepts (valid/ and "
                          "valid_concepts.csv); add one or hold out part of train with "
                          "--set valid_fraction=0.1", file=ds.root)
    if not train_ids or not valid_ids:
        raise MedcapError("no labelled images with image files in the train or validation split", file=ds.root)
    vocab = ConceptVocabulary.from_concepts({i: train.concepts[i] for i in train_ids}, ds.cui_names,
                                            cfg.min_concept_count)
    train_targets, _ = vocab.encode_many(train.concepts[i] for i in train_ids)
    valid_targets, unknown = vocab.encode_many(valid_concepts[i] for i in valid_ids)
    gold_sizes = np.array([len({normalize_cui(c) for c in valid_concepts[i] if c.strip()}) for i in valid_ids])
    if unknown:
        n_occ = int(gold_sizes.sum() - valid_targets.sum())
        log(f"{len(unknown)} validation CUIs ({n_occ} occurrences) are not in the training vocabulary "
            f"(e.g. {', '.join(unknown[:5])}); they count as missed, as in the official score")
    return ConceptData(vocab, ImageFolderItems.from_split(train, train_ids), train_targets,
                       ImageFolderItems.from_split(valid_split, valid_ids), valid_targets, gold_sizes, unknown,
                       root=ds.root)


class ConceptTask:
    """The engine's Task for concept detection (see medcap.training.engine for the protocol)."""
    monitor = "f1"                     # the OFFICIAL mean per-image F1 on validation (REFERENCE §4)
    monitor_mode = "max"

    def __init__(self, cfg: ConceptConfig, data: ConceptData):
        import torch

        from ..models.concept_detector import ConceptDetector
        from .losses import build_loss

        self.cfg, self.data = cfg, data
        self.processor = concept_processor(cfg)
        self.prep = self.processor.to_dict()
        seed_everything(cfg.seed)
        self.model = ConceptDetector(detector_config(cfg, len(data.vocabulary)), pretrained=cfg.pretrained,
                                     pretrained_path=cfg.pretrained_path or None)
        self.model.vocabulary, self.model.processor = data.vocabulary, self.processor
        self.loss = build_loss(cfg)
        from ..data.loading import loader_options, resolve_workers, world_size
        from ..data.streaming import parquet_training_sampler

        workers = resolve_workers(cfg.num_workers, len(data.train.ids))
        loader = loader_options(workers, "cpu" if cfg.cpu else None, train=True)
        drop_last = len(data.train.ids) > cfg.batch_size
        # Parquet files with large row groups: streaming order (medcap.data.streaming), else random.
        streaming = parquet_training_sampler(data.train, cfg.batch_size, cfg.seed, drop_last, workers, world_size())
        order = (dict(batch_sampler=streaming) if streaming is not None
                 else dict(batch_size=cfg.batch_size, shuffle=True, drop_last=drop_last))
        self.train_loader = torch.utils.data.DataLoader(
            ConceptImageDataset(data.train, self.prep, data.train_targets, train_augmentation(cfg), cfg.cache_images,
                                lateral_mirror(cfg, data.vocabulary)), **order, **loader)
        self.valid_loader = torch.utils.data.DataLoader(
            ConceptImageDataset(data.valid, self.prep, data.valid_targets, None, cfg.cache_images),
            batch_size=cfg.eval_batch_size, shuffle=False, **loader)
        self.thresholds = None
        self.threshold_report: dict = {}

    def training_step(self, model, batch):
        from .losses import loss_value

        x, y, _ = batch
        return loss_value(self.loss, model(normalize_batch(x, self.prep)), y)

    def evaluate(self, model, loader, accelerator) -> dict[str, float]:
        import torch

        from ..thresholds import select_thresholds
        from .losses import loss_value

        probs, index, losses = [], [], []
        for x, y, i in loader:
            logits = model(normalize_batch(x, self.prep)).float()
            losses.append(loss_value(self.loss, logits, y).reshape(1))
            p, i = accelerator.gather_for_metrics((logits.sigmoid(), i))
            probs.append(p.cpu())
            index.append(i.cpu())
        order = np.argsort(np.concatenate([t.numpy() for t in index]))
        probs_np = np.concatenate([p.numpy() for p in probs])[order]
        cfg = self.cfg
        self.thresholds, self.threshold_report = select_thresholds(
            probs_np, self.data.valid_targets > 0, self.data.valid_gold_sizes, grid=cfg.threshold_grid,
            never_empty=cfg.never_empty, per_concept=cfg.per_concept_thresholds,
            min_positives=cfg.per_concept_min_positives, shrinkage=cfg.per_concept_shrinkage, seed=cfg.seed)
        valid_loss = accelerator.reduce(torch.cat(losses).mean(), reduction="mean").item()
        self.valid_scores = {"f1": self.threshold_report["f1"], "threshold": self.thresholds.global_threshold,
                             "never_empty": int(self.thresholds.never_empty), "valid_loss": valid_loss}
        return dict(self.valid_scores)

    def save_best(self, model, folder: Path) -> None:
        model.vocabulary, model.processor = self.data.vocabulary, self.processor
        model.thresholds = self.thresholds.to_json(self.data.vocabulary.cuis)
        model.thresholds["valid_f1"] = self.threshold_report.get("f1")
        model.thresholds["grid"] = self.cfg.threshold_grid
        # the validation sweep behind the global threshold (the report's threshold vs F1 curve)
        model.thresholds["sweep"] = self.threshold_report["sweep"]
        model.provenance = self.provenance()
        model.save_pretrained(folder)

    def provenance(self) -> dict:
        """provenance.json of the saved model: data, sizes, this validation's scores, the config."""
        from ..data.provenance import dataset_provenance
        from ..models.card import make_provenance

        d = self.data
        data = dataset_provenance(d.root, train_images=len(d.train.ids), valid_images=len(d.valid.ids),
                                  concepts=len(d.vocabulary))
        cfg = self.cfg
        # the scores only: the chosen thresholds are in thresholds.json
        scores = {k: v for k, v in getattr(self, "valid_scores", {}).items() if k in ("f1", "valid_loss")}
        base = cfg.model.backbone if cfg.pretrained or cfg.pretrained_path else None
        return make_provenance("concept-detector", data, scores, dataclasses.asdict(cfg), base_model=base)


def train_concepts(config: str | Path | ConceptConfig, data_dir: str | Path, out_dir: str | Path,
                   overrides: dict | list[str] | None = None, resume: bool = False,
                   log: Callable = print) -> TrainResult:
    """Train a concept detector; the best epoch's model folder is ``out_dir/model``.

    ``config``: a named config (``"demo"``), a YAML path or a :class:`ConceptConfig`; ``overrides``:
    ``{"epochs": 3}`` or ``["epochs=3"]``, applied to any of them."""
    from .checkpoints import check_run_folder

    cfg = resolve_config(ConceptConfig, config, TASK, overrides)
    check_run_folder(out_dir, resume)  # before the data is read or `out_dir` touched
    from ..models.backbones import check_pretrained_available

    check_pretrained_available(cfg.model.backbone, cfg.pretrained, cfg.pretrained_path)   # before the data is read
    data = load_concept_data(data_dir, cfg, log)
    log(f"{len(data.train.ids)} training / {len(data.valid.ids)} validation images, "
        f"{len(data.vocabulary)} concepts; config {cfg.name or 'custom'}")
    task = ConceptTask(cfg, data)
    out_dir = Path(out_dir)
    result = Trainer(task, TrainConfig.from_config(cfg), out_dir).fit(resume=resume)
    import yaml

    write_text_atomic(out_dir / "config.yaml", yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    return result
