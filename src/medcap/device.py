"""The one device rule: the device asked for, else the GPU when there is one, else the CPU.

Used by prediction (concepts and captions), baselines, the web app and the caption metrics;
training follows the same rule through Accelerate (``cpu: true`` forces the CPU).
"""
from __future__ import annotations


def device_name(device: str | None = None) -> str:
    """``device`` ("cpu", "cuda", "cuda:1", ...), or "cuda" when a GPU is there, else "cpu".

    Under ``accelerate launch``/torchrun each process takes its own GPU (``cuda:LOCAL_RANK``, where
    Accelerate places it in training) for "cuda" or no device."""
    import os

    if device and (str(device) != "cuda" or int(os.environ.get("WORLD_SIZE", "1")) <= 1):
        return str(device)
    import torch

    if not torch.cuda.is_available():
        return str(device) if device else "cpu"
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cuda"


def resolve_device(device: str | None = None):
    """:func:`device_name` as a ``torch.device``."""
    import torch

    return torch.device(device_name(device))
