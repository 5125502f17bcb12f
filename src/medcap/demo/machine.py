"""The machine a demo runs on: how many cores other jobs leave free (torch threads), and
an environment that keeps every library's caches and temporary files inside the output folder."""
from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path


def busy_cores(interval: float = 0.5) -> float:
    """Cores other jobs keep busy now: CPU time not idle over ``interval`` seconds (/proc/stat).

    Where /proc/stat is missing, the 1-minute load average. The load average lags by a
    minute: right after ``make demo``'s install it still counts pip's work, which the
    sampled figure does not.
    """
    def sample():
        with open("/proc/stat", encoding="ascii") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return values[3] + values[4], sum(values)  # idle + iowait, total (clock ticks)

    try:
        idle0, total0 = sample()
        time.sleep(interval)
        idle1, total1 = sample()
        if total1 > total0:
            return (os.cpu_count() or 1) * (1 - (idle1 - idle0) / (total1 - total0))
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.getloadavg()[0]
    except OSError:  # not available on every platform
        return 0.0


def torch_threads() -> int:
    """Threads for torch: every core on an idle machine, fewer when other jobs use them.

    On a shared machine, two processes that each run a thread per core slow each other down
    several times over (threads wait for each other at every parallel region): measured here,
    a resnet18 step took 5.8 s with 2 threads and 2.9 s with 1 beside other jobs (load 4.5 on
    2 cores).
    """
    cores = os.cpu_count() or 1
    return max(1, min(cores, cores - int(busy_cores() + 0.5)))


@contextlib.contextmanager
def free_cores():
    """Run torch on :func:`torch_threads` threads inside the block (the old number after it)."""
    import torch

    before = torch.get_num_threads()
    threads = torch_threads()
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------
# Environment: nothing outside the output folder
# ---------------------------------------------------------------------------------------

@contextlib.contextmanager
def contained_in(out: Path):
    """Point the caches and temporary files of every library into ``out/.cache``."""
    cache = out / ".cache"
    tmp = cache / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env = {
        "HF_HOME": cache / "huggingface", "TORCH_HOME": cache / "torch", "MPLCONFIGDIR": cache / "matplotlib",
        "XDG_CACHE_HOME": cache, "TRITON_CACHE_DIR": cache / "triton", "GRADIO_TEMP_DIR": tmp,
        "TMPDIR": tmp, "TEMP": tmp, "TMP": tmp,
    }
    saved = {k: os.environ.get(k) for k in [*env, "HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM"]}
    saved_tempdir = tempfile.tempdir
    os.environ.update({k: str(v) for k, v in env.items()})
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the demo never needs the hub: never wait for it
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tempfile.tempdir = str(tmp)
    try:
        yield
    finally:
        tempfile.tempdir = saved_tempdir
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
