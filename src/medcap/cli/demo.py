"""Top-level commands: ``medcap demo``, ``medcap report``, ``medcap serve``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import MedcapError
from .app import app, edition_option, workers_option


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("medcap-demo"), "--out", help="Folder for everything the demo writes "
                             "(data, models, submissions, scores, report); nothing is written outside it."),
    fast: bool = typer.Option(False, "--fast", help="Tiny data and models: a smoke test in about a minute, "
                              "scores not meaningful."),
    seed: int = typer.Option(0, "--seed", help="Seed of the synthetic data and the training runs."),
    edition: int = edition_option(),
) -> int:
    """Run the whole pipeline on built-in synthetic data (about 5 minutes on a CPU).

    Generates the data, trains both models, predicts the test split, writes and scores both
    submission files beside the baselines, and writes the HTML report, all under --out.
    """
    from ..demo import run_demo

    result = run_demo(out, fast=fast, seed=seed, edition=edition)
    typer.echo(result.summary())
    return 0


@app.command("report")
def report_command(
    out: Path = typer.Option(..., "--out", help="Folder for report.html and its PNG files (replaced as a whole)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset folder (ImageCLEF layout): statistics, "
                                        "gold files and gallery images."),
    concepts: Optional[Path] = typer.Option(None, "--concepts", help="Concept model folder (with metrics.csv "
                                            "and thresholds.json from training)."),
    captions: Optional[Path] = typer.Option(None, "--captions", help="Caption model folder."),
    concept_pred: Optional[Path] = typer.Option(None, "--concept-pred", help="Concept submission CSV on --split."),
    caption_pred: Optional[Path] = typer.Option(None, "--caption-pred", help="Caption submission CSV on --split."),
    scores: Optional[Path] = typer.Option(None, "--scores", help="JSON of scores to show "
                                          '({"concepts": {METHOD: {metric: value}}, "captions": {...}}), '
                                          "e.g. the scores.json of medcap demo."),
    split: str = typer.Option("test", "--split", help="Split the submissions and the gallery are about."),
    gallery: int = typer.Option(8, "--gallery", min=0, help="Number of images in the gallery."),
    title: str = typer.Option("medcap report", "--title", help="Title of the page."),
    workers: str = workers_option(),
) -> int:
    """Write a self-contained HTML report (images embedded) for any trained models and dataset.

    Every input is optional: a section whose inputs are missing is left out with a note.
    """
    from ..report import ReportInputs, build_report

    score_dict, score_notes = {}, []
    if scores is not None:
        try:
            score_dict = json.loads(scores.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise MedcapError(f"cannot read the scores JSON: {e}", file=scores) from None
        score_notes = score_dict.get("notes", []) if "scores" in score_dict else []
        score_dict = score_dict.get("scores", score_dict)
    for path in (data, concepts, captions, concept_pred, caption_pred):
        if path is not None and not path.exists():
            raise MedcapError("not found", file=path)
    inputs = ReportInputs(data=data, concept_model=concepts, caption_model=captions, concept_pred=concept_pred,
                          caption_pred=caption_pred, split=split, scores=score_dict, score_notes=score_notes,
                          title=title, gallery_size=gallery, num_workers=workers)
    html = build_report(inputs, out, progress=True)
    typer.echo(f"report: {html}")
    return 0


@app.command("serve")
def serve_command(
    concepts: Optional[Path] = typer.Option(None, "--concepts", help="Concept model folder."),
    captions: Optional[Path] = typer.Option(None, "--captions", help="Caption model folder."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; 127.0.0.1 keeps the app on this "
                             "machine. Use 0.0.0.0 only on a trusted network."),
    port: Optional[int] = typer.Option(None, "--port", help="Port (default: the first free one from 7860)."),
    max_file_mb: float = typer.Option(50.0, "--max-file-mb", min=0.001, help="Largest upload accepted, in MB."),
    max_pixels: int = typer.Option(40_000_000, "--max-pixels", min=1,
                                   help="Largest image accepted (width x height), refused before decoding."),
    concurrency: int = typer.Option(1, "--concurrency", min=1, help="Images analysed at the same time."),
    queue_size: int = typer.Option(32, "--queue-size", min=1, help="Requests allowed to wait; more are refused."),
    auth: Optional[str] = typer.Option(None, "--auth", help="USER:PASSWORD_FILE: a login page (Gradio auth); the "
                                       "password is the file's first line. Needed on any non-loopback --host.",
                                       show_default=False),
) -> int:
    """Start the web app: upload a JPEG, PNG or DICOM image and see its concepts, caption and heatmap."""
    if concepts is None and captions is None:
        raise MedcapError("give at least one model folder: --concepts DIR and/or --captions DIR")
    for path in (concepts, captions):
        if path is not None and not path.is_dir():
            raise MedcapError("model folder not found", file=path)
    from ..webapp.server import serve

    serve(concepts, captions, host=host, port=port, max_file_mb=max_file_mb, max_pixels=max_pixels,
          concurrency=concurrency, queue_size=queue_size, auth=auth)
    return 0
