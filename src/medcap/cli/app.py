"""The typer application and its command groups.

Each task module (``cli/data.py``, ``cli/concepts.py``, ...) registers its commands on
these groups; ``cli/__init__.py`` imports them all. Commands stay thin: parse options,
call the Python API, print. Heavy imports (torch, transformers) happen inside commands so
that ``medcap --help`` is instant.
"""
from __future__ import annotations

import typer

app = typer.Typer(
    name="medcap",
    help="Medical image concept detection (MedCSRA) and captioning (BLIP) for ImageCLEFmedical Caption.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Read, check and describe an ImageCLEFmedical dataset folder.", no_args_is_help=True)
train_app = typer.Typer(help="Train a concept detector or a captioner.", no_args_is_help=True)
predict_app = typer.Typer(help="Predict on images and write an ImageCLEF submission file.", no_args_is_help=True)
evaluate_app = typer.Typer(help="Score a submission exactly as the official ImageCLEF evaluator does.",
                           no_args_is_help=True)
validate_app = typer.Typer(help="Check a submission file against every official rule.", no_args_is_help=True)
baseline_app = typer.Typer(help="Standard ImageCLEF baselines (most frequent, kNN retrieval).", no_args_is_help=True)


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"medcap {__version__}")
        raise typer.Exit(0)


@app.callback()
def _global(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print medcap's version and exit."),
    verbose: bool = typer.Option(False, "--verbose", help="Show transformers' and the hub's load bars and warnings "
                                 "(hidden by default); may also follow the command."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Load model folders without checking their weight "
                                   "files against checksums.json (sha256 and size); may also follow the command."),
) -> None:
    """Medical image concept detection (MedCSRA) and captioning (BLIP) for ImageCLEFmedical Caption."""
    if no_verify:  # else as MEDCAP_NO_VERIFY says (checked by default)
        from ..models.weights import set_verify

        set_verify(False)


app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")
app.add_typer(predict_app, name="predict")
app.add_typer(evaluate_app, name="evaluate")
app.add_typer(validate_app, name="validate")
app.add_typer(baseline_app, name="baseline")


def log(msg: str) -> None:
    """Progress messages of CLI commands go to stderr, so stdout stays machine-readable."""
    typer.echo(msg, err=True)


# -- options shared by the train / predict commands of both tasks ------------------------------
def run_folder_option():
    return typer.Option(..., "--out", "-o", help="Run folder: model/, checkpoints/, metrics.csv.",
                        show_default=False)


def resume_option():
    return typer.Option(False, "--resume", help="Continue the run in --out from its newest checkpoint.")


def images_option():
    return typer.Option(None, "--images", "-i", help="Image folder(s) or files (JPEG/PNG/DICOM...); the image ID "
                        "is the file name without extension. Or use --data with --split.", show_default=False)


def data_images_option():
    return typer.Option(None, "--data", "-d", help="Dataset folder (ImageCLEF folders or Hugging Face parquet): "
                        "use the images of its --split instead of --images.", show_default=False)


def split_images_option():
    return typer.Option("test", "--split", help="Split of --data to use: train, valid or test.")


def images_or_split(images, data, split: str):
    """The images chosen by ``--images`` or by ``--data``/``--split`` (exactly one of the two), as
    the inference functions take them: paths, or the split's items (read on demand, either layout)."""
    from ..errors import MedcapError

    if images and data is not None:
        raise MedcapError("give either --images or --data (with --split), not both")
    if data is None:
        if not images:
            raise MedcapError("no images: give --images FOLDER_OR_FILES, or --data DATASET --split test")
        return images
    from ..data.dataset import read_dataset
    from ..data.items import ImageFolderItems

    s = read_dataset(data).split(split)
    ids = s.image_ids()
    if not ids:
        raise MedcapError(f"the {s.name} split has no images", file=data)
    return ImageFolderItems.from_split(s, ids)


def revision_option():
    return typer.Option(None, "--revision", help="With a hub id owner/name as --model: the commit, tag or branch "
                        "to load (default: the main branch).", show_default=False)


def model_at_revision(model, kind: str, revision: str | None):
    """--model as given, or the local copy of a hub id at --revision (medcap.models.location)."""
    from ..models.location import is_hub_id, resolve_model_folder

    if revision is None and not is_hub_id(str(model)):
        return model
    return resolve_model_folder(str(model), kind, revision=revision)


def device_option():
    return typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: GPU if any).")


def workers_option():
    return typer.Option("auto", "--workers", "-j", help="Data-loader workers decoding images beside the model: a "
                        "number, or auto (cores - 1, at most 8; none for a handful of images). Results do not "
                        "depend on it.")


# -- ImageCLEFmedical edition and row order (REFERENCE §7) ----------------------------------------
def edition_option():
    from ..editions import EDITIONS, LATEST_EDITION

    years = " or ".join(map(str, EDITIONS))
    return typer.Option(LATEST_EDITION, "--edition", help=f"ImageCLEFmedical edition whose rules apply: {years} "
                        "(2026 wants the rows in the gold file's order and scores captions with its own preset).")


def order_from_option():
    return typer.Option(None, "--order-from", help="Write the rows in the ID order of this file (the gold CSV, or "
                        "one ID a line), as the 2026 rules want; repeat it to append IDs only in the next file "
                        "(concepts: gold, then manual gold). Every ID there needs a prediction and vice versa.")
