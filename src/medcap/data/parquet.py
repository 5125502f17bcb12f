"""The Hugging Face parquet layout of a dataset (the ROCOv2 mirror), read in bounded memory.

``data/train-00000-of-00027.parquet`` etc., columns ``image`` (``{bytes, path}``),
``image_id``, ``caption`` and ``cui`` (a list). The metadata columns are read up front;
the image column never is: :class:`ParquetImages` reads one row group at a time.
"""
from __future__ import annotations

import bisect
import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import MedcapError
from .csvio import CUI_PATTERN, Problem, normalize_cui

if TYPE_CHECKING:
    from .dataset import Split, SplitFiles

__all__ = ["ParquetImages", "read_parquet_split"]

_ID_COLUMNS = ("image_id", "id", "imageid", "image id")
_CAPTION_COLUMNS = ("caption", "captions", "text")
_CUI_COLUMNS = ("cui", "cuis", "concepts", "concept")
_IMAGE_COLUMNS = ("image", "img", "image_bytes")


def _pick_column(names: list[str], wanted: tuple[str, ...]) -> str | None:
    lower = {n.lower(): n for n in names}
    for w in wanted:
        if w in lower:
            return lower[w]
    return None


class ParquetImages(Mapping):
    """ID -> encoded image bytes, read from the parquet files on demand, in bounded memory.

    Only the index (ID -> file, row group, row) lives in memory. An image is read by
    reading the image column of its row group (the smallest unit parquet can decode) and
    keeping the last :attr:`cache_row_groups` of them, so a pass in file order (``data
    check``, prediction) reads every row group once, and memory stays at a few row groups
    (the ROCOv2 mirror writes ~100 images per row group: a few MB) whatever the size of
    the split. Files are read with ordinary positional reads, not memory-mapped: mapped
    pages of a whole shard would count as resident memory once touched.

    Each process opens its own file handles: pickling (spawned data-loader workers) carries
    only the index, and a forked worker notices the new process ID and reopens instead of
    sharing the parent's handles and row-group cache.
    """

    cache_row_groups = 4

    def __init__(self, files: list[Path], column: str, rows: dict[str, tuple[int, int]],
                 row_group_starts: list[list[int]] | None = None):
        self.files = files
        self.column = column
        self.rows = rows  # ID -> (file index, row index in the file)
        # Per file, the first row of each row group (ascending); from the file footers.
        self.row_group_starts = row_group_starts if row_group_starts is not None else self._read_starts(files)
        self._reset()

    @staticmethod
    def _read_starts(files: list[Path]) -> list[list[int]]:
        import pyarrow.parquet as pq

        out = []
        for path in files:
            md = pq.ParquetFile(path).metadata
            sizes = [md.row_group(g).num_rows for g in range(md.num_row_groups)]
            out.append([sum(sizes[:k]) for k in range(len(sizes))])
        return out

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._handles: dict[int, object] = {}
        self._groups: OrderedDict[tuple[int, int], object] = OrderedDict()

    def __getstate__(self):
        return {"files": self.files, "column": self.column, "rows": self.rows,
                "row_group_starts": self.row_group_starts}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reset()

    def __len__(self) -> int:
        return len(self.rows)

    def location(self, image_id: str) -> tuple[Path, int]:
        """(parquet file, 1-based row) of an image, for messages."""
        f, r = self.rows[image_id]
        return self.files[f], r + 1

    def __iter__(self) -> Iterator[str]:
        return iter(self.rows)

    def __contains__(self, key) -> bool:
        return key in self.rows

    def _file(self, f: int):
        if self._pid != os.getpid():  # a forked data-loader worker: own handles, own cache
            self._reset()
        pf = self._handles.get(f)
        if pf is None:
            import pyarrow.parquet as pq

            pf = self._handles[f] = pq.ParquetFile(self.files[f], memory_map=False)
        return pf

    def _row_group(self, f: int, g: int):
        pf = self._file(f)
        key = (f, g)
        col = self._groups.get(key)
        if col is not None:
            self._groups.move_to_end(key)
            return col
        col = pf.read_row_group(g, columns=[self.column]).column(0)
        self._groups[key] = col
        while len(self._groups) > self.cache_row_groups:
            self._groups.popitem(last=False)
        return col

    def close(self) -> None:
        """Drop open files and cached row groups (they reopen on the next read)."""
        self._reset()

    def __getitem__(self, image_id: str) -> bytes | Path:
        f, r = self.rows[image_id]
        starts = self.row_group_starts[f]
        g = bisect.bisect_right(starts, r) - 1
        value = self._row_group(f, g)[r - starts[g]].as_py()
        if isinstance(value, dict):  # datasets' Image feature: {"bytes": ..., "path": ...}
            data, path = value.get("bytes"), value.get("path")
            if data:
                return data
            if path:  # not embedded: a file beside the parquet file
                p = Path(path)
                return p if p.is_absolute() else self.files[f].parent / p
            raise MedcapError(f"image {image_id!r} has neither bytes nor a path", file=self.files[f])
        if value is None:
            raise MedcapError(f"image {image_id!r} is empty", file=self.files[f])
        return value


