"""Where a model's training data came from: the dataset's name and path and whether it is SYNTHETIC.

Every model folder records this in ``provenance.json`` (:mod:`medcap.models.card` writes it and
the model card), so the web app, ``predict``, ``report`` and the Python API can say when a model
learnt from synthetic data: its scores then say that the pipeline works, not how it does on
real ImageCLEFmedical images.
"""
from __future__ import annotations

from pathlib import Path

from ..fileio import read_error

SYNTHETIC_MARK = "SYNTHETIC"    # ``medcap synth`` opens README.txt with "SYNTHETIC DATA - ..."
_README_HEAD = 1 << 16


def is_synthetic(root: str | Path | None) -> str | None:
    """The first paragraph of the dataset's README.txt when it declares the data SYNTHETIC.

    ``medcap synth`` opens README.txt with "SYNTHETIC DATA - ..."; a real dataset's README
    that merely mentions synthetic images (lower case) does not count.
    """
    if root is None:
        return None
    readme = Path(root) / "README.txt"
    if not readme.is_file():
        return None
    try:
        with open(readme, encoding="utf-8", errors="replace") as f:
            head = f.read(_README_HEAD)  # the first paragraph is all that is used
    except OSError as e:
        raise read_error(e, readme) from None
    first = head.strip().split("\n\n")[0].strip()
    return first if SYNTHETIC_MARK in first else None


def dataset_provenance(root: str | Path | None, **sizes: int | None) -> dict:
    """The ``data`` entry of ``provenance.json``: name, absolute path, synthetic flag (+ the
    README's words when synthetic) and the sizes given (``train_images=...``; None ones left out)."""
    if root is None:
        return {"name": None, "path": None, "synthetic": None}
    root = Path(root)
    note = is_synthetic(root)
    entry: dict = {"name": root.resolve().name, "path": str(root.resolve()), "synthetic": note is not None}
    if note is not None:
        entry["synthetic_note"] = note
    entry.update({k: int(v) for k, v in sizes.items() if v is not None})
    return entry
