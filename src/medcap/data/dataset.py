"""Read an ImageCLEFmedical Caption / ROCOv2 dataset folder (REFERENCE §5).

Two layouts are read:

**Folders** (the organisers' distribution, and ``medcap synth``)::

    root/
      train/  valid/  test/            <ID>.jpg (.png, .dcm, ...) images
      train_concepts.csv               ID,CUIs   (CUIs joined by ';')
      train_captions.csv               ID,Caption
      train_concepts_manual.csv        ID,CUIs   (curated modality / body-region concepts)
      valid_*.csv, test_*.csv          (test gold files are usually withheld)
      cui_mapping.csv                  CUI,Canonical name

Variants seen in the wild are accepted: a file-name prefix
(``ImageCLEFmedical_Caption_2025_train_concepts.csv``, any year), ``validation``/``val`` for
``valid``, image folders called ``train_images/``, ``images/train/``,
``ImageCLEFmedical_Caption_2025_train_images/`` or nested one level deeper
(``train_images/train/``).

**Hugging Face parquet** (the ROCOv2 mirror): ``*.parquet`` files whose name or folder
starts with the split (``data/train-00000-of-00027.parquet``,
``default/validation/0000.parquet``), with columns ``image`` (``{bytes, path}``),
``image_id``, ``caption`` and ``cui`` (a list). Only the ID, caption and CUI columns are
read up front; images stay in the files and are read one row group at a time when asked
for (:class:`ParquetImages`), so memory does not grow with the size of the images.

Either way a :class:`Split` gives every image the same way: ``split.load_image(id)``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import MedcapError
from ..fileio import scan_dir
from .csvio import (
    CsvTable,
    Problem,
    scan_captions_csv,
    scan_concepts_csv,
    scan_cui_mapping,
)
from .images import IMAGE_EXTENSIONS, is_dicom
from .parquet import ParquetImages, read_parquet_split
from .split import Split, SplitFiles

__all__ = ["SPLIT_NAMES", "DatasetLayout", "ImageCLEFDataset", "ParquetImages", "Split", "SplitFiles",
           "build_folder_split", "canonical_split_name", "index_image_folder", "load_dataset", "locate_dataset",
           "read_dataset", "read_parquet_split", "scan_split_tables"]

SPLIT_NAMES = ("train", "valid", "test")
# Spellings of each split found in file and folder names.
_ALIASES = {"train": ("train", "training"), "valid": ("valid", "validation", "val", "dev"), "test": ("test",)}


def canonical_split_name(name: str) -> str | None:
    """``"validation"`` -> ``"valid"``; None for a name that is no split."""
    n = name.strip().lower()
    for split, aliases in _ALIASES.items():
        if n in aliases:
            return split
    return None


# --------------------------------------------------------------------------- data classes
@dataclass
class ImageCLEFDataset:
    root: Path
    splits: dict[str, Split]
    cui_names: dict[str, str]  # from cui_mapping.csv ({} if absent)
    layout: str = "folders"    # "folders" | "parquet"

    def split(self, name: str) -> Split:
        """The split called ``name`` (``validation``/``val`` mean ``valid``)."""
        key = canonical_split_name(name) or name
        if key not in self.splits:
            have = ", ".join(self.splits) or "none"
            raise MedcapError(f"dataset has no {name!r} split (it has: {have})", file=self.root)
        return self.splits[key]

    def __contains__(self, name: str) -> bool:
        return (canonical_split_name(name) or name) in self.splits

    def __repr__(self) -> str:  # one short line (each split's repr has the details)
        sizes = ", ".join(f"{k} {len(s)}" for k, s in self.splits.items())
        return f"<ImageCLEFDataset {str(self.root)!r} ({self.layout}): {sizes}; {len(self.cui_names)} concept names>"

    @property
    def edition(self) -> str:
        """The ImageCLEFmedical year its file or image names carry (``ImageCLEFmedical_Caption_2026_...``),
        ``"unknown"`` when they name none (REFERENCE §7)."""
        from ..editions import infer_edition

        names = [p.name for p in self.root.iterdir()] if self.root.is_dir() else []
        return infer_edition(names + [s.ids[0] for s in self.splits.values() if s.ids])


# --------------------------------------------------------------------------- layout
@dataclass
class DatasetLayout:
    root: Path
    kind: str                         # "folders" | "parquet"
    splits: dict[str, SplitFiles]     # only splits with at least one file or folder
    cui_mapping: Path | None


def _role_patterns(aliases: tuple[str, ...]) -> dict[str, re.Pattern]:
    a = "|".join(aliases)
    pre = r"(?:^|.*[_\-. ])"  # start of name, or after a prefix such as ImageCLEFmedical_Caption_2025_
    return {
        "manual": re.compile(rf"{pre}(?:{a})[_\-]concepts[_\-]manual\.csv$"),
        "concepts": re.compile(rf"{pre}(?:{a})[_\-]concepts\.csv$"),
        "captions": re.compile(rf"{pre}(?:{a})[_\-]captions?\.csv$"),
    }


_CUI_MAPPING = re.compile(r"(?:^|.*[_\-. ])cui[_\-]?mapping\.csv$")


def locate_dataset(root: str | Path) -> DatasetLayout:
    """Find each split's CSV files and image folder (or parquet files) under ``root``."""
    root = Path(root)
    if not root.exists():
        raise MedcapError("dataset folder not found", file=root)
    if not root.is_dir():
        raise MedcapError("expected a dataset folder, found a file", file=root)
    entries = scan_dir(root)  # a link loop or an unreadable folder: one line naming it
    files = [p for p, kind in entries if kind == "file"]
    dirs = [p for p, kind in entries if kind == "dir"]
    cui_mapping = _single([f for f in files if _CUI_MAPPING.match(f.name.lower())], "cui_mapping.csv", root)

    splits: dict[str, SplitFiles] = {}
    for split, aliases in _ALIASES.items():
        sf = SplitFiles(split)
        for role, pattern in _role_patterns(aliases).items():
            setattr(sf, role, _single([f for f in files if pattern.match(f.name.lower())], f"{split} {role} CSV", root))
        sf.image_dir = _find_image_dir(root, dirs, aliases)
        if sf.csv_files or sf.image_dir is not None:
            splits[split] = sf
    if splits:
        return DatasetLayout(root, "folders", splits, cui_mapping)

    parquet = _find_parquet(root)
    if parquet:
        return DatasetLayout(root, "parquet", parquet, cui_mapping)
    raise MedcapError("no ImageCLEF dataset found: expected train/valid/test image folders with "
                      "train_concepts.csv / train_captions.csv (REFERENCE §5 layout), or Hugging Face "
                      "*.parquet files", file=root)


