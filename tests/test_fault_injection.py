"""Fault injection in the way SQLite tests its I/O: the N-th write of the process fails, for every N
from 1 until the command passes (issue 26).

A "write" is each point where the process creates or changes something on disk: opening a file
for writing (``open``, ``io.open``, ``os.fdopen``), creating a folder, renaming, and the native
writers that bypass Python's ``open`` (safetensors' ``save_file`` under every name it is imported
as, ``torch.save``: these first leave half a file, as a full disk would). The N-th raises an
OSError (ENOSPC, EIO, EROFS or EDQUOT, in turn). For each N the test checks:

- the error is one line (what ``medcap`` prints: a MedcapError or an OSError it maps to one line);
- nothing temporary is left (no ``.NAME.*.tmp`` / ``.NAME.old`` / ``.epoch-NNN.tmp``);
- what was there before is intact (the previous submission / report / model);
- a rerun (``--resume`` for training) ends with exactly the files of a clean run.

The slow variant kills real training subprocesses at 20 random moments (both tasks).
"""
from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import io
import os
import re
import shutil
import threading
from pathlib import Path

import pytest
import torch

from medcap.cli import os_error_line
from medcap.errors import MedcapError
from test_faults import ToyTask, _cfg

CODES = (errno.ENOSPC, errno.EIO, errno.EROFS, errno.EDQUOT)
TEMPORARY = re.compile(r"^\..*\.(tmp|old)$|\.tmp$")


@pytest.fixture(autouse=True)
def no_verification_cache(monkeypatch):
    """Every weight file hashed at every load, no cache written: the cache of verified files
    (models/weights.py) is a shortcut whose failed write is ignored by design (test_integrity),
    so it must not count among the writes whose failure each command reports."""
    monkeypatch.setenv("MEDCAP_VERIFY", "full")


class Injected(Exception):
    """Raised by nothing: marks that the fault fired (kept on the injector)."""


class WriteFaults:
    """Count the writes of the process; the ``fail_at``-th raises OSError(``code``)."""

    def __init__(self, fail_at: int, code: int = errno.ENOSPC):
        self.fail_at, self.code, self.count, self.fired = fail_at, code, 0, False

    def _hit(self, what: str, path=None) -> bool:
        if threading.current_thread() is not threading.main_thread():
            return False  # background writers (TensorBoard's event thread): not in the deterministic count
        self.count += 1
        if self.count == self.fail_at:
            self.fired, self.where = True, f"{what} {path}"
            return True
        return False

    def _error(self, path) -> OSError:
        return OSError(self.code, os.strerror(self.code), None if path is None else str(path))

    @contextlib.contextmanager
    def active(self, monkeypatch):
        import accelerate.utils.other as acc_other
        import safetensors.numpy
        import safetensors.torch
        import transformers.modeling_utils as hf_modeling

        real_open, real_fdopen = builtins.open, os.fdopen
        real_mkdir, real_replace, real_rename = os.mkdir, os.replace, os.rename
        real_torch_save = torch.save

        def writing(mode) -> bool:
            return isinstance(mode, str) and any(c in mode for c in "wax+")

        def fake_open(file, mode="r", *args, **kwargs):
            if writing(mode) and not isinstance(file, int) and self._hit("open", file):
                raise self._error(file)
            return real_open(file, mode, *args, **kwargs)

        def fake_fdopen(fd, mode="r", *args, **kwargs):
            if writing(mode) and self._hit("fdopen"):
                raise self._error(None)
            return real_fdopen(fd, mode, *args, **kwargs)

        def fake_mkdir(path, *args, **kwargs):
            # an existing folder: the kernel answers EEXIST before any space is needed
            if not os.path.lexists(path) and self._hit("mkdir", path):
                raise self._error(path)
            return real_mkdir(path, *args, **kwargs)

        def fake_replace(src, dst, *args, **kwargs):
            if self._hit("replace", dst):
                raise self._error(dst)
            return real_replace(src, dst, *args, **kwargs)

        def fake_rename(src, dst, *args, **kwargs):
            if self._hit("rename", dst):
                raise self._error(dst)
            return real_rename(src, dst, *args, **kwargs)

        def native(real):
            def save(obj, path, *args, **kwargs):
                if isinstance(path, (str, os.PathLike)) and self._hit("native", path):
                    with real_open(path, "wb") as f:  # half a file, as a full disk leaves
                        f.write(b"\0" * 64)
                    raise self._error(path)
                return real(obj, path, *args, **kwargs)
            return save

        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(io, "open", fake_open)
        monkeypatch.setattr(os, "fdopen", fake_fdopen)
        monkeypatch.setattr(os, "mkdir", fake_mkdir)
        monkeypatch.setattr(os, "replace", fake_replace)
        monkeypatch.setattr(os, "rename", fake_rename)
        monkeypatch.setattr(torch, "save", native(real_torch_save))
        for module, name in ((safetensors.torch, "save_file"), (safetensors.numpy, "save_file"),
                             (acc_other, "safe_save_file"), (hf_modeling, "safe_save_file")):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, native(getattr(module, name)))
        try:
            yield self
        finally:
            monkeypatch.undo()


