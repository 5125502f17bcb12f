"""One split of a dataset (its IDs, labels and image source) and the files found for it."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..errors import MedcapError
from .images import load_image


@dataclass
class Split:
    """One split of a dataset.

    ``ids``: the images to use, in a stable order. When the split has label files, these
    are the labelled IDs (concepts file order, then IDs only in the captions file) that
    have an image; labelled IDs without an image are in ``missing_images`` and images
    without a label row in ``unlabelled_images`` (ID -> file; ``medcap data check``
    reports both). Concept rows refused for their content (over 100 CUIs) are in
    ``malformed_rows`` (ID -> CUIs), never in ``concepts``.
    Without label files (a real test set), every image, sorted by file name. Without any
    image source (labels only), every labelled ID.

    ``image_paths``: ID -> file for the folder layout. ``image_bytes``: ID -> encoded
    bytes for the parquet layout. Use :meth:`load_image` to get either as RGB.
    """

    name: str
    ids: list[str]
    image_paths: dict[str, Path]
    concepts: dict[str, list[str]] | None = None
    captions: dict[str, str] | None = None
    manual_concepts: dict[str, list[str]] | None = None
    image_bytes: Mapping[str, bytes] | None = None
    missing_images: list[str] = field(default_factory=list)
    unlabelled_images: dict[str, Path] = field(default_factory=dict)
    image_dir: Path | None = None
    malformed_rows: dict[str, list[str]] = field(default_factory=dict)  # refused concept rows: ID -> CUIs

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:  # one short line, not every ID and label (dataclass's repr)
        labels = [k for k in ("concepts", "captions", "manual_concepts") if getattr(self, k) is not None]
        where = f", images in {self.image_dir}" if self.image_dir else ", images in parquet" if self.image_bytes else ""
        return f"<Split {self.name!r}: {len(self.ids)} images, labels: {', '.join(labels) or 'none'}{where}>"

    @property
    def has_labels(self) -> bool:
        return self.concepts is not None or self.captions is not None

    def image_ids(self) -> list[str]:
        """The split's IDs that have an image, in the split's order."""
        return [i for i in self.ids if self.has_image(i)]

    def labelled_ids(self, kind: str) -> list[str]:
        """The split's IDs that have an image and a row in its ``kind`` ("concepts" / "captions")
        file, in the split's order (none when the split has no such file)."""
        table = getattr(self, kind) or {}
        return [i for i in self.ids if i in table and self.has_image(i)]

    def has_image(self, image_id: str) -> bool:
        return image_id in self.image_paths or (self.image_bytes is not None and image_id in self.image_bytes)

    def image_source(self, image_id: str) -> Path | bytes:
        """The image's file path (folders) or encoded bytes (parquet)."""
        path = self.image_paths.get(image_id)
        if path is not None:
            return path
        if self.image_bytes is not None and image_id in self.image_bytes:
            return self.image_bytes[image_id]
        raise MedcapError(f"no image for ID {image_id!r} in split {self.name!r}")

    def load_image(self, image_id: str, **kwargs) -> Image.Image:
        """The image of ``image_id`` as 8-bit RGB (see :func:`medcap.data.images.load_image`)."""
        src = self.image_source(image_id)
        if isinstance(src, Path):
            return load_image(src, **kwargs)
        kwargs.setdefault("name", f"{self.name}/{image_id}")
        return load_image(src, **kwargs)


@dataclass
class SplitFiles:
    """The files found for one split (None where absent)."""

    name: str
    concepts: Path | None = None
    captions: Path | None = None
    manual: Path | None = None
    image_dir: Path | None = None
    parquet: list[Path] = field(default_factory=list)

    @property
    def csv_files(self) -> dict[str, Path]:
        return {k: v for k, v in (("concepts", self.concepts), ("captions", self.captions),
                                  ("manual", self.manual)) if v is not None}
