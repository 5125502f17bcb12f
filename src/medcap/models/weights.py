"""Weight files of a model folder: they must fit the architecture and be the bytes that were saved.

- :func:`fit_report` / :func:`require_fit`: missing, unexpected and wrong-shaped tensors are one
  error naming the folder, with their count and the first key (never a warning: a folder holding
  another model's weights would otherwise produce fluent garbage).
- :func:`write_checksums` records the sha256 and size of every weight file in ``checksums.json``
  at save time; :func:`verified` checks them at load time (by default; ``medcap --no-verify`` or
  ``MEDCAP_NO_VERIFY=1`` skips it). Folders saved before checksums existed load with a notice,
  given once per folder and process. The sha256 of each 64 MB block is recorded too: a load
  hashes the blocks through a memory map in threads beside the load itself (hashlib releases
  the GIL). A file verified once is remembered by its identity (size, times, inode) in the
  user's cache, as git's index does: later loads hash it again only when it was written since
  (``MEDCAP_VERIFY=full`` always hashes). Costs: bench/weight_checks.py, BENCHMARKS.md.
- :func:`read_safetensors`: a truncated or damaged ``.safetensors`` file is one line naming it.
"""
from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import sys
import threading
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import MedcapError, first_line
from ..fileio import read_error, read_json, write_json

CHECKSUMS_FILE = "checksums.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".npy")
_CHUNK = 8 << 20
BLOCK = 64 << 20  # block hashes: a 1.8 GB BLIP-large file is 28 blocks, checked in parallel threads

_verify = os.environ.get("MEDCAP_NO_VERIFY", "") not in ("1", "true", "yes")
_noticed: set[str] = set()


def verifying() -> bool:
    return _verify


def set_verify(on: bool) -> None:
    """Check checksums at load (the default) or not (``--no-verify``)."""
    global _verify
    _verify = bool(on)


# -- fit --------------------------------------------------------------------------------------
def fit_report(missing: Iterable[str], unexpected: Iterable[str], mismatched: Iterable, where: str | Path,
               what: str = "model") -> None:
    """MedcapError when any key is missing, unexpected or of the wrong shape (count + first key)."""
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong-shaped", mismatched)):
        keys = sorted(k if isinstance(k, str) else _mismatch_text(k) for k in keys)
        if keys:
            problems.append(f"{len(keys)} {label} (first: {keys[0]})")
    if problems:
        raise MedcapError(f"the weights do not fit the {what}: {'; '.join(problems)} tensor(s) - these are "
                          "another model's weights or a different architecture", file=where)


def _mismatch_text(item) -> str:
    key, *shapes = item if isinstance(item, (tuple, list)) else (str(item),)
    return f"{key} {' vs '.join(str(tuple(s)) for s in shapes)}" if shapes else str(key)


def require_fit(module, state: dict, where: str | Path, what: str = "model") -> None:
    """Compare ``state`` (name -> tensor) with ``module``'s own tensors, then load it strictly."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [(k, state[k].shape, own[k].shape) for k in state
                  if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    fit_report(missing, unexpected, mismatched, where, what)
    module.load_state_dict(state, strict=True)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No per-shard progress bars and no load report while transformers reads or writes a local
    folder: the report's missing / unexpected / mismatched keys go to :func:`fit_report` instead."""
    from transformers.utils import logging as hf_logging

    was_enabled, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if was_enabled:
            hf_logging.enable_progress_bar()


# -- safetensors ------------------------------------------------------------------------------
def read_safetensors(path: str | Path, framework: str = "pt", device: str = "cpu") -> dict:
    """All tensors of a ``.safetensors`` file; unreadable, truncated or damaged -> one line naming it."""
    path = Path(path)
    try:
        if framework == "np":
            from safetensors.numpy import load_file

            return load_file(str(path))
        from safetensors.torch import load_file

        return load_file(str(path), device=device)
    except OSError as e:
        raise read_error(e, path) from None
    except Exception as e:  # safetensors raises its own error type (SafetensorError) for damaged files
        raise MedcapError(f"cannot read the tensors, the file is damaged or truncated ({first_line(e, 160)}); copy or "
                          "save it again", file=path) from None


