"""ImageCLEFmedical submission files: write, read and validate them (REFERENCE §4, §7).

The rules are those of the organisers' submission checkers and evaluators; what differs
between editions is a parameter (:class:`medcap.editions.EditionRules`, default the latest):

- UTF-8 without a byte-order mark (their checker reads a BOM as part of the header);
- the header is exactly ``ID,CUIs`` (concepts) or ``ID,Caption`` (captions);
- one row of exactly two fields per image, every expected ID exactly once, no unknown ID;
  2026: the rows in exactly the gold file's ID order (for concepts: the primary gold IDs,
  then those only in the manual file);
- no blank lines; no leading or trailing spaces around the ID or the CUIs field; around a
  caption only in 2025 (2026 allows them);
- concepts: CUIs separated by ``;`` (parts stripped), each ``C`` followed by digits, no
  empty entry (a trailing or doubled ``;``), no duplicate in a row, at most 100 per image;
  an empty list (``ID,``) is allowed (``allow_empty=False`` rejects it);
- captions: a caption with a comma must be enclosed in double quotes on the raw line; the
  checker reads the file line by line, so a caption must not contain a line break.

Validation reports *every* violation with its line number, instead of stopping at the
first one as the official scripts do. The writers build the file in memory, validate it
with the same code and refuse (``MedcapError``) to write anything that breaks a rule. Given
gold IDs (or an ID-order file, :func:`read_id_order`), they write the rows in that order;
otherwise in the order of the mapping they get (the order the images were listed).
"""
from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .data.csvio import CUI_PATTERN
from .editions import EditionRules, edition_rules
from .errors import MedcapError
from .fileio import atomic_write, check_line_lengths

CONCEPT_HEADER = ("ID", "CUIs")
CAPTION_HEADER = ("ID", "Caption")
MAX_CONCEPTS_PER_IMAGE = 100
_CLEAN_CUIS = re.compile(r"C\d+(?:;C\d+)*")
_BOM = "\ufeff"
_MAX_EXAMPLES = 5


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
class _Record:
    line: int        # first physical line of the record
    fields: list[str]
    raw: str         # the record's text as in the file (line terminators included)


class _LineRecorder:
    """Feeds csv.reader line by line and remembers which lines each record used."""

    def __init__(self, text: str):
        self._lines = io.StringIO(text, newline="")
        self.consumed: list[str] = []

    def __iter__(self) -> Iterator[str]:
        for line in self._lines:
            self.consumed.append(line)
            yield line


def _decode(data: bytes, violations: list[Violation]) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        violations.append(Violation(line, f"not valid UTF-8 (byte 0x{data[e.start]:02x}); save the file as UTF-8"))
        text = data.decode("utf-8", errors="replace")
    if text.startswith(_BOM):
        violations.append(Violation(1, "the file starts with a UTF-8 byte-order mark (BOM); the official "
                                       "checker reads it as part of the header: save as UTF-8 without BOM"))
        text = text[len(_BOM):]
    return text


def _parse(text: str, header: tuple[str, str], violations: list[Violation]) -> list[_Record]:
    """Split ``text`` into CSV records, checking the header and blank lines."""
    if not text.strip():
        violations.append(Violation(None, f"the file is empty; expected the header {','.join(header)} "
                                          "and one row per image"))
        return []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            violations.append(Violation(number, "blank line; the official checker allows none"))

    recorder = _LineRecorder(text)
    reader = csv.reader(recorder)
    records: list[_Record] = []
    next_line = 1
    while True:
        recorder.consumed.clear()
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            violations.append(Violation(next_line, f"not valid CSV ({e}); nothing after this line was checked"))
            break
        raw = "".join(recorder.consumed)
        record = _Record(next_line, fields, raw)
        next_line += len(recorder.consumed)
        if fields:  # csv yields [] for a blank line, already reported
            records.append(record)

    if not records:
        violations.append(Violation(None, f"no rows; expected the header {','.join(header)} and one row per image"))
        return []
    first = records[0]
    if tuple(first.fields) == header:
        return records[1:]
    if first.fields and first.fields[0].strip() == header[0]:
        violations.append(Violation(first.line, f"the header must be exactly {','.join(header)}, "
                                                f"found {','.join(first.fields)}"))
        return records[1:]
    violations.append(Violation(first.line, f"missing header: the first line must be {','.join(header)}"))
    return records


