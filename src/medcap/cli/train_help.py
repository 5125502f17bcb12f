"""``medcap train concepts|captions --help`` lists every ``--set`` key with its default.

The config dataclass is imported only when the help is shown (it pulls in torch), so
``medcap --help`` stays instant.
"""
from __future__ import annotations

import importlib

from typer.core import TyperCommand


def config_keys_command(config_class: str) -> type[TyperCommand]:
    """A command class whose help ends with the keys of ``config_class`` ("module:Class")."""

    class ConfigKeysCommand(TyperCommand):
        def format_help(self, ctx, formatter) -> None:
            from ..config import config_help

            module, name = config_class.rsplit(":", 1)
            self.epilog = "--set " + config_help(getattr(importlib.import_module(module), name))
            super().format_help(ctx, formatter)

    return ConfigKeysCommand
