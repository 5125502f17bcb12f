"""One training engine for both tasks (concept detection and captioning), on Accelerate.

The same loop runs on the CPU, one GPU or many::

    medcap train concepts --config demo --data DIR --out runs/demo          # CPU or one GPU
    accelerate launch -m medcap train concepts --config paper --data DIR --out runs/paper
                                                                           # several GPUs (DDP)

Mixed precision (``mixed_precision: bf16|fp16``), gradient accumulation, clipping, the
optimiser and its schedule, checkpoints, ``--resume``, early stopping and logs are settings
of :class:`TrainConfig`; everything task-specific comes from a :class:`Task`.

The Task protocol (what a task object must supply)::

    class MyTask:
        model: nn.Module              # built by the task; call seed_everything(cfg.seed) first
        train_loader: DataLoader      # shuffle=True for training; batches are tensors,
        valid_loader: DataLoader | None  #   tuples or dicts (Accelerate moves them to the device)
        monitor: str = "f1"           # key of evaluate()'s dict used for early stopping / best
        monitor_mode: str = "max"     # "max" or "min"

        def training_step(self, model, batch) -> torch.Tensor: ...
            # the mean loss of one batch; the engine does backward, accumulation, clipping
        def evaluate(self, model, loader, accelerator) -> dict[str, float]: ...
            # called under torch.no_grad() with model.eval(); gather across processes with
            # accelerator.gather_for_metrics(...) so every process returns the same numbers
        def save_best(self, model, folder: Path) -> None: ...
            # write the reloadable model folder (config.json, model.safetensors, task files)
            # into `folder`; the engine makes it atomic and calls it on the main process only

Output folder written by :meth:`Trainer.fit`::

    out/model/            the best epoch's model folder (Task.save_best), replaced atomically
    out/checkpoints/epoch-NNN/   full training state (model, optimiser, schedule, RNG, counters)
    out/metrics.csv       one row per epoch: train loss, lr, time, every evaluate() metric
    out/tensorboard/      train/ scalars every ``logging_steps`` steps, valid/ ones per validation; or
                          MLflow / Weights & Biases (``report_to``, medcap.training.trackers)
    out/.medcap.lock      the run lock: one training per folder at a time (medcap.training.runlock)

Guards: a step whose loss or gradients are NaN/inf is skipped, and the run stops after
``max_nonfinite_steps`` of them in a row; a model with NaN/inf weights or a NaN loss at the end
of an epoch stops the run before anything of that epoch is saved (medcap.models.nonfinite).

Resuming (``resume=True``) loads the newest checkpoint and continues with the next epoch:
model, optimiser, schedule, best score, early-stopping counter and RNG states are restored,
and each epoch's shuffling and augmentation are seeded from ``seed + epoch``, so an
interrupted run that resumes ends where an uninterrupted one would (without a time budget:
with ``max_minutes`` the schedule follows the clock). The time budget counts the time of all
sessions of a run, so a run that stopped on its budget continues only with a larger one.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import MedcapError
from ..fileio import atomic_dir, write_text_atomic
from ..models.nonfinite import StepGuard, nonfinite_count
from .checkpoints import CHECKPOINTS, STATE_FILE, clean_run_folder, latest_checkpoint, load_state_error, read_state
from .runlock import RunLock
from .trackers import StepReporter, check_installed, log_with, parse_report_to

BEST = "model"


class _TiedWeightsNotice(logging.Filter):
    """Drops Accelerate's "Removed shared tensor ... while saving" warning, logged at every
    checkpoint of a model with tied weights (BLIP's decoder ties its output layer to the word
    embeddings). safetensors stores a tied tensor once and load_state re-ties it, which the
    resume tests check, so the warning says nothing the user must act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Removed shared tensor" not in record.getMessage()


