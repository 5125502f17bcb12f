"""Named configurations: YAML files shipped in ``medcap/configs/<task>/``, or a path.

A configuration is data, not a code path (REFERENCE §9): a dataclass gives every key, its
type and its default; a YAML file sets some of them; ``key=value`` overrides from the
command line set more. Unknown keys are an error naming the file and the key.
"""
from __future__ import annotations

import dataclasses
import typing
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import MedcapError

T = TypeVar("T")


def available_configs(task: str) -> list[str]:
    folder = resources.files("medcap") / "configs" / task
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _config_source(name_or_path: str | Path, task: str) -> tuple[str, str]:
    """Return (text, label) for a named config or a YAML path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise MedcapError("config file not found (expected a YAML file or one of: "
                              f"{', '.join(available_configs(task))})", file=p)
        return p.read_text(encoding="utf-8"), str(p)
    res = resources.files("medcap") / "configs" / task / f"{name_or_path}.yaml"
    if not res.is_file():
        raise MedcapError(f"unknown {task} config {str(name_or_path)!r}; expected a YAML path or one of: "
                          f"{', '.join(available_configs(task))}")
    return res.read_text(encoding="utf-8"), f"medcap/configs/{task}/{name_or_path}.yaml"


def _coerce(value: Any, tp: Any, key: str, label: str) -> Any:
    """Convert a YAML or command-line value to the dataclass field's type."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key, label)
            except (MedcapError, ValueError, TypeError):
                continue
        raise MedcapError(f"{key}: cannot read {value!r} as {tp}", file=label)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            value = [value]
        inner = args[0] if args else Any
        out = [_coerce(v, inner, key, label) for v in value]
        return tuple(out) if origin is tuple else out
    if tp is Any or tp is None:
        return value
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            s = str(value).strip().lower()
            if s in ("1", "true", "yes", "on"):
                return True
            if s in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(float(value)) if isinstance(value, str) else int(value)
        if tp is float:
            return float(value)
        if tp is str:
            return str(value)
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ValueError(value)
            return build_dataclass(tp, value, label, prefix=f"{key}.")
    except (ValueError, TypeError):
        raise MedcapError(f"{key}: expected {getattr(tp, '__name__', tp)}, got {value!r}", file=label) from None
    return value


def build_dataclass(cls: type[T], values: dict, label: str = "<config>", prefix: str = "") -> T:
    """Build ``cls`` from a dict, refusing unknown keys with the file that holds them."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in (values or {}).items():
        if key not in fields:
            raise MedcapError(f"unknown config key {prefix + key!r}; known keys: {', '.join(sorted(fields))}",
                              file=label)
        kwargs[key] = _coerce(value, hints[key], prefix + key, label)
    from .validation import check_values  # ranges: medcap.validation (the same for every source)

    try:
        obj = cls(**kwargs)
    except MedcapError as e:  # a __post_init__ check: name the file (or "command line") it came from
        raise (MedcapError(e.message, file=label) if e.file in (None, "<config>") else e) from None
    check_values(obj, label)
    return obj


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["lr=1e-3", "backbone=resnet18"]`` -> dict (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise MedcapError(f"override {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v) if v.strip() else ""
    return out


def load_config(cls: type[T], name_or_path: str | Path, task: str, overrides: dict[str, Any] | list[str] | None = None) -> T:
    """Load a named config (``paper``) or a YAML path into dataclass ``cls``.

    A YAML file may say ``base: NAME`` to start from another named config of the task.
    """
    text, label = _config_source(name_or_path, task)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        raise MedcapError(f"invalid YAML: {getattr(e, 'problem', e)}", file=label,
                          line=None if line is None else line + 1) from None
    if not isinstance(data, dict):
        raise MedcapError("expected a mapping of config keys", file=label)
    base = data.pop("base", None)
    merged: dict[str, Any] = {}
    if base is not None:
        base_cfg = load_config(cls, base, task)
        merged.update(dataclasses.asdict(base_cfg))
        merged.pop("name", None)  # a config built on `base: X` is named after itself, not X
    build_dataclass(cls, data, label)  # validate this file's own keys with its own label
    merged.update(data)
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    if overrides:
        build_dataclass(cls, overrides, "command line")
        merged.update(overrides)
    cfg = build_dataclass(cls, merged, label)
    if hasattr(cfg, "name") and not getattr(cfg, "name", None):
        p = Path(name_or_path)
        cfg.name = p.stem if p.suffix in (".yaml", ".yml") else str(name_or_path)  # type: ignore[attr-defined]
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