def _single(candidates: list[Path], what: str, root: Path) -> Path | None:
    if len(candidates) > 1:
        raise MedcapError(f"several files could be the {what}: {', '.join(p.name for p in candidates)}; "
                          "keep one", file=root)
    return candidates[0] if candidates else None


def _find_image_dir(root: Path, dirs: list[Path], aliases: tuple[str, ...]) -> Path | None:
    by_name = {d.name.lower(): d for d in dirs}
    candidates: list[Path] = []
    for a in aliases:
        for name in (a, f"{a}_images", f"{a}-images", f"{a}images"):
            if name in by_name:
                candidates.append(by_name[name])
        sub = root / "images" / a
        if sub.is_dir():
            candidates.append(sub)
    # Prefixed names: ImageCLEFmedical_Caption_2025_train_images, ROCOv2_train.
    suffix = re.compile(rf".*[_\-](?:{'|'.join(aliases)})(?:[_\-]images)?$")
    candidates += [d for d in dirs if suffix.match(d.name.lower()) and d not in candidates]
    for d in candidates:
        return _descend_single_subdir(d)
    return None


def _descend_single_subdir(d: Path) -> Path:
    """``train_images/train/`` -> the inner folder, when the outer one holds only it."""
    for _ in range(2):
        entries = scan_dir(d)
        subdirs = [p for p, kind in entries if kind == "dir"]
        if len(subdirs) == 1 and not any(kind == "file" for _, kind in entries):
            d = subdirs[0]
        else:
            break
    return d


def _find_parquet(root: Path) -> dict[str, SplitFiles]:
    found: dict[str, SplitFiles] = {}
    paths = sorted({*root.glob("*.parquet"), *root.glob("*/*.parquet"), *root.glob("*/*/*.parquet")})
    for p in paths:
        stem = re.split(r"[-_.]", p.name.lower(), maxsplit=1)[0]
        split = canonical_split_name(stem) or canonical_split_name(p.parent.name)
        if split is None:
            raise MedcapError("cannot tell the split of this parquet file: its name or folder should start "
                              "with train, valid(ation) or test", file=p)
        found.setdefault(split, SplitFiles(split)).parquet.append(p)
    return found