def _check_rows(records: list[_Record], what: str, gold_ids: Iterable[str] | None, rules: EditionRules,
                violations: list[Violation]) -> dict[str, _Record]:
    """Rules common to both kinds: two fields, IDs clean, unique, expected and (2026) in gold order."""
    gold_ids = _as_ids(gold_ids)
    expected = None if gold_ids is None else set(gold_ids)
    seen: dict[str, _Record] = {}
    for r in records:
        if len(r.fields) != 2:
            hint = f" (write 'ID,' for an image without {what})" if len(r.fields) == 1 and what == "CUIs" else ""
            violations.append(Violation(r.line, f"expected 2 fields (ID,{what}), found {len(r.fields)}{hint}"))
        image_id = r.fields[0]
        if not image_id.strip():
            violations.append(Violation(r.line, "empty image ID"))
            continue
        if image_id != image_id.strip():
            violations.append(Violation(r.line, f"the ID {image_id!r} has leading or trailing spaces"))
            image_id = image_id.strip()  # one problem, one message: not also "unknown ID" and "missing"
        if image_id in seen:
            first_line = seen[image_id].line
            violations.append(Violation(r.line, f"the ID {image_id} appears again (first on line {first_line})"))
            continue
        seen[image_id] = r
        if expected is not None and image_id not in expected:
            violations.append(Violation(r.line, f"the ID {image_id} is not in the gold file"))
    # A set carries no order: only a sequence of gold IDs (a gold file's) is checked for it.
    if expected is not None and rules.ordered_ids and not isinstance(gold_ids, (set, frozenset)):
        _check_order(seen, list(gold_ids), rules.year, violations)
    if expected is not None:
        missing = sorted(i for i in expected if i not in seen)
        if missing:
            examples = ", ".join(missing[:_MAX_EXAMPLES]) + (", ..." if len(missing) > _MAX_EXAMPLES else "")
            violations.append(Violation(None, f"{len(missing)} of the {len(expected)} gold IDs have no row: "
                                              f"{examples}"))
    return seen


def _check_order(seen: dict[str, _Record], gold_ids: list[str], year: int, violations: list[Violation]) -> None:
    """Flag the fewest rows that break the gold order: those outside a longest run of rows
    whose gold positions increase (the official pre-check stops at the first mismatch)."""
    gold_ids = list(dict.fromkeys(gold_ids))
    position = {image_id: k for k, image_id in enumerate(gold_ids)}
    rows = [(position[i], r) for i, r in seen.items() if i in position]  # file order
    for k in _outside_increasing_run([p for p, _ in rows]):
        p, r = rows[k]
        violations.append(Violation(r.line, f"the ID {gold_ids[p]} is out of order: the {year} rules want the rows "
                                            f"in the gold file's order (it is gold ID number {p + 1})"))


def _outside_increasing_run(values: list[int]) -> list[int]:
    """Indices of ``values`` not in one longest strictly increasing subsequence (O(n log n))."""
    import bisect

    tails: list[int] = []       # tails[j]: smallest last value of an increasing run of length j+1
    tail_index: list[int] = []  # its index in values
    previous = [-1] * len(values)
    for k, v in enumerate(values):
        j = bisect.bisect_left(tails, v)
        previous[k] = tail_index[j - 1] if j else -1
        if j == len(tails):
            tails.append(v)
            tail_index.append(k)
        else:
            tails[j], tail_index[j] = v, k
    keep, k = set(), tail_index[-1] if tail_index else -1
    while k >= 0:
        keep.add(k)
        k = previous[k]
    return [k for k in range(len(values)) if k not in keep]


def read_id_order(paths: str | Path | Sequence[str | Path]) -> list[str]:
    """The image IDs of one or more ID-order files, in order: a gold CSV (ID first, with its
    header) or a list of IDs, one a line. Several files: the first one's IDs, then any new ones
    of the next (the 2026 order of a concept gold file followed by its manual file)."""
    order: dict[str, None] = {}
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    for path in paths:
        text = _read_bytes(path).decode("utf-8-sig", errors="replace")
        for number, fields in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
            image_id = fields[0].strip() if fields else ""
            if not image_id or (number == 1 and image_id == "ID"):
                continue
            order.setdefault(image_id, None)
    if not order:
        raise MedcapError("no image IDs in the ID-order file(s)", file=", ".join(map(str, paths)))
    return list(order)