# -- checksums --------------------------------------------------------------------------------
def weight_files(folder: Path) -> list[Path]:
    """The weight files under ``folder`` (subfolders too, e.g. a captioner's retrieval embedder);
    a subfolder with its own checksums.json (an ensemble's member) is checked when it is loaded."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not Path(root, d, CHECKSUMS_FILE).is_file())
        found += [Path(root, f) for f in sorted(files) if f.endswith(WEIGHT_SUFFIXES) and not f.startswith(".")]
    return found


def _hash_range(path: Path, start: int, length: int) -> str:
    """sha256 of ``length`` bytes of ``path`` from ``start``, read through a memory map: no copy
    out of the page cache, and hashlib releases the GIL, so threads hash on several cores. A
    file system that cannot map files (some network and FUSE mounts) is read in chunks instead."""
    try:
        with open(path, "rb", buffering=0) as f:
            if not length:
                return hashlib.sha256().hexdigest()  # an empty file cannot be mapped
            try:
                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError):
                return _read_and_hash(f, start, length)
            with mapped:
                view = memoryview(mapped)
                try:
                    h = hashlib.sha256()
                    for at in range(start, start + length, _CHUNK):
                        h.update(view[at:min(start + length, at + _CHUNK)])
                    return h.hexdigest()
                finally:
                    view.release()
    except OSError as e:
        raise read_error(e, path) from None


def _read_and_hash(f, start: int, length: int) -> str:
    h, buf = hashlib.sha256(), bytearray(_CHUNK)
    view = memoryview(buf)
    f.seek(start)
    while length and (n := f.readinto(view[:min(length, _CHUNK)])):
        h.update(view[:n])
        length -= n
    return h.hexdigest()


def _blocks(size: int, block: int) -> list[tuple[int, int]]:
    return [(start, min(block, size - start)) for start in range(0, size, block)] or [(0, 0)]


def file_sha256(path: Path, block: int = BLOCK) -> tuple[str, int, list[str]]:
    """(sha256 of the file, its size, sha256 of each ``block``-byte block); the whole-file hash
    and the block hashes are computed side by side in threads."""
    from concurrent.futures import ThreadPoolExecutor

    try:
        size = path.stat().st_size
    except OSError as e:
        raise read_error(e, path) from None
    blocks = _blocks(size, block)
    with ThreadPoolExecutor(max_workers=min(len(blocks) + 1, max(2, os.cpu_count() or 1))) as pool:
        whole = pool.submit(_hash_range, path, 0, size)
        parts = [pool.submit(_hash_range, path, *b) for b in blocks]
        return whole.result(), size, [p.result() for p in parts]


def write_checksums(folder: str | Path) -> Path:
    """Record sha256 and size of each weight file of ``folder`` in ``checksums.json``; also the
    sha256 of each 64 MB block, which a load checks on several cores at once."""
    folder = Path(folder)
    files = {}
    for path in weight_files(folder):
        digest, size, blocks = file_sha256(path)
        files[path.relative_to(folder).as_posix()] = {"sha256": digest, "size": size, "block_size": BLOCK,
                                                      "block_sha256": blocks}
    write_json(folder / CHECKSUMS_FILE, {"format": 1, "algorithm": "sha256", "files": files})
    return folder / CHECKSUMS_FILE


def check_folder(folder: str | Path) -> None:
    """Every weight file recorded in ``checksums.json`` has its size and sha256; one line otherwise."""
    with verified(folder):
        pass


# -- files verified before: the stat cache -------------------------------------------------------
# Hashing 1.8 GB costs about as much as loading it, so a file verified once is remembered by
# its identity (size, mtime, ctime, inode, device) and expected sha256 in the user's cache, as
# git's index remembers clean files. Any write to the file changes its ctime (which no program
# can set back), so an edited or replaced file is hashed again. Files changed less than
# _RACY_NS before they were verified are never remembered (git's "racily clean" rule: a write
# within the same clock tick would keep the same times). MEDCAP_VERIFY=full always hashes and
# neither reads nor writes the cache.
_RACY_NS = 2_000_000_000
_CACHE_ENTRIES = 1024
_remembered: dict | None = None


def _cache_file() -> Path:
    base = os.environ.get("MEDCAP_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache",
                                                       "medcap")
    return Path(base, "verified.json")


def _identity(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def _cache() -> dict:
    global _remembered
    if _remembered is None:
        try:
            data = read_json(_cache_file()) if _cache_file().is_file() else {}
        except (MedcapError, OSError):
            data = {}  # a damaged cache is only a lost shortcut
        _remembered = data if isinstance(data, dict) else {}
    return _remembered


def _every_load() -> bool:
    """MEDCAP_VERIFY=full: hash at every load, neither read nor write the cache."""
    return os.environ.get("MEDCAP_VERIFY", "") == "full"


def _known(path: Path, sha256: str) -> bool:
    if _every_load():
        return False
    entry = _cache().get(str(path.resolve()))
    try:
        return isinstance(entry, dict) and entry.get("sha256") == sha256 and entry.get("stat") == _identity(path)
    except OSError:
        return False


def _remember(files: list[tuple[Path, str, list[int]]]) -> None:
    """Remember files just verified whose identity did not change meanwhile and is not racy."""
    import time

    if _every_load():
        return
    now, cache, changed = time.time_ns(), _cache(), False
    for path, sha256, before in files:
        try:
            ident = _identity(path)
        except OSError:
            continue
        if ident == before and now - max(ident[1], ident[2]) > _RACY_NS:
            key = str(path.resolve())
            cache.pop(key, None)
            cache[key] = {"sha256": sha256, "stat": ident}
            changed = True
    if not changed:
        return
    for key in list(cache)[:-_CACHE_ENTRIES]:
        del cache[key]
    with contextlib.suppress(OSError, MedcapError):  # a read-only or full home only costs the shortcut
        write_json(_cache_file(), cache)


def _checks(folder: Path) -> tuple[list, list]:
    """(one callable per block or file to hash, the files to remember once all pass); both []
    when not verifying. Sizes are checked at once, hashes when the callables run."""
    if not _verify:
        return [], []
    record = folder / CHECKSUMS_FILE
    if not record.is_file():
        if weight_files(folder) and str(folder) not in _noticed:
            _noticed.add(str(folder))
            print(f"notice: {folder} has no {CHECKSUMS_FILE} (saved by an older medcap): its weight files are "
                  "not verified; save the model again to add them", file=sys.stderr)
        return [], []
    data = read_json(record)
    files = data.get("files")
    if not isinstance(files, dict):
        raise MedcapError("expected a 'files' object", file=record)
    checks, hashed = [], []
    for name, want in sorted(files.items()):
        path = folder / name
        if not (isinstance(want, dict) and isinstance(want.get("sha256"), str) and isinstance(want.get("size"), int)):
            raise MedcapError(f"entry {name!r} needs 'sha256' and 'size'", file=record)
        if ".." in Path(name).parts or Path(name).is_absolute():
            raise MedcapError(f"entry {name!r} points outside the folder", file=record)
        if not path.is_file():
            raise MedcapError(f"missing (listed in {CHECKSUMS_FILE})", file=path)
        size = path.stat().st_size
        if size != want["size"]:
            raise MedcapError(f"the file is damaged or truncated: {size:,} bytes, {want['size']:,} when saved "
                              f"({CHECKSUMS_FILE}); copy or train the model again (--no-verify skips this check)",
                              file=path)
        if _known(path, want["sha256"]):
            continue
        hashed.append((path, want["sha256"], _identity(path)))
        blocks, block = want.get("block_sha256"), want.get("block_size")
        spans = _blocks(size, block) if isinstance(block, int) and block > 0 else []
        if isinstance(blocks, list) and len(blocks) == len(spans):
            checks += [lambda path=path, span=span, h=h: _compare(_hash_range(path, *span), h, path)
                       for span, h in zip(spans, blocks, strict=True)]
        else:
            checks.append(lambda path=path, want=want: _compare(_hash_range(path, 0, want["size"]),
                                                                want["sha256"], path))
    return checks, hashed


def _compare(got: str, want: str, path: Path) -> None:
    if got != want:
        raise MedcapError(f"the file is damaged or changed since it was saved: its sha256 differs from "
                          f"{CHECKSUMS_FILE}; copy or train the model again (--no-verify skips this check)", file=path)


@contextlib.contextmanager
def verified(folder: str | Path) -> Iterator[None]:
    """Load inside this block; the weight files are hashed meanwhile in threads. A mismatch is
    raised at the end, in place of any error the load raised (a damaged file explains it)."""
    checks, hashed = _checks(Path(folder))
    errors: list[MedcapError] = []
    todo = list(reversed(checks))

    def run():
        while todo and not errors:
            try:
                check = todo.pop()
            except IndexError:
                return
            try:
                check()
            except MedcapError as e:
                errors.append(e)

    n = min(len(checks), os.cpu_count() or 1, 8)  # all cores: the load itself is mostly one memory copy (measured)
    threads = [threading.Thread(target=run, name="medcap-verify", daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    try:
        yield
    except BaseException as e:
        if not isinstance(e, Exception):
            todo.clear()  # Ctrl-C: stop after the blocks being hashed, do not check the rest
        for t in threads:
            t.join()
        if errors:
            raise errors[0] from None
        raise
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    _remember(hashed)
