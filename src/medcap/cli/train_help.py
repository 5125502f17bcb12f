"""``medcap train concepts|captions --help`` lists every ``--set`` key with its default.

The config dataclass is imported only when the help is shown (it pulls in torch), so
``medcap --help`` stays instant.
"""
from __future__ import annotations

import importlib

from typer.core import TyperCommand


def _load(config_class: str):
    module, name = config_class.rsplit(":", 1)
    return getattr(importlib.import_module(module), name)


def config_keys_command(config_class: str, extended: str = "", extended_label: str = "") -> type[TyperCommand]:
    """A command class whose help ends with the keys of ``config_class`` ("module:Class"), and the
    keys that ``extended`` (a subclass: e.g. the vision-language caption config) adds."""

    class ConfigKeysCommand(TyperCommand):
        def format_help(self, ctx, formatter) -> None:
            from ..config import config_help, config_keys

            cls = _load(config_class)
            self.epilog = "--set " + config_help(cls)
            if extended:
                base = {k for k, _ in config_keys(cls)}
                added = [f"{k} ({v!r})" for k, v in config_keys(_load(extended)) if k not in base]
                self.epilog += f" {extended_label}: " + ", ".join(added) + "."
            super().format_help(ctx, formatter)

    return ConfigKeysCommand
