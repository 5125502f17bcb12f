"""What the commands that take ``--config`` share: ``--help`` lists every ``--set`` key with its
one-line meaning and the chosen config's value, ``--print-config`` prints the resolved config,
and Ctrl-C names the checkpoint kept and the ``--resume`` command.

The config dataclass is imported only when the help is shown (it pulls in torch), so
``medcap --help`` stays instant.
"""
from __future__ import annotations

import contextlib
import importlib
import shlex
from pathlib import Path

import typer
from typer.core import TyperCommand

RAW_ARGS = "medcap.raw_args"   # ctx.meta key: the command's arguments as typed


def print_config_option():
    return typer.Option(False, "--print-config", help="Print the resolved config (the config with every --set "
                        "applied) as YAML and exit; --data and --out are not needed.")


def option_value(args: list[str], *names: str) -> str | None:
    """The last value given to option ``names`` in raw ``args`` (``--config x`` or ``--config=x``)."""
    value = None
    for i, a in enumerate(args):
        if a in names and i + 1 < len(args):
            value = args[i + 1]
        elif "=" in a and a.split("=", 1)[0] in names:
            value = a.split("=", 1)[1]
    return value


def config_keys_command(config_class: str, loader: str) -> type[TyperCommand]:
    """A command class for a ``--config`` command of config dataclass ``config_class``
    ("module:Class") whose configs ``loader`` ("module:function") reads."""

    class ConfigKeysCommand(TyperCommand):
        def parse_args(self, ctx, args):
            ctx.meta[RAW_ARGS] = list(args)
            if "--print-config" not in args or "--help" in args:
                return super().parse_args(ctx, args)
            required = [p for p in self.params if p.required]
            for p in required:  # --print-config needs no --data / --out
                p.required = False
            try:
                return super().parse_args(ctx, args)
            finally:
                for p in required:
                    p.required = True

        def format_help(self, ctx, formatter) -> None:
            from ..config import config_help
            from ..errors import MedcapError

            module, name = config_class.rsplit(":", 1)
            cls = getattr(importlib.import_module(module), name)
            chosen = option_value(ctx.meta.get(RAW_ARGS, []), "--config", "-c") or "paper"
            module, name = loader.rsplit(":", 1)
            try:
                cfg, title = getattr(importlib.import_module(module), name)(chosen), f"config {chosen!r}"
            except MedcapError:  # a config that does not load: its error comes when the command runs
                cfg, title = None, "defaults"
            cls = type(cfg) if cfg is not None else cls  # (a subclass: e.g. a vision-language caption config)
            head = f"--set keys ({title}; choose another with --config NAME --help):"
            if self.rich_markup_mode == "rich":  # (rich help keeps single line breaks of an epilog)
                from rich.console import Console
                from rich.markup import escape

                width = Console().width - 2  # the console typer's help uses, less its padding
                self.epilog = "\n".join(escape(line) for line in [head, *config_help(cls, cfg, width)])
            else:  # click's "\b": a paragraph printed as is, not rewrapped
                self.epilog = "\b\n" + "\n".join([head, *config_help(cls, cfg, formatter.width)])
            super().format_help(ctx, formatter)

    return ConfigKeysCommand


def print_config(cfg) -> int:
    """``--print-config``: the resolved config on stdout, as YAML."""
    from ..config import config_yaml

    typer.echo(config_yaml(cfg), nl=False)
    return 0


@contextlib.contextmanager
def resume_hint(ctx: typer.Context, out: Path):
    """Ctrl-C during training: one line naming the newest complete checkpoint and the exact
    command that continues the run, then exit 130 (the shell's code for an interrupt)."""
    try:
        yield
    except KeyboardInterrupt:
        from ..training.checkpoints import latest_checkpoint

        args, path, c = list(ctx.meta.get(RAW_ARGS, [])), [], ctx
        while c.parent is not None:  # the command's names below the root ("train", "concepts")
            path.insert(0, c.info_name)
            c = c.parent
        path.insert(0, "medcap")
        again = shlex.join(path + args + ([] if "--resume" in args else ["--resume"]))
        ckpt = latest_checkpoint(out)
        if ckpt is None:
            typer.echo(f"interrupted before the first checkpoint (none in {out} yet); {again} starts the run "
                       "afresh", err=True)
        else:
            typer.echo(f"interrupted: the last checkpoint is {ckpt}; continue with: {again}", err=True)
        raise SystemExit(130) from None
