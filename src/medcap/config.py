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
        names = available_configs(task)
        raise MedcapError(f"unknown {task} config {str(name_or_path)!r}{did_you_mean(str(name_or_path), names)}; "
                          f"expected a YAML path or one of: {', '.join(names)}")
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
    hint = did_you_mean(key.rsplit(".", 1)[-1], known)
    return MedcapError(f"unknown {what} {key!r}{hint} (known keys: {', '.join(known)})", file=label)


def did_you_mean(word: str, known) -> str:
    """"; did you mean 'x' or 'y'?" for the closest of ``known`` (difflib), or ""."""
    close = difflib.get_close_matches(word, sorted(known), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def check_keys(values: dict, known, label: str | Path | None = None, what: str = "config key",
               prefix: str = "") -> None:
    """Refuse the first key of ``values`` that is not in ``known`` (see :func:`unknown_key_error`)."""
    known = set(known)
    for key in values or {}:
        if key not in known:
            raise unknown_key_error(prefix + str(key), known, label, what)


def nested_configs(cls) -> dict[str, type]:
    """Fields of config dataclass ``cls`` that hold a config of their own, as transformers nests
    ``vision_config`` (``ConceptConfig.model``: a DetectorConfig) -> {field: dataclass}."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])}


def flat_keys(cls) -> dict[str, str]:
    """The keys of ``cls``'s nested configs that may be written at the top level, as the shipped
    YAML files and ``--set backbone=...`` do -> {key: the field that holds it} (not those the
    program sets, marked ``metadata={"internal": True}``, such as a detector's ``num_classes``)."""
    own = {f.name for f in dataclasses.fields(cls)}
    return {f.name: name for name, sub in nested_configs(cls).items() for f in dataclasses.fields(sub)
            if f.name not in own and f.init and not f.metadata.get("internal")}


def nest_keys(cls, values: dict | None) -> dict:
    """A config mapping with flat (``backbone``) and dotted (``model.backbone``) keys of a nested
    config moved into it: ``{"model": {"backbone": ...}}``."""
    nested, flat = nested_configs(cls), flat_keys(cls)
    out: dict[str, Any] = {}
    for key, value in (values or {}).items():
        head, _, rest = str(key).partition(".")
        if rest and head in nested:
            out.setdefault(head, {})[rest] = value
        elif key in nested and isinstance(value, dict):
            out.setdefault(key, {}).update(value)
        elif key in flat:
            out.setdefault(flat[key], {})[key] = value
        else:
            out[key] = value
    return out


def merge_config_values(cls, base: dict, update: dict) -> dict:
    """``base`` updated with ``update`` (both nested by :func:`nest_keys`), nested configs key by key."""
    out = dict(base)
    for key, value in update.items():
        if key in nested_configs(cls) and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def build_dataclass(cls: type[T], values: dict, label: str = "<config>", prefix: str = "") -> T:
    """Build ``cls`` from a dict, refusing unknown keys with the file that holds them."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = nest_keys(cls, values)
    for key in values:
        if key not in fields:   # the hint names the keys one can write, the nested ones included
            raise unknown_key_error(prefix + str(key), [*fields, *flat_keys(cls)], label)
    kwargs = {key: _coerce(value, hints[key], prefix + key, label) for key, value in (values or {}).items()}
    from .config_checks import check_values

    try:
        obj = cls(**kwargs)
    except MedcapError as e:  # a __post_init__ check: name the file (or "command line") it came from
        raise (MedcapError(e.message, file=label) if e.file in (None, "<config>") else e) from None
    check_values(obj, label)
    return obj


def config_keys(cls) -> list[tuple[str, Any]]:
    """(key, default) of every key a config file or ``--set`` may give, in declaration order, a
    nested config's keys where the config sits (for --help)."""
    nested, flat = nested_configs(cls), flat_keys(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.name in nested:
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            out += [(k, getattr(default, k)) for k, owner in flat.items() if owner == f.name]
        elif f.default is not dataclasses.MISSING:
            out.append((f.name, f.default))
    return out


def field_meanings(cls) -> dict[str, str]:
    """key -> its one-line meaning: the comment after the field in the config dataclass (and the
    comment lines right below it), for the class and its bases. The comments are the one place
    the keys are explained, so --help and the code cannot disagree."""
    import inspect
    import io
    import tokenize

    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is object:
            continue
        names, base = {f.name for f in dataclasses.fields(klass)}, dict(out)
        current, first_on_line = None, True
        for tok in tokenize.generate_tokens(io.StringIO(inspect.getsource(klass)).readline):
            if tok.type == tokenize.NAME and first_on_line and tok.start[1] == 4:
                current = tok.string if tok.string in names else None
            elif tok.type == tokenize.COMMENT and current is not None:
                text = tok.string.lstrip("#").strip()
                if first_on_line and tok.start[1] <= 4:  # a section heading, not a field's comment
                    current = None
                elif text and current in out and first_on_line:  # a comment continued below the field
                    out[current] += f" {text}"
                elif text:  # a subclass re-defaulting a base key keeps the base's meaning
                    out[current] = f"{base[current]} (this task: {text})" if current in base else text
            elif tok.type == tokenize.NL and first_on_line and current is not None and current not in out:
                current = None  # a blank line ends a field's comment lines
            first_on_line = tok.type in (tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT)
    flat = flat_keys(cls)
    for sub in nested_configs(cls).values():   # a nested config's keys mean what its class says
        out.update({k: m for k, m in field_meanings(sub).items() if k in flat})
    return out


def config_help(cls, cfg: Any = None, width: int | None = None) -> list[str]:
    """One row per ``--set`` key: ``key = value  meaning``, the values of ``cfg`` (the chosen
    config) or the dataclass defaults (the train commands' --help). ``width``: wrap each row to
    this many columns, the meaning indented under itself."""
    import textwrap

    meanings, flat = field_meanings(cls), flat_keys(cls)

    def value(key, default):
        if cfg is None:
            return default
        return getattr(getattr(cfg, flat[key]), key) if key in flat else getattr(cfg, key)

    rows = [(k, value(k, v)) for k, v in config_keys(cls)]
    col = max(len(f"{k} = {v!r}") for k, v in rows) + 2
    lines = [f"{f'{k} = {v!r}':<{col}}{meanings.get(k, '')}".rstrip() for k, v in rows]
    if width is None or width <= col + 20:  # too narrow to indent: rows as they are
        return lines
    return ["\n".join(textwrap.wrap(line, width, subsequent_indent=" " * col, break_on_hyphens=False))
            for line in lines]


def config_yaml(cfg: Any) -> str:
    """The resolved config as YAML, every key (``--print-config``, a run's ``config.yaml``)."""
    return yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)


def save_config(cfg: Any, folder: str | Path) -> Path:
    """Write a run's ``config.yaml`` (every key, so the run can be repeated with ``--config``)."""
    from .fileio import write_text_atomic

    path = Path(folder) / "config.yaml"
    write_text_atomic(path, config_yaml(cfg))
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
    merged = merge_config_values(cls, merged, nest_keys(cls, data))
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    if overrides:
        build_dataclass(cls, overrides, "command line")
        merged = merge_config_values(cls, merged, nest_keys(cls, overrides))
    cfg = build_dataclass(cls, merged, label)
    if hasattr(cfg, "name") and not getattr(cfg, "name", None):
        p = Path(name_or_path)
        cfg.name = p.stem if p.suffix in (".yaml", ".yml") else str(name_or_path)  # type: ignore[attr-defined]
    return cfg


def resolve_config(cls: type[T], config: Any, task: str, overrides: dict[str, Any] | list[str] | None = None) -> T:
    """The config a training function was given: a name or YAML path (loaded), or a ``cls``
    object; ``overrides`` apply to either (the same API shape for both tasks)."""
    if not isinstance(config, cls):
        return load_config(cls, config, task, overrides)
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    if not overrides:
        return config
    build_dataclass(cls, overrides, "overrides")  # unknown keys named as such
    return build_dataclass(cls, {**dataclasses.asdict(config), **overrides}, "overrides")

