"""The shared training engine, on a toy regression task (no images, a few milliseconds a step)."""
from __future__ import annotations

import csv
import json

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from medcap.errors import MedcapError
from medcap.training.engine import TrainConfig, Trainer, latest_checkpoint, seed_everything


class ToyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
        self.frozen = nn.Linear(2, 2)  # a frozen part must stay exactly as it was
        self.frozen.requires_grad_(False)

    def forward(self, x):
        return self.net(x).squeeze(-1)


class ToyTask:
    """y = x @ w; monitor is the negative validation MSE (so "max" is better)."""
    monitor = "score"
    monitor_mode = "max"

    def __init__(self, seed=0, n=64, batch_size=8, crash_after_steps=None, scores=None):
        seed_everything(seed)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(n, 4, generator=g)
        y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.01 * torch.randn(n, generator=g)
        self.model = ToyModel()
        self.frozen = self.model.frozen
        self.train_loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)
        self.valid_loader = DataLoader(TensorDataset(x[:16], y[:16]), batch_size=8)
        self.crash_after_steps, self.steps, self.scores, self.saved = crash_after_steps, 0, scores, 0

    def training_step(self, model, batch):
        self.steps += 1
        if self.crash_after_steps is not None and self.steps > self.crash_after_steps:
            raise RuntimeError("simulated crash")
        x, y = batch
        return nn.functional.mse_loss(model(x), y)

    def evaluate(self, model, loader, accelerator):
        errs = []
        for x, y in loader:
            errs.append(accelerator.gather_for_metrics((model(x) - y) ** 2))
        mse = torch.cat(errs).mean().item()
        if self.scores is not None:  # scripted scores, one per epoch
            return {"score": self.scores.pop(0), "mse": mse}
        return {"score": -mse, "mse": mse}

    def save_best(self, model, folder):
        self.saved += 1
        torch.save(model.state_dict(), folder / "weights.pt")


def _cfg(**kw):
    base = dict(epochs=3, lr=1e-2, patience=0, progress=False, cpu=True, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def test_training_reduces_loss_and_writes_metrics_best_model_and_checkpoint(tmp_path):
    task = ToyTask()
    frozen_before = task.frozen.weight.clone()
    result = Trainer(task, _cfg(epochs=4, lr=3e-2), tmp_path).fit()
    hist = result.history
    assert len(hist) == 4 and result.stop_reason == "epochs"
    assert hist[-1]["mse"] < hist[0]["mse"]
    assert torch.equal(task.frozen.weight, frozen_before)
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert {"train_loss", "lr", "score", "mse", "elapsed_s"} <= set(rows[0])
    assert (tmp_path / "model" / "weights.pt").is_file()
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt.name == "epoch-003"  # epochs are numbered from 0 on disk
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["epoch"] == 3 and state["step"] == 4 * 8
    assert not list((tmp_path / "checkpoints").glob(".*"))  # no temporary folder left behind
    assert len(list((tmp_path / "checkpoints").iterdir())) == 1  # keep_checkpoints=1


def test_frozen_parameters_are_not_given_to_the_optimizer(tmp_path):
    task = ToyTask()
    trainer = Trainer(task, _cfg(epochs=1), tmp_path)
    trainer.fit()
    in_opt = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert id(task.frozen.weight) not in in_opt and id(task.frozen.bias) not in in_opt
    assert len(in_opt) == 4


def test_resume_after_a_crash_ends_exactly_where_an_uninterrupted_run_ends(tmp_path):
    straight = ToyTask()
    Trainer(straight, _cfg(), tmp_path / "a").fit()

    crashing = ToyTask(crash_after_steps=8 + 3)  # dies in the middle of epoch 2
    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(crashing, _cfg(), tmp_path / "b").fit()
    assert latest_checkpoint(tmp_path / "b").name == "epoch-000"
    resumed = ToyTask(seed=123)  # different init: everything must come from the checkpoint
    result = Trainer(resumed, _cfg(), tmp_path / "b").fit(resume=True)
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    for p, q in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_early_stopping_on_the_monitored_metric_keeps_the_best_epoch(tmp_path):
    task = ToyTask(scores=[0.5, 0.7, 0.6, 0.65, 0.9, 0.9])
    result = Trainer(task, _cfg(epochs=6, patience=2), tmp_path).fit()
    assert result.stop_reason == "early_stop"
    assert result.epochs_run == 4 and result.best_epoch == 2 and result.best_score == 0.7
    assert task.saved == 2  # epochs 1 and 2 improved


def test_resuming_a_run_that_stopped_early_trains_no_further(tmp_path):
    Trainer(ToyTask(scores=[0.5, 0.4]), _cfg(epochs=5, patience=1), tmp_path).fit()
    result = Trainer(ToyTask(), _cfg(epochs=5, patience=1), tmp_path).fit(resume=True)
    assert result.epochs_run == 2 and result.stop_reason == "early_stop"


def test_gradient_accumulation_counts_optimizer_steps(tmp_path):
    trainer = Trainer(ToyTask(), _cfg(epochs=2, grad_accum=4), tmp_path)
    trainer.fit()
    assert trainer.total_steps == 2 * 2 and trainer.state["step"] == 4


def test_bf16_mixed_precision_and_clipping_run_on_cpu(tmp_path):
    result = Trainer(ToyTask(), _cfg(epochs=1, mixed_precision="bf16", grad_clip=1.0,
                                     optimizer="adamw", channels_last=False), tmp_path).fit()
    assert result.epochs_run == 1 and result.history[0]["train_loss"] > 0


def test_time_budget_stops_training_and_still_evaluates(tmp_path):
    result = Trainer(ToyTask(n=4096), _cfg(epochs=50, max_minutes=1e-4), tmp_path).fit()
    assert result.stop_reason == "time_budget" and result.epochs_run == 1
    assert "score" in result.history[0] and (tmp_path / "model" / "weights.pt").is_file()


def test_cosine_schedule_warms_up_then_decays_to_the_floor(tmp_path):
    trainer = Trainer(ToyTask(), _cfg(epochs=2, warmup_steps=4, min_lr_ratio=0.1), tmp_path)
    trainer.state = {"elapsed_s": 0.0}
    trainer.total_steps = 20
    factors = [trainer._lr_factor(s) for s in range(21)]
    assert factors[0] == pytest.approx(1 / 5) and factors[3] == pytest.approx(4 / 5)
    assert factors[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[4:], factors[5:], strict=False))
    assert factors[20] == pytest.approx(0.1)
    trainer.cfg = _cfg(schedule="constant")
    assert trainer._lr_factor(15) == 1.0


