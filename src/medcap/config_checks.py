"""Type and range checks of configuration values, the same wherever a value comes from.

A config is built from a named YAML file, ``--set KEY=VALUE`` and, for a trained model, the
JSON files of its folder. :func:`check_values` runs on the finished dataclass (from
``medcap.config.build_dataclass`` and from the model loaders), so ``lr=-1``, ``lr=nan``,
``batch_size=0`` or ``num_classes: "many"`` fail the same way, as one line naming the source.

Ranges are keyed by field name and apply to every config class that has the field.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any

from .errors import MedcapError

# name -> (low, high, low is open, high is open); None: unbounded on that side.
RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "lr": (0, None, True, False),
    "weight_decay": (0, None, False, False),
    "epochs": (1, None, False, False),
    "warmup_steps": (0, None, False, False),
    "min_lr_ratio": (0, 1, False, False),
    "grad_accum": (1, None, False, False),
    "grad_clip": (0, None, False, False),
    "patience": (0, None, False, False),
    "max_minutes": (0, None, False, False),
    "keep_checkpoints": (1, None, False, False),
    "max_nonfinite_steps": (0, None, False, False),
    "batch_size": (1, None, False, False),
    "eval_batch_size": (1, None, False, False),
    "num_workers": (0, None, False, False),
    "num_classes": (0, None, False, False),  # 0 in a training config: set from the vocabulary
    "image_size": (16, None, False, False),
    "pre_resize": (0, None, False, False),
    "max_length": (4, None, False, False),
    "max_new_tokens": (1, None, False, False),
    "eval_max_new_tokens": (1, None, False, False),
    "num_beams": (1, None, False, False),
    "eval_num_beams": (1, None, False, False),
    "no_repeat_ngram_size": (0, None, False, False),
    "vocab_size": (1, None, False, False),
    "patch_size": (0, None, False, False),
    "max_train_images": (0, None, False, False),
    "eval_images": (0, None, False, False),
    "lam": (0, 1, False, False),
    "dropout": (0, 1, False, True),
    "csra_heads": (1, None, False, False),
    "crop_scale_min": (0, 1, True, False),
    "rotation": (0, 180, False, False),
    "translate": (0, 0.5, False, False),
    "color_jitter": (0, None, False, False),
    "min_concept_count": (1, None, False, False),
    "valid_fraction": (0, 1, False, True),
    "per_concept_min_positives": (1, None, False, False),
    "per_concept_shrinkage": (0, None, False, False),
    "focal_gamma": (0, None, False, False),
    "asl_gamma_neg": (0, None, False, False),
    "asl_gamma_pos": (0, None, False, False),
    "asl_clip": (0, 1, False, True),
    "concept_loss": (0, None, False, False),
    "concept_prompt_drop": (0, 1, False, True),
    "concept_prompt_tokens": (1, None, False, False),
    "retrieval_neighbours": (1, None, False, False),
    "retrieval_prompt_tokens": (1, None, False, False),
    "retrieval_image_size": (16, None, False, False),
}


def _type_ok(value: Any, tp: Any) -> bool | None:
    """True/False for the simple types; None when the type is not checked here."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if value is None:
            return type(None) in args
        results = [_type_ok(value, a) for a in args if a is not type(None)]
        return None if None in results else any(results)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    return None


def _range_text(low, high, low_open, high_open) -> str:
    if high is None:
        return f"{'above' if low_open else 'at least'} {low:g}"
    return f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def check_value(key: str, value: Any, tp: Any, label: str) -> None:
    ok = _type_ok(value, tp)
    if ok is False:
        name = getattr(tp, "__name__", str(tp))
        raise MedcapError(f"{key}: expected {name}, got {value!r}", file=label)
    if isinstance(value, float) and not math.isfinite(value):
        raise MedcapError(f"{key}: expected a finite number, got {value!r}", file=label)
    bounds = RANGES.get(key.rsplit(".", 1)[-1])
    if bounds is None or not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    low, high, low_open, high_open = bounds
    bad = ((low is not None and (value <= low if low_open else value < low))
           or (high is not None and (value >= high if high_open else value > high)))
    if bad:
        raise MedcapError(f"{key}: expected {_range_text(low, high, low_open, high_open)}, got {value!r}", file=label)


def check_values(obj: Any, label: str = "<config>") -> None:
    """MedcapError for the first field of dataclass ``obj`` with a wrong type or out of range."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        check_value(f.name, getattr(obj, f.name), hints.get(f.name, Any), label)


def check_mapping(data: dict, types: dict[str, Any], label: str) -> None:
    """The same checks for the given keys of a plain dict (a model folder's JSON settings)."""
    for key, tp in types.items():
        if key in data:
            check_value(key, data[key], tp, label)