def _one_line_of(exc: BaseException) -> str:
    """What `medcap` prints for ``exc``: one line, or the test fails (a traceback would show)."""
    if isinstance(exc, MedcapError):
        line = exc.format()
    elif isinstance(exc, OSError):
        line = os_error_line(exc)
        assert line is not None, f"an OSError medcap does not put in one line: {exc!r}"
    else:
        raise AssertionError(f"a traceback: {type(exc).__name__}: {exc}") from exc
    assert "\n" not in line
    return line


def _printed_one_line(exc, capsys, where="") -> None:
    """The command exited non-zero (``run`` raised "exit N") after printing one error line."""
    assert exc is not None, f"the failed write ({where}) was ignored"
    if not (isinstance(exc, MedcapError) and exc.message.startswith("exit ")):
        _one_line_of(exc)  # it escaped main(): a traceback unless it is one line
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, errors


def _temporary(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*") if TEMPORARY.search(p.name))


def _digests(root: Path, skip=()) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name not in skip}


def _sweep(run, check, monkeypatch, limit: int = 400, prepare=None, stop_at: int | None = None) -> int:
    """run() for N = 1, 2, ... until a run passes without its fault firing; check(n, exc).
    ``prepare()`` (before each run, with no fault active) puts the previous content in place."""
    only = {int(x) for x in os.environ.get("MEDCAP_SWEEP_ONLY", "").split(",") if x.strip()}
    for n in range(1, limit):
        if only and n not in only:  # a quick look at chosen writes (MEDCAP_SWEEP_ONLY=7,15,30)
            if n > max(only):
                return n
            continue
        if prepare is not None:
            prepare()
        faults = WriteFaults(n, CODES[n % len(CODES)])
        exc = None
        with faults.active(monkeypatch):
            try:
                run()
            except BaseException as e:  # noqa: BLE001 - every kind is judged by _one_line_of
                exc = e
        if not faults.fired:
            assert exc is None, exc
            return n - 1
        check(n, exc, faults.where)
        if stop_at is not None and n >= stop_at:
            return n
    raise AssertionError(f"still failing after {limit} writes")


# -- training (the engine: Accelerate checkpoints, metrics, the best model) ----------------------
def test_training_survives_a_failure_at_every_write_and_resumes_to_the_clean_run(tmp_path, monkeypatch):
    from medcap.training.engine import Trainer

    def train(out: Path, resume=False):
        Trainer(ToyTask(), _cfg(epochs=2, keep_checkpoints=1), out).fit(resume=resume)

    clean = tmp_path / "clean"
    train(clean)
    want = _digests(clean / "model")
    runs = []

    def run():
        out = tmp_path / f"run{len(runs)}"
        runs.append(out)
        train(out)

    def check(n, exc, where):
        out = runs[-1]
        if exc is not None:
            _one_line_of(exc)
        assert _temporary(out) == [], f"write {n}: {_temporary(out)}"
        train(out, resume=out.is_dir() and any(out.iterdir()))  # --resume (afresh without a checkpoint)
        assert _digests(out / "model") == want, f"write {n}: the resumed run ends elsewhere"
        assert _temporary(out) == []
        shutil.rmtree(out)

    writes = _sweep(run, check, monkeypatch)
    assert writes > 10  # the sweep reached every checkpoint and model write


# -- predict (submission + probabilities JSON) ---------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory, synth_small):
    from conftest import train_tiny_models

    return train_tiny_models(synth_small, tmp_path_factory.getbasetemp() / "medcap-tiny-models")


def test_predict_survives_a_failure_at_every_write_and_keeps_the_previous_files(tiny, synth_small, tmp_path,
                                                                              monkeypatch, capsys):
    from medcap.cli import main

    images = sorted((synth_small / "test").iterdir())[:4]
    out = tmp_path / "out"

    def predict(folder: Path) -> int:
        args = ["predict", "concepts", "--model", str(tiny.concepts), "--out", str(folder / "sub.csv"),
                "--json", str(folder / "probs.json")]
        for image in images:
            args += ["--images", str(image)]
        return main(args)

    assert predict(tmp_path / "clean") == 0
    want = _digests(tmp_path / "clean")
    out.mkdir()
    before = {"sub.csv": b"old submission\n", "probs.json": b"{}\n"}

    def prepare():
        for name, data in before.items():
            (out / name).write_bytes(data)

    def run():
        rc = predict(out)
        if rc != 0:
            raise MedcapError(f"exit {rc}")  # main printed one line (checked below)

    def check(n, exc, where):
        _printed_one_line(exc, capsys, where)
        assert _temporary(out) == []
        for name, data in before.items():  # each file old or complete, never half
            got = (out / name).read_bytes()
            assert got == data or hashlib.sha256(got).hexdigest() == want[name], f"write {n}: {name} half-written"
        assert predict(out) == 0 and _digests(out) == want

    assert _sweep(run, check, monkeypatch, prepare=prepare) >= 4