@dataclass
class TrainConfig:
    """Settings of the training loop (task configs carry the same keys, flat; see from_config)."""
    epochs: int = 100                 # epoch budget; the cosine schedule spans all of it (REFERENCE §1: 100)
    lr: float = 1e-4                  # learning rate (REFERENCE §1: Adam 1e-4)
    weight_decay: float = 1e-5        # weight decay (REFERENCE §1: 1e-5)
    optimizer: str = "adam"           # adam | adamw
    schedule: str = "cosine"          # cosine | constant (both after the warm-up)
    warmup_steps: int = 0             # linear warm-up from 0 over this many optimiser steps
    min_lr_ratio: float = 0.0         # cosine ends at lr * min_lr_ratio
    grad_accum: int = 1               # optimiser step every grad_accum batches
    grad_clip: float = 0.0            # max gradient norm; 0 = no clipping (authors' code: 1.0)
    mixed_precision: str = "no"       # no | bf16 | fp16
    channels_last: bool = False       # NHWC memory format (faster convolutions on GPUs)
    patience: int = 5                 # epochs without improvement before stopping; 0 = never
    max_minutes: float = 0.0          # wall-clock budget; 0 = none. With a budget the schedule
                                      # follows time too (whichever of steps/time is further on)
    seed: int = 42                    # random seed of weights, shuffling, augmentation (REFERENCE §1: 42)
    cpu: bool = False                 # force the CPU even when a GPU is present
    keep_checkpoints: int = 1         # epoch checkpoints kept on disk (newest first)
    progress: bool = True             # tqdm progress bars
    max_nonfinite_steps: int = 5      # optimiser steps in a row with a NaN/inf loss or gradient that
                                      # are skipped before the run stops (medcap.models.nonfinite)
    report_to: str = "tensorboard"    # tensorboard | mlflow | wandb | none; several: comma-separated
    logging_steps: int = 10           # report train/ scalars every this many optimiser steps

    @classmethod
    def from_config(cls, cfg: Any) -> "TrainConfig":
        """Take the fields of this class from any dataclass or dict with the same key names."""
        values = cfg if isinstance(cfg, dict) else dataclasses.asdict(cfg)
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})

    def __post_init__(self):
        for key, allowed in (("optimizer", ("adam", "adamw")), ("schedule", ("cosine", "constant")),
                             ("mixed_precision", ("no", "bf16", "fp16"))):
            if getattr(self, key) not in allowed:
                raise MedcapError(f"{key}: expected one of {', '.join(allowed)}, got {getattr(self, key)!r}")
        if self.epochs < 1 or self.grad_accum < 1 or self.logging_steps < 1:
            raise MedcapError("epochs, grad_accum and logging_steps must be at least 1")
        parse_report_to(self.report_to)
        from ..config_checks import check_values

        check_values(self, "<config>")


class Task(Protocol):
    model: Any
    train_loader: Any
    valid_loader: Any
    monitor: str
    monitor_mode: str

    def training_step(self, model, batch): ...
    def evaluate(self, model, loader, accelerator) -> dict[str, float]: ...
    def save_best(self, model, folder: Path) -> None: ...


@dataclass
class TrainResult:
    out_dir: Path
    best_dir: Path
    best_score: float | None
    best_epoch: int | None
    epochs_run: int
    stop_reason: str                  # "epochs" | "early_stop" | "time_budget"
    history: list[dict] = field(default_factory=list, repr=False)  # (metrics.csv; a short repr)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (every device)."""
    from accelerate.utils import set_seed

    set_seed(seed)


