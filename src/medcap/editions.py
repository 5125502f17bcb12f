"""ImageCLEFmedical Caption editions: what changes from one year to the next (REFERENCE §4, §7).

One :class:`EditionRules` per year, in :data:`EDITIONS`. The submission validator
(:mod:`medcap.submission`) takes the rules as a parameter, the caption evaluation picks its
default aggregate from them (:mod:`medcap.metrics.editions`), and the data reader names the
edition of a dataset from its file or image names (:func:`infer_edition`).

Adding an edition is adding an entry here (and a caption preset if its score changed).
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import MedcapError

# The organisers' cap on CUIs per image (their checkers refuse more); label rows over it are
# malformed too (medcap.data.csvio).
MAX_CONCEPTS_PER_IMAGE = 100


@dataclass(frozen=True)
class EditionRules:
    """The submission rules and scoring defaults of one edition."""

    year: int
    ordered_ids: bool              # rows must follow the gold file's ID order (2026 pre-check)
    caption_edge_spaces: bool      # a caption may have spaces at its ends (2026: allowed)
    caption_preset: str            # default caption aggregate (medcap.metrics.editions.PRESETS)
    allow_empty_concepts: bool = True  # "ID," with no CUI is a valid row (both editions)
    max_concepts: int = MAX_CONCEPTS_PER_IMAGE  # per image, enforced by the evaluators
    development_images: int | None = None  # data facts, for the docs and `data stats`
    cuis: int | None = None


EDITIONS: dict[int, EditionRules] = {
    # REFERENCE §4: the 2025 checker does not look at the row order, and rejects spaces
    # around a caption.
    2025: EditionRules(2025, ordered_ids=False, caption_edge_spaces=False, caption_preset="public-2025",
                       cuis=2479),
    # REFERENCE §7: IDs in exactly the gold order; surrounding spaces in captions allowed.
    2026: EditionRules(2026, ordered_ids=True, caption_edge_spaces=True, caption_preset="2026",
                       development_images=116_604, cuis=2646),
}
LATEST_EDITION = max(EDITIONS)


def edition_rules(edition: int | str | EditionRules | None = None) -> EditionRules:
    """The rules of ``edition`` (a year; None = the latest). MedcapError for an unknown year."""
    if isinstance(edition, EditionRules):
        return edition
    if edition is None:
        return EDITIONS[LATEST_EDITION]
    try:
        year = int(edition)
    except (TypeError, ValueError):
        year = None
    if year not in EDITIONS:
        raise MedcapError(f"unknown edition {edition!r}; expected one of {', '.join(map(str, EDITIONS))}")
    return EDITIONS[year]


# File names (ImageCLEFmedical_Caption_2026_train_concepts.csv) and image IDs
# (ImageCLEFmedical_Caption_2026_train_000001) carry the year after this prefix.
_YEAR_IN_NAME = re.compile(r"imageclefmedical_caption_(\d{4})(?=[_\-.]|$)", re.IGNORECASE)


def infer_edition(names: Iterable[str]) -> str:
    """The edition year named by ``names`` (file names, image IDs), as a string;
    ``"unknown"`` when none names one or they disagree."""
    years = {m.group(1) for name in names for m in [_YEAR_IN_NAME.search(str(name))] if m}
    return years.pop() if len(years) == 1 else "unknown"
