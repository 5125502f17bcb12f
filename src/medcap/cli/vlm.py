"""``medcap export --merge RUN OUT``: a vision-language captioner's LoRA adapter merged into its base
model, written as a plain ``transformers`` folder (:func:`medcap.models.vlm.merge_folder`)."""
from __future__ import annotations

from pathlib import Path

import typer

from .app import app


@app.command("export")
def export_command(
    merge: Path = typer.Option(..., "--merge", help="Run folder (or model folder) of a LoRA caption run "
                               "(`medcap train captions --set lora_r=N`).", show_default=False),
    out: Path = typer.Argument(..., help="Folder to write: AutoModelForImageTextToText.from_pretrained(OUT) "
                               "loads it; `medcap predict captions --model OUT` too.", show_default=False),
) -> int:
    """Merge a LoRA adapter into its base model: one plain transformers folder (weights, processor,
    generation_config.json, medcap's settings), no peft needed to load it."""
    from ..models.vlm import merge_folder

    folder = merge_folder(merge, out)
    typer.echo(f"wrote {folder}: the adapter of {merge} merged into its base model")
    return 0