# --------------------------------------------------------------------------- reading
def read_dataset(root: str | Path) -> ImageCLEFDataset:
    """Read a dataset folder (either layout). Raises :class:`MedcapError` at the first
    malformed row (file and line) or unreadable file; ``medcap data check`` lists all."""
    dataset, _ = load_dataset(root, strict=True)
    return dataset


def load_dataset(root: str | Path, *, strict: bool) -> tuple[ImageCLEFDataset, list[Problem]]:
    """Read a dataset; with ``strict`` raise at the first problem in a file, otherwise
    return the problems of every file beside what could be read (for the checker)."""
    layout = locate_dataset(root)
    problems: list[Problem] = []
    names: dict[str, str] = {}
    if layout.cui_mapping is not None:
        names = _scan(scan_cui_mapping, layout.cui_mapping, strict, problems).values
    splits: dict[str, Split] = {}
    for name, files in layout.splits.items():
        if layout.kind == "parquet":
            splits[name] = read_parquet_split(files, strict, problems)
        else:
            splits[name] = build_folder_split(files, scan_split_tables(files, strict, problems))
    return ImageCLEFDataset(layout.root, splits, names, layout.kind), problems


def _scan(scanner, path: Path, strict: bool, problems: list[Problem]) -> CsvTable:
    table = scanner(path)
    if strict:  # rows over 100 CUIs are not an error here: training drops them and says so (data.drops)
        table.raise_first(tolerate=("too_many_concepts",))
    problems.extend(table.problems)
    return table


def scan_split_tables(files: SplitFiles, strict: bool, problems: list[Problem]) -> dict[str, CsvTable]:
    """The scanned CSV tables of a split, by role (concepts, captions, manual)."""
    scanners = {"concepts": scan_concepts_csv, "captions": scan_captions_csv, "manual": scan_concepts_csv}
    return {role: _scan(scanners[role], path, strict, problems) for role, path in files.csv_files.items()}


def index_image_folder(folder: Path) -> tuple[dict[str, Path], list[tuple[str, list[Path]]]]:
    """ID -> image file for every image in ``folder`` (the ID is the file name without its
    extension), and the IDs claimed by more than one file (the first by name is used)."""
    by_id: dict[str, Path] = {}
    clashes: dict[str, list[Path]] = {}
    for path, kind in scan_dir(folder):  # a link loop or an unreadable folder: one line naming it
        if kind != "file":
            continue
        stem, ext = os.path.splitext(path.name)
        ext = ext.lower()
        if ext not in IMAGE_EXTENSIONS:
            if ext or not is_dicom(path):
                continue
        if stem in by_id:
            clashes.setdefault(stem, [by_id[stem]]).append(path)
            continue
        by_id[stem] = path
    return by_id, list(clashes.items())


def _lookup_image(images: dict[str, Path], image_id: str) -> Path | None:
    path = images.get(image_id)
    if path is None:
        # Some CSVs write the file name (ID.jpg) instead of the ID.
        stem, ext = os.path.splitext(image_id)
        if ext.lower() in IMAGE_EXTENSIONS:
            path = images.get(stem)
    return path


def build_folder_split(files: SplitFiles, tables: dict[str, CsvTable]) -> Split:
    """A folder-layout split from its scanned CSV tables and its image folder."""
    concepts = tables["concepts"].values if "concepts" in tables else None
    captions = tables["captions"].values if "captions" in tables else None
    manual = tables["manual"].values if "manual" in tables else None
    labelled = list(concepts or {})
    labelled += [i for i in (captions or {}) if concepts is None or i not in concepts]
    has_labels = concepts is not None or captions is not None

    images: dict[str, Path] = {}
    if files.image_dir is not None:
        images, _ = index_image_folder(files.image_dir)

    if not has_labels:
        ids = list(images)
        image_paths, missing, unlabelled = dict(images), [], {}
    elif files.image_dir is None:
        ids, image_paths, missing, unlabelled = labelled, {}, [], {}
    else:
        ids, image_paths, missing = [], {}, []
        for i in labelled:
            p = _lookup_image(images, i)
            if p is None:
                missing.append(i)
            else:
                ids.append(i)
                image_paths[i] = p
        used = set(image_paths.values())
        unlabelled = {i: p for i, p in images.items() if p not in used}
    malformed = tables["concepts"].dropped if "concepts" in tables else {}
    return Split(files.name, ids, image_paths, concepts, captions, manual, missing_images=missing,
                 unlabelled_images=unlabelled, image_dir=files.image_dir, malformed_rows=malformed)
