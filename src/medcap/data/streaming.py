"""Training order for parquet files with large row groups: row groups in random order, rows shuffled
within a bounded window, each stretch read by one data-loader worker of one process.

This is the streaming choice. A parquet row group written by ``DataFrame.to_parquet`` or
``pyarrow.parquet.write_table`` with their defaults holds a whole file (hundreds of MB). Picking
training images uniformly at random would read such a row group from its start for nearly every
image (parquet cannot seek to a row inside a row group), or hold all of it in memory.
:class:`RowGroupBatchSampler` instead gives the images in an order that reads every row group
forward, once per epoch, in bounded memory:

1. Each row group is cut into stretches of consecutive rows; the stretches are dealt, in a random
   order of their row groups, to ``workers x processes`` streams (one per data-loader worker of
   each process), so each stretch is read by one worker of one process only: the streaming data
   is sharded across workers and ranks.
2. Within a stream, rows are shuffled within windows of ``buffer_rows`` consecutive rows (a window
   fits in :attr:`ParquetImages.cache_bytes`), and cut into batches.
3. The streams' batches are interleaved in the order PyTorch hands batches to workers (round
   robin) and Accelerate to processes (batch ``i`` to rank ``i % processes``).

What this does to shuffling: every epoch sees the row groups in a new order and the images of a
window in a new order, but two images further apart in a file than ``buffer_rows`` never share a
batch, and a batch holds images of one stretch. Like ``datasets``' streaming mode
(``IterableDataset.shuffle(buffer_size)``, which shuffles shards and a buffer), it trades some
randomness for memory that does not grow with the row groups. Hugging Face ``datasets`` itself is
not used: it is not a dependency of medcap, it shards by file (a one-file split would feed one
worker only, ``split_dataset_by_node`` then has every rank read everything), and its streaming
dataset is iterable-only, while medcap's trainers and Accelerate shard map-style datasets by
batch. Files with small row groups (the ROCOv2 mirror's 100 rows) keep plain random order: a
random image costs reading its small row group.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

__all__ = ["RowGroupBatchSampler", "parquet_training_sampler"]


class RowGroupBatchSampler:
    """Batches of dataset indices in streaming order (module docstring). ``groups``: the dataset
    indices of each row group, in file order. Deterministic given ``seed`` and the epoch, so every
    process of a distributed run makes the same batches and takes its share."""

    def __init__(self, groups: Sequence[Sequence[int]], batch_size: int, buffer_rows: int, seed: int = 0,
                 drop_last: bool = False, workers: int = 0, processes: int = 1):
        self.groups = [list(g) for g in groups if len(g)]
        self.batch_size, self.seed, self.drop_last = batch_size, seed, drop_last
        self.buffer_rows = max(batch_size, buffer_rows)
        self.streams = max(1, workers) * max(1, processes)
        self.workers, self.processes = max(1, workers), max(1, processes)
        self.epoch = 0
        self.sampler = self  # Accelerate's DataLoaderShard.set_epoch reaches the sampler through .sampler

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _stretches(self) -> list[tuple[int, list[int]]]:
        """(row group, its rows) cut so that every stream gets work and a stretch is a whole
        number of windows (at least one)."""
        total = sum(len(g) for g in self.groups)
        size = max(self.buffer_rows, math.ceil(total / self.streams))
        size = math.ceil(size / self.buffer_rows) * self.buffer_rows
        return [(k, g[s:s + size]) for k, g in enumerate(self.groups) for s in range(0, len(g), size)]

    def _streams(self) -> list[list[tuple[int, list[int]]]]:
        """The stretches of each stream: dealt once (by ``seed``), so every epoch has the same
        number of batches; the epochs change their order and the order within windows."""
        stretches = self._stretches()
        deal = np.random.default_rng([self.seed]).permutation(len(stretches))
        streams: list[list[tuple[int, list[int]]]] = [[] for _ in range(self.streams)]
        for j, s in enumerate(deal):
            streams[j % self.streams].append(stretches[int(s)])
        return streams

    def _stream_batches(self, rng) -> list[list[list[int]]]:
        rank = {int(k): n for n, k in enumerate(rng.permutation(len(self.groups)))}
        out = []
        for stream in self._streams():
            # Row groups in this epoch's random order; the stretches of one row group forward.
            shuffled: list[int] = []
            for _, rows in sorted(stream, key=lambda st: (rank[st[0]], st[1][0])):
                for w in range(0, len(rows), self.buffer_rows):
                    window = rows[w:w + self.buffer_rows]
                    shuffled += [window[i] for i in rng.permutation(len(window))]
            batches = [shuffled[b:b + self.batch_size] for b in range(0, len(shuffled), self.batch_size)]
            if self.drop_last and batches and len(batches[-1]) < self.batch_size:
                batches.pop()
            out.append(batches)
        return out

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1  # a new order next time even where nobody calls set_epoch
        streams = self._stream_batches(rng)
        # Stream (rank r, worker w) = r * workers + w; global batch i goes to rank i % processes and,
        # in that rank, to worker (i // processes) % workers.
        rounds = max((len(s) for s in streams), default=0)
        for n in range(rounds):
            for w in range(self.workers):
                for r in range(self.processes):
                    s = streams[r * self.workers + w]
                    if n < len(s):
                        yield s[n]

    def __len__(self) -> int:
        sizes = [sum(len(st) for _, st in stream) for stream in self._streams()]
        if self.drop_last:
            return sum(n // self.batch_size for n in sizes)
        return sum(math.ceil(n / self.batch_size) for n in sizes)


def parquet_training_sampler(items, batch_size: int, seed: int, drop_last: bool, workers: int,
                             processes: int = 1) -> RowGroupBatchSampler | None:
    """The streaming batch sampler for training ``items`` (an ImageFolderItems) when they come from
    parquet files with a row group too large to read at once; None otherwise (plain random order)."""
    from .parquet import ParquetImages

    split = getattr(items, "source", None)
    images = getattr(split, "image_bytes", None)
    if not isinstance(images, ParquetImages):
        return None
    large = any(images.batch_rows(f, g) is not None for f, starts in enumerate(images.row_group_starts)
                for g in range(len(starts)))
    if not large:
        return None
    import bisect

    groups: dict[tuple[int, int], list[int]] = {}
    per_row = []
    for index, image_id in enumerate(items.ids):
        f, r = images.rows[image_id]
        g = bisect.bisect_right(images.row_group_starts[f], r) - 1
        groups.setdefault((f, g), []).append((r, index))
        batch = images.batch_rows(f, g)
        if batch is not None:
            per_row.append(batch)
    ordered = [[i for _, i in sorted(groups[k])] for k in sorted(groups)]
    # A window is four of the reader's batches: it stays in the cache (eight batches) while used.
    buffer_rows = 4 * min(per_row) if per_row else batch_size
    return RowGroupBatchSampler(ordered, batch_size, buffer_rows, seed, drop_last, workers, processes)
