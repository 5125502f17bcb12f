"""Submission files read as the organisers' checker reads them: line by line, each CSV record
with its raw text and first line, and every broken rule as a :class:`Violation`.

The rules themselves are in :mod:`medcap.submission`; this is the reading, in bounded memory
(issue 26): one line at a time, the first ``MAX_VIOLATIONS`` violations in detail and the
others counted.
"""
from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..fileio import check_line_lengths
from .csvio import open_input
from .textlines import text_lines

__all__ = ["Found", "MAX_VIOLATIONS", "Record", "Violation", "Violations", "records", "submission_lines"]

MAX_VIOLATIONS = 1_000  # listed in detail; the others are counted ("... and N more")
_BOM = "\ufeff"


@dataclass(frozen=True)
class Violation:
    """One broken rule; ``line`` is the 1-based line in the file, None for the whole file."""

    line: int | None
    message: str

    def format(self, path: str | Path) -> str:
        return f"{path}: {self.message}" if self.line is None else f"{path}:{self.line}: {self.message}"


# ---------------------------------------------------------------------------------------
# Parsing shared by both kinds of submission
# ---------------------------------------------------------------------------------------

@dataclass
class Record:
    line: int        # first physical line of the record
    fields: list[str]
    raw: str         # the record's text as in the file (line terminators included)


class Found:
    """The violations found: the first ``MAX_VIOLATIONS`` in detail, the others counted.

    ``rank`` orders the messages of one line as the checks run: the bytes, blank lines, the
    CSV syntax and header, the row's shape and ID, the gold order, then its CUIs or caption.
    """

    DECODE, BLANK, PARSE, ROW, ORDER, VALUE = range(6)

    def __init__(self):
        self.kept: list[tuple] = []
        self.more = 0

    def add(self, line: int | None, message: str, rank: int = 3) -> None:
        if line is None or len(self.kept) < MAX_VIOLATIONS:  # the few file-level ones are always kept
            self.kept.append((line is None, line or 0, rank, len(self.kept), Violation(line, message)))
        else:
            self.more += 1

    def result(self) -> Violations:
        # File-level problems last, the others in file order.
        out = Violations(v for *_, v in sorted(self.kept, key=lambda k: k[:4]))
        out.total = len(out) + self.more
        if self.more:
            out.append(Violation(None, f"... and {self.more:,} more rule violations (the first "
                                       f"{MAX_VIOLATIONS:,} are listed)"))
        return out


class Violations(list):
    """The violations of a file, in file order; ``total`` counts those not listed too."""

    total = 0


def submission_lines(path: str | Path, found: Found) -> Iterator[str]:
    """The submission's lines as text, read one at a time; a byte that is not UTF-8 (the
    first) and a byte-order mark are violations."""
    path = Path(path)

    reported = False  # only the first line that is not UTF-8 is a violation

    def bad_bytes(number: int, raw: bytes, e: UnicodeDecodeError) -> None:
        nonlocal reported
        if not reported:
            reported = True
            found.add(number, f"not valid UTF-8 (byte 0x{raw[e.start]:02x}); save the file as UTF-8", found.DECODE)

    with open_input(path, "submission file") as f:  # a missing file or a folder: one line
        check_line_lengths(path)  # streamed first: a hostile single-line file is refused in bounded memory
        for k, line in enumerate(text_lines(f, path, bad_bytes)):
            if k == 0 and line.startswith(_BOM):
                found.add(1, "the file starts with a UTF-8 byte-order mark (BOM); the official checker reads it "
                             "as part of the header: save as UTF-8 without BOM", found.DECODE)
                line = line[len(_BOM):]
            yield line


def records(lines: Iterable[str], header: tuple[str, str], found: Found) -> Iterator[Record]:
    """The CSV records of ``lines`` after the header, one at a time, checking the header and
    blank lines; a whitespace-only file is one violation ("empty")."""
    consumed: list[str] = []
    state = {"number": 0, "blank": 0, "content": False, "records": 0}
    snapshot = (len(found.kept), found.more)
    blank = "blank line; the official checker allows none"

    def feed() -> Iterator[str]:
        for line in lines:
            consumed.append(line)
            # Blank lines are numbered as str.splitlines numbers them (a form feed or U+2028
            # ends a line there too), as the checks of the whole text always did.
            for part in line.splitlines() or [line]:
                state["number"] += 1
                if part.strip():
                    if not state["content"]:
                        state["content"] = True
                        for k in range(1, state["blank"] + 1):
                            found.add(k, blank, found.BLANK)
                elif state["content"]:
                    found.add(state["number"], blank, found.BLANK)
                else:
                    state["blank"] += 1  # reported once the file turns out not to be empty
            yield line

    lines_fed = feed()
    reader = csv.reader(lines_fed)
    next_line = 1
    while True:
        consumed.clear()
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            found.add(next_line, f"not valid CSV ({e}); nothing after this line was checked", found.PARSE)
            for _ in lines_fed:  # the blank-line check still covers the whole file
                pass
            break
        record = Record(next_line, fields, "".join(consumed))
        next_line += len(consumed)
        if not fields:  # csv yields [] for a blank line, already reported
            continue
        state["records"] += 1
        if state["records"] == 1:
            if tuple(fields) == header:
                continue
            if fields[0].strip() == header[0]:
                found.add(record.line, f"the header must be exactly {','.join(header)}, found {','.join(fields)}",
                          found.PARSE)
                continue
            found.add(record.line, f"missing header: the first line must be {','.join(header)}", found.PARSE)
        yield record

    if not state["content"]:  # only whitespace: one problem, not one a line
        del found.kept[snapshot[0]:]
        found.more = snapshot[1]
        found.add(None, f"the file is empty; expected the header {','.join(header)} and one row per image")
    elif not state["records"]:
        found.add(None, f"no rows; expected the header {','.join(header)} and one row per image")
