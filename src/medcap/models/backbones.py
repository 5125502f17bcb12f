"""Backbones: a CNN cut into named stages that returns its last feature map.

``create_backbone(name)`` takes any timm model name (``resnet101``, ``densenet121``,
``efficientnet_b4``, ``efficientnet_b5``, ``resnet18``, ``convnext_tiny``, or a tagged one such
as ``resnet101.tv_in1k`` for torchvision's ImageNet weights through timm) or a torchvision
model name with the ``tv/`` prefix (``tv/resnet101``, ``tv/densenet121``,
``tv/efficientnet_b4``).

The network is stored as an ordered list of stages (top-level modules, with
``nn.Sequential`` containers opened one level, as timm does for its feature extractors), so
two settings stay simple:

- ``feature_stage``: the stage whose output is the feature map. ``"last"`` is the default:
  for ResNet-101 that is layer4 (2048 channels, 7x7 at 224 px). The paper's text speaks of
  1024 channels, which is layer3's width, but the authors' code (and its 2048x2048 attention
  layer) uses layer4, and layer4 is the block the paper says it fine-tunes; training a block
  whose output is never used would make no sense, so layer4 it is (REFERENCE §2). ``layer3``
  gives the 1024-channel map for whoever wants to test the text's reading.
- ``train_from``: the first stage that is trained; every stage before it is frozen and runs
  under ``torch.no_grad()`` in eval mode (batch-norm statistics stay ImageNet's), so no
  backward work or activation memory is spent on it. The paper trains layer4 only
  (``train_from: layer4``); ``""`` trains everything (authors' code).
"""
from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from ..errors import MedcapError, MissingWeightsError
from .hub import cached, hub_access, offline

# Top-level modules that belong to the classifier, not to the feature extractor.
_HEAD_MODULES = {"global_pool", "fc", "classifier", "head", "head_drop", "fc_norm", "avgpool", "dropout"}
TORCHVISION_PREFIX = "tv/"
TIMM_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")   # what timm reads from a hub repo


class Backbone(nn.Module):
    """Stages run in order; ``forward(x)`` -> feature map [B, C, H, W] with C = ``num_features``."""

    def __init__(self, stages: "OrderedDict[str, nn.Module]", num_features: int, train_from: str = ""):
        super().__init__()
        names = list(stages)
        split = 0
        if train_from:
            starts = [i for i, n in enumerate(names) if n == train_from or n.startswith(train_from + ".")]
            if not starts:
                raise MedcapError(f"train_from: no stage {train_from!r} in this backbone; stages are: "
                                  f"{', '.join(_stage_prefixes(names))}")
            split = starts[0]
        # Two containers, so the frozen part can run under no_grad as one block.
        self.frozen = nn.Sequential(OrderedDict((n.replace(".", "_"), stages[n]) for n in names[:split]))
        self.trained = nn.Sequential(OrderedDict((n.replace(".", "_"), stages[n]) for n in names[split:]))
        self.frozen.requires_grad_(False)
        self.num_features = num_features
        self.stage_names = names

    def train(self, mode: bool = True):
        super().train(mode)
        self.frozen.eval()  # frozen batch-norm layers keep their (ImageNet) statistics
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.frozen):
            with torch.no_grad():
                x = self.frozen(x)
        return self.trained(x)


def _stage_prefixes(names: list[str]) -> list[str]:
    out: list[str] = []
    for n in names:
        top = n.split(".")[0]
        for cand in (top, n):
            if cand not in out:
                out.append(cand)
    return out


def _open_sequentials(model: nn.Module, skip: set[str]) -> "OrderedDict[str, nn.Module]":
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    for name, child in model.named_children():
        if name in skip:
            break
        if isinstance(child, nn.Sequential):
            for sub, m in child.named_children():
                stages[f"{name}.{sub}"] = m
        else:
            stages[name] = child
    return stages


