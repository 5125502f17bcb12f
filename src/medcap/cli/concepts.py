"""Concept detection commands: ``train concepts``, ``predict concepts``, ``explain``,
``baseline concepts most-frequent|knn``. Thin layer over :mod:`medcap.training.concepts`,
:mod:`medcap.inference.explain` and :mod:`medcap.methods.baselines`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import MedcapError
from .app import (
    app,
    baseline_app,
    data_images_option,
    device_option,
    edition_option,
    images_option,
    images_or_split,
    log,
    model_at_revision,
    order_from_option,
    predict_app,
    resume_option,
    revision_option,
    run_folder_option,
    split_images_option,
    train_app,
    workers_option,
)
from .train_help import config_keys_command, print_config, print_config_option, resume_hint

concepts_baseline_app = typer.Typer(help="Concept baselines: most frequent concepts, kNN image retrieval.",
                                    no_args_is_help=True)
baseline_app.add_typer(concepts_baseline_app, name="concepts")


@train_app.command("concepts", cls=config_keys_command("medcap.training.concepts:ConceptConfig",
                                                           "medcap.training.concepts:load_concept_config"))
def train_concepts_command(
    ctx: typer.Context,
    config: str = typer.Option("paper", "--config", "-c",
                               help="Named config (paper, authors-code, csra, global-only, attention-only, demo) "
                                    "or a YAML file."),
    data: Path = typer.Option(..., "--data", "-d", help="Dataset folder (train/ valid/ + *_concepts.csv).",
                              show_default=False),
    out: Path = run_folder_option(),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a config key: --set lr=3e-4 (repeatable; "
                                                                  "every key is listed below)."),
    resume: bool = resume_option(),
    valid_fraction: Optional[float] = typer.Option(None, "--valid-fraction",
                                                   help="Hold out this share of train when there is no valid split."),
    pretrained: Optional[bool] = typer.Option(None, "--pretrained/--random-init",
                                              help="ImageNet weights (local cache) or random initialisation; "
                                                   "default: the config's."),
    print_config_: bool = print_config_option(),
) -> int:
    """Train a concept detector (MedCSRA by default) and keep the best epoch by validation F1.

    The best model folder is OUT/model (config.json, model.safetensors, concepts.json,
    thresholds.json, preprocessor_config.json); predict with `medcap predict concepts --model OUT/model`.
    Several GPUs: `accelerate launch -m medcap train concepts ...`.
    """
    from ..config import parse_overrides
    from ..training.concepts import load_concept_config, train_concepts

    overrides = parse_overrides(set_)
    if valid_fraction is not None:
        overrides["valid_fraction"] = valid_fraction
    if pretrained is not None:
        overrides["pretrained"] = pretrained
    cfg = load_concept_config(config, overrides)
    if print_config_:
        return print_config(cfg)
    with resume_hint(ctx, out):
        result = train_concepts(cfg, data, out, resume=resume, log=log)
    typer.echo(f"best validation F1 {result.best_score:.4f} at epoch {result.best_epoch} "
               f"({result.epochs_run} epochs, stopped: {result.stop_reason}); model: {result.best_dir}")
    return 0


@predict_app.command("concepts")
def predict_concepts_command(
    model: Path = typer.Option(..., "--model", "-m", help="Model folder (OUT/model of a training run).",
                               show_default=False),
    images: Optional[List[Path]] = images_option(),
    data: Optional[Path] = data_images_option(),
    split: str = split_images_option(),
    out: Path = typer.Option(..., "--out", "-o", help="Submission CSV to write (ID,CUIs).", show_default=False),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write probabilities (predicted + top 10)."),
    all_probabilities: bool = typer.Option(False, "--all-probabilities",
                                           help="The --json file lists every concept's probability and the "
                                                "vocabulary (exact fact-checking; large for big vocabularies)."),
    batch_size: int = typer.Option(32, "--batch-size", "-b"),
    device: Optional[str] = device_option(),
    order_from: Optional[List[Path]] = order_from_option(),
    edition: int = edition_option(),
    workers: str = workers_option(),
    revision: Optional[str] = revision_option(),
) -> int:
    """Predict concepts with the model's saved thresholds and write an official submission.

    Several processes or machines: `accelerate launch [--num_processes N] -m medcap predict concepts ...`
    splits the images between them; the main process writes the same file as one process would."""
    from ..data.loading import is_main_process, sharded_prediction
    from ..fileio import write_json
    from ..inference.concepts import decide, image_items, load_detector, predict_probabilities, probabilities_json
    from ..submission import check_id_order, read_id_order, write_concept_submission

    order = read_id_order(order_from) if order_from else None
    items = image_items(images_or_split(images, data, split))
    check_id_order(items.ids, order, file=order_from[0] if order_from else None)
    detector = load_detector(model_at_revision(model, "concepts", revision))
    with sharded_prediction():
        ids, probs = predict_probabilities(detector, items, batch_size=batch_size, device=device,
                                           num_workers=workers, progress=True)
    if not is_main_process():
        return 0
    decided = decide(detector, probs)
    write_concept_submission(out, {i: [c for c, _ in row] for i, row in zip(ids, decided, strict=True)},
                             gold_ids=order, edition=edition)
    if json_out is not None:
        write_json(json_out, probabilities_json(detector, ids, probs, full=all_probabilities))
    n = sum(len(r) for r in decided)
    typer.echo(f"wrote {out}: {len(ids)} images, {n / max(1, len(ids)):.2f} concepts per image")
    return 0


@app.command("explain")
def explain_command(
    model: Path = typer.Option(..., "--model", "-m", help="Concept model folder.", show_default=False),
    image: Optional[Path] = typer.Option(None, "--image", "-i", help="Image file.", show_default=False),
    data: Optional[Path] = typer.Option(None, "--data", "-d", help="Dataset folder (either layout): explain the "
                                        "image --id of its --split instead of --image.", show_default=False),
    split: str = split_images_option(),
    image_id: Optional[str] = typer.Option(None, "--id", help="Image ID in --data's --split.", show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the heatmap PNGs and explain.json.",
                             show_default=False),
    top: int = typer.Option(0, "--top", help="Show the top-N concepts instead of the predicted ones."),
) -> int:
    """Heatmap overlays of where each predicted concept was found in IMAGE."""
    from ..errors import MedcapError
    from ..inference.explain import explain_image

    if (image is None) == (data is None) or (data is not None) != (image_id is not None):
        raise MedcapError("give either --image FILE, or --data DATASET --split SPLIT --id IMAGE_ID")
    label = None
    if data is not None:
        from ..data.dataset import read_dataset

        s = read_dataset(data).split(split)
        if not s.has_image(image_id):
            raise MedcapError(f"no image with ID {image_id!r} in the {s.name} split", file=data)
        image, label = s.image_source(image_id), f"{s.name}/{image_id}"
    report = explain_image(model, image, out, top=top, label=label)
    for e in report["concepts"]:
        typer.echo(f"{e['cui']}  {e['probability']:.3f}  {e['name']}  -> {out / e['file']}")
    if not report["concepts"]:
        typer.echo("no concept passes the model's thresholds (use --top N to see the strongest)")
    return 0


def _target_split(data: Path, split: str):
    from ..data.dataset import read_dataset

    ds = read_dataset(data)
    return ds, ds.split("train"), ds.split("valid"), ds.split(split)


def _finish_baseline(out: Path, target, preds: dict, what: str, report: dict, order_from, edition: int) -> None:
    from ..metrics.concepts import evaluate_concepts
    from ..submission import read_id_order, write_concept_submission

    write_concept_submission(out, preds, gold_ids=read_id_order(order_from) if order_from else None, edition=edition)
    line = f"{what}: wrote {out} ({len(preds)} images)"
    if target.concepts is not None:
        gold = {i: target.concepts[i] for i in preds if i in target.concepts}
        line += f"; {target.name} primary F1 {evaluate_concepts(gold, preds)['primary_f1']:.4f}"
    typer.echo(line)
    typer.echo(json.dumps({k: v for k, v in report.items() if k not in ("table", "f1_by_k")}))


def _need_concepts(ds, *splits) -> None:
    for s in splits:
        if s.concepts is None:
            raise MedcapError(f"the {s.name} split has no concepts file", file=ds.root)


@concepts_baseline_app.command("most-frequent")
def most_frequent_command(
    data: Path = typer.Option(..., "--data", "-d", help="Dataset folder.", show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Submission CSV to write.", show_default=False),
    split: str = typer.Option("test", "--split", help="Split to predict (scored when it has concepts)."),
    max_k: int = typer.Option(10, "--max-k", help="Largest k tried on validation."),
    order_from: Optional[List[Path]] = order_from_option(),
    edition: int = edition_option(),
) -> int:
    """The k most frequent training concepts for every image (k chosen on validation)."""
    from ..methods.baselines import most_frequent_baseline

    ds, train, valid, target = _target_split(data, split)
    _need_concepts(ds, train, valid)
    cuis, report = most_frequent_baseline(train, valid, max_k)
    _finish_baseline(out, target, {i: cuis for i in target.ids}, "most-frequent", report, order_from, edition)
    return 0


@concepts_baseline_app.command("knn")
def knn_command(
    data: Path = typer.Option(..., "--data", "-d", help="Dataset folder.", show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Submission CSV to write.", show_default=False),
    model: Optional[Path] = typer.Option(None, "--model", "-m",
                                         help="Embed with this trained concept model's backbone."),
    backbone: str = typer.Option("resnet18", "--backbone", help="Otherwise a plain backbone (random or --pretrained)."),
    image_size: int = typer.Option(224, "--image-size"),
    pretrained: bool = typer.Option(False, "--pretrained", help="ImageNet weights for --backbone (local cache)."),
    split: str = typer.Option("test", "--split", help="Split to predict (scored when it has concepts)."),
    batch_size: int = typer.Option(32, "--batch-size", "-b"),
    order_from: Optional[List[Path]] = order_from_option(),
    edition: int = edition_option(),
    workers: str = workers_option(),
) -> int:
    """Image-retrieval kNN: concepts voted by the nearest training images (k, vote chosen on valid)."""
    from ..data.loading import is_main_process, sharded_prediction
    from ..inference.concepts import load_detector
    from ..methods.baselines import SplitEmbeddings, knn_baseline
    from ..models.retrieval import plain_backbone

    ds, train, valid, target = _target_split(data, split)
    _need_concepts(ds, train, valid)
    if model is not None:
        embedder = load_detector(model)
    else:
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # random weights: the same in every run and every process of a launch
            embedder = plain_backbone(backbone, image_size, pretrained)
    embeddings = SplitEmbeddings(embedder, batch_size, progress=True, num_workers=workers)
    with sharded_prediction():  # under accelerate launch: each process embeds its block of every split
        preds, report = knn_baseline(embeddings, train, valid, target)
    if not is_main_process():
        return 0
    _finish_baseline(out, target, preds, "knn", report, order_from, edition)
    return 0