def check_id_order(ids: Sequence[str], order: Sequence[str] | None, *, file=None) -> None:
    """MedcapError unless ``order`` (from :func:`read_id_order`) lists exactly the images
    ``ids``; checked before predicting, so that a mismatch costs no prediction time."""
    if order is None:
        return
    have, want = set(ids), set(order)
    missing = [i for i in order if i not in have]
    extra = [i for i in ids if i not in want]
    if missing or extra:
        parts = ([f"{len(missing)} of its IDs have no image (first: {missing[0]})"] if missing else []) + \
                ([f"{len(extra)} images are not in it (first: {extra[0]})"] if extra else [])
        raise MedcapError("the ID-order file does not list the same images: " + "; ".join(parts), file=file)


def _read_bytes(path: str | Path) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise MedcapError("submission file not found", file=path)
    check_line_lengths(path)  # streamed first: a hostile single-line file is refused in bounded memory
    return path.read_bytes()


# ---------------------------------------------------------------------------------------
# Concept submissions
# ---------------------------------------------------------------------------------------

def _concept_violations(text: str, gold_ids, allow_empty: bool, rules: EditionRules,
                        violations: list[Violation]) -> dict[str, list[str]]:
    records = _parse(text, CONCEPT_HEADER, violations)
    rows = _check_rows(records, "CUIs", gold_ids, rules, violations)
    preds: dict[str, list[str]] = {}
    for image_id, r in rows.items():
        field = r.fields[1] if len(r.fields) > 1 else ""
        n_lines = r.raw.rstrip("\r\n").count("\n") + 1
        if n_lines > 1:
            violations.append(Violation(r.line, f"the row spans {n_lines} lines: a '\"' that is never closed?"))
            preds[image_id] = []
            continue
        if _CLEAN_CUIS.fullmatch(field):  # the usual case, checked in one go
            cuis = field.split(";")
            if len(cuis) <= rules.max_concepts and len(set(cuis)) == len(cuis):
                preds[image_id] = cuis
                continue
        if field != field.strip():
            violations.append(Violation(r.line, "the CUIs field has leading or trailing spaces"))
        if not field.strip():
            if not allow_empty:
                violations.append(Violation(r.line, f"no CUIs for {image_id} (--no-empty asks for at least one)"))
            preds[image_id] = []
            continue
        cuis = [c.strip() for c in field.split(";")]
        if any(not c for c in cuis):
            violations.append(Violation(r.line, "empty CUI (a trailing ';' or ';;')"))
        bad = [c for c in cuis if c and not CUI_PATTERN.fullmatch(c)]
        if bad:
            shown = ", ".join(map(repr, bad[:_MAX_EXAMPLES]))
            violations.append(Violation(r.line, f"not a CUI ('C' followed by digits): {shown}"))
        duplicates = sorted({c for c in cuis if c and cuis.count(c) > 1})
        if duplicates:
            violations.append(Violation(r.line, f"CUI given more than once: {', '.join(duplicates)}"))
        if len(cuis) > rules.max_concepts:
            violations.append(Violation(r.line, f"{len(cuis)} CUIs; at most {rules.max_concepts} per image"))
        preds[image_id] = [c for c in cuis if c]
    return preds


def check_concept_submission(path: str | Path, gold_ids: Iterable[str] | None = None, *,
                             allow_empty: bool = True, edition=None) -> tuple[dict[str, list[str]], list[Violation]]:
    """Read a concept submission and list every broken rule: ``(predictions, violations)``.

    ``gold_ids`` (the IDs of the gold file, in its order: primary, then manual-only) adds the
    every-ID-exactly-once check and, for 2026, the order check (a set skips the order).
    ``edition``: a year (default the latest) or :class:`~medcap.editions.EditionRules`.
    """
    violations: list[Violation] = []
    text = _decode(_read_bytes(path), violations)
    preds = _concept_violations(text, gold_ids, allow_empty, edition_rules(edition), violations)
    return preds, _sorted(violations)


def validate_concept_submission(path: str | Path, gold_ids: Iterable[str] | None = None, *,
                                allow_empty: bool = True, edition=None) -> list[Violation]:
    """Every official rule the concept submission at ``path`` breaks, with line numbers."""
    return check_concept_submission(path, gold_ids, allow_empty=allow_empty, edition=edition)[1]