def read_parquet_split(files: SplitFiles, strict: bool, problems: list[Problem]) -> Split:
    """A parquet-layout split; bad rows raise (``strict``) or are added to ``problems``."""
    from .dataset import Split

    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise MedcapError("reading parquet datasets needs pyarrow: pip install pyarrow") from None

    def report(p: Problem) -> None:
        if strict:
            raise p.to_error()
        problems.append(p)

    ids: list[str] = []
    rows: dict[str, tuple[int, int]] = {}
    where: dict[str, str] = {}
    concepts: dict[str, list[str]] = {}
    captions: dict[str, str] = {}
    image_col: str | None = None
    has_cuis = has_captions = False
    starts: list[list[int]] = []
    for fi, path in enumerate(files.parquet):
        try:
            pf = pq.ParquetFile(path)
        except (OSError, ValueError, pa.ArrowException) as e:  # ArrowInvalid: not a parquet file
            raise MedcapError(f"cannot read parquet file: {e}", file=path) from None
        names = pf.schema_arrow.names
        id_col = _pick_column(names, _ID_COLUMNS)
        if id_col is None:
            raise MedcapError(f"no image ID column; expected one of {', '.join(_ID_COLUMNS)}, found {', '.join(names)}",
                              file=path)
        cap_col, cui_col = _pick_column(names, _CAPTION_COLUMNS), _pick_column(names, _CUI_COLUMNS)
        img_col = _pick_column(names, _IMAGE_COLUMNS)
        if img_col is None:
            raise MedcapError(f"no image column; expected one of {', '.join(_IMAGE_COLUMNS)}, found {', '.join(names)}",
                              file=path)
        if image_col not in (None, img_col):
            raise MedcapError(f"image column {img_col!r} differs from {image_col!r} in {files.parquet[0].name}",
                              file=path)
        image_col = img_col
        has_cuis |= cui_col is not None
        has_captions |= cap_col is not None
        md = pf.metadata
        sizes = [md.row_group(g).num_rows for g in range(md.num_row_groups)]
        starts.append([sum(sizes[:k]) for k in range(len(sizes))])
        # The image column is not read here: images are read per row group when used.
        table = pf.read(columns=[c for c in (id_col, cap_col, cui_col) if c is not None])
        id_values = table.column(id_col).to_pylist()
        cap_values = table.column(cap_col).to_pylist() if cap_col else None
        cui_values = table.column(cui_col).to_pylist() if cui_col else None
        for r, raw_id in enumerate(id_values):
            at = f"row {r + 1}"
            image_id = "" if raw_id is None else str(raw_id).strip()
            if not image_id:
                report(Problem(str(path), None, "malformed_row", f"{at}: empty image ID"))
                continue
            if image_id in rows:
                report(Problem(str(path), None, "duplicate_id",
                               f"{at}: duplicate ID {image_id!r} (first at {where[image_id]})"))
                continue
            rows[image_id] = (fi, r)
            where[image_id] = f"{path.name} row {r + 1}"
            ids.append(image_id)
            if cui_values is not None:
                concepts[image_id] = _parquet_cuis(cui_values[r], path, at, report)
            if cap_values is not None:
                caption = (cap_values[r] or "").strip()
                if not caption:
                    report(Problem(str(path), None, "empty_caption", f"{at}: empty caption for {image_id!r}"))
                captions[image_id] = caption
    images = ParquetImages(list(files.parquet), image_col or "image", rows, starts)
    return Split(files.name, ids, {}, concepts if has_cuis else None, captions if has_captions else None, None,
                 image_bytes=images)


def _parquet_cuis(value, path: Path, at: str, report) -> list[str]:
    items = value.split(";") if isinstance(value, str) else list(value or [])
    out: list[str] = []
    for item in items:
        cui = normalize_cui(str(item))
        if not cui or cui in out:
            continue
        if not CUI_PATTERN.fullmatch(cui):
            report(Problem(str(path), None, "malformed_cui",
                           f"{at}: malformed CUI {cui!r}; expected 'C' followed by digits"))
            continue
        out.append(cui)
    return out