# -- report (a folder replaced whole) ------------------------------------------------------------
def test_report_survives_a_failure_at_every_write_and_keeps_the_previous_report(tmp_path, monkeypatch, capsys):
    import json

    from medcap.cli import main

    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({"concepts": {"model": {"F1": 0.5}}, "captions": {"model": {"ROUGE-1": 0.2}}}))
    out = tmp_path / "report"

    def report() -> int:
        return main(["report", "--out", str(out), "--scores", str(scores), "--title", "fault"])

    assert report() == 0
    previous = _digests(out)

    def run():
        rc = report()
        if rc != 0:
            raise MedcapError(f"exit {rc}")

    def check(n, exc, where):
        _printed_one_line(exc, capsys, where)
        assert _temporary(tmp_path) == [], f"write {n}"
        assert _digests(out) == previous, f"write {n}: the previous report changed"
        assert report() == 0 and _digests(out) == previous

    _sweep(run, check, monkeypatch)


@pytest.mark.slow
def test_train_concepts_survives_a_failure_at_every_write_and_resumes_to_the_clean_model(synth_small, tmp_path,
                                                                                      monkeypatch, capsys):
    """The sweep through the real `medcap train concepts` (the model folder, checksums.json, the
    config and metrics files too). MEDCAP_SWEEP_LIMIT stops it early (a quick look)."""
    from medcap.cli import main

    def args(out: Path) -> list[str]:
        return ["train", "concepts", "--config", "demo", "--data", str(synth_small), "--out", str(out),
                "--set", "image_size=32", "--set", "epochs=2", "--set", "progress=false", "--set", "max_minutes=0"]

    assert main(args(tmp_path / "clean")) == 0
    want = _digests(tmp_path / "clean" / "model")
    capsys.readouterr()
    runs: list[Path] = []

    def run():
        runs.append(tmp_path / f"run{len(runs)}")
        rc = main(args(runs[-1]))
        if rc != 0:
            raise MedcapError(f"exit {rc}")

    def check(n, exc, where):
        _printed_one_line(exc, capsys, where)
        assert _temporary(runs[-1]) == [], f"write {n} ({where}): {_temporary(runs[-1])}"
        resume = ["--resume"] if runs[-1].is_dir() and any(runs[-1].iterdir()) else []
        assert main([*args(runs[-1]), *resume]) == 0
        assert _digests(runs[-1] / "model") == want, f"write {n} ({where}): the resumed run ends elsewhere"
        capsys.readouterr()
        shutil.rmtree(runs[-1])

    _sweep(run, check, monkeypatch, stop_at=int(os.environ.get("MEDCAP_SWEEP_LIMIT", "0")) or None)


# -- kills at random moments (slow) ----------------------------------------------------------
KILLS = int(os.environ.get("MEDCAP_KILLS", "20"))


def _train_args(task: str, data: Path, out: Path, config: Path) -> list[str]:
    import sys

    if task == "concepts":
        extra = ["--config", "demo", "--set", "image_size=32", "--set", "epochs=3", "--set", "batch_size=16",
                 "--set", "progress=false", "--set", "max_minutes=0"]
    else:
        extra = ["--config", str(config), "--set", "epochs=3", "--set", "progress=false"]
    return [sys.executable, "-m", "medcap", "train", task, "--data", str(data), "--out", str(out), *extra]


@pytest.mark.slow
@pytest.mark.parametrize("task", ["concepts", "captions"])
def test_training_killed_at_random_moments_resumes_to_a_byte_identical_model_folder(task, synth_small, tmp_path):
    """SIGKILL `medcap train` at KILLS random moments (from its start, so also before its first
    checkpoint); each restart passes --resume; the final model folder equals an uninterrupted
    run's file by file, byte for byte."""
    import random
    import signal
    import subprocess
    import time

    from conftest import TINY_CAPTION_CONFIG

    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CAPTION_CONFIG)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1"}
    t0 = time.monotonic()
    clean = subprocess.run(_train_args(task, synth_small, tmp_path / "clean", config), env=env,
                           capture_output=True, text=True, timeout=900, check=False)
    assert clean.returncode == 0, clean.stderr[-2000:]
    duration = time.monotonic() - t0
    rng = random.Random(26)
    out = tmp_path / "killed"
    def resume() -> list[str]:  # a folder the killed run left (--resume), or none yet (a fresh start)
        return ["--resume"] if out.is_dir() and any(out.iterdir()) else []

    for _ in range(KILLS):
        proc = subprocess.Popen([*_train_args(task, synth_small, out, config), *resume()], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, duration))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = subprocess.run([*_train_args(task, synth_small, out, config), *resume()], env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _digests(out / "model") == _digests(tmp_path / "clean" / "model")
    assert _temporary(out) == []
