"""Atomic file and folder writes: a crash or a bad input never leaves half a file behind."""
from __future__ import annotations

import contextlib
import glob
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator


def _umask() -> int:
    """The process's umask. Linux reports it in /proc/self/status; elsewhere it can only be read by
    setting it, which for an instant changes it for every thread (a server writing files from
    several threads could then create one with 0666 / 0777 permissions)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8",
                 newline: str | None = None) -> Iterator:
    """Open a temporary file beside ``path``; rename it over ``path`` only on success."""
    path = Path(path)
    if path.is_dir():
        from .errors import MedcapError

        raise MedcapError("is a folder; expected the path of a file to write", file=path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
    try:
        kwargs = {} if "b" in mode else {"encoding": encoding, "newline": newline}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it replaces ``path`` only on success.

    The swap never loses both copies: the old folder is renamed to ``.NAME.old`` first, the new
    one takes its name, and only then is ``.NAME.old`` deleted. A crash between the two renames
    leaves ``.NAME.old`` and no ``NAME``; :func:`recover_dir` (run before the next use) puts it back.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        from .errors import MedcapError

        raise MedcapError("is a file; expected a folder (or a path that does not exist yet)", file=path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    try:
        yield tmp
        give_default_permissions(tmp)
        if path.exists():
            old = _old_of(path)
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def give_default_permissions(folder: str | Path) -> None:
    """Files and folders under ``folder`` get the permissions the user's umask gives new files
    (0644 / 0755 under the usual 022). Some writers create private files whatever the umask
    (safetensors' ``save_file`` makes 0600), so a teammate on a shared server could not load the
    model; executables keep their execute bits."""
    mask = _umask()
    for root, dirs, files in os.walk(folder):
        for name in files:
            p = os.path.join(root, name)
            if not os.path.islink(p):
                executable = os.stat(p).st_mode & 0o111
                os.chmod(p, (0o777 if executable else 0o666) & ~mask)
        for name in dirs:
            p = os.path.join(root, name)
            if not os.path.islink(p):
                os.chmod(p, 0o777 & ~mask)


def _old_of(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")


def recover_dir(path: str | Path, notice: Callable[[str], None] | None = None, debris: bool = True) -> list[str]:
    """Repair what a crash inside :func:`atomic_dir` left beside ``path``; returns the notices.

    A ``.NAME.old`` without ``NAME`` is the only good copy: it is renamed back (also done by the
    model loaders, ``debris=False``). With ``debris``, a ``.NAME.old`` beside ``NAME`` and
    unfinished ``.NAME.*.tmp`` folders are deleted: call that only when no other process is
    writing ``path`` (the run lock makes sure of it for training).
    """
    path = Path(path)
    done = []
    old = _old_of(path)
    if old.is_dir():
        if not path.exists():
            os.replace(old, path)
            done.append(f"restored {path} from {old.name} (an earlier run stopped while replacing it)")
        elif debris:
            shutil.rmtree(old, ignore_errors=True)
            done.append(f"removed {old} (left by an earlier run that stopped)")
    if debris and path.parent.is_dir():
        for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
            done.append(f"removed {tmp} (unfinished write of an earlier run that stopped)")
    for line in done:
        (notice or _stderr)(line)
    return done


def _stderr(line: str) -> None:
    print(f"notice: {line}", file=sys.stderr)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_write(path) as f:
        f.write(text)


def write_json(path: str | Path, data) -> None:
    """Indented UTF-8 JSON, written atomically."""
    import json

    write_text_atomic(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
