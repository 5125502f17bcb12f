"""``medcap export``: a trained model in another ecosystem's format (medcap.export).

One command, one format flag: ``--timm`` (the detector's backbone as a timm model folder),
``--onnx`` (the detector for onnxruntime, probabilities out), ``--merge`` (a vision-language
captioner's LoRA adapter merged into its base: a plain transformers folder). Formats are mutually
exclusive; each is one entry of ``_FORMATS`` and one function (``medcap.export``; ``--merge``:
``medcap.models.vlm.merge_folder``).
"""
from __future__ import annotations

from pathlib import Path

import typer

from ..errors import MedcapError
from .app import app

_FORMATS = ("timm", "onnx", "merge")


@app.command("export")
def export_command(
    run: Path = typer.Argument(..., help="Run folder (the --out of training) or its model/ folder.",
                               show_default=False),
    out: Path = typer.Argument(..., help="Folder to write (new, empty, or an earlier export of the same format).",
                               show_default=False),
    timm: bool = typer.Option(False, "--timm", help="The concept detector's backbone as a timm folder (config.json "
                              "+ model.safetensors): timm.create_model('local-dir:OUT', pretrained=True)."),
    onnx: bool = typer.Option(False, "--onnx", help="The concept detector as OUT/model.onnx (pixel_values -> "
                              "probabilities, dynamic batch), checked against PyTorch under onnxruntime."),
    merge: bool = typer.Option(False, "--merge", help="A LoRA caption run (train captions --set lora_r=N) with its "
                               "adapter merged into the base model: AutoModelForImageTextToText.from_pretrained(OUT) "
                               "and `medcap predict captions --model OUT` load it without peft."),
) -> int:
    """Export a trained model: --timm, --onnx or --merge (one of them)."""
    chosen = [name for name, on in zip(_FORMATS, (timm, onnx, merge), strict=True) if on]
    if len(chosen) != 1:
        raise MedcapError(f"choose one format: {' or '.join('--' + f for f in _FORMATS)}")
    if chosen == ["timm"]:
        from ..export.timm_backbone import export_timm

        folder = export_timm(run, out)
        typer.echo(f"wrote {folder}: timm.create_model('local-dir:{folder}', pretrained=True) loads the backbone")
    elif chosen == ["merge"]:
        from ..models.vlm import merge_folder

        folder = merge_folder(run, out)
        typer.echo(f"wrote {folder}: the adapter of {run} merged into its base model")
    else:
        from ..export.onnx_detector import TOLERANCE, export_onnx

        folder, diff = export_onnx(run, out)
        typer.echo(f"wrote {folder / 'model.onnx'}: probabilities match PyTorch within {diff:.1e} "
                   f"(limit {TOLERANCE:g}) under onnxruntime")
    return 0
