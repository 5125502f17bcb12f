"""``medcap push``: a model folder to the Hugging Face hub (medcap.export.push)."""
from __future__ import annotations

from pathlib import Path

import typer

from .app import app


@app.command("push")
def push_command(
    run: Path = typer.Argument(..., help="Run folder, its model/ folder, or a `medcap export` folder.",
                               show_default=False),
    repo_id: str = typer.Argument(..., help="Hub repository owner/name (created if needed).", show_default=False),
    private: bool = typer.Option(False, "--private", help="Create the repository private."),
) -> int:
    """Upload a model folder to the Hugging Face hub; load it back with --model owner/name [--revision R]."""
    from ..export.push import push_model

    url = push_model(run, repo_id, private=private)
    typer.echo(f"pushed {run} to {repo_id}: {url}")
    return 0