def read_concept_submission(path: str | Path, gold_ids: Iterable[str] | None = None, *,
                            edition=None) -> dict[str, list[str]]:
    """``{ID: [CUI, ...]}`` from a valid concept submission; MedcapError if it breaks a rule."""
    preds, violations = check_concept_submission(path, gold_ids, edition=edition)
    _raise_first(path, violations)
    return preds


def write_concept_submission(path: str | Path, preds: Mapping[str, Sequence[str]], *,
                             gold_ids: Iterable[str] | None = None, allow_empty: bool = True, edition=None) -> Path:
    """Write ``{ID: [CUI, ...]}`` as an official concept submission, atomically.

    Rows follow ``gold_ids`` (the gold file's or an ID-order file's IDs) when given, else
    the order of ``preds``. Refuses (MedcapError, nothing written) when the result would
    break a rule of ``edition`` (default the latest): a bad or duplicate CUI, more than 100
    CUIs for an image, an ID that is not clean, or (with ``gold_ids``) IDs that differ from
    the gold file's.
    """
    rules, gold_ids = edition_rules(edition), _as_ids(gold_ids)
    lines = [",".join(CONCEPT_HEADER)]
    for image_id in _in_order(preds, gold_ids):
        cuis = preds[image_id]
        _check_id_for_writing(path, image_id)
        if isinstance(cuis, str):
            raise MedcapError(f"the CUIs of {image_id} must be a list, got the string {cuis!r}", file=path)
        bad = [c for c in cuis if not isinstance(c, str) or not CUI_PATTERN.fullmatch(c)]
        if bad:  # caught here, since "" or "C1;C2" would vanish into the joined field
            raise MedcapError(f"refusing to write an invalid submission: not a CUI ('C' followed by digits) "
                              f"for {image_id}: {', '.join(map(repr, bad[:_MAX_EXAMPLES]))}", file=path)
        lines.append(f"{image_id},{';'.join(cuis)}")
    text = "\n".join(lines) + "\n"
    violations: list[Violation] = []
    _concept_violations(text, gold_ids, allow_empty, rules, violations)
    _refuse(path, violations)
    return _write(path, text)


# ---------------------------------------------------------------------------------------
# Caption submissions
# ---------------------------------------------------------------------------------------

def _caption_violations(text: str, gold_ids, rules: EditionRules, violations: list[Violation]) -> dict[str, str]:
    records = _parse(text, CAPTION_HEADER, violations)
    rows = _check_rows(records, "Caption", gold_ids, rules, violations)
    captions: dict[str, str] = {}
    for image_id, r in rows.items():
        caption = r.fields[1] if len(r.fields) > 1 else ""
        captions[image_id] = caption
        if len(r.fields) != 2:
            continue
        if caption != caption.strip() and not rules.caption_edge_spaces:
            violations.append(Violation(r.line, f"the caption has leading or trailing spaces (the {rules.year} "
                                                "rules allow none)"))
        if "\n" in r.raw.rstrip("\r\n") or "\r" in r.raw.rstrip("\r\n"):
            violations.append(Violation(r.line, "the caption contains a line break (or a '\"' is never closed); the "
                                                "official checker reads the file line by line: replace line breaks "
                                                "with spaces"))
            continue
        # The official checker looks at the raw line: a caption with a comma must be quoted.
        after_id = r.raw.rstrip("\r\n").split(",", 1)[1]
        if "," in after_id and not (after_id.startswith('"') and after_id.endswith('"')):
            violations.append(Violation(r.line, "the caption contains a comma but is not enclosed in double quotes"))
    return captions


def check_caption_submission(path: str | Path, gold_ids: Iterable[str] | None = None, *,
                             edition=None) -> tuple[dict[str, str], list[Violation]]:
    """Read a caption submission and list every broken rule: ``(captions, violations)``.

    ``gold_ids`` and ``edition`` as in :func:`check_concept_submission`.
    """
    violations: list[Violation] = []
    text = _decode(_read_bytes(path), violations)
    captions = _caption_violations(text, gold_ids, edition_rules(edition), violations)
    return captions, _sorted(violations)


