"""Write a complete SYNTHETIC dataset in the ImageCLEFmedical Caption layout (REFERENCE §5).

Layout written (the test split's gold files too, which the real data withholds)::

    OUT/README.txt                      says SYNTHETIC, with the seed and the config
    OUT/cui_mapping.csv                 CUI,Canonical name
    OUT/{train,valid,test}/<ID>.jpg     8-bit grayscale JPEG, quality 90 by default
    OUT/{split}_concepts.csv            ID,CUIs   (CUIs joined by ';')
    OUT/{split}_concepts_manual.csv     the same rows, only the 15 secondary-list CUIs (REFERENCE §4)
    OUT/{split}_captions.csv            ID,Caption (captions always quoted)

Each image is a pure function of (seed, split, index): its own ``numpy`` generator is
seeded with ``[seed, split, index]``, so the files are byte-identical for a seed, and a
bigger dataset starts with the same images as a smaller one.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .. import __version__
from ..errors import MedcapError
from ..fileio import atomic_dir
from ..metrics.concepts import SECONDARY_CUIS
from . import catalog as cat
from .captions import caption_for_scene
from .draw import render
from .scene import sample_scene
from .tail import MAX_N_CONCEPTS, rare_concepts, sample_rare

GENERATOR_VERSION = 1
"""Bumped whenever the same config would draw different files (so caches can tell)."""
SPLITS = ("train", "valid", "test")
_SPLIT_CODE = {"train": 0, "valid": 1, "test": 2}
_MIN_SIZE, _MAX_SIZE = 32, 2048


@dataclass
class SynthConfig:
    """Settings of a SYNTHETIC dataset (procedurally drawn; no real patient data).

    Attributes:
        n_train, n_valid, n_test: number of images per split (0 leaves a split empty).
        size: image width and height in pixels (32-2048; findings are about 8 px or more
            across at 128 px).
        seed: everything (images, labels, captions, label noise) follows from it.
        label_noise: probability P of label noise in the concept CSVs of the splits in
            ``noisy_splits``: each true concept is dropped with probability P, and with
            probability P one random catalogue concept is added. Images are unchanged and
            captions always describe the true (noise-free) concepts, as the real captions
            describe the image whatever its labels say. A row never ends up empty (the
            modality comes back if everything was dropped).
        noisy_splits: which splits get the label noise (the test split stays clean by
            default so that scores measure the truth).
        jpeg_quality: JPEG quality of the images.
        id_prefix: image IDs are ``{id_prefix}_{split}_{index:06d}``, e.g.
            ``SYNTH_2025_train_000001`` (shaped like ROCOv2's, clearly synthetic).
        n_concepts: size of the vocabulary. None: the 47 catalogue concepts. More adds
            rare label-only concepts with a Zipf long tail (:mod:`medcap.synth.tail`).
        sizes: ``(min, max)``: each image gets its own width and height drawn from this
            range (non-square, like real figures) instead of ``size`` x ``size``.
    """

    n_train: int = 500
    n_valid: int = 100
    n_test: int = 100
    size: int = 224
    seed: int = 0
    label_noise: float = 0.0
    noisy_splits: tuple[str, ...] = ("train", "valid")
    jpeg_quality: int = 90
    id_prefix: str = "SYNTH_2025"
    n_concepts: int | None = None
    sizes: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        for name in ("n_train", "n_valid", "n_test"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise MedcapError(f"{name.replace('_', '-')} must be a whole number >= 0, got {v!r}")
        whole = not isinstance(self.size, bool) and isinstance(self.size, (int, np.integer))
        if not whole or not _MIN_SIZE <= self.size <= _MAX_SIZE:
            raise MedcapError(f"size must be a whole number of pixels from {_MIN_SIZE} to {_MAX_SIZE}, "
                              f"got {self.size!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise MedcapError(f"seed must be a whole number >= 0, got {self.seed!r}")
        if not isinstance(self.label_noise, (int, float)) or not 0.0 <= float(self.label_noise) <= 1.0:
            raise MedcapError(f"label-noise must be a probability from 0 to 1, got {self.label_noise!r}")
        self.noisy_splits = tuple(self.noisy_splits)
        bad = [s for s in self.noisy_splits if s not in SPLITS]
        if bad:
            raise MedcapError(f"noisy_splits: unknown split {bad[0]!r}; expected some of {', '.join(SPLITS)}")
        if not isinstance(self.jpeg_quality, int) or not 1 <= self.jpeg_quality <= 100:
            raise MedcapError(f"jpeg_quality must be from 1 to 100, got {self.jpeg_quality!r}")
        if self.n_concepts is not None and (isinstance(self.n_concepts, bool) or not isinstance(
                self.n_concepts, (int, np.integer)) or not len(cat.CATALOG) <= self.n_concepts <= MAX_N_CONCEPTS):
            raise MedcapError(f"n-concepts must be a whole number from {len(cat.CATALOG)} (the drawn concepts) "
                              f"to {MAX_N_CONCEPTS}, got {self.n_concepts!r}")
        if self.sizes is not None:
            self.sizes = tuple(self.sizes)
            if (len(self.sizes) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                                for v in self.sizes)
                    or not _MIN_SIZE <= self.sizes[0] <= self.sizes[1] <= _MAX_SIZE):
                raise MedcapError(f"sizes must be MIN-MAX pixels with {_MIN_SIZE} <= MIN <= MAX <= {_MAX_SIZE}, "
                                  f"got {self.sizes!r}")
        if not self.id_prefix or any(ch in self.id_prefix for ch in ",;\"/\\ \n"):
            raise MedcapError(f"id_prefix must be non-empty without separators or spaces, got {self.id_prefix!r}")

    def count(self, split: str) -> int:
        return {"train": self.n_train, "valid": self.n_valid, "test": self.n_test}[split]

    def image_id(self, split: str, index: int) -> str:
        digits = max(6, len(str(self.count(split))))
        return f"{self.id_prefix}_{split}_{index + 1:0{digits}d}"


@dataclass
class SynthImage:
    """One generated image with its labels (what :func:`make_image` returns)."""

    image_id: str
    pixels: np.ndarray  # (height, width) uint8; (size, size) unless cfg.sizes
    concepts: list[str]  # true CUIs
    labels: list[str]  # CUIs written to the CSV (after label noise)
    caption: str
    finding_areas: list[float]  # each finding's area as a fraction of the image (upper bound)
    scene: object


def image_rng(seed: int, split: str, index: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_CODE[split], index, stream])


def add_label_noise(cuis: list[str], p: float, rng: np.random.Generator) -> list[str]:
    """Drop each CUI with probability p; with probability p add one random catalogue CUI."""
    if p <= 0:
        return list(cuis)
    out = [c for c in cuis if rng.random() >= p]
    if rng.random() < p:
        pool = list(cat.CATALOG)
        extra = pool[int(rng.integers(len(pool)))]
        if extra not in out:
            out.append(extra)
    if not out and cuis:
        out = [cuis[0]]
    return out


def make_image(cfg: SynthConfig, split: str, index: int) -> SynthImage:
    """Draw image ``index`` of ``split``: pixels, true concepts, noisy labels, caption."""
    rng = image_rng(cfg.seed, split, index)
    scene = sample_scene(rng)
    if cfg.sizes is None:
        pixels, areas = render(scene, cfg.size, rng)
    else:  # drawn square at the longer side, then resized to its own aspect ratio (own stream)
        w, h = (int(v) for v in image_rng(cfg.seed, split, index, 3).integers(cfg.sizes[0], cfg.sizes[1] + 1, 2))
        pixels, areas = render(scene, max(w, h), rng)
        if (w, h) != pixels.shape[::-1]:
            from PIL import Image

            pixels = np.asarray(Image.fromarray(pixels).resize((w, h), Image.BILINEAR))
    concepts = scene.concepts()
    if cfg.n_concepts is not None and cfg.n_concepts > len(cat.CATALOG):
        # Own random stream: the drawn images and their catalogue labels stay the same.
        concepts = concepts + sample_rare(image_rng(cfg.seed, split, index, 2), cfg.n_concepts,
                                          cat.MAX_CONCEPTS - len(concepts))
    caption = caption_for_scene(scene, rng)
    labels = concepts
    if cfg.label_noise > 0 and split in cfg.noisy_splits:
        labels = add_label_noise(concepts, float(cfg.label_noise), image_rng(cfg.seed, split, index, 1))
    return SynthImage(cfg.image_id(split, index), pixels, concepts, labels, caption, areas, scene)


def encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _make_chunk(args) -> list[tuple[str, list[str], list[str], str, int]]:
    """Draw and write images [start, stop) of a split; return their CSV rows."""
    cfg_dict, split, start, stop, folder = args
    cfg = SynthConfig(**cfg_dict)
    rows = []
    for i in range(start, stop):
        im = make_image(cfg, split, i)
        with open(os.path.join(folder, f"{im.image_id}.jpg"), "wb") as f:
            f.write(encode_jpeg(im.pixels, cfg.jpeg_quality))
        rows.append((im.image_id, im.concepts, im.labels, im.caption, im.labels != im.concepts))
    return rows


def _csv_text(header: str, rows: list[tuple[str, str]]) -> str:
    return header + "\n" + "".join(f"{a},{b}\n" for a, b in rows)


def _quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def readme_text(cfg: SynthConfig) -> str:
    conf = json.dumps(dataclasses.asdict(cfg), indent=2)
    size_text = (f"{cfg.size} x {cfg.size} px" if cfg.sizes is None
                 else f"width and height each from {cfg.sizes[0]} to {cfg.sizes[1]} px")
    n_rare = len(rare_concepts(cfg.n_concepts or 0))
    vocab_text = f"the {len(cat.CATALOG)} drawn concepts" + (
        f" plus {n_rare} rare label-only concepts (C9000001..., names 'Synthetic rare concept K'; Zipf long "
        "tail, not drawn and not named in captions)" if n_rare else "")
    extra = (f" --n-concepts {cfg.n_concepts}" if cfg.n_concepts else "") + (
        f" --sizes {cfg.sizes[0]}-{cfg.sizes[1]}" if cfg.sizes else "")
    return f"""SYNTHETIC DATA - these are procedurally drawn images, NOT real medical images and NOT from any
patient. Made by `medcap synth` (medcap {__version__}, generator version {GENERATOR_VERSION})
with seed {cfg.seed} for demos, tests and benchmarks of the ImageCLEFmedical Caption tools;
nothing learned or measured on it says anything about real data.

Layout: the ImageCLEFmedical Caption 2025 layout (train/, valid/, test/ folders of <ID>.jpg;
<split>_concepts.csv "ID,CUIs" with CUIs joined by ';'; <split>_concepts_manual.csv with only
the 15 modality / body-region CUIs of the official secondary score; <split>_captions.csv
"ID,Caption"; cui_mapping.csv "CUI,Canonical name"). Unlike the real data, the test split's
gold files are included.

What the images show: the modality (CT, MRI, plain X-ray, ultrasound, angiography, PET, OCT)
sets the global look, the body region (chest, abdomen, head, spine, pelvis, upper/lower
extremity, breast; some images have none) the anatomy drawing, and findings (nodule, mass,
cyst, fracture, calcification, stent, pleural effusion, plus rarer ones) are small local
objects. Location labels follow where findings are drawn: Right/Left/Bilateral everywhere,
Upper/Lower on chest and abdomen images only, sides in the radiological convention: the
patient's right is on the image's LEFT, so a horizontal flip changes the labels. Organ concepts
such as Lung or Liver are a random tail and are not visible as such. The CUIs are real UMLS CUIs (see cui_mapping.csv).

Captions are written from the true concepts with varied templates. Label noise: {cfg.label_noise}
(applied to the concept CSVs of: {', '.join(cfg.noisy_splits) or 'no split'}; captions and images
always follow the true concepts).

Images per split: train {cfg.n_train}, valid {cfg.n_valid}, test {cfg.n_test}; {size_text}.
Vocabulary: {vocab_text}.
Regenerate exactly with (settings that have no command-line option are in the configuration below;
the Python API is medcap.synth.generate_dataset(OUT, medcap.synth.SynthConfig(**configuration))):
  medcap synth OUT --n-train {cfg.n_train} --n-valid {cfg.n_valid} --n-test {cfg.n_test} \\
    --size {cfg.size} --seed {cfg.seed} --label-noise {cfg.label_noise}{extra}

Configuration:
{conf}
"""


def generate_dataset(
    root: str | Path,
    cfg: SynthConfig | None = None,
    *,
    overwrite: bool = False,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Write a SYNTHETIC dataset to ``root`` in the ImageCLEF layout and return a summary.

    The folder is written atomically: it appears complete or not at all. A non-empty
    ``root`` is refused unless ``overwrite``. ``workers`` > 1 draws images in that many
    processes (same bytes as one process). ``progress(done, total)`` is called as images
    are written.

    Returns a dict with ``root``, ``splits`` (images per split), ``n_images``,
    ``n_concepts`` (distinct CUIs in the labels), ``labels_changed`` (rows whose labels
    differ from the truth, per split), ``seconds`` and ``images_per_second``.
    """
    cfg = cfg or SynthConfig()
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise MedcapError("output exists and is not a folder", file=root)
    if root.is_dir() and any(root.iterdir()) and not overwrite:
        raise MedcapError("output folder is not empty; pass --overwrite (overwrite=True) to replace it", file=root)
    if not isinstance(workers, int) or workers < 1:
        raise MedcapError(f"workers must be a whole number >= 1, got {workers!r}")
    total = cfg.n_train + cfg.n_valid + cfg.n_test
    t0 = time.perf_counter()
    done = 0
    summary_rows: dict[str, list] = {}
    with atomic_dir(root) as tmp:
        cfg_dict = dataclasses.asdict(cfg)
        pool = ProcessPoolExecutor(workers) if workers > 1 and total > 64 else None
        try:
            for split in SPLITS:
                folder = tmp / split
                folder.mkdir()
                n = cfg.count(split)
                step = 256 if pool else max(n, 1)
                jobs = [(cfg_dict, split, a, min(a + step, n), str(folder)) for a in range(0, n, step)]
                results = pool.map(_make_chunk, jobs) if pool else map(_make_chunk, jobs)
                rows = []
                for chunk in results:
                    rows.extend(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
                summary_rows[split] = rows
                _write_split_csvs(tmp, split, rows)
        finally:
            if pool:
                pool.shutdown()
        with open(tmp / "cui_mapping.csv", "w", encoding="utf-8", newline="") as f:
            names = [(c.cui, c.name) for c in cat.CATALOG.values()] + rare_concepts(cfg.n_concepts or 0)
            f.write(_csv_text("CUI,Canonical name", names))
        with open(tmp / "README.txt", "w", encoding="utf-8", newline="\n") as f:
            f.write(readme_text(cfg))
    seconds = time.perf_counter() - t0
    used = {c for rows in summary_rows.values() for r in rows for c in r[2]}
    return {
        "root": str(root),
        "synthetic": True,
        "generator_version": GENERATOR_VERSION,
        "splits": {s: cfg.count(s) for s in SPLITS},
        "n_images": total,
        "n_concepts": len(used),
        "size": cfg.size,
        "seed": cfg.seed,
        "label_noise": float(cfg.label_noise),
        "labels_changed": {s: sum(1 for r in rows if r[4]) for s, rows in summary_rows.items()},
        "seconds": round(seconds, 3),
        "images_per_second": round(total / seconds, 1) if seconds > 0 else None,
    }


def _write_split_csvs(folder: Path, split: str, rows) -> None:
    secondary = set(SECONDARY_CUIS)
    with open(folder / f"{split}_concepts.csv", "w", encoding="utf-8", newline="") as f:
        f.write(_csv_text("ID,CUIs", [(r[0], ";".join(r[2])) for r in rows]))
    with open(folder / f"{split}_concepts_manual.csv", "w", encoding="utf-8", newline="") as f:
        f.write(_csv_text("ID,CUIs", [(r[0], ";".join(c for c in r[2] if c in secondary)) for r in rows]))
    with open(folder / f"{split}_captions.csv", "w", encoding="utf-8", newline="") as f:
        f.write(_csv_text("ID,Caption", [(r[0], _quote(r[3])) for r in rows]))
