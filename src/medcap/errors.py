"""User-facing errors.

Every mistake a user can make (a bad CSV row, a missing model file, an unknown config
key) raises :class:`MedcapError`. The CLI prints it as one line and exits non-zero;
nothing else is caught, so real bugs still show a traceback.
"""
from __future__ import annotations

from pathlib import Path


class MedcapError(Exception):
    """An error the user can act on: which file, which line, what was expected."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | Path | None = None, line: int | None = None):
        self.message = message
        self.file = None if file is None else str(file)
        self.line = line
        super().__init__(self.format())

    def format(self) -> str:
        where = ""
        if self.file is not None:
            where = self.file if self.line is None else f"{self.file}:{self.line}"
            where += ": "
        # One line, always: a message with newlines would break the "one-line error" rule.
        return (where + self.message).replace("\n", " ")


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of a library's exception (at most ``limit`` characters), for a one-line error."""
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:limit]


class MissingWeightsError(MedcapError):
    """Pretrained weights were asked for but are not on this machine."""
