"""``medcap data check DIR`` and ``medcap data stats DIR --out DIR``.

Thin layer over :mod:`medcap.data.check` and :mod:`medcap.data.stats`.
"""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import typer

from .app import data_app

_CHECK_HELP = (
    "Read a whole dataset and list EVERY problem, one per line as FILE:LINE: MESSAGE.\n\n"
    "Checked: CSV syntax and UTF-8, field counts, empty or duplicate IDs, malformed CUIs (not C "
    "followed by digits), CUIs missing from cui_mapping.csv, empty captions, IDs in the captions "
    "file but not the concepts file (and the reverse), an ID in two splits, labelled IDs without "
    "an image, images without a row, and images that do not decode.\n\n"
    "DATASET is an ImageCLEFmedical Caption / ROCOv2 folder (train/ valid/ test/ images, "
    "train_concepts.csv, train_captions.csv, *_concepts_manual.csv, cui_mapping.csv) or a folder "
    "of Hugging Face ROCOv2 *.parquet files.\n\n"
    "Exit status: 0 when no problem is found, 1 when any is, 2 when DATASET is not a dataset."
)

_STATS_HELP = (
    "Plot the dataset like the paper's Figures 2 and 3 and write a JSON summary.\n\n"
    "Writes into --out: caption_lengths.png (Figure 2: caption length in words, train split), "
    "concepts_per_image.png (Figure 3: concepts per image), concept_frequency.png (the long tail: "
    "images per concept against rank, log scale) and stats.json (counts per split, caption length "
    "mean/median/min/max, concepts-per-image histogram, distinct CUIs, top concepts with names). "
    "The folder appears complete or not at all.\n\n"
    "DATASET is read like `medcap data check` reads it; a malformed row stops with FILE:LINE."
)


@data_app.command("check", help=_CHECK_HELP)
def check_command(
    dataset: Path = typer.Argument(..., help="Dataset folder to check.", show_default=False),
    images: bool = typer.Option(
        True, "--images/--no-images",
        help="Decode every image to find unreadable ones (--no-images: CSVs and file names only)."),
    max_per_kind: int = typer.Option(20, "--max-per-kind", min=0,
                                     help="Problems listed per kind; the rest are counted (0: list all)."),
) -> int:
    """Read a whole dataset and list its problems, one per line as FILE:LINE: MESSAGE (at most
    --max-per-kind of each kind, then how many more)."""
    from ..data.check import inspect_dataset

    progress = None
    if images and sys.stderr.isatty():
        from tqdm import tqdm

        def progress(jobs):
            return tqdm(jobs, desc="decoding images", unit="img", file=sys.stderr, leave=False)

    result = inspect_dataset(dataset, decode_images=images, progress=progress)
    typer.echo(f"dataset: {result.root} ({result.layout} layout)")
    for name, counts in result.counts.items():
        parts = [f"{counts['images']} images"] + [f"{v} {k} rows" for k, v in counts.items() if k != "images"]
        typer.echo(f"  {name}: " + ", ".join(parts))
    if result.n_cui_names is not None:
        typer.echo(f"  cui_mapping: {result.n_cui_names} CUIs")
    typer.echo(f"  distinct CUIs in labels: {result.n_distinct_cuis}")
    if result.ok:
        typer.echo("no problems found" + ("" if images else " (images not decoded: --no-images)"))
        return 0
    shown: Counter = Counter()
    for p in result.problems:
        shown[p.kind] += 1
        if not max_per_kind or shown[p.kind] <= max_per_kind:
            typer.echo(p.format())
    for kind, n in shown.items():
        if max_per_kind and n > max_per_kind:
            typer.echo(f"... and {n - max_per_kind:,} more {kind} problem(s) (--max-per-kind 0 lists them all)")
    kinds = ", ".join(f"{n} {k}" for k, n in result.problem_kinds().most_common())
    typer.echo(f"{len(result.problems)} problem(s): {kinds}")
    return 1


@data_app.command("stats", help=_STATS_HELP)
def stats_command(
    dataset: Path = typer.Argument(..., help="Dataset folder.", show_default=False),
    out: Path = typer.Option(..., "--out", "-o", show_default=False,
                             help="Folder to write (created or replaced whole; refused if it holds other files)."),
) -> int:
    """Plot the dataset like the paper's Figures 2 and 3 and write a JSON summary."""
    from ..data.stats import STATS_FILE, dataset_stats

    stats = dataset_stats(dataset, out)
    typer.echo(f"edition: {stats['edition']} (from the file and image names)")
    for name, info in stats["splits"].items():
        line = f"{name}: {info['images']} images"
        if "concepts" in info:
            per = info["concepts"]["per_image"]
            line += f", {info['concepts']['distinct_cuis']} CUIs, {per.get('mean', 0):.2f} concepts/image"
        if "captions" in info:
            line += f", captions {info['captions']['words'].get('mean', 0):.1f} words on average"
        typer.echo(line)
    for f in [*stats["figures"].values(), STATS_FILE]:
        typer.echo(f"wrote {Path(out) / f}")
    return 0