class Trainer:
    """Runs :class:`TrainConfig` on a :class:`Task`; ``fit()`` returns a :class:`TrainResult`."""

    def __init__(self, task: Task, cfg: TrainConfig, out_dir: str | Path):
        self.task, self.cfg, self.out_dir = task, cfg, Path(out_dir)

    # -- set-up -------------------------------------------------------------------------------
    def _setup(self):
        import torch
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState
        from accelerate.utils import DataLoaderConfiguration

        cfg = self.cfg
        # Accelerate keeps a process-wide singleton; a second Trainer in the same process (tests,
        # notebooks) may ask for another precision, so drop the old one (not the process group).
        AcceleratorState._reset_state(reset_partial_state=False)
        check_installed(trackers := parse_report_to(cfg.report_to))
        acc = Accelerator(
            log_with=log_with(trackers, self.out_dir, int(os.environ.get("RANK", "0")) == 0),
            mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum, cpu=cfg.cpu,
            # seedable sampler: epoch e shuffles with seed + e, on every process alike (resume-exact)
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed),
        )
        model = self.task.model
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        # Frozen parameters (requires_grad False) never reach the optimiser.
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise MedcapError("the model has no trainable parameters")
        opt_cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
        optimizer = opt_cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

        # Schedule length in optimiser steps of ONE process (Accelerate steps the schedule once per
        # process per step, so the same length is right on N GPUs).
        steps_per_epoch = max(1, math.ceil(len(self.task.train_loader) / cfg.grad_accum))
        self.total_steps = steps_per_epoch * cfg.epochs
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_factor)

        valid = self.task.valid_loader
        if valid is not None:
            model, optimizer, train_loader, valid, scheduler = acc.prepare(
                model, optimizer, self.task.train_loader, valid, scheduler)
        else:
            model, optimizer, train_loader, scheduler = acc.prepare(
                model, optimizer, self.task.train_loader, scheduler)
        self.acc, self.model, self.optimizer = acc, model, optimizer
        self.train_loader, self.valid_loader, self.scheduler = train_loader, valid, scheduler

    def _lr_factor(self, step: int) -> float:
        """Multiplier of the base lr: linear warm-up, then cosine (or constant) to the budget's end."""
        cfg = self.cfg
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - cfg.warmup_steps) / max(1, self.total_steps - cfg.warmup_steps)
        if cfg.max_minutes > 0:  # a time budget: decay by time as well, so the lr reaches its
            progress = max(progress, self._elapsed() / (cfg.max_minutes * 60))  # floor in time
        progress = min(1.0, progress)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    def _elapsed(self) -> float:
        return self.state["elapsed_s"] + (time.monotonic() - self._t0 if hasattr(self, "_t0") else 0.0)

    # -- checkpoints --------------------------------------------------------------------------
    def _save_checkpoint(self, epoch: int) -> None:
        from .checkpoints import writing_checkpoint

        acc = self.acc
        root = self.out_dir / CHECKPOINTS
        final, tmp = root / f"epoch-{epoch:03d}", root / f".epoch-{epoch:03d}.tmp"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        notice, logger = _TiedWeightsNotice(), logging.getLogger("accelerate.utils.other")
        logger.addFilter(notice)
        try:
            with writing_checkpoint(tmp):  # a failed write (full disk): tmp removed, one line
                acc.save_state(str(tmp))  # model, optimizer, scheduler, scaler, RNG of every process
        finally:
            logger.removeFilter(notice)
        acc.wait_for_everyone()
        if acc.is_main_process:
            with writing_checkpoint(tmp):
                write_text_atomic(tmp / STATE_FILE, json.dumps(self.state, indent=1))
                shutil.rmtree(final, ignore_errors=True)
                os.replace(tmp, final)  # a checkpoint folder exists only once it is complete
            for old in sorted(root.glob("epoch-[0-9]*"))[:-max(1, self.cfg.keep_checkpoints)]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()

    def _load_checkpoint(self) -> None:
        skipped: list = []
        ckpt = latest_checkpoint(self.out_dir, skipped)
        for folder, why in skipped:
            self.acc.print(f"notice: skipped the incomplete checkpoint {folder} ({why})")
        if ckpt is None:  # killed before its first checkpoint: nothing is lost by starting afresh
            self.acc.print(f"notice: no complete checkpoint in {self.out_dir / CHECKPOINTS}: starting the run afresh")
            return
        state = read_state(ckpt / STATE_FILE)
        if state.get("total_steps") not in (None, self.total_steps):
            raise MedcapError(f"cannot resume: the checkpoint was made for {state['total_steps']} "
                              f"optimiser steps, this run has {self.total_steps} (epochs, batch size or "
                              "data changed)", file=ckpt)
        try:
            self.acc.load_state(str(ckpt))
        except Exception as e:  # a damaged file raises whatever its reader raises
            raise MedcapError(load_state_error(e), file=ckpt) from None
        self.state = state
        self.acc.print(f"resumed from {ckpt} (epoch {state['epoch'] + 1} done)")

    def _save_best(self) -> None:
        if self.acc.is_main_process:
            with atomic_dir(self.out_dir / BEST) as tmp:
                self.task.save_best(self.acc.unwrap_model(self.model), tmp)
        self.acc.wait_for_everyone()

    # -- logs ---------------------------------------------------------------------------------
    def _log(self, row: dict) -> None:
        self.state["history"].append(row)
        if not self.acc.is_main_process:
            return
        keys: list[str] = []
        for r in self.state["history"]:
            keys += [k for k in r if k not in keys]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.state["history"])
        write_text_atomic(self.out_dir / "metrics.csv", buf.getvalue())
        self.acc.print(f"epoch {row['epoch']}: " + ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items() if k != "epoch"))

    # -- the loop -----------------------------------------------------------------------------
    def _improved(self, score: float) -> bool:
        best = self.state["best_score"]
        if best is None:
            return True
        return score > best if self.task.monitor_mode == "max" else score < best

    def _evaluate(self) -> dict:
        import torch

        self.model.eval()
        with torch.no_grad():
            metrics = self.task.evaluate(self.model, self.valid_loader, self.acc)
        self.model.train()
        if self.task.monitor not in metrics:
            raise KeyError(f"evaluate() returned no {self.task.monitor!r} (got {sorted(metrics)})")
        return metrics

    def fit(self, resume: bool = False) -> TrainResult:
        """Train (see the module docstring); the output folder is locked for the run (medcap.training.runlock)."""
        from .checkpoints import check_run_folder

        check_run_folder(self.out_dir, resume)  # --resume without a run, or a second run: nothing is created
        # RANK: set by accelerate launch / torchrun; only the main process locks and cleans up.
        if int(os.environ.get("RANK", "0")) != 0:
            return self._fit(resume)
        with RunLock(self.out_dir):
            clean_run_folder(self.out_dir, BEST)  # debris of a killed run (safe: we hold the lock)
            return self._fit(resume)

    # -- non-finite guard (medcap.models.nonfinite) ------------------------------------------------------
    def _finite_step(self, loss, epoch: int) -> bool:
        """Clip the gradients (when asked) and say whether this optimiser step may be taken.

        A step whose loss or gradient norm is NaN/inf is skipped, as mixed-precision grad scalers
        do; after cfg.max_nonfinite_steps such steps in a row the run stops (MedcapError). With
        fp16 the grad scaler already skips overflowing steps and must see them to lower its
        scale, so there only a non-finite loss counts.
        """
        import torch

        acc, cfg = self.acc, self.cfg
        finite = torch.isfinite(loss.detach()).all()
        self._window_ok = finite if getattr(self, "_window_ok", None) is None else self._window_ok & finite
        if not acc.sync_gradients:
            return True
        ok = self._window_ok
        self._window_ok = None
        if cfg.grad_clip > 0:
            norm = acc.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        elif cfg.mixed_precision != "fp16":  # (fp16 grads are still scaled here; the scaler checks them)
            norm = torch.nn.utils.get_total_norm([p.grad for p in self.model.parameters() if p.grad is not None])
        else:
            norm = None
        if norm is not None and cfg.mixed_precision != "fp16":
            ok = ok & torch.isfinite(norm)
        if acc.num_processes > 1:  # every process must decide alike
            ok = acc.reduce(ok.float(), reduction="sum") == acc.num_processes
        if not hasattr(self, "_guard"):
            self._guard = StepGuard(cfg.max_nonfinite_steps)
        attempt = self.state["step"] + self._guard.skipped + 1  # optimiser steps tried, skipped ones too
        take = self._guard.update(bool(ok), epoch + 1, attempt)
        return take or cfg.mixed_precision == "fp16"

    def _check_weights(self, epoch: int) -> None:
        """A model with NaN/inf weights is never evaluated, saved as best or checkpointed."""
        bad, total = nonfinite_count(self.acc.unwrap_model(self.model).state_dict().values())
        if bad:
            raise MedcapError(f"training diverged in epoch {epoch + 1} (step {self.state['step']}): {bad:,} of "
                              f"{total:,} weights are NaN or infinite; lower the learning rate (--set lr=...) or "
                              "add grad_clip / warmup_steps, then train again (this epoch was not saved)",
                              file=self.out_dir)

    def _check_losses(self, epoch: int, row: dict) -> None:
        """Finite but huge weights (lr far too high) give NaN losses: the model is as useless."""
        bad = [k for k, v in row.items() if k.endswith("loss") and isinstance(v, float) and not math.isfinite(v)]
        if bad:
            raise MedcapError(f"training diverged in epoch {epoch + 1} (step {self.state['step']}): the "
                              f"{' and '.join(k.replace('_', ' ') for k in bad)} is {row[bad[0]]}; lower the learning "
                              "rate (--set lr=...) or add grad_clip / warmup_steps, then train again (this epoch "
                              "was not saved)", file=self.out_dir)

    def _fit(self, resume: bool) -> TrainResult:
        """Train epoch by epoch until the budget, early stopping or the time limit; see the module docstring."""
        self._start(resume)
        stop = self.state["stop_reason"] if resume and self.state["stop_reason"] == "early_stop" else None
        self.model.train()
        epoch = self.state["epoch"]
        with self._report.run():  # the trackers' run ends, as failed if an exception ends training
            while stop is None and epoch + 1 < self.cfg.epochs:
                epoch += 1
                train_loss, stop = self._train_epoch(epoch)
                row = {"epoch": epoch + 1, "step": self.state["step"], "train_loss": train_loss,
                       "lr": self.scheduler.get_last_lr()[0]}
                stop = self._end_epoch(epoch, row, stop)
        return self._finish(stop)

    # -- the steps of fit() -------------------------------------------------------------------
    def _start(self, resume: bool) -> None:
        """Fresh state, Accelerate set-up, the checkpoint to resume from, the output folder, logs."""
        self.state = {"epoch": -1, "step": 0, "best_score": None, "best_epoch": None, "bad_epochs": 0,
                      "elapsed_s": 0.0, "eval_s": 0.0, "history": [], "stop_reason": None}
        self._setup()
        self.state["total_steps"] = self.total_steps
        if resume:  # (fit() checked that a run is there to resume, or none when not resuming)
            self._load_checkpoint()
        if self.acc.is_main_process:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self._report = StepReporter(self.acc, parse_report_to(self.cfg.report_to), self.out_dir, self.cfg,
                                    self.cfg.logging_steps)
        self._t0 = time.monotonic()
        self._budget_s = self.cfg.max_minutes * 60 if self.cfg.max_minutes > 0 else math.inf

    def _train_epoch(self, epoch: int) -> tuple[float, str | None]:
        """One pass over the training data -> (mean loss over processes, "time_budget" or None)."""
        import torch
        from accelerate.utils import set_seed

        from ..progress import training_bar

        cfg, acc = self.cfg, self.acc
        # Epoch e is seeded from seed + e (shuffle and augmentation): resume gives the same run.
        set_seed(cfg.seed + epoch)
        self.train_loader.set_epoch(epoch)
        total_loss, n_batches, stop = torch.zeros((), device=acc.device), 0, None
        show = cfg.progress and acc.is_local_main_process
        # on a terminal only; with a time budget the bar counts its seconds (the ETA: the budget's end)
        bar = training_bar(self.train_loader, epoch, cfg.epochs, self._budget_s, self._elapsed, show)
        for batch in bar:
            loss = self._train_step(batch, epoch)
            if loss is not None:  # None: a NaN/inf step, skipped
                total_loss += loss.detach().float()
                n_batches += 1
                if n_batches % 10 == 0:
                    bar.set_postfix(loss=f"{total_loss.item() / n_batches:.4f}")
            if self._out_of_time():
                stop = "time_budget"
                break
        bar.close()
        self._check_weights(epoch)
        return acc.reduce(total_loss / max(1, n_batches), reduction="mean").item(), stop

    def _train_step(self, batch, epoch: int):
        """Forward, backward, (clip,) optimiser and schedule step under gradient accumulation -> loss
        (None when the non-finite guard skipped the step)."""
        acc, model = self.acc, self.model
        with acc.accumulate(model):
            loss = self.task.training_step(model, batch)
            acc.backward(loss)
            take = self._finite_step(loss, epoch)  # clips; False: skip a NaN/inf step
            if take:
                self.optimizer.step()
                self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        if take:
            self._report.batch(loss)
        if acc.sync_gradients and take:
            self.state["step"] += 1
            self._report.step(self.state["step"], self.scheduler.get_last_lr()[0],
                              self.state["step"] * self.cfg.epochs / self.total_steps)  # fractional epoch
        return loss if take else None

    def _out_of_time(self) -> bool:
        """Stop early enough that the final evaluation still fits in the time budget; the trigger
        makes every process stop at the same step (DDP would hang otherwise)."""
        if self._elapsed() + self.state["eval_s"] >= self._budget_s:
            self.acc.set_trigger()
        return self._budget_s < math.inf and self.acc.check_trigger()

    def _end_epoch(self, epoch: int, row: dict, stop: str | None) -> str | None:
        """Validate, keep the best model, count epochs without improvement, log, checkpoint."""
        improved = True
        if self.valid_loader is not None:
            t = time.monotonic()
            metrics = self._evaluate()
            self.state["eval_s"] = time.monotonic() - t
            row.update(metrics)
            self._report.validation(self.state["step"], metrics)
            self._check_losses(epoch, row)
            improved = self._improved(metrics[self.task.monitor])
        if improved:
            self.state.update(best_score=row.get(self.task.monitor), best_epoch=epoch + 1, bad_epochs=0)
            self._save_best()
        else:
            self.state["bad_epochs"] += 1
            if self.cfg.patience and self.state["bad_epochs"] >= self.cfg.patience:
                stop = "early_stop"
        row["elapsed_s"] = round(self._elapsed(), 1)
        self._log(row)
        self.state["epoch"] = epoch
        self.state["stop_reason"] = stop
        self.state["elapsed_s"] += time.monotonic() - self._t0
        self._t0 = time.monotonic()
        self._save_checkpoint(epoch)
        return stop

    def _finish(self, stop: str | None) -> TrainResult:
        s = self.state
        return TrainResult(out_dir=self.out_dir, best_dir=self.out_dir / BEST, best_score=s["best_score"],
                           best_epoch=s["best_epoch"], epochs_run=s["epoch"] + 1,
                           stop_reason=stop or "epochs", history=list(s["history"]))

