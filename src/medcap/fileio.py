"""Atomic file and folder writes: a crash or a bad input never leaves half a file behind."""
from __future__ import annotations

import contextlib
import errno
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
    moved = False
    try:
        yield tmp
        give_default_permissions(tmp)
        if path.exists():
            old = _old_of(path)
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            moved = True
            os.replace(tmp, path)
            moved = False
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if moved:  # the second rename failed (a full or failing disk): put the previous folder back
            with contextlib.suppress(OSError):
                os.replace(_old_of(path), path)
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


# -- safe readers: a damaged artifact or a hostile folder is one line naming the path ----------
_READ_ERRORS = {
    errno.ELOOP: "a symbolic link loop (a link that points back to itself or to a folder above it)",
    errno.EACCES: "permission denied (cannot read it)",
    errno.EPERM: "permission denied (cannot read it)",
    errno.EIO: "input/output error (a damaged disk or a lost network mount)",
    errno.ENOENT: "not found",
    errno.EISDIR: "is a folder; expected a file",
    errno.ENOTDIR: "a part of this path is a file, not a folder",
    errno.ENAMETOOLONG: "the path is too long (a symbolic link loop?)",
}


def read_error(e: OSError, path: str | Path):
    """The MedcapError for an OSError met while reading ``path`` (it names the path)."""
    from .errors import MedcapError

    what = _READ_ERRORS.get(e.errno) or (e.strerror or type(e).__name__)
    return MedcapError(f"cannot read: {what}", file=e.filename if e.filename else path)


def read_bytes(path: str | Path, limit: int | None = None) -> bytes:
    """The bytes of a file (at most ``limit``: a larger file is an error), OSError -> one line."""
    from .errors import MedcapError

    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(-1 if limit is None else limit + 1)
    except OSError as e:
        raise read_error(e, path) from None
    if limit is not None and len(data) > limit:
        raise MedcapError(f"file too large (over {limit:,} bytes)", file=path)
    return data


def read_json(path: str | Path, expect: type | None = dict, limit: int = 256 << 20):
    """A JSON artifact: a truncated, damaged, unreadable or wrong-typed file is one line naming it."""
    import json

    from .errors import MedcapError

    try:
        data = json.loads(read_bytes(path, limit).decode("utf-8"))
    except UnicodeDecodeError as e:
        raise MedcapError(f"not UTF-8 text ({e.reason} at byte {e.start}): damaged or not JSON", file=path) from None
    except json.JSONDecodeError as e:
        raise MedcapError(f"invalid JSON, the file is damaged or truncated ({e.msg}, line {e.lineno})",
                          file=path) from None
    except RecursionError:
        raise MedcapError("invalid JSON: nested too deeply", file=path) from None
    if expect is not None and not isinstance(data, expect):
        raise MedcapError(f"expected a JSON {'object' if expect is dict else expect.__name__}", file=path)
    return data


def scan_dir(folder: str | Path) -> list[tuple[Path, str]]:
    """The entries of ``folder`` (hidden ones left out), sorted by name, each with its kind:
    ``"dir"``, ``"file"`` or ``"other"``. Links are followed; an unreadable folder and a link
    loop are one-line errors naming the path."""
    from .errors import MedcapError

    folder = Path(folder)
    out = []
    try:
        with os.scandir(folder) as it:
            entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as e:
        raise read_error(e, folder) from None
    for e in entries:
        try:
            kind = "dir" if e.is_dir() else "file" if e.is_file() else "other"
        except OSError as err:
            raise read_error(err, e.path) from None
        if kind == "other" and e.is_symlink():
            try:
                os.stat(e.path)
            except OSError as err:
                if err.errno == errno.ELOOP:
                    raise MedcapError(f"cannot read: {_READ_ERRORS[errno.ELOOP]}", file=e.path) from None
        out.append((Path(e.path), kind))
    return out


def walk_dirs(folder: str | Path) -> Iterator[Path]:
    """``folder`` and every folder below it, each once: a link back to a folder already visited
    (a loop) is a one-line error naming it, never an endless walk."""
    from .errors import MedcapError

    seen: set[tuple[int, int]] = set()
    stack = [Path(folder)]
    while stack:
        d = stack.pop()
        try:
            st = os.stat(d)
        except OSError as e:
            raise read_error(e, d) from None
        if (st.st_dev, st.st_ino) in seen:
            raise MedcapError(f"cannot read: {_READ_ERRORS[errno.ELOOP]}", file=d)
        seen.add((st.st_dev, st.st_ino))
        yield d
        stack.extend(reversed([p for p, kind in scan_dir(d) if kind == "dir"]))


MAX_LINE_BYTES = 1 << 20  # a CSV line of a label or submission file (100 CUIs or a caption: a few KB)


def check_line_lengths(path: str | Path, limit: int | None = None) -> None:
    """Stream ``path`` in 1 MB blocks; a line longer than ``limit`` bytes is a one-line error
    naming file and line, raised before anything holds the file in memory (a hostile 200 MB
    single-line file costs one block, not the file)."""
    from .errors import MedcapError

    limit = MAX_LINE_BYTES if limit is None else limit
    line, run = 1, 0
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                start = 0
                while (end := block.find(b"\n", start)) >= 0:
                    if run + end - start > limit:
                        break
                    line, run, start = line + 1, 0, end + 1
                else:
                    run += len(block) - start
                    if run <= limit:
                        continue
                raise MedcapError(f"line longer than {limit:,} bytes: not a label or submission file "
                                  "(a CSV row is one image's concepts or caption)", file=path, line=line)
    except OSError as e:
        raise read_error(e, path) from None
