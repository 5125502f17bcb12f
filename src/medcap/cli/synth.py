"""``medcap synth OUT``: write the SYNTHETIC dataset. Thin layer over :mod:`medcap.synth`."""
from __future__ import annotations

import sys
from pathlib import Path

import typer

from ..errors import MedcapError
from .app import app


@app.command("synth")
def synth_command(
    out: Path = typer.Argument(..., show_default=False,
                               help="Folder to write (must be missing or empty unless --overwrite)."),
    n_train: int = typer.Option(500, "--n-train", help="Number of training images."),
    n_valid: int = typer.Option(100, "--n-valid", help="Number of validation images."),
    n_test: int = typer.Option(100, "--n-test", help="Number of test images (their gold files are written too)."),
    size: int = typer.Option(224, "--size", help="Image width and height in pixels (32-2048)."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives byte-identical files."),
    label_noise: float = typer.Option(
        0.0, "--label-noise",
        help="Probability P of label noise in the train and valid concept CSVs: each true concept is dropped "
             "with probability P and one random concept is added with probability P. Images and captions keep "
             "the true concepts; the test split stays clean."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it already holds files."),
    n_concepts: int | None = typer.Option(
        None, "--n-concepts", help="Vocabulary size (47 to 20000; default 47, the drawn concepts). More adds rare "
        "label-only concepts with a ROCOv2-like long tail (Zipf), named in cui_mapping.csv."),
    sizes: str | None = typer.Option(None, "--sizes", help="MIN-MAX: each image gets its own width and height in "
                                     "this range (non-square, like real figures) instead of --size."),
    workers: int = typer.Option(1, "--workers", help="Processes drawing images (the files are the same for any number)."),
) -> int:
    """Write a SYNTHETIC ImageCLEFmedical Caption dataset: procedurally drawn images, NOT real medical data.

    The demo, the tests and the benchmarks run on it when the licensed ImageCLEF / ROCOv2 data is not at hand. OUT gets exactly the ImageCLEF layout: train/, valid/, test/ folders of <ID>.jpg (grayscale JPEG); <split>_concepts.csv (ID,CUIs joined by ';'), <split>_concepts_manual.csv (only the 15 modality / body-region CUIs of the official secondary score), <split>_captions.csv (ID,Caption), cui_mapping.csv (CUI,Canonical name), and a README.txt saying the data is synthetic, with the seed and settings.

    Each image shows one modality (CT, MRI, plain X-ray, ultrasound, angiography, PET, OCT: sets the global look), usually one body region (chest, abdomen, head, spine, pelvis, upper/lower extremity, breast: sets the anatomy), and 0-4 findings (nodule, mass, cyst, fracture, calcification, stent, pleural effusion and rarer ones) drawn as small objects whose position gives Right/Left (patient's side, radiological convention) and, on chest and abdomen images, Upper/Lower labels, so images must not be flipped. Labels are real UMLS CUIs with a long-tailed frequency, 1-10 per image, mostly 1-4; captions are written from the concepts.

    OUT is written atomically: after an error or Ctrl-C nothing is left behind.
    """
    from ..synth import SynthConfig, generate_dataset

    size_range = None
    if sizes is not None:
        lo, sep, hi = sizes.partition("-")
        if not sep or not lo.strip().isdigit() or not hi.strip().isdigit():
            raise MedcapError(f"--sizes must be MIN-MAX in pixels, e.g. 256-768; got {sizes!r}")
        size_range = (int(lo), int(hi))
    cfg = SynthConfig(n_train=n_train, n_valid=n_valid, n_test=n_test, size=size, seed=seed, label_noise=label_noise,
                      n_concepts=n_concepts, sizes=size_range)
    progress = None
    total = n_train + n_valid + n_test
    if sys.stderr.isatty() and total >= 200:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="drawing synthetic images", unit="img", file=sys.stderr, leave=False)

        def progress(done: int, _total: int) -> None:
            bar.update(done - bar.n)

    summary = generate_dataset(out, cfg, overwrite=overwrite, workers=workers, progress=progress)
    typer.echo(f"wrote SYNTHETIC dataset {summary['root']}: train {n_train}, valid {n_valid}, test {n_test} images "
               f"of {size if sizes is None else sizes} px, {summary['n_concepts']} distinct CUIs, seed {seed}"
               + (f", label noise {label_noise} ({summary['labels_changed']['train']} train rows changed)" if label_noise else "")
               + f" in {summary['seconds']:.1f} s ({summary['images_per_second'] or 0:.0f} images/s)")
    return 0
