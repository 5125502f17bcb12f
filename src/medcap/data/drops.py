"""What training leaves out of a split, said before training starts (never silently).

A label row is dropped when its image is not there, or when it is malformed: a path-like
ID (``../../outside/x``, ``a/b``) never names an image of the split's folder, and a row of
more than 100 CUIs (the organisers' cap per image) is no image's concepts: its CUIs would
enlarge the vocabulary. Duplicate and otherwise malformed rows are refused by the strict CSV
readers (:func:`~.dataset.read_dataset`) before this point, so here they count 0 unless a
reader let one through. More than
``MAX_DROPPED`` of the rows dropped is refused unless ``allow_missing_images`` is set: a
training set that lost most of its rows trains, scores and ships a different model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..editions import MAX_CONCEPTS_PER_IMAGE
from ..errors import MedcapError
from .split import Split

MAX_DROPPED = 0.01  # share of label rows; above it training refuses (allow_missing_images=true overrides)


def is_path_like(image_id: str) -> bool:
    """An ID that is a path (separators, ``..``, a NUL), not a name: malformed."""
    return any(c in image_id for c in ("/", "\\", "\x00")) or image_id in (".", "..") or image_id.startswith("~")


@dataclass
class Drops:
    split: str
    rows: int                                    # label rows read
    missing: list[str] = field(default_factory=list)     # well-formed IDs without an image
    malformed: list[str] = field(default_factory=list)   # path-like IDs, rows over 100 CUIs
    duplicates: int = 0
    lost_concepts: list[str] = field(default_factory=list)  # CUIs only in dropped rows

    @property
    def dropped(self) -> int:
        return len(self.missing) + len(self.malformed) + self.duplicates

    def line(self) -> str:
        """The one summary line."""
        share = self.dropped / self.rows if self.rows else 0.0
        text = (f"{self.split}: {self.rows - self.dropped:,} of {self.rows:,} label rows used, {self.dropped:,} "
                f"dropped ({share:.1%}): {len(self.missing):,} without an image, {self.duplicates:,} duplicate IDs, "
                f"{len(self.malformed):,} malformed (path-like ID or over {MAX_CONCEPTS_PER_IMAGE} CUIs)")
        examples = (self.malformed or self.missing)[:3]
        if examples:
            text += f" (e.g. {', '.join(repr(i[:60]) for i in examples)})"
        text += f"; {len(self.lost_concepts):,} concepts appear only in dropped rows"
        if self.lost_concepts:
            text += f" (e.g. {', '.join(self.lost_concepts[:5])})"
        return text


def split_drops(split: Split, labels: dict | None = None, concept_rows: bool = True) -> Drops:
    """The label rows of ``split`` that training cannot use; ``labels``: ID -> CUIs, for the
    concepts that only dropped rows carry (the split's concepts when None). ``concept_rows``:
    count the concept rows refused for over 100 CUIs (False for a captioner that does not read
    concepts: the image and its caption are still used)."""
    labels = split.concepts if labels is None else labels
    ids = set(split.ids)
    dropped = [i for i in split.missing_images if i not in ids]
    refused = split.malformed_rows if concept_rows else {}  # over 100 CUIs: never in split.concepts (data.csvio)
    drops = Drops(split.name, len(split.ids) + len(dropped) + sum(i not in ids for i in refused))
    dropped_set = set(dropped)
    for i in dropped:
        (drops.malformed if is_path_like(i) else drops.missing).append(i)
    drops.malformed += [i for i in refused if i not in dropped_set]
    if (labels and dropped) or refused:
        kept = {c for i in split.ids for c in (labels or {}).get(i, ())}
        lost = {c for i in dropped for c in (labels or {}).get(i, ())}
        lost.update(c for cuis in refused.values() for c in cuis)
        drops.lost_concepts = sorted(lost - kept)
    return drops


def check_drops(split: Split, allow: bool, log: Callable[[str], None] = print, labels: dict | None = None,
                concept_rows: bool = True) -> Drops:
    """Log the summary line (when a row is dropped); refuse when more than 1% of the rows are
    dropped (unless ``allow``)."""
    drops = split_drops(split, labels, concept_rows)
    if drops.dropped:
        log(drops.line())
    if drops.rows and drops.dropped / drops.rows > MAX_DROPPED and not allow:
        raise MedcapError(f"{drops.dropped:,} of {drops.rows:,} label rows of the {split.name} split "
                          f"({drops.dropped / drops.rows:.1%}) cannot be used: {len(drops.missing):,} have no image, "
                          f"{len(drops.malformed):,} have a malformed row (a path-like ID or over "
                          f"{MAX_CONCEPTS_PER_IMAGE} CUIs); more than {MAX_DROPPED:.0%} is refused. Fix the data "
                          "(`medcap data check`) or pass --set allow_missing_images=true",
                          file=split.image_dir)
    return drops
