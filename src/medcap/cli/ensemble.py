"""``medcap ensemble concepts``: fuse detectors (and kNN retrieval) into one detector folder.
Thin layer over :mod:`medcap.ensemble`."""
from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from .app import app, device_option, log

ensemble_app = typer.Typer(help="Combine trained models into one (chosen on the validation split).",
                           no_args_is_help=True)
app.add_typer(ensemble_app, name="ensemble")


@ensemble_app.command("concepts")
def ensemble_concepts_command(
    member: List[Path] = typer.Option(..., "--member", "-m", show_default=False,
                                      help="A trained detector folder (OUT/model of `medcap train concepts`); "
                                           "repeatable."),
    data: Path = typer.Option(..., "--data", "-d", show_default=False,
                              help="Dataset folder: the validation split chooses everything, train is the kNN index."),
    out: Path = typer.Option(..., "--out", "-o", show_default=False, help="Ensemble folder to write."),
    knn: bool = typer.Option(False, "--knn/--no-knn", help="Add kNN retrieval (neighbours' concept shares) as a "
                             "source, embedded with the --embed-member's backbone."),
    fusion: List[str] = typer.Option(["mean", "weighted", "union", "intersection"], "--fusion",
                                     help="Fusions to try (repeatable); the best on validation is kept."),
    per_concept: bool = typer.Option(True, "--per-concept/--global-only",
                                     help="Per-concept thresholds where they beat the global one on held-out "
                                          "halves of validation."),
    embed_member: int = typer.Option(0, "--embed-member", help="Which member's embedding kNN uses (0 = first)."),
    batch_size: int = typer.Option(64, "--batch-size"),
    device: str = device_option(),
) -> int:
    """Fuse detectors (+ kNN) by mean, weighted mean, union or intersection; fusion, weights, k and
    thresholds are chosen on validation by the official per-image F1. OUT predicts like any
    detector: `medcap predict concepts --model OUT`."""
    from ..ensemble import FUSIONS, build_ensemble
    from ..errors import MedcapError

    bad = [f for f in fusion if f not in FUSIONS]
    if bad:
        raise MedcapError(f"--fusion: expected one of {', '.join(FUSIONS)}, got {bad[0]!r}")
    report = build_ensemble(member, data, out, knn=knn, fusions=tuple(fusion), per_concept=per_concept,
                            embed_member=embed_member, batch_size=batch_size, device=device, progress=True, log=log)
    typer.echo(f"{out}: {report['fusion']} of {len(member)} detector(s){' + kNN' if knn else ''}, "
               f"validation F1 {report['valid_f1']:.4f}")
    return 0
