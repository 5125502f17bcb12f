"""Reading a user's text file in bounded memory: line by line, and with a cap on what is kept.

Label and submission files (:mod:`medcap.data.csvio`, :mod:`medcap.submission`) are read
through :func:`text_lines` and charge what they keep to a :class:`MemoryBudget`: a file of
any size, one hostile line or millions of normal ones, takes the process to a fixed peak
(issue 26: under 300 MB), or is refused with one line naming the file and the line.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Callable

from ..errors import MedcapError
from ..fileio import read_error

__all__ = ["MAX_TABLE_BYTES", "MemoryBudget", "text_lines"]

# What a reader keeps of one file (rows, refused keys, problems). 2026's 116,604 development
# rows keep about 75 MB by this count with 5 CUIs each (their captions: 60 MB); the memory
# really used is about 0.85 of it, so a file refused at the cap peaks near 170 MB in all.
MAX_TABLE_BYTES = 128 << 20
_ENTRY_BYTES = 200  # per kept row: its entries in the ID-keyed dicts and its line number


class MemoryBudget:
    """The approximate memory (``sys.getsizeof`` of what is kept, plus the dict entries) of
    what a reader keeps from one file; a one-line MedcapError naming the file and line once
    it passes :data:`MAX_TABLE_BYTES`."""

    def __init__(self, path: str | Path):
        self.path, self.used = path, 0

    def charge(self, line: int | None, *kept) -> None:
        self.used += _ENTRY_BYTES + sum(map(sys.getsizeof, kept))
        if self.used > MAX_TABLE_BYTES:
            raise MedcapError(f"too many rows: the rows up to this line take over {MAX_TABLE_BYTES >> 20} MB in "
                              "memory; a label or submission file has one row per image (ImageCLEF's largest: "
                              "117k rows, about 75 MB)", file=self.path, line=line)

    def charge_row(self, line: int, key: str, value) -> None:
        """A kept row: its key, its value and, for a list of CUIs, each CUI."""
        self.charge(line, key, value, *(value if isinstance(value, list) else ()))


# io.StringIO(newline="") ends a line at "\n", "\r\n" or a lone "\r": so do the readers.
_LINES = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")


def text_lines(f, path: str | Path, on_bad_bytes: Callable[[int, bytes, UnicodeDecodeError], None]):
    """The lines of the binary file ``f`` as text, one at a time (never the whole file).

    ``on_bad_bytes(number, raw, error)`` is called for a line that is not UTF-8 (``number``
    counts "\n" line ends); its bad bytes become U+FFFD so that the rest can be checked.
    A UTF-8 sequence never holds the byte "\n", so decoding line by line is decoding the file.
    Lines are at most :data:`medcap.fileio.MAX_LINE_BYTES` long when the caller checked
    :func:`~medcap.fileio.check_line_lengths` first.
    """
    try:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                on_bad_bytes(number, raw, e)
                text = raw.decode("utf-8", errors="replace")
            cr = text.find("\r")
            if cr < 0 or (cr == len(text) - 2 and text.endswith("\n")):
                yield text
            else:
                yield from _LINES.findall(text)
    except OSError as e:
        raise read_error(e, path) from None
