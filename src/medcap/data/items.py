"""Lists of images to read (a dataset split or plain files) and the torch Dataset over them."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import MedcapError
from .transforms import resize_image


class ImageFolderItems:
    """A list of images to read: (ID, loader) pairs over a medcap Split or plain files."""

    def __init__(self, ids: list[str], load: Callable[[str], Any], source=None):
        # source: the Split the images come from (where they are: medcap.data.streaming), or None
        self.ids, self.load, self.source = ids, load, source

    @classmethod
    def from_split(cls, split, ids: list[str] | None = None) -> "ImageFolderItems":
        return cls(list(split.ids if ids is None else ids), split.load_image, split)

    @classmethod
    def from_images(cls, images) -> "ImageFolderItems":
        """What the predict functions take: a folder or file path, a PIL image or numpy array, or a
        list of any of these. In-memory images get the IDs ``image-1``, ``image-2``, ... (their
        place in the list); a path's images, their file names without extension."""
        from .images import is_image_object, list_images, load_image, to_rgb_image

        if isinstance(images, cls):
            return images
        many = not isinstance(images, (str, Path)) and not is_image_object(images) and hasattr(images, "__iter__")
        given = list(images) if many else [images]
        if not any(is_image_object(x) for x in given):
            return cls.from_files(list_images(given))
        sources: dict[str, Any] = {}
        for n, x in enumerate(given, 1):
            # Pairs, not a dict: two files of one folder with one stem (a.png, a.jpg) clash too.
            found = [(f"image-{n}", x)] if is_image_object(x) else [(p.stem, p) for p in list_images(x)]
            for image_id, src in found:
                if image_id in sources:
                    first, here = (s if isinstance(s, Path) else f"in-memory image {image_id}"
                                   for s in (sources[image_id], src))
                    raise MedcapError(f"two images share the ID {image_id!r}: {first} and {here}")
                sources[image_id] = src

        def load(image_id: str, **kw):
            src = sources[image_id]
            return load_image(src, **kw) if isinstance(src, Path) else to_rgb_image(src, image_id)

        return cls(list(sources), load)

    @classmethod
    def from_files(cls, paths: Sequence[Path]) -> "ImageFolderItems":
        from .images import load_image

        by_id: dict[str, Path] = {}
        for p in paths:
            if p.stem in by_id:  # the ImageCLEF ID is the file name without extension
                raise MedcapError(f"two images share the ID {p.stem!r}: {by_id[p.stem]} and {p}")
            by_id[p.stem] = p
        return cls(list(by_id), lambda image_id, **kw: load_image(by_id[image_id], **kw))


class ConceptImageDataset:
    """torch Dataset: item i -> (uint8 image [3, S, S], target [K] float32, i).

    ``mirror``: a :class:`LateralMirror` (training only): half of the images are flipped left to
    right and their side labels swapped with them.
    """

    def __init__(self, items: ImageFolderItems, prep: dict, targets: np.ndarray | None = None,
                 augment: Callable | None = None, cache: bool = False, mirror: "LateralMirror | None" = None):
        self.items, self.prep, self.targets, self.augment, self.mirror = items, prep, targets, augment, mirror
        self._cache: dict[int, Any] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.items.ids)

    def image(self, i: int):
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        # draft_size: JPEGs decode at the smallest DCT scale that still covers the input size.
        draft = self.prep.get("draft_size") or self.prep["image_size"]
        img = resize_image(self.items.load(self.items.ids[i], draft_size=draft), self.prep)
        if self._cache is not None:
            self._cache[i] = img
        return img

    def __getitem__(self, i: int):
        import torch

        x = self.image(i)
        if self.augment is not None:
            x = self.augment(x)
        y = torch.from_numpy(self.targets[i]) if self.targets is not None else torch.zeros(0)
        if self.mirror is not None:
            x, y = self.mirror(x, y)
        return x, y, i


class LateralMirror:
    """Flip an image left to right with probability ``p`` and swap the target columns of each
    side pair with it (a "Right" finding is on the other side of a mirrored image).

    A plain horizontal flip would teach a detector that predicts sides the wrong side half of the
    time; with the swap, every training image counts twice for the findings, and the sides stay
    right. ``pairs``: (column, column) of the targets, e.g. Right <-> Left.
    """

    def __init__(self, pairs: Sequence[tuple[int | None, int | None]], p: float = 0.5):
        # None: that side is not in the vocabulary (its column is taken as all zeros)
        self.pairs, self.p = [tuple(pair) for pair in pairs], p

    def __call__(self, x, y):
        import torch

        if torch.rand(()) >= self.p:
            return x, y
        x = x.flip(-1)
        if self.pairs and y.numel():
            old, y = y, y.clone()
            for a, b in self.pairs:
                if a is not None:
                    y[a] = old[b] if b is not None else 0
                if b is not None:
                    y[b] = old[a] if a is not None else 0
        return x, y
