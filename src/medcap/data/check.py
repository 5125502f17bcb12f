"""``medcap data check``: read a whole dataset and list *every* problem, not only the first.

What is checked (each problem carries its file and, for CSV rows, the line):

* every CSV row: field count, CSV syntax, UTF-8, empty IDs, duplicate IDs, malformed
  CUIs (not ``C`` + digits), empty captions (see :mod:`medcap.data.csvio`);
* CUIs missing from ``cui_mapping.csv`` (when the dataset has one);
* IDs in the captions file but not the concepts file, and the reverse; manual-concept IDs
  without a concepts row and concepts rows missing from the manual-concepts file; an ID
  present in two splits;
* NUL bytes and other control characters in IDs, captions and concept names;
* labelled IDs without an image file, images without a row, two files for one ID, a split
  with label files but no image folder;
* every image decoded with :func:`medcap.data.images.load_image` (JPEGs at a reduced DCT
  scale, which still reads all the compressed data, so truncation is caught).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from ..errors import MedcapError
from .csvio import CsvTable, Problem, scan_cui_mapping
from .dataset import (
    ImageCLEFDataset,
    Split,
    SplitFiles,
    build_folder_split,
    index_image_folder,
    locate_dataset,
    read_parquet_split,
    scan_split_tables,
)

__all__ = ["CheckResult", "Problem", "check_dataset", "inspect_dataset"]

# JPEGs are verified at 1/8 scale at most: every compressed byte is still decoded.
_CHECK_DRAFT_SIZE = 32


@dataclass
class CheckResult:
    """Every problem found, and what was read (per-split counts for the summary)."""

    root: Path
    layout: str
    problems: list[Problem]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    n_cui_names: int | None = None
    n_distinct_cuis: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem_kinds(self) -> Counter:
        return Counter(p.kind for p in self.problems)


def check_dataset(root: str | Path, *, decode_images: bool = True) -> list[Problem]:
    """Every problem of the dataset at ``root`` (empty list: none)."""
    return inspect_dataset(root, decode_images=decode_images).problems


def inspect_dataset(root: str | Path, *, decode_images: bool = True,
                    progress: Callable[[Iterable], Iterable] | None = None) -> CheckResult:
    """Check the dataset at ``root``; ``progress`` may wrap the image loop (e.g. tqdm).

    Raises :class:`MedcapError` only when no dataset can be found at all (no folder, no
    recognisable files, two candidate files for one role).
    """
    layout = locate_dataset(root)
    problems: list[Problem] = []
    names: dict[str, str] | None = None
    mapping_file = None
    if layout.cui_mapping is not None:
        table = scan_cui_mapping(layout.cui_mapping)
        problems += table.problems
        names, mapping_file = table.values, layout.cui_mapping.name

    splits: dict[str, Split] = {}
    tables: dict[str, dict[str, CsvTable]] = {}
    for name, files in layout.splits.items():
        if layout.kind == "parquet":
            splits[name] = read_parquet_split(files, strict=False, problems=problems)
            tables[name] = {}
        else:
            tables[name] = scan_split_tables(files, strict=False, problems=problems)
            splits[name] = build_folder_split(files, tables[name])
            problems += _image_folder_problems(layout.root, files, splits[name], tables[name])
            problems += _id_agreement_problems(tables[name])
        if names is not None:
            problems += _unknown_cui_problems(splits[name], tables[name], names, mapping_file)
    problems += _cross_split_problems(splits, tables)
    dataset = ImageCLEFDataset(layout.root, splits, names or {}, layout.kind)
    if decode_images:
        problems += _decode_problems(dataset, progress)

    problems.sort(key=lambda p: (p.file, p.line or 0, p.kind, p.message))
    cuis = {c for s in splits.values() for lists in (s.concepts, s.manual_concepts) if lists
            for cs in lists.values() for c in cs}
    return CheckResult(layout.root, layout.kind, problems, _counts(splits),
                       None if names is None else len(names), len(cuis))


def _counts(splits: dict[str, Split]) -> dict[str, dict[str, int]]:
    out = {}
    for name, s in splits.items():
        n_images = len(s.image_bytes) if s.image_bytes is not None else len(s.image_paths) + len(s.unlabelled_images)
        c = {"images": n_images}
        for key, values in (("concepts", s.concepts), ("captions", s.captions), ("manual", s.manual_concepts)):
            if values is not None:
                c[key] = len(values)
        out[name] = c
    return out


def _image_folder_problems(root: Path, files: SplitFiles, split: Split, tables: dict[str, CsvTable]) -> list[Problem]:
    out: list[Problem] = []
    if files.image_dir is None:
        if split.has_labels:
            out.append(Problem(str(root), None, "missing_image_folder",
                               f"split {split.name!r} has label files but no image folder "
                               f"(looked for {split.name}/, {split.name}_images/, images/{split.name}/)"))
        return out
    label_table = tables.get("concepts") or tables.get("captions")
    for image_id in split.missing_images:
        t = tables["concepts"] if "concepts" in tables and image_id in tables["concepts"].lines else tables["captions"]
        out.append(Problem(str(t.path), t.lines.get(image_id), "missing_image",
                           f"no image file for ID {image_id!r} in {files.image_dir}"))
    if label_table is not None:
        rejected = {k for t in tables.values() for k in t.rejected}  # their bad row is reported already
        for image_id, path in split.unlabelled_images.items():
            if image_id not in rejected:
                out.append(Problem(str(path), None, "image_without_row",
                                   f"image has no row in {label_table.path.name}"))
    _, clashes = index_image_folder(files.image_dir)
    for image_id, paths in clashes:
        for p in paths[1:]:
            out.append(Problem(str(p), None, "duplicate_image",
                               f"ID {image_id!r} also has {paths[0].name}; only that one is used"))
    return out


def _id_agreement_problems(tables: dict[str, CsvTable]) -> list[Problem]:
    out: list[Problem] = []
    concepts, captions, manual = tables.get("concepts"), tables.get("captions"), tables.get("manual")
    # A manual-concepts file covers the same images as the concepts file, both ways.
    pairs = [(captions, concepts), (concepts, captions), (manual, concepts), (concepts, manual)]
    for have, lack in pairs:
        if have is None or lack is None:
            continue
        for image_id, line in have.lines.items():
            if image_id not in lack.lines and image_id not in lack.rejected:
                out.append(Problem(str(have.path), line, "id_mismatch",
                                   f"ID {image_id!r} is not in {lack.path.name}"))
    return out


def _unknown_cui_problems(split: Split, tables: dict[str, CsvTable], names: dict[str, str],
                          mapping_file: str) -> list[Problem]:
    out: list[Problem] = []
    for role, values in (("concepts", split.concepts), ("manual", split.manual_concepts)):
        if not values:
            continue
        table = tables.get(role)
        for image_id, cuis in values.items():
            unknown = [c for c in cuis if c not in names]
            if unknown:
                where = (str(table.path), table.lines.get(image_id)) if table else (f"{split.name} split", None)
                out.append(Problem(where[0], where[1], "unknown_cui",
                                   f"CUI {', '.join(unknown)} of {image_id!r} not in {mapping_file}"))
    return out


def _cross_split_problems(splits: dict[str, Split], tables: dict[str, dict[str, CsvTable]]) -> list[Problem]:
    """An image ID in two splits leaks training data into evaluation: reported at the
    later split's row, naming where the ID was first seen."""
    out: list[Problem] = []
    first_seen: dict[str, tuple[str, str]] = {}  # ID -> (split, "file:line")
    for name, split in splits.items():
        t = tables.get(name, {})
        table = t.get("concepts") or t.get("captions")
        ids = list(split.concepts or {}) + [i for i in (split.captions or {}) if i not in (split.concepts or {})]
        for image_id in ids if split.has_labels else split.ids:
            line = table.lines.get(image_id) if table else None
            here = f"{table.path.name}:{line}" if table and line else f"{name} split"
            if image_id not in first_seen:
                first_seen[image_id] = (name, here)
            elif first_seen[image_id][0] != name:
                other, where = first_seen[image_id]
                out.append(Problem(str(table.path) if table else f"{name} split", line, "duplicate_id",
                                   f"ID {image_id!r} is also in the {other} split ({where})"))
    return out


def _decode_problems(dataset: ImageCLEFDataset, progress) -> list[Problem]:
    from .images import load_image

    jobs: list[tuple[Split, str, Path | None]] = []
    for split in dataset.splits.values():
        if split.image_bytes is not None:
            jobs += [(split, i, None) for i in split.image_bytes]
        else:
            jobs += [(split, i, p) for i, p in (*split.image_paths.items(), *split.unlabelled_images.items())]
    out: list[Problem] = []
    last = None
    for split, image_id, path in (progress(jobs) if progress else jobs):
        if last is not None and split is not last and last.image_bytes is not None:
            last.image_bytes.close()  # a split done: its parquet readers and cache go
        last = split
        try:
            if path is not None:
                load_image(path, draft_size=_CHECK_DRAFT_SIZE)
            else:
                split.load_image(image_id, draft_size=_CHECK_DRAFT_SIZE)
        except MedcapError as e:
            if path is not None:
                out.append(Problem(str(path), None, "unreadable_image", e.message))
            else:
                file, row = split.image_bytes.location(image_id)
                out.append(Problem(str(file), None, "unreadable_image", f"row {row} ({image_id}): {e.message}"))
    if last is not None and last.image_bytes is not None:
        last.image_bytes.close()
    return out
