"""Score tables: the one place that names the metrics and lays them out as text.

``medcap demo`` prints :func:`score_table`, the report draws the same rows
(:func:`score_rows`) as HTML, and ``medcap evaluate`` prints :func:`text_table`.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from .registry import AGGREGATE_TITLES, SCORERS

# Known metric keys, in the order score tables show them, with their column titles; the
# caption metrics are the scorer registry's (REFERENCE §4), then the aggregates.
CONCEPT_METRICS = {"primary_f1": "Primary F1", "secondary_f1": "Secondary F1"}
CAPTION_METRICS = {**{key: scorer.title for key, scorer in SCORERS.items()}, **AGGREGATE_TITLES}
# task -> (its metrics, the table's title, the metric that ranks the methods)
TASKS = {
    "concepts": (CONCEPT_METRICS, "Concept detection", "primary_f1"),
    "captions": (CAPTION_METRICS, "Caption prediction", "rouge1"),
}


def format_value(value, digits: int = 4) -> str:
    """A table cell: floats with ``digits`` decimals, "n/a" for a missing or NaN score."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def text_table(headers: Sequence[str], rows: Iterable[Sequence], numeric: Iterable[int] = (1,)) -> str:
    """A plain-text table; the ``numeric`` columns are right-aligned."""
    numeric = set(numeric)
    rows = [[format_value(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def score_columns(task: str, methods: Mapping[str, Mapping]) -> list[str]:
    """The ``task``'s metric keys that at least one method has a value for, in table order."""
    return [k for k in TASKS[task][0] if any(m.get(k) is not None for m in methods.values())]


def score_rows(task: str, methods: Mapping[str, Mapping]) -> tuple[list[str], list[list]]:
    """(headers, rows) of one task's score table: a row per method, a column per metric."""
    known = TASKS[task][0]
    keys = score_columns(task, methods)
    return ["Method"] + [known[k] for k in keys], [[name] + [m.get(k) for k in keys] for name, m in methods.items()]


def score_table(scores: Mapping[str, Mapping[str, Mapping]]) -> str:
    """Plain-text tables of ``{"concepts": {method: {metric: value}}, "captions": {...}}``."""
    blocks = []
    for task, (_, title, _) in TASKS.items():
        methods = scores.get(task) or {}
        if methods:
            headers, rows = score_rows(task, methods)
            blocks.append(text_table([title] + headers[1:], rows, numeric=range(1, len(headers))))
    return "\n\n".join(blocks) + "\n"
