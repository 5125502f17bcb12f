"""Captioning commands: ``train captions``, ``predict captions``, ``baseline captions constant|retrieval``.
Thin layer over :mod:`medcap.training.captions`, :mod:`medcap.inference.captions` and
:mod:`medcap.methods.baselines`.
"""
from __future__ import annotations

import time
from pathlib import Path

import typer

from ..errors import MedcapError
from .app import (
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

captions_baseline_app = typer.Typer(help="Caption baselines: a constant caption, nearest-neighbour retrieval.",
                                    no_args_is_help=True)
baseline_app.add_typer(captions_baseline_app, name="captions")


@train_app.command("captions", cls=config_keys_command("medcap.training.captions:CaptionConfig",
                                                           "medcap.training.vlm:load_any_caption_config"))
def train_captions_command(
    ctx: typer.Context,
    config: str = typer.Option("paper", "--config", "-c",
                               help="Named config (paper, authors-code, demo, demo-prompted; vision-language models: "
                               "vlm-tiny, qwen2.5-vl-lora, medgemma-lora, smolvlm-lora) or a YAML file."),
    data: Path = typer.Option(..., "--data", "-d", help="Dataset folder (train/ valid/ + *_captions.csv).",
                              show_default=False),
    out: Path = run_folder_option(),
    set_: list[str] | None = typer.Option(None, "--set", help="Override a config key: --set image_size=384, "
                                             "--set model=/path/to/blip-folder, --set mixed_precision=bf16 "
                                             "(repeatable; every key is listed below)."),
    resume: bool = resume_option(),
    print_config_: bool = print_config_option(),
) -> int:
    """Fine-tune BLIP (or train a small one from scratch) on the captions; keep the best epoch.

    `paper` needs Salesforce/blip-image-captioning-large (hub cache or --set model=FOLDER);
    `demo` trains a small BLIP from scratch on the CPU; `vlm-tiny` a small vision-language model (the
    path of qwen2.5-vl-lora, medgemma-lora, smolvlm-lora: LoRA with --set lora_r=N). The best model folder is OUT/model;
    predict with `medcap predict captions --model OUT/model`. Several GPUs:
    `accelerate launch -m medcap train captions ...`.
    """
    from ..training.captions import train_captioner
    from ..training.vlm import VLMCaptionConfig, load_any_caption_config, train_vlm_captioner

    cfg = load_any_caption_config(config, set_)   # BLIP, or a vision-language model (captioner: vlm)
    if print_config_:
        return print_config(cfg)
    train = train_vlm_captioner if isinstance(cfg, VLMCaptionConfig) else train_captioner
    with resume_hint(ctx, out):
        result = train(cfg, data, out, resume=resume, log=log)
    score = "n/a" if result.best_score is None else f"{result.best_score:.4f}"
    typer.echo(f"best validation {cfg.monitor} {score} at epoch {result.best_epoch} "
               f"({result.epochs_run} epochs, stopped: {result.stop_reason}); model: {result.best_dir}")
    return 0


@predict_app.command("captions")
def predict_captions_command(
    model: Path = typer.Option(..., "--model", "-m", help="Captioner folder (OUT/model of a training run).",
                               show_default=False),
    images: list[Path] | None = images_option(),
    data: Path | None = data_images_option(),
    split: str = split_images_option(),
    out: Path = typer.Option(..., "--out", "-o", help="Submission CSV to write (ID,Caption).", show_default=False),
    beams: int | None = typer.Option(None, "--beams", help="Beam width (1 = greedy); default: the model's "
                                        "setting (paper: 5)."),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", help="Longest caption in tokens."),
    batch_size: int = typer.Option(8, "--batch-size", "-b"),
    device: str | None = device_option(),
    concepts: Path | None = typer.Option(None, "--concepts", help="Concept submission for the same images "
                                            "(`medcap predict concepts`): needed by a model trained with "
                                            "concept_prompt, whose captions start from these concepts (other models "
                                            "do not use them)."),
    order_from: list[Path] | None = order_from_option(),
    edition: int = edition_option(),
    rerank: str | None = typer.Option(None, "--rerank", help="concepts: generate --beams beams (default 5) and "
                                      "keep the one that names the --concepts best (medcap.inference.rerank)."),
    rerank_weight: float = typer.Option(0.5, "--rerank-weight", help="Concept agreement vs beam score (0..1); "
                                        "choose it on validation with `medcap ensemble rerank-weight`."),
    cui_mapping: Path | None = typer.Option(None, "--cui-mapping", help="cui_mapping.csv: more concept names for "
                                            "--rerank to match."),
    workers: str = workers_option(),
    revision: str | None = revision_option(),
) -> int:
    """Caption every image and write an official caption submission (quoted CSV, every ID once).

    Several processes or machines: `accelerate launch [--num_processes N] -m medcap predict captions ...`
    splits the images between them; the main process writes the same file as one process would."""
    from ..data.loading import is_main_process, sharded_prediction
    from ..inference.captions import predict_captions
    from ..submission import read_id_order

    names = None
    if cui_mapping is not None:
        from ..data import read_cui_mapping

        names = read_cui_mapping(cui_mapping)
    images = images_or_split(images, data, split)
    order = read_id_order(order_from) if order_from else None
    model = model_at_revision(model, "captions", revision)
    start = time.monotonic()
    with sharded_prediction():
        captions = predict_captions(model, images, out, num_beams=beams, batch_size=batch_size,
                                    max_new_tokens=max_new_tokens, device=device, progress=True, concepts=concepts,
                                    order=order, edition=edition, rerank=rerank, rerank_weight=rerank_weight,
                                    cui_names=names, num_workers=workers)
    if not is_main_process():
        return 0
    words = sum(len(c.split()) for c in captions.values()) / max(1, len(captions))
    rate = len(captions) / max(time.monotonic() - start, 1e-9)  # model loading included
    typer.echo(f"wrote {out}: {len(captions)} captions, {words:.1f} words on average, {rate:.2f} captions/s")
    return 0


def _splits(data: Path, split: str):
    """(train split with captions, the split to predict)."""
    from ..data import read_dataset

    dataset = read_dataset(data)
    train = dataset.split("train")
    if train.captions is None:
        raise MedcapError("the train split has no captions file", file=dataset.root)
    return train, dataset.split(split)


def _finish_baseline(out: Path, target, preds: dict[str, str], what: str, order, edition: int) -> None:
    """Write the submission (in ``order`` when given, by ``edition``'s rules); score it with
    ROUGE-1 when ``target`` has captions."""
    from ..metrics.textscores import rouge1_scores
    from ..submission import write_caption_submission

    write_caption_submission(out, preds, gold_ids=order, edition=edition)
    line = f"{what}: wrote {out} ({len(preds)} images)"
    if target.captions is not None:
        ids = [i for i in preds if i in target.captions]
        if ids:
            rouge = rouge1_scores([target.captions[i] for i in ids], [preds[i] for i in ids]).mean()
            line += f"; {target.name} ROUGE-1 {rouge:.4f} (official preprocessing)"
    typer.echo(line)


@captions_baseline_app.command("constant")
def constant_command(
    data: Path = typer.Option(..., "--data", "-d", help="Dataset folder.", show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Submission CSV to write.", show_default=False),
    split: str = typer.Option("test", "--split", help="Split to predict (scored when it has captions)."),
    order_from: list[Path] | None = order_from_option(),
    edition: int = edition_option(),
) -> int:
    """The training caption that scores best (ROUGE-1) against the other training captions, for every image."""
    from ..methods.baselines import constant_caption_baseline
    from ..submission import read_id_order

    order = read_id_order(order_from) if order_from else None  # checked before predicting
    train, target = _splits(data, split)
    preds, caption = constant_caption_baseline(train, target.ids)
    _finish_baseline(out, target, preds, "constant caption", order, edition)
    typer.echo(f"caption: {caption!r}")
    return 0


@captions_baseline_app.command("retrieval")
def retrieval_command(
    data: Path = typer.Option(..., "--data", "-d", help="Dataset folder.", show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Submission CSV to write.", show_default=False),
    model: Path | None = typer.Option(None, "--model", "-m", help="Embed images with this captioner's image "
                                         "encoder or this concept detector's backbone (a model folder)."),
    backbone: str = typer.Option("resnet18", "--backbone", help="Otherwise a plain backbone (random or --pretrained)."),
    image_size: int = typer.Option(224, "--image-size"),
    pretrained: bool = typer.Option(False, "--pretrained", help="ImageNet weights for --backbone (local cache)."),
    split: str = typer.Option("test", "--split", help="Split to predict (scored when it has captions)."),
    batch_size: int = typer.Option(32, "--batch-size", "-b"),
    order_from: list[Path] | None = order_from_option(),
    edition: int = edition_option(),
) -> int:
    """Nearest-neighbour retrieval: the caption of the most similar training image (cosine of embeddings)."""
    from ..methods.baselines import SplitEmbeddings, load_embedder, retrieval_caption_baseline
    from ..submission import read_id_order

    order = read_id_order(order_from) if order_from else None  # checked before predicting
    embedder = load_embedder(model, backbone, image_size, pretrained)
    train, target = _splits(data, split)
    preds = retrieval_caption_baseline(SplitEmbeddings(embedder, batch_size, progress=True), train, target)
    _finish_baseline(out, target, preds, "retrieval", order, edition)
    return 0
