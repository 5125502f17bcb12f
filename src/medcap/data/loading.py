"""How images reach the model: data-loader workers, and sharding prediction across processes.

**Workers.** ``num_workers: auto`` (every config's default, and ``--workers`` of the prediction
commands) decodes images in ``min(cores - 1, 8)`` worker processes beside the model, as timm's
``-j/--workers``; a handful of images (fewer than :data:`FEW_IMAGES`) is read in the main process,
where starting workers would cost more than it saves. Each image is decoded and resized by itself,
and the loader keeps the batches in order, so the results do not depend on the number of workers.
On a GPU the batches are pinned and prefetched; in training the workers persist across epochs.

**Processes.** Under ``accelerate launch`` (or torchrun) the prediction commands split the images
into one contiguous block of whole batches per process, in order (Accelerate's
``split_between_processes``); each
process predicts its block and :func:`gather_in_order` joins the blocks in rank order, so every
process holds the results of all images in the one-process order, and only the main process
writes files (:func:`is_main_process`).
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import MedcapError

__all__ = ["FEW_IMAGES", "auto_workers", "gather_in_order", "image_batches", "is_main_process", "loader_options",
           "process_shard", "resolve_workers", "sharded_prediction", "worker_errors", "world_size"]

FEW_IMAGES = 64     # below this many images, workers cost more to start than they save
MAX_AUTO_WORKERS = 8


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def auto_workers() -> int:
    """``auto``: one core for the main process (the model), the rest decode, at most 8."""
    return max(0, min(available_cores() - 1, MAX_AUTO_WORKERS))


def resolve_workers(setting: int | str | None, n_images: int | None = None) -> int:
    """A ``num_workers`` setting (an int, or ``auto``/None) -> the number of loader workers."""
    if setting is None or (isinstance(setting, str) and setting.strip().lower() == "auto"):
        if n_images is not None and n_images < FEW_IMAGES:
            return 0
        return auto_workers()
    try:
        n = int(setting)
    except (TypeError, ValueError):
        raise MedcapError(f"num_workers: expected a number of workers or 'auto', got {setting!r}") from None
    if n < 0:
        raise MedcapError(f"num_workers: expected 0 or more workers, or 'auto', got {n}")
    return n


def loader_options(workers: int, device: Any = None, train: bool = False) -> dict:
    """DataLoader keyword arguments for ``workers`` workers feeding ``device``.

    Pinned host memory lets the copy to a GPU run asynchronously; 4 batches in flight per worker
    (PyTorch's default is 2) keep a fast GPU fed through uneven decode times; persistent workers
    save restarting them (and re-importing torch in each) at every epoch.
    """
    import torch

    kind = getattr(device, "type", None) or (str(device).split(":")[0] if device is not None else None)
    on_gpu = kind == "cuda" or (kind is None and torch.cuda.is_available())
    opts: dict = {"num_workers": workers, "pin_memory": on_gpu}
    if workers > 0:
        if on_gpu:
            opts["prefetch_factor"] = 4
        if train:
            opts["persistent_workers"] = True
    return opts


@contextlib.contextmanager
def worker_errors() -> Iterator[None]:
    """Around the iteration of a DataLoader: a MedcapError raised in a worker (an unreadable image)
    reaches the user as its own one line, not as PyTorch's re-raised copy carrying the worker's
    traceback in its message."""
    try:
        yield
    except MedcapError as e:
        marker = "MedcapError: "
        if "DataLoader worker" not in e.message or marker not in e.message:
            raise
        raise MedcapError(e.message.rsplit(marker, 1)[1].strip()) from None


class _Images:
    """The decoded images (PIL) of items ``ids``, one per index: a dataset for :func:`image_batches`."""

    def __init__(self, items, ids: Sequence[str]):
        self.items, self.ids = items, ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        return self.items.load(self.ids[i])


def _as_list(batch: list) -> list:
    return batch


def image_batches(items, rows: range, batch_size: int, workers: int):
    """Batches (lists of PIL images, in order) of ``items.ids[rows]``, decoded by ``workers`` processes
    (for models that take PIL images, such as the captioner's processor)."""
    import torch

    return torch.utils.data.DataLoader(_Images(items, items.ids[rows.start:rows.stop]), batch_size=batch_size,
                                       collate_fn=_as_list, **loader_options(workers, "cpu"))


# --------------------------------------------------------------------------- several processes
_SHARDING = False


@contextlib.contextmanager
def sharded_prediction() -> Iterator[None]:
    """Within this block, prediction (``medcap.inference.concepts.map_images`` and captioning) splits its images
    across the processes of an ``accelerate launch``; every process must enter it. Outside it (e.g.
    training, where ranks may predict on their own), each process predicts every image it is given."""
    global _SHARDING
    before, _SHARDING = _SHARDING, True
    try:
        yield
    finally:
        _SHARDING = before


def world_size() -> int:
    """Processes started by ``accelerate launch``/torchrun (1 otherwise), from their environment."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def _state(device: Any = None):
    from accelerate import PartialState

    kind = getattr(device, "type", None) or (str(device).split(":")[0] if device is not None else None)
    # cpu=True: join the processes with gloo even where a GPU is present (``--device cpu``).
    return PartialState(cpu=kind == "cpu")


def is_main_process() -> bool:
    """False in every process but the first of a distributed launch (which alone writes files)."""
    if world_size() <= 1:
        return True
    return int(os.environ.get("RANK", "0")) == 0


def process_shard(n: int, device: Any = None, batch_size: int = 1) -> range:
    """The indices of ``n`` items this process predicts: all of them, or inside
    :func:`sharded_prediction` under a distributed launch, this rank's contiguous block of whole
    batches. Whole batches: every batch holds the images it holds in a one-process run, so even
    kernels whose rounding depends on the batch give the one-process numbers."""
    if not _SHARDING or world_size() <= 1:
        return range(n)
    state = _state(device)
    batches = -(-n // max(1, batch_size))
    with state.split_between_processes(list(range(batches))) as mine:
        if not mine:
            return range(0)
        return range(mine[0] * batch_size, min(n, (mine[-1] + 1) * batch_size))


def gather_in_order(values: Sequence, device: Any = None) -> list:
    """This process's results (in its block's order) -> every process's, in rank order: the
    results of all items in their one-process order (a no-op outside a sharded launch)."""
    if not _SHARDING or world_size() <= 1:
        return list(values)
    from accelerate.utils import gather_object

    _state(device)
    return list(gather_object(list(values)))
