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
first one as the official scripts do (the first 1,000 in detail, then their count). Files are
read line by line (:mod:`medcap.data.checker_csv`) in bounded memory: kept are the values of
the gold IDs, or, without gold IDs, of every row within a memory cap
(:data:`medcap.data.textlines.MAX_TABLE_BYTES`; a larger file is a one-line error). The
writers build the file in memory, validate it with the same code and refuse (``MedcapError``)
to write anything that breaks a rule. Given gold IDs (or an ID-order file,
:func:`read_id_order`), they write the rows in that order; otherwise in the order of the
mapping they get (the order the images were listed).
"""
from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from .data.checker_csv import Found, Record, Violation, Violations, records, submission_lines
from .data.csvio import CUI_PATTERN
from .data.textlines import MemoryBudget
from .editions import MAX_CONCEPTS_PER_IMAGE, EditionRules, edition_rules
from .errors import MedcapError
from .fileio import atomic_write

__all__ = ["MAX_CONCEPTS_PER_IMAGE", "Violation", "Violations"]  # and the public functions below

CONCEPT_HEADER = ("ID", "CUIs")
CAPTION_HEADER = ("ID", "Caption")
_CLEAN_CUIS = re.compile(r"C\d+(?:;C\d+)*")
_MAX_EXAMPLES = 5
_MAX_UNKNOWN = 100_000   # IDs not in the gold file remembered for "appears again" (their values are not kept)


def _check_rows(records: Iterable[Record], what: str, gold_ids: Iterable[str] | None, rules: EditionRules,
                found: Found, check_value: Callable[[str, Record, Found], object], path) -> dict:
    """Rules common to both kinds: two fields, IDs clean, unique, expected and (2026) in gold
    order; ``check_value`` checks a row's CUIs or caption and gives the value kept. Kept:
    the values of the gold IDs (of every ID without gold IDs), within a :class:`MemoryBudget`."""
    gold_ids = _as_ids(gold_ids)
    expected = None if gold_ids is None else set(gold_ids)
    values: dict[str, object] = {}
    lines: dict[str, int] = {}     # ID -> first line, for the IDs kept
    unknown: dict[str, int] = {}   # the same for the first _MAX_UNKNOWN IDs not in the gold file
    budget = MemoryBudget(path)
    for r in records:
        if len(r.fields) != 2:
            hint = f" (write 'ID,' for an image without {what})" if len(r.fields) == 1 and what == "CUIs" else ""
            found.add(r.line, f"expected 2 fields (ID,{what}), found {len(r.fields)}{hint}")
        image_id = r.fields[0]
        if not image_id.strip():
            found.add(r.line, "empty image ID")
            continue
        if image_id != image_id.strip():
            found.add(r.line, f"the ID {image_id!r} has leading or trailing spaces")
            image_id = image_id.strip()  # one problem, one message: not also "unknown ID" and "missing"
        first_line = lines.get(image_id) or unknown.get(image_id)
        if first_line is not None:
            found.add(r.line, f"the ID {image_id} appears again (first on line {first_line})")
            continue
        if expected is not None and image_id not in expected:
            found.add(r.line, f"the ID {image_id} is not in the gold file")
            if len(unknown) < _MAX_UNKNOWN:
                unknown[image_id] = r.line
            check_value(image_id, r, found)  # its own rules still apply; its value is not kept
            continue
        lines[image_id] = r.line
        values[image_id] = value = check_value(image_id, r, found)
        budget.charge_row(r.line, image_id, value)
    # A set carries no order: only a sequence of gold IDs (a gold file's) is checked for it.
    if expected is not None and rules.ordered_ids and not isinstance(gold_ids, (set, frozenset)):
        _check_order(lines, list(gold_ids), rules.year, found)
    if expected is not None:
        missing = sorted(i for i in expected if i not in lines)
        if missing:
            examples = ", ".join(missing[:_MAX_EXAMPLES]) + (", ..." if len(missing) > _MAX_EXAMPLES else "")
            found.add(None, f"{len(missing)} of the {len(expected)} gold IDs have no row: {examples}")
    return values


def _check_order(lines: dict[str, int], gold_ids: list[str], year: int, found: Found) -> None:
    """Flag the fewest rows that break the gold order: those outside a longest run of rows
    whose gold positions increase (the official pre-check stops at the first mismatch)."""
    gold_ids = list(dict.fromkeys(gold_ids))
    position = {image_id: k for k, image_id in enumerate(gold_ids)}
    rows = [(position[i], line) for i, line in lines.items() if i in position]  # file order
    for k in _outside_increasing_run([p for p, _ in rows]):
        p, line = rows[k]
        found.add(line, f"the ID {gold_ids[p]} is out of order: the {year} rules want the rows in the gold "
                        f"file's order (it is gold ID number {p + 1})", found.ORDER)


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
        budget = MemoryBudget(path)
        # A BOM and bytes that are not UTF-8 are no rule here: the Found is dropped.
        for number, fields in enumerate(csv.reader(submission_lines(path, Found())), start=1):
            image_id = fields[0].strip() if fields else ""
            if not image_id or (number == 1 and image_id == "ID") or image_id in order:
                continue
            order[image_id] = None
            budget.charge(number, image_id)
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


# ---------------------------------------------------------------------------------------
# Concept submissions
# ---------------------------------------------------------------------------------------

def _concept_violations(lines: Iterable[str], gold_ids, allow_empty: bool, rules: EditionRules, found: Found,
                        path) -> dict[str, list[str]]:
    def check(image_id: str, r: Record, found: Found) -> list[str]:
        field = r.fields[1] if len(r.fields) > 1 else ""
        n_lines = r.raw.rstrip("\r\n").count("\n") + 1
        if n_lines > 1:
            found.add(r.line, f"the row spans {n_lines} lines: a '\"' that is never closed?", found.VALUE)
            return []
        if _CLEAN_CUIS.fullmatch(field):  # the usual case, checked in one go
            cuis = field.split(";")
            if len(cuis) <= rules.max_concepts and len(set(cuis)) == len(cuis):
                return cuis
        if field != field.strip():
            found.add(r.line, "the CUIs field has leading or trailing spaces", found.VALUE)
        if not field.strip():
            if not allow_empty:
                found.add(r.line, f"no CUIs for {image_id} (--no-empty asks for at least one)", found.VALUE)
            return []
        cuis = [c.strip() for c in field.split(";")]
        if any(not c for c in cuis):
            found.add(r.line, "empty CUI (a trailing ';' or ';;')", found.VALUE)
        bad = [c for c in cuis if c and not CUI_PATTERN.fullmatch(c)]
        if bad:
            shown = ", ".join(map(repr, bad[:_MAX_EXAMPLES]))
            found.add(r.line, f"not a CUI ('C' followed by digits): {shown}", found.VALUE)
        counts = Counter(c for c in cuis if c)
        duplicates = sorted(c for c, n in counts.items() if n > 1)
        if duplicates:
            found.add(r.line, f"CUI given more than once: {', '.join(duplicates)}", found.VALUE)
        if len(cuis) > rules.max_concepts:
            found.add(r.line, f"{len(cuis)} CUIs; at most {rules.max_concepts} per image", found.VALUE)
        return [c for c in cuis if c]

    return _check_rows(records(lines, CONCEPT_HEADER, found), "CUIs", gold_ids, rules, found, check, path)


def check_concept_submission(path: str | Path, gold_ids: Iterable[str] | None = None, *,
                             allow_empty: bool = True, edition=None) -> tuple[dict[str, list[str]], list[Violation]]:
    """Read a concept submission and list every broken rule: ``(predictions, violations)``.

    ``gold_ids`` (the IDs of the gold file, in its order: primary, then manual-only) adds the
    every-ID-exactly-once check and, for 2026, the order check (a set skips the order).
    ``edition``: a year (default the latest) or :class:`~medcap.editions.EditionRules`.
    """
    found = Found()
    preds = _concept_violations(submission_lines(path, found), gold_ids, allow_empty, edition_rules(edition), found,
                                path)
    return preds, found.result()


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
    found = Found()
    _concept_violations(io.StringIO(text, newline=""), gold_ids, allow_empty, rules, found, path)
    _refuse(path, found.result())
    return _write(path, text)


# ---------------------------------------------------------------------------------------
# Caption submissions
# ---------------------------------------------------------------------------------------

def _caption_violations(lines: Iterable[str], gold_ids, rules: EditionRules, found: Found, path) -> dict[str, str]:
    def check(image_id: str, r: Record, found: Found) -> str:
        caption = r.fields[1] if len(r.fields) > 1 else ""
        if len(r.fields) != 2:
            return caption
        if caption != caption.strip() and not rules.caption_edge_spaces:
            found.add(r.line, f"the caption has leading or trailing spaces (the {rules.year} rules allow none)",
                      found.VALUE)
        raw = r.raw.rstrip("\r\n")
        if "\n" in raw or "\r" in raw:
            found.add(r.line, "the caption contains a line break (or a '\"' is never closed); the official checker "
                              "reads the file line by line: replace line breaks with spaces", found.VALUE)
            return caption
        # The official checker looks at the raw line: a caption with a comma must be quoted.
        after_id = raw.split(",", 1)[1]
        if "," in after_id and not (after_id.startswith('"') and after_id.endswith('"')):
            found.add(r.line, "the caption contains a comma but is not enclosed in double quotes", found.VALUE)
        return caption

    return _check_rows(records(lines, CAPTION_HEADER, found), "Caption", gold_ids, rules, found, check, path)


def check_caption_submission(path: str | Path, gold_ids: Iterable[str] | None = None, *,
                             edition=None) -> tuple[dict[str, str], list[Violation]]:
    """Read a caption submission and list every broken rule: ``(captions, violations)``.

    ``gold_ids`` and ``edition`` as in :func:`check_concept_submission`.
    """
    found = Found()
    captions = _caption_violations(submission_lines(path, found), gold_ids, edition_rules(edition), found, path)
    return captions, found.result()


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
    found = Found()
    _caption_violations(io.StringIO(text, newline=""), gold_ids, rules, found, path)
    _refuse(path, found.result())
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


def _refuse(path, violations: Violations) -> None:
    if violations:
        v = violations[0]
        where = "" if v.line is None else f"line {v.line}: "
        more = f" (and {violations.total - 1} more)" if violations.total > 1 else ""
        raise MedcapError(f"refusing to write an invalid submission: {where}{v.message}{more}", file=path)


def _raise_first(path, violations: Violations) -> None:
    if violations:
        v = violations[0]
        more = ""
        if violations.total > 1:
            more = f" (and {violations.total - 1} more; run `medcap validate` to list them all)"
        raise MedcapError(v.message + more, file=path, line=v.line)


def _write(path: str | Path, text: str) -> Path:
    # newline="": the "\n" line ends are written as they are, UTF-8 without BOM.
    with atomic_write(path, newline="") as f:
        f.write(text)
    return Path(path)
