"""Named configurations: YAML files shipped in ``medcap/configs/<task>/``, or a path.

A configuration is data, not a code path (REFERENCE §9): a dataclass gives every key, its
type and its default; a YAML file sets some of them; ``key=value`` overrides from the
command line set more. Unknown keys are an error naming the file and the key.
"""
from __future__ import annotations

import dataclasses
import difflib
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


def unknown_key_error(key: str, known, label: str | Path | None = None, what: str = "config key") -> MedcapError:
    """MedcapError for an unknown key, with "did you mean" the closest known ones (difflib)."""
    known = sorted(known)
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], known, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return MedcapError(f"unknown {what} {key!r}{hint} (known keys: {', '.join(known)})", file=label)


def check_keys(values: dict, known, label: str | Path | None = None, what: str = "config key",
               prefix: str = "") -> None:
    """Refuse the first key of ``values`` that is not in ``known`` (see :func:`unknown_key_error`)."""
    known = set(known)
    for key in values or {}:
        if key not in known:
            raise unknown_key_error(prefix + str(key), known, label, what)


def build_dataclass(cls: type[T], values: dict, label: str = "<config>", prefix: str = "") -> T:
    """Build ``cls`` from a dict, refusing unknown keys with the file that holds them."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    check_keys(values, fields, label, prefix=prefix)
    kwargs = {key: _coerce(value, hints[key], prefix + key, label) for key, value in (values or {}).items()}
    from .config_checks import check_values

    try:
        obj = cls(**kwargs)
    except MedcapError as e:  # a __post_init__ check: name the file (or "command line") it came from
        raise (MedcapError(e.message, file=label) if e.file in (None, "<config>") else e) from None
    check_values(obj, label)
    return obj


def config_keys(cls) -> list[tuple[str, Any]]:
    """(key, default) of every field of a config dataclass, in declaration order (for --help)."""
    return [(f.name, f.default) for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING]


def config_help(cls) -> str:
    """One line listing every ``--set`` key with its default (the train commands' --help)."""
    return "Keys (default): " + ", ".join(f"{k} ({v!r})" if isinstance(v, str) else f"{k} ({v})"
                                          for k, v in config_keys(cls)) + "."


def save_config(cfg: Any, folder: str | Path) -> Path:
    """Write a run's ``config.yaml`` (every key, so the run can be repeated with ``--config``)."""
    from .fileio import write_text_atomic

    path = Path(folder) / "config.yaml"
    write_text_atomic(path, yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    return path


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["lr=1e-3", "backbone=resnet18"]`` -> dict (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise MedcapError(f"override {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v) if v.strip() else ""
    return out


def load_config(cls: type[T], name_or_path: str | Path, task: str,
                overrides: dict[str, Any] | list[str] | None = None) -> T:
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