def _truncate(stages: "OrderedDict[str, nn.Module]", feature_stage: str) -> "OrderedDict[str, nn.Module]":
    if feature_stage in ("", "last"):
        return stages
    names = list(stages)
    ends = [i for i, n in enumerate(names) if n == feature_stage or n.startswith(feature_stage + ".")]
    if not ends:
        raise MedcapError(f"feature_stage: no stage {feature_stage!r} in this backbone; stages are: "
                          f"{', '.join(_stage_prefixes(names))}")
    return OrderedDict((n, stages[n]) for n in names[: ends[-1] + 1])


@torch.no_grad()
def _channels(stages: "OrderedDict[str, nn.Module]", size: int = 64) -> int:
    seq = nn.Sequential(*stages.values())
    was = seq.training
    out = seq.eval()(torch.zeros(1, 3, size, size))
    seq.train(was)
    if out.ndim != 4:
        raise MedcapError("this backbone does not produce a [B, C, H, W] feature map (CNN backbones only)")
    return int(out.shape[1])


def _missing_weights(name: str, where: str) -> MissingWeightsError:
    return MissingWeightsError(
        f"ImageNet weights for {name!r} are not on this machine. {where} or pass a weights file with "
        "--set pretrained_path=FILE (.safetensors or .pth state dict), or start from random weights "
        "(--random-init, i.e. --set pretrained=false)")


def _timm_model(name: str, pretrained: bool, pretrained_path: str | None):
    import timm

    kwargs: dict = {"num_classes": 0, "global_pool": ""}
    if pretrained_path:
        if not Path(pretrained_path).is_file():
            raise MedcapError("pretrained weights file not found", file=pretrained_path)
        kwargs["pretrained_cfg_overlay"] = {"file": str(pretrained_path)}
    if name.split(".")[0] not in timm.list_models():
        raise MedcapError(f"unknown backbone {name!r}: expected a timm model name (e.g. resnet101, "
                          "densenet121, efficientnet_b4) or tv/<torchvision name>")
    try:
        # offline: the cache only, at once (no retry loop); random or file weights never ask the hub
        with hub_access() if pretrained and not pretrained_path else contextlib.nullcontext():
            return timm.create_model(name, pretrained=pretrained or bool(pretrained_path), **kwargs)
    except (OSError, RuntimeError) as e:  # not cached and no network (LocalEntryNotFoundError, ...)
        if pretrained_path or not pretrained:
            raise
        raise _timm_missing(name) from e


def _timm_missing(name: str) -> MissingWeightsError:
    from huggingface_hub.constants import HF_HUB_CACHE

    hub_id = _timm_hub_id(name) or f"timm/{name}"
    return _missing_weights(name, f"timm looks for the Hugging Face repo {hub_id!r} in {HF_HUB_CACHE} "
                            f"(fetch it where there is network with `hf download {hub_id}` and copy "
                            "the cache folder here)")


# timm's default Hugging Face repository for the backbones the paper and the shipped configs name:
# known without importing timm (3 s here, where torch alone takes 1.4 s), so that a missing
# model is reported within seconds when offline. tests/test_offline.py checks it against timm.
TIMM_HUB_IDS = {
    "resnet101": "timm/resnet101.a1h_in1k",
    "resnet50": "timm/resnet50.a1_in1k",
    "resnet18": "timm/resnet18.a1_in1k",
    "resnet10t": "timm/resnet10t.c3_in1k",
    "densenet121": "timm/densenet121.ra_in1k",
    "efficientnet_b4": "timm/efficientnet_b4.ra2_in1k",
    "efficientnet_b5": "timm/efficientnet_b5.sw_in12k_ft_in1k",
}


def _timm_hub_id(name: str) -> str | None:
    if name in TIMM_HUB_IDS:
        return TIMM_HUB_IDS[name]
    import timm

    return getattr(timm.models.get_pretrained_cfg(name), "hf_hub_id", None)