def validate_caption_submission(path: str | Path, gold_ids: Iterable[str] | None = None, *,
                                edition=None) -> list[Violation]:
    """Every official rule the caption submission at ``path`` breaks, with line numbers."""
    return check_caption_submission(path, gold_ids, edition=edition)[1]


def read_caption_submission(path: str | Path, gold_ids: Iterable[str] | None = None, *,
                            edition=None) -> dict[str, str]:
    """``{ID: caption}`` from a valid caption submission; MedcapError if it breaks a rule."""
    captions, violations = check_caption_submission(path, gold_ids, edition=edition)
    _raise_first(path, violations)
    return captions


def clean_caption(caption: str) -> str:
    """Line breaks and runs of spaces become one space; no spaces at the ends.

    No official score changes: every caption metric splits words on whitespace.
    """
    return " ".join(caption.split())


def write_caption_submission(path: str | Path, captions: Mapping[str, str], *,
                             gold_ids: Iterable[str] | None = None, edition=None) -> Path:
    """Write ``{ID: caption}`` as an official caption submission, atomically.

    Every caption is enclosed in double quotes (quotes inside are doubled) and passed
    through :func:`clean_caption`, since the official checkers reject line breaks (and, in
    2025, spaces at the ends). Rows follow ``gold_ids`` when given, else the order of
    ``captions``. Refuses (MedcapError, nothing written) an ID that is not clean or, with
    ``gold_ids``, IDs that differ from the gold file's.
    """
    rules, gold_ids = edition_rules(edition), _as_ids(gold_ids)
    lines = [",".join(CAPTION_HEADER)]
    for image_id in _in_order(captions, gold_ids):
        caption = captions[image_id]
        _check_id_for_writing(path, image_id)
        if not isinstance(caption, str):
            raise MedcapError(f"the caption of {image_id} must be a string, got {type(caption).__name__}", file=path)
        quoted = clean_caption(caption).replace('"', '""')
        lines.append(f'{image_id},"{quoted}"')
    text = "\n".join(lines) + "\n"
    violations: list[Violation] = []
    _caption_violations(text, gold_ids, rules, violations)
    _refuse(path, violations)
    return _write(path, text)


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------

def _as_ids(gold_ids: Iterable[str] | None):
    """A set stays a set (no order to check); any other iterable becomes a list, read once."""
    if gold_ids is None or isinstance(gold_ids, (set, frozenset)):
        return gold_ids
    return list(gold_ids)


def _in_order(rows: Mapping, order: Iterable[str] | None) -> list:
    """The keys of ``rows`` in ``order`` (a sequence), then any others (reported as extra
    by the validator); a set or None keeps the order of ``rows``."""
    if order is None or isinstance(order, (set, frozenset)):
        return list(rows)
    wanted = [i for i in dict.fromkeys(order) if i in rows]
    listed = set(wanted)
    return wanted + [i for i in rows if i not in listed]


def _check_id_for_writing(path, image_id) -> None:
    # IDs are written unquoted, as in the official example files.
    if not isinstance(image_id, str) or not image_id or image_id != image_id.strip() \
            or any(ch in image_id for ch in ',"\r\n'):
        raise MedcapError(f"refusing to write the image ID {image_id!r}: it must be a non-empty string "
                          "without commas, quotes, line breaks or spaces at the ends", file=path)


def _sorted(violations: list[Violation]) -> list[Violation]:
    # File-level problems last, the others in file order (stable for equal lines).
    return sorted(violations, key=lambda v: (v.line is None, v.line or 0))


def _refuse(path, violations: list[Violation]) -> None:
    if violations:
        v = _sorted(violations)[0]
        where = "" if v.line is None else f"line {v.line}: "
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        raise MedcapError(f"refusing to write an invalid submission: {where}{v.message}{more}", file=path)


def _raise_first(path, violations: list[Violation]) -> None:
    if violations:
        v = violations[0]
        more = ""
        if len(violations) > 1:
            more = f" (and {len(violations) - 1} more; run `medcap validate` to list them all)"
        raise MedcapError(v.message + more, file=path, line=v.line)


def _write(path: str | Path, text: str) -> Path:
    # newline="": the "\n" line ends are written as they are, UTF-8 without BOM.
    with atomic_write(path, newline="") as f:
        f.write(text)
    return Path(path)
