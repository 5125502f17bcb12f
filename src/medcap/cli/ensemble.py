"""``medcap ensemble concepts``: fuse detectors (and kNN retrieval) into one detector folder.
Thin layer over :mod:`medcap.methods.ensemble`."""
from __future__ import annotations

from pathlib import Path

import typer

from .app import app, device_option, log, workers_option

ensemble_app = typer.Typer(help="Combine trained models into one (chosen on the validation split).",
                           no_args_is_help=True)
app.add_typer(ensemble_app, name="ensemble")


@ensemble_app.command("concepts")
def ensemble_concepts_command(
    member: list[Path] = typer.Option(..., "--member", "-m", show_default=False,
                                      help="A trained detector folder (OUT/model of `medcap train concepts`); "
                                           "repeatable."),
    data: Path = typer.Option(..., "--data", "-d", show_default=False,
                              help="Dataset folder: the validation split chooses everything, train is the kNN index."),
    out: Path = typer.Option(..., "--out", "-o", show_default=False, help="Ensemble folder to write."),
    knn: bool = typer.Option(False, "--knn/--no-knn", help="Add kNN retrieval (neighbours' concept shares) as a "
                             "source, embedded with the --embed-member's backbone."),
    fusion: list[str] = typer.Option(["mean", "weighted", "union", "intersection"], "--fusion",
                                     help="Fusions to try (repeatable); the best on validation is kept."),
    per_concept: bool = typer.Option(True, "--per-concept/--global-only",
                                     help="Per-concept thresholds where they beat the global one on held-out "
                                          "halves of validation."),
    embed_member: int = typer.Option(0, "--embed-member", help="Which member's embedding kNN uses (0 = first)."),
    batch_size: int = typer.Option(64, "--batch-size"),
    device: str = device_option(),
    workers: str = workers_option(),
) -> int:
    """Fuse detectors (+ kNN) by mean, weighted mean, union or intersection; fusion, weights, k and
    thresholds are chosen on validation by the official per-image F1. OUT predicts like any
    detector: `medcap predict concepts --model OUT`. Under `accelerate launch` the processes split
    the validation and training images between them."""
    from ..data.loading import is_main_process, sharded_prediction
    from ..errors import MedcapError
    from ..methods.ensemble import FUSIONS, build_ensemble

    bad = [f for f in fusion if f not in FUSIONS]
    if bad:
        raise MedcapError(f"--fusion: expected one of {', '.join(FUSIONS)}, got {bad[0]!r}")
    with sharded_prediction():
        report = build_ensemble(member, data, out, knn=knn, fusions=tuple(fusion), per_concept=per_concept,
                                embed_member=embed_member, batch_size=batch_size, device=device, progress=True,
                                log=log, num_workers=workers)
    if not is_main_process():
        return 0
    typer.echo(f"{out}: {report['fusion']} of {len(member)} detector(s){' + kNN' if knn else ''}, "
               f"validation F1 {report['valid_f1']:.4f}")
    return 0


@ensemble_app.command("rerank-weight")
def rerank_weight_command(
    model: Path = typer.Option(..., "--model", "-m", show_default=False, help="Captioner folder."),
    data: Path = typer.Option(..., "--data", "-d", show_default=False, help="Dataset folder with a valid/ split "
                              "and valid_captions.csv."),
    concepts: Path = typer.Option(..., "--concepts", show_default=False,
                                  help="Concept submission for the VALIDATION images (`medcap predict concepts "
                                       "--images DATA/valid`)."),
    beams: int = typer.Option(5, "--beams", help="Beams generated per image."),
    limit: int = typer.Option(200, "--limit", help="At most this many validation images (time)."),
    batch_size: int = typer.Option(8, "--batch-size"),
) -> int:
    """Choose `predict captions --rerank concepts`'s --rerank-weight on the validation split (ROUGE-1)."""
    from ..data.dataset import read_dataset
    from ..errors import MedcapError
    from ..inference.captions import load_captioner
    from ..methods.consistent import fit_rerank_weight
    from ..submission import read_concept_submission

    ds = read_dataset(data)
    valid = ds.split("valid")
    if valid.captions is None:
        raise MedcapError("no validation captions to choose the weight on", file=data)
    detected = read_concept_submission(concepts)
    ids = [i for i in valid.labelled_ids("captions") if i in detected][:max(1, limit)]
    if not ids:
        raise MedcapError("no validation image has both a caption and a row in --concepts", file=concepts)
    captioner = load_captioner(model)  # BLIP or a vision-language model folder
    weight, table = fit_rerank_weight(captioner, [valid.load_image(i) for i in ids], [detected[i] for i in ids],
                                      [valid.captions[i] for i in ids], ds.cui_names, beams, batch_size)
    for w, score in table.items():
        log(f"weight {w:.1f}: validation ROUGE-1 {score:.4f}")
    typer.echo(f"--rerank-weight {weight:g} (validation ROUGE-1 {table[weight]:.4f} on {len(ids)} images)")
    return 0
