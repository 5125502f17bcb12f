"""Readers for the ImageCLEFmedical Caption CSV files (REFERENCE §5).

Four kinds of file, all ``ID``-keyed two-column CSVs:

* ``*_concepts.csv`` and ``*_concepts_manual.csv``: ``ID,CUIs`` with the CUIs joined by
  ``;`` (upper-cased and stripped here, as the official evaluator does, REFERENCE §4);
* ``*_captions.csv``: ``ID,Caption``, quoted CSV whose captions may hold commas, quotes
  and newlines;
* ``cui_mapping.csv``: ``CUI,Canonical name``.

Headers seen in the wild are accepted (``ID,CUIs``, ``ID,Caption``, ``image_id,...``, any
first field containing "ID"), and so are files without a header. Files are UTF-8, with or
without a byte-order mark.

Each kind has two readers:

* ``read_*`` returns the parsed values and raises :class:`MedcapError` at the first
  problem, naming the file, the real line in the file (a quoted caption spanning several
  lines counts them all) and what was expected;
* ``scan_*`` never raises for bad content: it returns a :class:`CsvTable` with the valid
  values *and* every problem found, for ``medcap data check``.

Files are read line by line and what is kept of one file is bounded (:class:`MemoryBudget`):
no file, however large, takes the process past a fixed peak (:mod:`.textlines`); a line over
:data:`medcap.fileio.MAX_LINE_BYTES` is refused before anything is parsed.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from ..editions import MAX_CONCEPTS_PER_IMAGE
from ..errors import MedcapError
from ..fileio import check_line_lengths
from .textlines import MemoryBudget, text_lines

__all__ = [
    "CUI_PATTERN",
    "CsvTable",
    "Problem",
    "normalize_cui",
    "open_input",
    "read_captions_csv",
    "read_concepts_csv",
    "read_cui_mapping",
    "scan_captions_csv",
    "scan_concepts_csv",
    "scan_cui_mapping",
    "split_cuis",
]

# A UMLS concept unique identifier; the official submission rules require this form (REFERENCE §4).
CUI_PATTERN = re.compile(r"C\d+")

# The header's first field names the key column ("ID", "image_id", "CUI"). A data row's
# key almost always holds a digit (ImageCLEFmedical_Caption_2025_train_0, C0040405), so a
# first field with the key word and no digit is taken as a header.
_DIGIT = re.compile(r"\d")


@dataclass(frozen=True)
class Problem:
    """One problem found in a dataset: where it is and what is wrong.

    ``kind`` is a short stable tag (``malformed_row``, ``duplicate_id``, ``missing_image``,
    ...) so that tools can count problems by kind; ``line`` is ``None`` when the problem
    belongs to a whole file (an image that does not decode, a missing folder).
    """

    file: str
    line: int | None
    kind: str
    message: str

    def format(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.message}"

    def to_error(self) -> MedcapError:
        return MedcapError(self.message, file=self.file, line=self.line)


@dataclass
class CsvTable:
    """What a ``scan_*`` reader found in one file.

    ``values`` holds every row whose key could be read (the first one for a duplicated
    key), even when part of the row was wrong (a malformed CUI is left out of its list and
    reported), so that a checker still knows the ID exists. ``lines`` gives the file line
    each key starts on.
    """

    path: Path
    values: dict = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)  # key -> line of a refused row
    dropped: dict = field(default_factory=dict)  # key -> value of a row refused for its value (over 100 CUIs)

    def raise_first(self, tolerate: Iterable[str] = ()) -> None:
        """MedcapError for the first problem, except those of the kinds in ``tolerate``."""
        for p in self.problems:
            if p.kind not in tolerate:
                raise p.to_error()


def normalize_cui(cui: str) -> str:
    """Upper-case and strip a CUI, as the official evaluator does before comparing sets."""
    return cui.strip().upper()


def split_cuis(text: str) -> list[str]:
    """``"c0040405; C0817096;"`` -> ``["C0040405", "C0817096"]`` (order kept, repeats and
    empty items dropped)."""
    # dict.fromkeys, not a list search: a hostile row of 100,000 CUIs stays linear.
    return list(dict.fromkeys(c for c in map(normalize_cui, text.split(";")) if c))


def open_input(path: str | Path, noun: str = "file", label: str | None = None):
    """Open a user's file for binary reading; a missing file, a folder or a permission
    problem becomes a one-line :class:`MedcapError` naming it (``label``, else the path)."""
    where = label or str(path)
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise MedcapError(f"{noun} not found", file=where) from None
    except IsADirectoryError:
        article = "an" if noun[0] in "aeiou" else "a"
        raise MedcapError(f"expected {article} {noun}, found a folder", file=where) from None
    except OSError as e:
        raise MedcapError(f"cannot open {noun}: {e.strerror or e}", file=where) from None


def _records(path: Path, problems: list[Problem], budget: MemoryBudget):
    """Yield ``(first_line, fields, bad_encoding)`` for every non-blank CSV record of ``path``,
    reading it line by line.

    Line numbers are real file lines: a quoted field holding newlines moves the count on by
    as many lines as it spans. CSV syntax errors (a stray quote, an unterminated quoted
    field) become problems and reading goes on at the next line. ``bad_encoding`` is True
    for a record on a line holding a byte that is not UTF-8 (reported, before the file's
    other problems).
    """
    fname = str(path)
    try:
        f = open_input(path, "CSV file")
    except MedcapError as e:
        problems.append(Problem(fname, e.line, "unreadable_file", e.message))
        return
    n_before = len(problems)
    encoding: list[Problem] = []
    in_record = [False]  # the record being read holds a line that is not UTF-8

    def bad_bytes(number: int, raw: bytes, e: UnicodeDecodeError) -> None:
        in_record[0] = True
        encoding.append(Problem(fname, number, "bad_encoding",
                                f"not UTF-8 text (byte 0x{raw[e.start]:02x} in column {e.start + 1}); "
                                "save the file as UTF-8"))
        budget.charge(number, encoding[-1].message)

    def lines():
        for k, text in enumerate(text_lines(f, path, bad_bytes)):
            yield text[1:] if k == 0 and text.startswith("\ufeff") else text  # an optional BOM is dropped

    with f:
        try:
            check_line_lengths(path)  # streamed first: a hostile single-line file is refused in bounded memory
        except MedcapError as e:
            problems.append(Problem(fname, e.line, "unreadable_file", e.message))
            return
        # The csv module sees the line endings itself, so quoted newlines survive and
        # line_num counts the file's physical lines.
        reader = csv.reader(lines(), strict=True)
        charged = len(problems)
        while True:
            # Charged here, not per yielded row: a file of syntax errors alone yields nothing.
            for p in problems[charged:]:  # what the last row added, or a syntax error
                budget.charge(p.line, p.message)
            charged = len(problems)
            start = reader.line_num + 1
            in_record[0] = False
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                msg = str(e)
                if "unexpected end of data" in msg:
                    msg = "a quoted field starting on this line is never closed (missing '\"')"
                elif "field larger than field limit" in msg:
                    msg = "a field is longer than the CSV field limit; probably a quoted field that is never closed"
                else:
                    msg = f"bad CSV syntax: {msg}"
                problems.append(Problem(fname, start, "malformed_row", msg))
                continue
            if not fields or all(not x.strip() for x in fields):
                continue  # blank line
            yield start, fields, in_record[0]
    problems[n_before:n_before] = encoding


def _is_header(first_field: str, key_word: str) -> bool:
    f = first_field.strip().lower()
    return key_word in f and not _DIGIT.search(f)


def _split_row(fields: list[str], fname: str, line: int, expected: str, join_extra_fields: bool,
               problems: list[Problem]) -> tuple[str, str] | None:
    """``(key, text)`` of a record, or None (with a problem added) when its shape is wrong."""
    # Trailing empty fields (a spreadsheet's "a,b,,") carry nothing: ignore them.
    while len(fields) > 2 and not fields[-1].strip():
        fields.pop()
    if len(fields) < 2:
        problems.append(Problem(fname, line, "malformed_row",
                                f"expected 2 fields ({expected}), found 1: {_clip(fields[0])!r}"))
        return None
    if len(fields) > 2:
        if not join_extra_fields:
            problems.append(Problem(fname, line, "malformed_row",
                                    f"expected 2 fields ({expected}), found {len(fields)}; "
                                    "separate CUIs with ';', not ','"))
            return None
        # An unquoted comma inside free text: the key is the first field, so the text is
        # the rest, joined back exactly as it was written.
        fields = [fields[0], ",".join(fields[1:])]
    key = fields[0].strip()
    if not key:
        problems.append(Problem(fname, line, "malformed_row", f"empty key; expected {expected}"))
        return None
    if _control_problem(key, "the key", fname, line, problems):
        return None
    return key, fields[1]


def _scan(
    path: str | Path,
    key_word: str,
    expected: str,
    parse_value: Callable[[str, str, int, list[Problem]], object],
    join_extra_fields: bool,
    key_check: Callable[[str, str, int, list[Problem]], str | None] | None = None,
    drop: Callable[[object, str, int, list[Problem]], bool] | None = None,
) -> CsvTable:
    """The shared row loop: header detection, row shape, key check, duplicate keys; ``drop``
    refuses a row by its parsed value (reported; kept in ``dropped``). What is kept (rows and
    problems: :func:`_records` charges the problems) is charged to a :class:`MemoryBudget`."""
    path = Path(path)
    table = CsvTable(path)
    problems = table.problems
    budget = MemoryBudget(path)
    fname = str(path)
    first = True
    for line, fields, bad_encoding in _records(path, problems, budget):
        if first:
            first = False
            if _is_header(fields[0], key_word):
                continue
        row = None if bad_encoding else _split_row(fields, fname, line, expected, join_extra_fields, problems)
        key = row[0] if row else None
        if key is not None and key_check is not None:
            key = key_check(key, fname, line, problems)
        if key is None:
            # The row was refused (and reported); remember its key so that a checker does
            # not report that image again as having no row.
            if fields[0].strip():
                table.rejected.setdefault(fields[0].strip(), line)
                budget.charge(line, fields[0])
            continue
        if key in table.lines:
            problems.append(Problem(fname, line, "duplicate_id",
                                    f"duplicate {key_word.upper()} {key!r} (first on line {table.lines[key]})"))
            continue
        value = parse_value(row[1], fname, line, problems)
        budget.charge_row(line, key, value)
        if drop is not None and drop(value, fname, line, problems):
            table.rejected.setdefault(key, line)
            table.dropped[key] = value
            continue
        table.lines[key] = line
        table.values[key] = value
    return table


def _clip(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _examples(items: list[str], n: int = 5) -> str:
    """The first ``n`` of ``items``, quoted, and how many more (a row of 100 bad CUIs stays a readable line)."""
    shown = ", ".join(map(repr, items[:n]))
    return shown + (f" and {len(items) - n:,} more" if len(items) > n else "")


def _parse_cuis(text: str, fname: str, line: int, problems: list[Problem]) -> list[str]:
    cuis = split_cuis(text)
    bad = [c for c in cuis if not CUI_PATTERN.fullmatch(c)]
    if bad:
        problems.append(Problem(fname, line, "malformed_cui",
                                f"malformed CUI {_examples(bad)}; expected 'C' followed by digits "
                                "(e.g. C0040405), several joined by ';'"))
        cuis = [c for c in cuis if CUI_PATTERN.fullmatch(c)]
    return cuis


# NUL and other control characters (C0 but tab/newline/CR, DEL, C1) are invisible in every
# viewer, break tokenizers and the evaluator's text handling: refused with their position.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _control_problem(text: str, what: str, fname: str, line: int, problems: list[Problem]) -> bool:
    m = _CONTROL.search(text)
    if m is None:
        return False
    ch = m.group()
    name = "a NUL byte" if ch == "\x00" else f"the control character U+{ord(ch):04X}"
    problems.append(Problem(fname, line, "control_character",
                            f"{what} holds {name} at character {m.start() + 1}; remove it (a damaged or binary file?)"))
    return True


def _too_many_cuis(cuis: list[str], fname: str, line: int, problems: list[Problem]) -> bool:
    # The organisers' cap per image (REFERENCE §4): a longer row is no image's concepts and
    # would enlarge the vocabulary; training leaves it out and says so (medcap.data.drops).
    if len(cuis) <= MAX_CONCEPTS_PER_IMAGE:
        return False
    problems.append(Problem(fname, line, "too_many_concepts", f"{len(cuis):,} CUIs; at most "
                            f"{MAX_CONCEPTS_PER_IMAGE} per image (the organisers' cap): the row is left out"))
    return True


def _parse_caption(text: str, fname: str, line: int, problems: list[Problem]) -> str:
    caption = text.strip()
    if not caption:
        problems.append(Problem(fname, line, "empty_caption", "empty caption"))
    _control_problem(caption, "the caption", fname, line, problems)
    return caption


def _parse_name(text: str, fname: str, line: int, problems: list[Problem]) -> str:
    name = text.strip()
    _control_problem(name, "the canonical name", fname, line, problems)
    if not name:
        problems.append(Problem(fname, line, "malformed_row", "empty canonical name; expected CUI,Canonical name"))
    return name


def _check_cui_key(key: str, fname: str, line: int, problems: list[Problem]) -> str | None:
    cui = normalize_cui(key)
    if CUI_PATTERN.fullmatch(cui):
        return cui
    problems.append(Problem(fname, line, "malformed_cui",
                            f"malformed CUI {key!r}; expected 'C' followed by digits (e.g. C0040405)"))
    return None


def scan_concepts_csv(path: str | Path) -> CsvTable:
    """Scan an ``ID,CUIs`` file (concepts or manual concepts); ``values``: ID -> CUIs.

    A row with more than 100 CUIs (the organisers' cap per image) is refused: a
    ``too_many_concepts`` problem, its CUIs in ``dropped`` (training leaves it out).
    """
    return _scan(path, "id", "ID,CUIs", _parse_cuis, join_extra_fields=False, drop=_too_many_cuis)


def scan_captions_csv(path: str | Path) -> CsvTable:
    """Scan an ``ID,Caption`` file; ``values``: ID -> caption (stripped).

    A caption written without quotes but holding commas is read whole (the ID is the
    first field, the caption everything after it).
    """
    return _scan(path, "id", "ID,Caption", _parse_caption, join_extra_fields=True)


def scan_cui_mapping(path: str | Path) -> CsvTable:
    """Scan a ``CUI,Canonical name`` file; ``values``: CUI (upper-cased) -> name."""
    return _scan(path, "cui", "CUI,Canonical name", _parse_name, join_extra_fields=True,
                 key_check=_check_cui_key)


def read_concepts_csv(path: str | Path) -> dict[str, list[str]]:
    """ID -> CUIs in file order (upper-cased, stripped, repeats dropped).

    An image with an empty CUI list (``ID,``) is kept with ``[]``: the official evaluator
    leaves such images out of the average (REFERENCE §4), it does not reject them.
    Raises :class:`MedcapError` (file, line, what was expected) at the first bad row.
    """
    table = scan_concepts_csv(path)
    table.raise_first()
    return table.values


def read_captions_csv(path: str | Path) -> dict[str, str]:
    """ID -> caption. Raises :class:`MedcapError` at the first bad row (including an empty caption)."""
    table = scan_captions_csv(path)
    table.raise_first()
    return table.values


def read_cui_mapping(path: str | Path) -> dict[str, str]:
    """CUI -> canonical name. Raises :class:`MedcapError` at the first bad row."""
    table = scan_cui_mapping(path)
    table.raise_first()
    return table.values
