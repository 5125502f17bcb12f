"""Experiment trackers: ``report_to`` (TensorBoard, MLflow, Weights & Biases) through Accelerate.

The training engine reports its scalars to the trackers named by ``report_to`` (comma-separated,
or ``none``), with the tags the Hugging Face trainers use:

- ``train/loss`` (the mean loss since the last report, over every process), ``train/lr`` and
  ``train/epoch`` (fractional) every ``logging_steps`` optimiser steps;
- ``valid/<metric>`` after each validation (``valid_loss`` is ``valid/loss``);

all at the optimiser step as x-axis, so runs of different lengths line up. ``metrics.csv`` keeps
one row per epoch whatever the trackers are.

Where each tracker writes: TensorBoard in ``OUT/tensorboard/``; MLflow where
``MLFLOW_TRACKING_URI`` points (a server, ``sqlite:///FILE`` or a ``file:`` store), else in
``OUT/mlflow.db`` (SQLite), experiment ``medcap`` (``MLFLOW_EXPERIMENT_NAME`` overrides), run named
after OUT; Weights & Biases in project ``medcap`` (``WANDB_MODE=offline`` keeps it on disk, in OUT).
A resumed training appends to TensorBoard's folder; MLflow and W&B get one run per session.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
from pathlib import Path
from typing import Any

from ..errors import MedcapError

TRACKERS = ("tensorboard", "mlflow", "wandb")
PROJECT = "medcap"
_INSTALL = {"tensorboard": "pip install tensorboard", "mlflow": "pip install 'medcap[mlflow]'",
            "wandb": "pip install 'medcap[wandb]'"}


def parse_report_to(value: str) -> list[str]:
    """``"tensorboard,mlflow"`` -> ["tensorboard", "mlflow"]; ``"none"`` (or "") -> []."""
    names = [n.strip().lower() for n in str(value).split(",") if n.strip()]
    if names == ["none"]:
        return []
    bad = [n for n in names if n not in TRACKERS]
    if bad:
        raise MedcapError(f"report_to: expected {', '.join(TRACKERS)} or none (several: comma-separated), "
                          f"got {value!r}")
    return list(dict.fromkeys(names))


def check_installed(names: list[str]) -> None:
    """A one-line error naming the package a tracker needs, before any training starts."""
    for name in names:
        if importlib.util.find_spec(name) is None:
            raise MedcapError(f"report_to={name} needs the {name} package: {_INSTALL[name]}, or choose another "
                              "tracker (--set report_to=none)")


def log_with(names: list[str], out_dir: Path, main_process: bool) -> list | None:
    """Accelerator(log_with=...): TensorBoard as a tracker writing in OUT/tensorboard/ (where the
    engine has always written it), the others by name; None for none. Other processes log nothing."""
    if not main_process or not names:
        return None
    from accelerate.tracking import TensorBoardTracker

    return [TensorBoardTracker("tensorboard", out_dir) if n == "tensorboard" else n for n in names]


def _hparams(cfg: Any) -> dict:
    """The training settings as scalars the trackers store (None and lists as text)."""
    values = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
    return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in values.items()}


class StepReporter:
    """Sends train/ scalars every ``logging_steps`` optimiser steps and valid/ scalars after each
    validation to the Accelerator's trackers; does nothing when ``report_to`` is none."""

    def __init__(self, acc, names: list[str], out_dir: Path, config: Any, logging_steps: int):
        import torch

        self.acc, self.names, self.every = acc, names, logging_steps
        self._loss, self._batches = torch.zeros((), device=acc.device), 0
        if not names:
            return
        kwargs = {"mlflow": {"run_name": out_dir.name}, "wandb": {"name": out_dir.name, "dir": str(out_dir)}}
        if "mlflow" in names and acc.is_main_process:
            import mlflow

            mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI")
                                    or f"sqlite:///{(out_dir / 'mlflow.db').resolve()}")
        acc.init_trackers(PROJECT, config=_hparams(config), init_kwargs=kwargs)

    def batch(self, loss) -> None:
        """Count one batch's loss (a finite step's) towards the next train/loss."""
        if self.names:
            self._loss += loss.detach().float()
            self._batches += 1

    def step(self, step: int, lr: float, epoch: float) -> None:
        """After optimiser step ``step``: report every ``logging_steps`` steps. Every process calls it
        (the loss is averaged over processes), only the main process writes."""
        if not self.names or step % self.every:
            return
        loss = self.acc.reduce(self._loss / max(1, self._batches), reduction="mean").item()
        self._loss.zero_()
        self._batches = 0
        self.acc.log({"train/loss": loss, "train/lr": lr, "train/epoch": epoch}, step=step)

    def validation(self, step: int, metrics: dict) -> None:
        """valid/<name> for every number of a validation (the ``valid_`` prefix dropped)."""
        if not self.names:
            return
        values = {f"valid/{k.removeprefix('valid_')}": float(v) for k, v in metrics.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.acc.log(values, step=step)

    @contextlib.contextmanager
    def run(self):
        """The trackers' run around the training loop: finished at its end, marked failed (MLflow)
        when an exception ends it, so that a later run in the same process starts clean."""
        try:
            yield self
        except BaseException:
            self.close(failed=True)
            raise
        self.close()

    def close(self, failed: bool = False) -> None:
        """Finish every tracker's run (not Accelerator.end_training: it would end the process group too)."""
        for tracker in self.acc.trackers:
            if failed and tracker.name == "mlflow":
                import mlflow

                mlflow.end_run(status="FAILED")
            else:
                tracker.finish()
        self.acc.trackers = []
