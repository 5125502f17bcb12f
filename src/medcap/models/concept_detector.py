"""ConceptDetector: a CNN backbone plus a multi-label head (MedCSRA, CSRA, ablations).

Sources (REFERENCE §1-§3; our own code):
- MedCSRA, UIT-Oggy at ImageCLEFmedical 2025 (paper section 5.2): a global branch
  (GAP + FC) fused with an attention branch, ``L = (1 - lam) L_global + lam L_csra``.
  The attention branch is written as the paper's text and the authors' code describe it:
  a C->C linear layer at every position, a sigmoid, and a SUM over positions of
  attention * features (a per-position channel gate), not Fang et al.'s mechanism.
- CSRA, Fang et al., "Residual Attention: A Simple but Effective Method for Multi-Label
  Recognition", ICCV 2021: class-specific residual attention with 1-8 heads.

Interface as timm's models: ``forward_features(x)`` -> feature map [B, C, H, W],
``forward_head(f, pre_logits=False)`` -> logits [B, K], ``forward = head(features)``,
``reset_classifier(K)``. Every head also gives ``score_map(f)`` -> [B, K, H, W], where each
class was found (``medcap explain`` draws it).

A trained detector is a folder (``save_pretrained`` / ``from_pretrained``)::

    config.json          DetectorConfig (backbone, head, number of classes, ...)
    model.safetensors    weights
    concepts.json        the ConceptVocabulary: which CUI each output is
    thresholds.json      decision threshold(s) chosen on validation (medcap.thresholds)
    preprocessor_config.json   the ConceptProcessor: image size, resize mode, mean/std (or
                         null: inputs in [0, 1]); older folders hold preprocessing.json instead
    provenance.json      training data (synthetic or not), sizes, validation scores, config;
    README.md            the model card made from it (medcap.models.card)

``from_pretrained`` takes the folder, or the run folder that holds it
(:func:`medcap.models.location.resolve_model_folder`).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from torch import nn

from ..errors import MedcapError
from ..fileio import atomic_dir, read_json, write_text_atomic
from .backbones import create_backbone
from .card import load_provenance, write_model_files
from .location import CONCEPT_MODEL_TYPE, resolve_model_folder
from .processing import IMAGENET_MEAN, IMAGENET_STD, LEGACY_PROCESSOR_FILE, PROCESSOR_FILE, ConceptProcessor
from .weights import read_safetensors, require_fit, verified, write_checksums

HEADS = ("medcsra", "global", "attention", "csra")
GLOBAL_POOLS = ("avg", "gem", "grid")
# REFERENCE §3: temperatures of Fang et al.'s multi-head CSRA (inf = max pooling over positions).
CSRA_TEMPERATURES = {1: [1.0], 2: [1.0, math.inf], 4: [1.0, 2.0, 4.0, math.inf],
                     6: [1.0, 2.0, 3.0, 4.0, 5.0, math.inf], 8: [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, math.inf]}
__all__ = ["HEADS", "IMAGENET_MEAN", "IMAGENET_STD", "ConceptDetector", "ConceptProcessor", "DetectorConfig"]
MODEL_FILES = ("config.json", "model.safetensors", "concepts.json", "thresholds.json", PROCESSOR_FILE)


# ------------------------------------------------------------------------------------------
# Heads. f: backbone feature map [B, C, H, W]; K classes; N = H*W positions.
# ------------------------------------------------------------------------------------------

class GeM(nn.Module):
    """Generalised-mean pooling (Radenovic et al. 2018; the 2026 runner-up's ensembles, REFERENCE §6):
    F = (1/(HW) sum_ij h[:, i, j]^p)^(1/p); p = 1 is average pooling, p -> inf max pooling."""

    def __init__(self, p: float = 3.0, learnable: bool = True, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)), requires_grad=learnable)
        self.eps = eps

    def forward(self, f):
        p = self.p.clamp(min=1.0)
        return f.clamp(min=self.eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)   # [B, C, H, W] -> [B, C]


class GridPool(nn.Module):
    """Average pooling over a g x g grid of cells, the cells side by side: [B, C, H, W] ->
    [B, C * g * g]. Unlike one average it keeps WHERE a finding is, which side labels need
    ("Left", "Upper"...); the sum of the cells is the plain average, so nothing is lost."""

    def __init__(self, grid: int = 2):
        super().__init__()
        self.grid = grid

    def forward(self, f):
        return nn.functional.adaptive_avg_pool2d(f, self.grid).flatten(1)   # [B, C * g * g]


class GlobalBranch(nn.Module):
    """Paper 5.2.3.1: F_global = 1/(HW) sum_ij h[:, i, j];  L_global = W_fc F_global + b_fc.

    ``pool="gem"`` replaces the average by :class:`GeM` (``gem_p``, learnable or fixed);
    ``pool="grid"`` by :class:`GridPool` (2 x 2 cells, position-aware).
    """

    def __init__(self, channels: int, num_classes: int, pool: str = "avg", gem_p: float = 3.0,
                 gem_learnable: bool = True):
        super().__init__()
        self.grid = 2 if pool == "grid" else 1
        self.fc = nn.Linear(channels * self.grid ** 2, num_classes)
        self.pool = {"gem": lambda: GeM(gem_p, gem_learnable), "grid": lambda: GridPool(self.grid)}.get(
            pool, lambda: None)()

    def forward(self, f):
        pooled = f.mean(dim=(2, 3)) if self.pool is None else self.pool(f)  # [B, C] ([B, C g g] for grid)
        return self.fc(pooled)                                               # [B, K]

    def score_map(self, f):
        # Class activation map: the logit is the mean over positions of W_fc h[:, i, j] (+ b)
        # (exact for average pooling; with GeM the same map shows where the evidence is). With a
        # grid, each position takes the weights of its cell, scaled by the cell's size.
        h, w, g = f.shape[2], f.shape[3], self.grid
        weight = self.fc.weight.view(self.fc.out_features, -1, g, g)         # [K, C, g, g]
        weight = nn.functional.interpolate(weight, size=(h, w), mode="nearest")  # [K, C, H, W]
        return torch.einsum("kchw,bchw->bkhw", weight, f) * (g * g) / (h * w)


class PaperAttentionBranch(nn.Module):
    """Paper 5.2.3.2 as the authors implement it (REFERENCE §2).

    A = sigmoid(W_att x_n + b_att)      for every position n      A: [B, C, N]
    z = sum_n A[:, :, n] * x[:, :, n]    (torch.einsum)            z: [B, C]
    L_csra = W_fc z + b_fc                                         [B, K]
    """

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.att = nn.Linear(channels, channels)                             # C -> C at every position
        self.fc = nn.Linear(channels, num_classes)

    def attended(self, f):
        x = f.flatten(2)                                                     # [B, C, N]
        a = torch.sigmoid(self.att(x.transpose(1, 2))).transpose(1, 2)       # [B, C, N]
        return a * x                                                         # [B, C, N]

    def forward(self, f):
        z = self.attended(f).sum(dim=2)   # = einsum("bcn,bcn->bc", a, x)       [B, C]
        return self.fc(z)                                                    # [B, K]

    def score_map(self, f):
        # The logit is the sum over positions of W_fc (a * x)_n (+ b): each position's share.
        contrib = torch.einsum("kc,bcn->bkn", self.fc.weight, self.attended(f))  # [B, K, N]
        return contrib.view(f.shape[0], -1, f.shape[2], f.shape[3])


class MedCSRAHead(nn.Module):
    """Paper 5.2.4: L_combined = (1 - lam) L_global + lam L_csra (lam = 0.1).

    ``branches``: "both" (MedCSRA), "global" (global-only ablation, lam ignored) or
    "attention" (attention-only ablation).
    """

    def __init__(self, channels: int, num_classes: int, lam: float = 0.1, branches: str = "both",
                 global_pool: str = "avg", gem_p: float = 3.0, gem_learnable: bool = True):
        super().__init__()
        self.lam, self.branches = lam, branches
        self.global_branch = (GlobalBranch(channels, num_classes, global_pool, gem_p, gem_learnable)
                              if branches in ("both", "global") else None)
        self.attention_branch = (PaperAttentionBranch(channels, num_classes)
                                 if branches in ("both", "attention") else None)

    def _fuse(self, g, a):
        if self.global_branch is None:
            return a
        if self.attention_branch is None:
            return g
        return (1 - self.lam) * g + self.lam * a

    def forward(self, f):
        g = self.global_branch(f) if self.global_branch is not None else None
        a = self.attention_branch(f) if self.attention_branch is not None else None
        return self._fuse(g, a)                                              # [B, K]

    def score_map(self, f):
        g = self.global_branch.score_map(f) if self.global_branch is not None else None
        a = self.attention_branch.score_map(f) if self.attention_branch is not None else None
        return self._fuse(g, a)                                              # [B, K, H, W]


class CSRAHead(nn.Module):
    """Fang et al. (REFERENCE §3), one head with temperature T.

    S = conv1x1(x) / ||w_k||            (no bias)                      S: [B, K, N]
    base = mean_n S;  att = sum_n S * softmax_n(T S)  (max_n S when T = inf)
    logit = base + lam * att                                           [B, K]
    """

    def __init__(self, channels: int, num_classes: int, temperature: float, lam: float):
        super().__init__()
        self.temperature, self.lam = temperature, lam
        self.conv = nn.Conv2d(channels, num_classes, kernel_size=1, bias=False)

    def score_map(self, f):
        norm = self.conv.weight.flatten(1).norm(dim=1)                       # [K]
        return self.conv(f) / norm.view(1, -1, 1, 1)                         # [B, K, H, W]

    def forward(self, f):
        s = self.score_map(f).flatten(2)                                     # [B, K, N]
        base = s.mean(dim=2)
        if math.isinf(self.temperature):
            att = s.max(dim=2).values
        else:
            att = (s * torch.softmax(self.temperature * s, dim=2)).sum(dim=2)
        return base + self.lam * att                                         # [B, K]


class MultiHeadCSRA(nn.Module):
    """Sum of the logits of 1, 2, 4, 6 or 8 CSRA heads with Fang et al.'s temperatures."""

    def __init__(self, channels: int, num_classes: int, num_heads: int = 1, lam: float = 0.1):
        super().__init__()
        if num_heads not in CSRA_TEMPERATURES:
            raise MedcapError(f"csra_heads: expected one of {sorted(CSRA_TEMPERATURES)}, got {num_heads}")
        self.heads = nn.ModuleList(CSRAHead(channels, num_classes, t, lam) for t in CSRA_TEMPERATURES[num_heads])

    def forward(self, f):
        return sum(h(f) for h in self.heads)                                 # [B, K]

    def score_map(self, f):
        return sum(h.score_map(f) for h in self.heads)                       # [B, K, H, W]


# ------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------

@dataclass
class DetectorConfig:
    """What config.json holds: enough to rebuild the network (weights come separately).

    A concept training config holds one (``ConceptConfig.model``); its ``num_classes`` is set
    from the training data's vocabulary when the network is built.
    """
    num_classes: int = field(default=0, metadata={"internal": True})   # outputs: one per concept of the vocabulary
    backbone: str = "resnet101"       # timm name, or tv/<torchvision name>
    feature_stage: str = "last"       # "last" = layer4 for ResNets (see backbones.py)
    train_from: str = ""              # first trained backbone stage ("layer4" = paper); "" = all
    head: str = "medcsra"             # medcsra | global | attention | csra
    lam: float = 0.1                  # paper 5.2.4 fusion weight; CSRA's residual weight
    csra_heads: int = 1               # 1 | 2 | 4 | 6 | 8 (head: csra)
    dropout: float = 0.0              # dropout on the feature map, before the classifier heads
    global_pool: str = "avg"          # avg | gem | grid: the global branch's pooling (medcsra, global heads)
    gem_p: float = 3.0                # GeM's initial exponent
    gem_learnable: bool = True        # GeM's p trained with the rest (false: fixed)
    model_type: str = field(default=CONCEPT_MODEL_TYPE, metadata={"internal": True})  # what config.json describes

    def __post_init__(self):
        if self.head not in HEADS:
            raise MedcapError(f"head: expected one of {', '.join(HEADS)}, got {self.head!r}")
        if self.global_pool not in GLOBAL_POOLS:
            raise MedcapError(f"global_pool: expected one of {', '.join(GLOBAL_POOLS)}, got {self.global_pool!r}")
        if not self.gem_p >= 1:
            raise MedcapError(f"gem_p: expected a number >= 1, got {self.gem_p}")


def build_head(cfg: DetectorConfig, channels: int) -> nn.Module:
    if cfg.head == "csra":
        return MultiHeadCSRA(channels, cfg.num_classes, cfg.csra_heads, cfg.lam)
    branches = {"medcsra": "both", "global": "global", "attention": "attention"}[cfg.head]
    return MedCSRAHead(channels, cfg.num_classes, cfg.lam, branches, cfg.global_pool, cfg.gem_p, cfg.gem_learnable)


class ConceptDetector(nn.Module):
    """Backbone + head; logits [B, K]; sigmoid gives each concept's probability."""

    def __init__(self, cfg: DetectorConfig, pretrained: bool = False, pretrained_path: str | None = None):
        super().__init__()
        self.config = cfg
        self.backbone = create_backbone(cfg.backbone, pretrained=pretrained, pretrained_path=pretrained_path,
                                        feature_stage=cfg.feature_stage, train_from=cfg.train_from)
        self.num_features = self.backbone.num_features
        self.drop = nn.Dropout(cfg.dropout)
        self.head = build_head(cfg, self.num_features)
        # Set by from_pretrained / the training task: what prediction needs besides weights.
        self.vocabulary = None
        self.provenance: dict | None = None   # provenance.json: training data, scores, config (models.card)
        self.thresholds: dict = {}
        self.processor: ConceptProcessor | None = None

    @property
    def preprocessing(self) -> dict:
        """The processor as the dict medcap.data.items and medcap.inference.concepts.map_images take."""
        return {} if self.processor is None else self.processor.to_dict()

    @preprocessing.setter
    def preprocessing(self, values: dict | ConceptProcessor) -> None:
        self.processor = values if isinstance(values, ConceptProcessor) else ConceptProcessor.from_dict(values)

    def forward_features(self, x):
        return self.backbone(x)                                              # [B, C, H, W]

    def forward_head(self, f, pre_logits: bool = False):
        if pre_logits:
            return f.mean(dim=(2, 3))                                        # [B, C] (embedding)
        return self.head(self.drop(f))                                       # [B, K]

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def score_maps(self, x):
        """[B, K, H, W] class score maps (where each concept was found)."""
        return self.head.score_map(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        self.config.num_classes = num_classes
        self.head = build_head(self.config, self.num_features)

    # -- folders --------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path) -> Path:
        """Write the model folder atomically (see the module docstring)."""
        from safetensors.torch import save_file

        if self.vocabulary is None:
            raise MedcapError("cannot save a concept detector without its concept vocabulary")
        if self.processor is None:
            raise MedcapError("cannot save a concept detector without its processor (preprocessing)")
        folder = Path(folder)
        with atomic_dir(folder) as tmp:
            write_text_atomic(tmp / "config.json", json.dumps(asdict(self.config), indent=2))
            state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
            save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            self.vocabulary.save(tmp)
            write_text_atomic(tmp / "thresholds.json", json.dumps(self.thresholds or {"global": 0.5}, indent=2))
            self.processor.save_pretrained(tmp)
            write_model_files(tmp, self.provenance, "concept-detector")
            write_checksums(tmp)
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, map_location: str = "cpu",
                        revision: str | None = None, *, notice: bool = True) -> "ConceptDetector":
        """Load a model folder, run folder or hub id (at ``revision``; models.location); ``notice``:
        say once when it learnt from synthetic data (an ensemble says it for its members)."""
        from ..config_checks import check_mapping, check_values
        from ..data.vocab import ConceptVocabulary
        from ..thresholds import Thresholds
        from .nonfinite import check_finite_weights

        # resolve_model_folder also restores a folder a crash left mid-swap (.model.old)
        folder = resolve_model_folder(Path(folder), "concepts", revision=revision)
        for name in MODEL_FILES:
            if name == PROCESSOR_FILE and (folder / LEGACY_PROCESSOR_FILE).is_file():
                continue  # a folder written before the processor
            if not (folder / name).is_file():
                raise MedcapError(f"model folder is missing {name} (expected {', '.join(MODEL_FILES)})",
                                  file=folder)
        from ..config import check_keys

        values = _read_json(folder / "config.json")
        check_keys(values, [f.name for f in fields(DetectorConfig)], folder / "config.json", what="detector config key")
        try:
            cfg = DetectorConfig(**values)
            check_values(cfg, str(folder / "config.json"))
        except TypeError as e:
            raise MedcapError(f"config.json does not describe a concept detector ({e})",
                              file=folder / "config.json") from None
        except MedcapError as e:
            raise MedcapError(e.message, file=folder / "config.json") from None
        weights = folder / "model.safetensors"
        with verified(folder):  # sha256 + size of checksums.json, hashed while the network is built and read
            model = cls(cfg)
            state = read_safetensors(weights, device=map_location)
            require_fit(model, state, folder, "concept detector of config.json")
        check_finite_weights(state.values(), weights)
        model.vocabulary = ConceptVocabulary.load(folder)
        if len(model.vocabulary.cuis) != cfg.num_classes:
            raise MedcapError(f"concepts.json lists {len(model.vocabulary.cuis)} concepts but the model has "
                              f"{cfg.num_classes} outputs", file=folder / "concepts.json")
        model.thresholds = _read_json(folder / "thresholds.json")
        try:  # refused here, not at the first prediction (NaN, 7 or -1 would predict silently)
            Thresholds.from_json(model.thresholds, model.vocabulary.cuis)
        except MedcapError as e:
            raise MedcapError(e.message, file=folder / "thresholds.json") from None
        model.processor = ConceptProcessor.from_pretrained(folder)
        processor_file = folder / (PROCESSOR_FILE if (folder / PROCESSOR_FILE).is_file() else LEGACY_PROCESSOR_FILE)
        check_mapping({"image_size": model.processor.image_size}, {"image_size": int}, str(processor_file))
        model.provenance = load_provenance(folder, notice)
        return model.eval()


def _read_json(path: Path) -> dict:
    return read_json(path)
