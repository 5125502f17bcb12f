"""The detector's backbone as a timm model folder: ``config.json`` (naming the ``architecture``)
plus ``model.safetensors``, written by timm's own ``save_for_hf``, so that::

    timm.create_model("local-dir:OUT", pretrained=True)          # or "hf-hub:owner/name" once pushed

rebuilds it with the trained weights: ``forward_features`` gives the feature map the detector's
head reads, ``forward`` its average-pooled embedding (``num_classes=0``; the MedCSRA head is no
timm classifier and stays in the medcap folder). The detector stores the network under its own
stage containers (``backbone.trained.features.model.*``, or ``backbone.frozen.layer1.*`` ... when
early stages are frozen); here the keys become timm's again. The preprocessing (input size,
mean/std, squash or letterbox) goes into the config's ``pretrained_cfg`` as timm's data config.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import MedcapError
from ..fileio import atomic_dir
from ..models.weights import write_checksums
from .common import check_output, load_detector_folder

# timm's data config for the detector's resize modes (medcap.data.transforms.resize_image):
# "squash" ignores the aspect ratio, "pad" letterboxes (timm's "border" crop mode); no crop either way.
_CROP_MODES = {"squash": "squash", "pad": "border"}
# Facts of timm's ImageNet checkpoint that are untrue of a medcap-trained backbone.
_SOURCE_FIELDS = ("tag", "url", "hf_hub_id", "hf_hub_filename", "license", "origin_url", "paper_ids", "paper_name",
                  "notes", "test_input_size", "test_crop_pct", "pool_size", "label_names", "label_descriptions")


def timm_state_dict(detector) -> dict:
    """The backbone's weights under timm's key names (each stage under its name in the timm model)."""
    from ..models.backbones import _ForwardFeatures

    backbone = detector.backbone
    state = {}
    for name in backbone.stage_names:
        container = "frozen" if hasattr(backbone.frozen, name.replace(".", "_")) else "trained"
        module = getattr(getattr(backbone, container), name.replace(".", "_"))
        # timm's whole forward_features as one stage: its keys are the timm model's own
        prefix = "" if isinstance(module, _ForwardFeatures) else f"{name}."
        module = module.model if isinstance(module, _ForwardFeatures) else module
        state.update({prefix + k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()})
    return state


def timm_backbone(detector):
    """A timm model (``num_classes=0``, average pooling) holding the detector's backbone weights."""
    import timm

    name = detector.config.backbone
    if name.startswith("tv/"):
        raise MedcapError(f"the backbone {name!r} is torchvision's: --timm exports timm backbones only "
                          "(use --onnx, or train with a timm name such as resnet101.tv_in1k)")
    architecture = name.split(".")[0]  # a tag (resnet101.tv_in1k) names the ImageNet weights, not the network
    model = timm.create_model(architecture, pretrained=False, num_classes=0)
    state = timm_state_dict(detector)
    missing = sorted(set(model.state_dict()) - set(state))
    if missing:
        raise MedcapError(f"the backbone is cut at feature_stage={detector.config.feature_stage!r}: timm has no "
                          f"model for the cut network ({len(missing)} tensors of {architecture} are not in it); "
                          "use --onnx")
    model.load_state_dict(state, strict=True)
    return model.eval()


def export_timm(run: str | Path, out: str | Path) -> Path:
    """Write the backbone of the detector in ``run`` (run or model folder) as timm folder ``out``."""
    from timm.models import save_for_hf

    out = check_output(out, run, "config.json")
    _, detector = load_detector_folder(run, "--timm")
    model = timm_backbone(detector)
    proc = detector.processor
    # timm's data config: what medcap.models.processing.ConceptProcessor does (no mean/std: inputs in [0, 1])
    data_config = {"input_size": (3, proc.image_size, proc.image_size), "interpolation": "bilinear",
                   "mean": tuple(proc.mean or (0.0, 0.0, 0.0)), "std": tuple(proc.std or (1.0, 1.0, 1.0)),
                   "crop_pct": 1.0, "crop_mode": _CROP_MODES[proc.resize]}
    model.pretrained_cfg = {k: v for k, v in model.pretrained_cfg.items() if k not in _SOURCE_FIELDS}
    with atomic_dir(out) as tmp:
        save_for_hf(model, str(tmp), safe_serialization=True, data_config=data_config)
        write_checksums(tmp)  # sha256 + size of model.safetensors, as every medcap save (`medcap push` checks them)
    return out
