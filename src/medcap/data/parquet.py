"""The Hugging Face parquet layout of a dataset (the ROCOv2 mirror), read in bounded memory.

``data/train-00000-of-00027.parquet`` etc., columns ``image`` (``{bytes, path}``),
``image_id``, ``caption`` and ``cui`` (a list). The metadata columns are read up front;
the image column never is: :class:`ParquetImages` reads one row group, or one batch of a large
row group, at a time, and keeps a byte-bounded cache.
"""
from __future__ import annotations

import bisect
import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..editions import MAX_CONCEPTS_PER_IMAGE
from ..errors import MedcapError
from .csvio import CUI_PATTERN, Problem, normalize_cui

if TYPE_CHECKING:
    from .split import Split, SplitFiles

__all__ = ["ParquetImages", "read_parquet_split", "row_group_layout"]

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

    Only the index (ID -> file, row group, row) lives in memory. Images are read a unit at a time
    and the units last used are kept up to :attr:`cache_bytes` bytes in all (least recently used
    out first), so a pass in file order (``data check``, prediction) reads every unit once, and
    memory does not grow with the size of the split or of its row groups:

    * a small row group (the ROCOv2 mirror writes ~100 images per row group, a few MB) is one unit,
      its image column read at once (the smallest unit ``read_row_group`` decodes);
    * a row group larger than a quarter of :attr:`cache_bytes` (``DataFrame.to_parquet`` and
      ``pyarrow.parquet.write_table`` write one row group per file by default: hundreds of MB) is
      read in batches of rows with ``ParquetFile.iter_batches``, which decodes one data page at a
      time; a batch is one unit. Reading forward continues from where the last read stopped; going
      back to an evicted batch reads that row group again from its start, so random access into a
      large row group is slow: training reads such files in :class:`medcap.data.streaming` order.

    Files are read with ordinary buffered reads, not memory-mapped: mapped pages of a whole shard
    would count as resident memory once touched. Each process opens its own file handles: pickling
    (spawned data-loader workers) carries only the index, and a forked worker notices the new
    process ID and reopens instead of sharing the parent's handles and cache.
    """

    cache_bytes = 64 * 2**20     # images kept decoded from parquet (not as pixels), per process
    read_buffer = 2**20          # bytes read ahead from a file (buffered stream, not the whole column chunk)
    max_cursors = 2              # open forward readers into large row groups (each holds a data page)

    def __init__(self, files: list[Path], column: str, rows: dict[str, tuple[int, int]],
                 row_group_starts: list[list[int]] | None = None, row_group_bytes: list[list[int]] | None = None):
        self.files = files
        self.column = column
        self.rows = rows  # ID -> (file index, row index in the file)
        # Per file, the first row of each row group (ascending) and its image column's
        # uncompressed bytes; from the file footers.
        if row_group_starts is None or row_group_bytes is None:
            row_group_starts, row_group_bytes = self._read_layout(files, column)
        self.row_group_starts, self.row_group_bytes = row_group_starts, row_group_bytes
        self._reset()

    @staticmethod
    def _read_layout(files: list[Path], column: str) -> tuple[list[list[int]], list[list[int]]]:
        import pyarrow.parquet as pq

        starts, sizes = [], []
        for path in files:
            s, b = row_group_layout(pq.ParquetFile(path).metadata, column)
            starts.append(s)
            sizes.append(b)
        return starts, sizes

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._handles: dict[int, object] = {}
        self._groups: OrderedDict[tuple, object] = OrderedDict()   # unit -> values; LRU order
        self._sizes: dict[tuple, int] = {}
        self._cached = 0
        self._cursors: OrderedDict[tuple[int, int], list] = OrderedDict()  # (f, g) -> [batches, next batch]

    def __getstate__(self):
        return {"files": self.files, "column": self.column, "rows": self.rows,
                "row_group_starts": self.row_group_starts, "row_group_bytes": self.row_group_bytes}

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

            pf = self._handles[f] = pq.ParquetFile(self.files[f], memory_map=False, buffer_size=self.read_buffer,
                                                   pre_buffer=False)
        return pf

    def batch_rows(self, f: int, g: int) -> int | None:
        """Rows per batch when row group ``g`` of file ``f`` is read in batches; None: read at once."""
        size = self.row_group_bytes[f][g]
        if size <= self.cache_bytes // 4:
            return None
        per_row = max(1, size // max(1, self._group_rows(f, g)))
        return max(1, self.cache_bytes // 8 // per_row)

    def _group_rows(self, f: int, g: int) -> int:
        starts = self.row_group_starts[f]
        end = starts[g + 1] if g + 1 < len(starts) else self._file(f).metadata.num_rows
        return end - starts[g]

    def _keep(self, key: tuple, values, nbytes: int) -> None:
        self._groups[key] = values
        self._sizes[key] = nbytes
        self._cached += nbytes
        while self._cached > self.cache_bytes and len(self._groups) > 1:
            old, _ = self._groups.popitem(last=False)
            self._cached -= self._sizes.pop(old)

    def _unit(self, f: int, g: int, r: int):
        """(values, index in them) of row ``r`` (from the group's start) of row group ``g`` of file ``f``."""
        batch = self.batch_rows(f, g)
        key = (f, g) if batch is None else (f, g, r // batch)
        values = self._groups.get(key)
        if values is not None:
            self._groups.move_to_end(key)
            return values, r if batch is None else r % batch
        import pyarrow as pa

        try:
            if batch is None:
                values = self._file(f).read_row_group(g, columns=[self.column]).column(0)
                self._keep(key, values, values.nbytes)
            else:
                values = self._read_batch(f, g, r // batch, batch)
        except (OSError, ValueError, pa.ArrowException, StopIteration) as e:
            # A damaged or truncated file (its footer was read): one line naming it; a reader
            # that failed is not resumed.
            self._cursors.pop((f, g), None)
            why = str(e) or "fewer rows than its footer lists (changed or truncated?)"
            raise MedcapError(f"cannot read the images of row group {g + 1}: {why}", file=self.files[f]) from None
        return values, r if batch is None else r % batch

    def _read_batch(self, f: int, g: int, k: int, batch: int) -> list:
        cursor = self._cursors.get((f, g))
        if cursor is None or cursor[1] > k:  # no reader there yet, or it is past k: start the row group again
            reader = self._file(f).iter_batches(batch_size=batch, row_groups=[g], columns=[self.column],
                                                use_threads=False)
            cursor = self._cursors[(f, g)] = [reader, 0]
            while len(self._cursors) > self.max_cursors:
                self._cursors.popitem(last=False)
        self._cursors.move_to_end((f, g))
        while True:
            record_batch = next(cursor[0])
            cursor[1] += 1
            if cursor[1] - 1 == k:
                break
        if (k + 1) * batch >= self._group_rows(f, g):  # the row group's last batch: free the reader's pages now
            del self._cursors[(f, g)]
        # Python values, not Arrow slices: a slice would keep its whole decoded data page alive.
        values = record_batch.column(0).to_pylist()
        self._keep((f, g, k), values, sum(_value_bytes(v) for v in values))
        return values

    def close(self) -> None:
        """Drop open files, readers and cached images (they reopen on the next read), and hand
        the memory Arrow freed back to the system."""
        self._reset()
        try:
            import pyarrow as pa

            pa.default_memory_pool().release_unused()
        except (ImportError, AttributeError):
            pass

    def __getitem__(self, image_id: str) -> bytes | Path:
        f, r = self.rows[image_id]
        starts = self.row_group_starts[f]
        g = bisect.bisect_right(starts, r) - 1
        values, i = self._unit(f, g, r - starts[g])
        value = values[i]
        if hasattr(value, "as_py"):
            value = value.as_py()
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


def row_group_layout(metadata, column: str) -> tuple[list[int], list[int]]:
    """(first row of each row group, uncompressed bytes of ``column`` in it) from a file's footer."""
    starts, sizes, row = [], [], 0
    for g in range(metadata.num_row_groups):
        rg = metadata.row_group(g)
        starts.append(row)
        row += rg.num_rows
        sizes.append(sum(rg.column(c).total_uncompressed_size for c in range(rg.num_columns)
                         if rg.column(c).path_in_schema.split(".")[0] == column))
    return starts, sizes


def _value_bytes(value) -> int:
    if isinstance(value, dict):
        return sum(len(v) for v in value.values() if isinstance(v, (bytes, str))) + 64
    return (len(value) if isinstance(value, (bytes, str)) else 0) + 64


def read_parquet_split(files: SplitFiles, strict: bool, problems: list[Problem]) -> Split:
    """A parquet-layout split; bad rows raise (``strict``) or are added to ``problems``."""
    from .split import Split

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
    malformed: dict[str, list[str]] = {}  # rows over 100 CUIs
    captions: dict[str, str] = {}
    image_col: str | None = None
    has_cuis = has_captions = False
    starts: list[list[int]] = []
    group_bytes: list[list[int]] = []
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
        file_starts, file_bytes = row_group_layout(pf.metadata, img_col)
        starts.append(file_starts)
        group_bytes.append(file_bytes)
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
                cuis = _parquet_cuis(cui_values[r], path, at, report)
                if len(cuis) > MAX_CONCEPTS_PER_IMAGE:  # as in a CSV (csvio): training drops it and says so
                    malformed[image_id] = cuis
                    if not strict:
                        problems.append(Problem(str(path), None, "too_many_concepts", f"{at}: {len(cuis):,} CUIs; "
                                                f"at most {MAX_CONCEPTS_PER_IMAGE} per image: the row is left out"))
                else:
                    concepts[image_id] = cuis
            if cap_values is not None:
                caption = (cap_values[r] or "").strip()
                if not caption:
                    report(Problem(str(path), None, "empty_caption", f"{at}: empty caption for {image_id!r}"))
                captions[image_id] = caption
    images = ParquetImages(list(files.parquet), image_col or "image", rows, starts, group_bytes)
    return Split(files.name, ids, {}, concepts if has_cuis else None, captions if has_captions else None, None,
                 image_bytes=images, malformed_rows=malformed)


def _parquet_cuis(value, path: Path, at: str, report) -> list[str]:
    items = value.split(";") if isinstance(value, str) else list(value or [])
    out: dict[str, None] = {}  # not a list search: a hostile row of 100,000 CUIs stays linear
    for item in items:
        cui = normalize_cui(str(item))
        if not cui or cui in out:
            continue
        if not CUI_PATTERN.fullmatch(cui):
            report(Problem(str(path), None, "malformed_cui",
                           f"{at}: malformed CUI {cui!r}; expected 'C' followed by digits"))
            continue
        out[cui] = None
    return list(out)