def check_pretrained_available(name: str, pretrained: bool, pretrained_path: str | None = None) -> None:
    """MissingWeightsError now, before any data is read, when ``name``'s ImageNet weights would have
    to come from the hub and it cannot be reached (offline, HF_HUB_OFFLINE=1); the same message as
    :func:`create_backbone`'s. Weights in the cache, a weights file or random weights pass."""
    if not pretrained or pretrained_path or name.startswith(TORCHVISION_PREFIX):
        return   # torchvision's weights: checked by create_backbone, before any download
    try:
        hub_id = _timm_hub_id(name)
    except (RuntimeError, ValueError, KeyError):   # an unknown name: create_backbone says so
        return
    if hub_id and offline() and not cached(hub_id, TIMM_WEIGHT_FILES):
        raise _timm_missing(name)


def _torchvision_model(name: str, pretrained: bool, pretrained_path: str | None):
    import torchvision

    try:
        weights_enum = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError):
        raise MedcapError(f"unknown torchvision backbone {name!r}; e.g. tv/resnet101, tv/densenet121, "
                          "tv/efficientnet_b4") from None
    weights = weights_enum.DEFAULT if pretrained and not pretrained_path else None
    if weights is not None:
        cached = Path(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))
        missing = _missing_weights(f"{TORCHVISION_PREFIX}{name}", f"torchvision looks for {cached} "
                                   f"(download {weights.url} there)")
        if not cached.is_file() and offline(weights.url):
            raise missing  # offline: do not even try the download
    try:
        model = torchvision.models.get_model(name, weights=weights)
    except OSError as e:  # not in torch's hub cache and no network
        if weights is None:
            raise
        raise missing from e
    if pretrained_path:
        _load_state_file(model, pretrained_path)
    return model


def _load_state_file(model: nn.Module, path: str) -> None:
    p = Path(path)
    if not p.is_file():
        raise MedcapError("pretrained weights file not found", file=p)
    if p.suffix == ".safetensors":
        from .weights import read_safetensors

        state = read_safetensors(p)
    else:
        state = torch.load(p, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    own = model.state_dict()
    state = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not state:
        raise MedcapError("no tensor in this weights file matches the backbone", file=p)
    model.load_state_dict(state, strict=True)


def create_backbone(name: str, pretrained: bool = False, pretrained_path: str | None = None,
                    feature_stage: str = "last", train_from: str = "") -> Backbone:
    """Build backbone ``name`` and cut it at ``feature_stage`` (see the module docstring)."""
    if name.startswith(TORCHVISION_PREFIX):
        model = _torchvision_model(name[len(TORCHVISION_PREFIX):], pretrained, pretrained_path)
        features = getattr(model, "features", None)
        # densenet/efficientnet/vgg keep their convolutions in `.features`, resnets at the top.
        stages = _open_sequentials(features if isinstance(features, nn.Module) else model, _HEAD_MODULES)
        if type(model).__name__ == "DenseNet":  # torchvision applies a ReLU after .features
            stages["relu"] = nn.ReLU()
        stages = _truncate(stages, feature_stage)
        channels = _channels(stages)
    else:
        model = _timm_model(name, pretrained, pretrained_path)
        stages = _open_sequentials(model, _HEAD_MODULES)
        if train_from or feature_stage not in ("", "last"):
            _check_sequential(model, stages, name)
        else:  # no cut needed: use timm's own forward_features (works for any timm CNN)
            stages = OrderedDict(features=_ForwardFeatures(model))
        stages = _truncate(stages, feature_stage)
        # timm records each stage's width; a forward pass finds it otherwise
        widths = {info["module"]: info["num_chs"] for info in getattr(model, "feature_info", [])}
        channels = model.num_features if feature_stage in ("", "last") else widths.get(feature_stage)
        channels = channels or _channels(stages)
    return Backbone(stages, channels, train_from=train_from)


class _ForwardFeatures(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_features(x)


@torch.no_grad()
def _check_sequential(model: nn.Module, stages, name: str) -> None:
    """Running the stages in order must equal timm's forward_features, else the cut is wrong."""
    was = model.training
    model.eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ok = torch.allclose(nn.Sequential(*stages.values())(x), model.forward_features(x), atol=1e-4)
    model.train(was)
    if not ok:
        raise MedcapError(f"backbone {name!r} cannot be cut into stages: use feature_stage=last and "
                          "train_from='' (nothing frozen) with it")
