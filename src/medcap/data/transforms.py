"""Image tensors for the models: resize a PIL image to a uint8 tensor, normalise a batch.

The preprocessing dict (``image_size``, ``resize``, ``mean``, ``std``) is what a concept model
folder stores, so prediction does to an image exactly what training did.
"""
from __future__ import annotations

import numpy as np


def resize_image(img, prep: dict):
    """PIL RGB -> uint8 tensor [3, S, S] (squashed or letterboxed to S x S)."""
    import torch
    from PIL import Image, ImageOps

    size = int(prep["image_size"])
    if prep.get("resize", "squash") == "pad":
        img = ImageOps.pad(img, (size, size), method=Image.BILINEAR, color=(0, 0, 0))
    else:
        img = img.resize((size, size), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def normalize_batch(x, prep: dict):
    """uint8 [B, 3, S, S] -> float model input: /255, then ImageNet mean/std when set."""
    import torch

    x = x.float().div_(255)
    if prep.get("mean") is not None:
        mean = torch.tensor(prep["mean"], device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(prep["std"], device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
    return x
