"""Training checkpoints on disk: which are complete, reading their state, cleaning up after a kill.

``OUT/checkpoints/epoch-NNN/`` holds Accelerate's ``save_state`` files and ``trainer_state.json``
(see medcap.training.engine). A checkpoint is written as ``.epoch-NNN.tmp`` and renamed when complete;
a kill or a full disk can still leave a stale ``.tmp`` folder, or (copied by hand, damaged
disk) a folder with a file missing or empty. ``--resume`` uses the newest complete one and says
which it skipped; a damaged file in it is a one-line error naming the checkpoint.
"""
from __future__ import annotations

import contextlib
import shutil
import sys
from pathlib import Path
from typing import Iterator

from ..errors import MedcapError, first_line
from ..fileio import read_json, recover_dir

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"

# Files every checkpoint must hold (Accelerate's save_state + ours); the model's weights are
# one of CHECKPOINT_WEIGHTS. A folder without them all is skipped by --resume.
CHECKPOINT_FILES = (STATE_FILE, "optimizer.bin", "scheduler.bin")
CHECKPOINT_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def checkpoint_problem(folder: Path) -> str | None:
    """What is missing or empty in a checkpoint folder, or None when it is complete."""
    for name in CHECKPOINT_FILES:
        if not (folder / name).is_file() or (folder / name).stat().st_size == 0:
            return f"{name} is missing or empty"
    if not any((folder / w).is_file() and (folder / w).stat().st_size > 0 for w in CHECKPOINT_WEIGHTS):
        return "the model weights are missing or empty"
    return None


def latest_checkpoint(out_dir: str | Path, skipped: list | None = None) -> Path | None:
    """The newest complete checkpoint; incomplete ones are listed in ``skipped`` (folder, why)."""
    for folder in sorted(Path(out_dir, CHECKPOINTS).glob("epoch-[0-9]*"), reverse=True):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        if skipped is not None:
            skipped.append((folder, problem))
    return None


def clean_run_folder(out_dir: str | Path, best: str) -> None:
    """Before a run starts (under its run lock): restore or remove what a killed run left."""
    out_dir = Path(out_dir)
    recover_dir(out_dir / best)
    for tmp in sorted(Path(out_dir, CHECKPOINTS).glob(".epoch-*.tmp")):
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"notice: removed {tmp} (unfinished checkpoint of an earlier run that stopped)", file=sys.stderr)


def read_state(path: Path) -> dict:
    """A checkpoint's trainer state through the safe reader: unreadable, truncated or damaged ->
    one line naming the file and how to go on."""
    hint = f"delete {path.parent.name} to --resume from the previous checkpoint, or train again without --resume"
    try:
        state = read_json(path)
    except MedcapError as e:
        raise MedcapError(f"damaged checkpoint: {e.message}; {hint}", file=path) from None
    if not isinstance(state.get("epoch"), int):
        raise MedcapError(f"damaged checkpoint (not a trainer state: no integer 'epoch'); {hint}", file=path)
    return state


def load_state_error(e: BaseException) -> str:
    text, first = str(e), first_line(e, 200)
    if "size mismatch" in text or "Missing key" in text or "Unexpected key" in text:
        return ("this checkpoint does not fit the model of this run (was the backbone, head or vocabulary "
                f"changed?): {first}; resume with the run's original config, or train into a new --out")
    return (f"damaged checkpoint ({first}): delete this folder to --resume from the previous checkpoint, "
            "or train again without --resume")


def check_run_folder(out_dir: str | Path, resume: bool) -> None:
    """Before anything is read or written: ``--resume`` needs a run to continue, and a fresh run
    needs a folder without one. Both are one-line errors that leave the folder as it was
    (no folder, no lock file is created)."""
    has_run = latest_checkpoint(out_dir) is not None
    if resume and not has_run:
        if Path(out_dir).is_dir() and any(Path(out_dir).iterdir()):
            return  # a run killed before its first checkpoint: the engine starts it afresh, with a notice
        what = "holds no training run (no complete checkpoint)" if Path(out_dir).exists() else "does not exist"
        raise MedcapError(f"nothing to resume: this folder {what}; train without --resume to start a run",
                          file=out_dir)
    if not resume and has_run:
        raise MedcapError("this output folder already holds a training run: pass --resume to continue it "
                          "or choose another --out", file=out_dir)


@contextlib.contextmanager
def writing_checkpoint(tmp: Path) -> Iterator[None]:
    """Around a checkpoint's writes into ``tmp``: on any failure ``tmp`` is removed (the last
    complete checkpoint is untouched) and a writer's own error becomes one line. torch's zip
    writer reports a full disk as ``RuntimeError: [enforce fail at inline_container.cc] unexpected
    pos``, safetensors as its own error type; an OSError keeps its errno for the CLI's one line."""
    try:
        yield
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, (MedcapError, OSError, KeyboardInterrupt, SystemExit)) or not isinstance(e, Exception):
            raise
        raise MedcapError("cannot write the checkpoint (a full disk, a quota or a failing disk?): "
                          f"{first_line(e, 160)}; the last complete checkpoint is kept: free some space and train "
                          "again with --resume",
                          file=tmp.with_name(tmp.name.lstrip(".").removesuffix(".tmp"))) from None
