"""The one device rule: the device asked for, else the GPU when there is one, else the CPU.

Used by prediction (concepts and captions), baselines, the web app and the caption metrics;
training follows the same rule through Accelerate (``cpu: true`` forces the CPU).
"""
from __future__ import annotations


def device_name(device: str | None = None) -> str:
    """``device`` ("cpu", "cuda", "cuda:1", ...), or "cuda" when a GPU is there, else "cpu"."""
    if device:
        return str(device)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(device: str | None = None):
    """:func:`device_name` as a ``torch.device``."""
    import torch

    return torch.device(device_name(device))
