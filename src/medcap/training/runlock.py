"""One training run per output folder: an advisory lock on ``OUT/.medcap.lock``.

Two runs writing one ``--out`` would each report the other's model as their own. The lock is
an ``flock`` on a file that also holds the owner's PID: the kernel drops it when the owner
exits in any way (kill -9 included), so a lock is never left held by a dead run. A lock file
whose PID is set but no longer held is the trace of a run that was killed; the next run takes
it over with a notice. The file is never deleted (deleting it would let a third run lock a new
file while a second still holds the old one).

Under ``accelerate launch`` only the main process takes the lock: the other processes write
into the folder only through the main process's checkpoint steps.
"""
from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

from ..errors import MedcapError

LOCK_FILE = ".medcap.lock"


class RunLock:
    """``with RunLock(folder):`` holds the folder for this process, or raises MedcapError at once."""

    def __init__(self, folder: str | Path, notice=None):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.notice = notice or (lambda line: print(f"notice: {line}", file=sys.stderr))
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"process {holder}" if holder else "another process"
            raise MedcapError(f"this folder is in use by another training run ({who}); wait for it to end, "
                              "stop it, or choose another --out", file=self.folder) from None
        stale = _read_pid(fd)
        if stale and stale != os.getpid():
            self.notice(f"took over the run lock of {self.folder} from process {stale}, which is no longer "
                        "running (an earlier run was killed)")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)  # an empty file: the run ended normally (nothing stale to report)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