def test_a_second_run_into_the_same_folder_needs_resume(tmp_path):
    Trainer(ToyTask(), _cfg(epochs=1), tmp_path).fit()
    with pytest.raises(MedcapError, match="--resume"):
        Trainer(ToyTask(), _cfg(epochs=1), tmp_path).fit()



def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_afresh_with_a_notice(tmp_path, capsys):
    """Issue 26 item 7: the first epoch of a run is not exposed to a kill."""
    Trainer(ToyTask(), _cfg(epochs=2), tmp_path / "clean").fit()
    (tmp_path / "killed").mkdir()  # what a run killed in its first epoch leaves: its folder, logs, no checkpoint
    (tmp_path / "killed" / "metrics.csv").write_text("epoch,step\n")
    Trainer(ToyTask(), _cfg(epochs=2), tmp_path / "killed").fit(resume=True)
    assert "starting the run afresh" in capsys.readouterr().out
    clean = torch.load(tmp_path / "clean" / "model" / "weights.pt")
    resumed = torch.load(tmp_path / "killed" / "model" / "weights.pt")
    for k in clean:
        torch.testing.assert_close(clean[k], resumed[k], rtol=0, atol=0)


def test_resume_with_a_different_schedule_length_is_refused(tmp_path):
    Trainer(ToyTask(), _cfg(epochs=1), tmp_path).fit()
    with pytest.raises(MedcapError, match="optimiser steps"):
        Trainer(ToyTask(), _cfg(epochs=2), tmp_path).fit(resume=True)


def test_bad_settings_are_one_line_errors():
    with pytest.raises(MedcapError, match="optimizer"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(MedcapError, match="mixed_precision"):
        TrainConfig(mixed_precision="fp8")


def test_train_config_takes_its_fields_from_a_larger_task_config():
    cfg = TrainConfig.from_config({"lr": 0.5, "epochs": 3, "backbone": "resnet18"})
    assert cfg.lr == 0.5 and cfg.epochs == 3 and cfg.seed == 42


@pytest.mark.slow
def test_two_processes_train_stop_on_the_budget_together_and_save_every_rank_state(tmp_path):
    """`torchrun --nproc_per_node 2` on the CPU (gloo): the DDP path of the engine."""
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "ddp.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_engine import ToyTask, _cfg\n"
        "from medcap.training.engine import Trainer\n"
        "budget = float(sys.argv[2])\n"
        "r = Trainer(ToyTask(), _cfg(epochs=3, max_minutes=budget), sys.argv[1]).fit()\n"
        # one write per rank: a short write to a pipe is atomic, print()'s pieces can interleave
        "sys.stdout.write(f'RESULT {r.epochs_run} {r.stop_reason}\\n')\n")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script)]
    done = subprocess.run([*torchrun, str(tmp_path / "a"), "0"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("RESULT 3 epochs") == 2
    ckpt = latest_checkpoint(tmp_path / "a")
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= {p.name for p in ckpt.iterdir()}
    assert json.loads((ckpt / "trainer_state.json").read_text())["step"] == 3 * 4  # 8 batches / 2 ranks
    done = subprocess.run([*torchrun, str(tmp_path / "b"), "1e-6"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("RESULT 1 time_budget") == 2
