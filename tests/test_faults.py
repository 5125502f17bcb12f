"""Faults a hostile user (or a bad day) brings: each gives one line naming the file and what to
do, exit non-zero, and nothing half-written; nothing NaN is ever saved or loaded as a model.

Kills are real (SIGKILL of a subprocess); a full disk is an injected OSError(ENOSPC) and a
read-only disk an injected OSError(EROFS) (the tests run as root, so chmod would not stop writes).
"""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from medcap.errors import MedcapError
from medcap.models.weights import write_checksums
from medcap.training.engine import TrainConfig, Trainer, latest_checkpoint, seed_everything
from medcap.training.runlock import RunLock

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _one_line(err: str) -> str:
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip() and not ln.startswith("notice:")]
    assert len(lines) == 1, err
    return lines[0]


# ------------------------------------------------------------------------------------------
# A toy task for the engine (milliseconds per step); nan_steps: training steps whose loss is NaN
# ------------------------------------------------------------------------------------------

class Toy(nn.Module):
    def __init__(self, hidden=8):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x):
        return self.net(x).squeeze(-1)


class ToyTask:
    monitor, monitor_mode = "score", "max"

    def __init__(self, hidden=8, nan_steps=()):
        seed_everything(0)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(64, 4, generator=g)
        y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
        self.model = Toy(hidden)
        self.train_loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
        self.valid_loader = DataLoader(TensorDataset(x[:16], y[:16]), batch_size=8)
        self.nan_steps, self.steps, self.saved = set(nan_steps), 0, 0

    def training_step(self, model, batch):
        self.steps += 1
        x, y = batch
        loss = nn.functional.mse_loss(model(x), y)
        return loss * float("nan") if self.steps in self.nan_steps else loss

    def evaluate(self, model, loader, accelerator):
        errs = [accelerator.gather_for_metrics((model(x) - y) ** 2) for x, y in loader]
        return {"score": -torch.cat(errs).mean().item()}

    def save_best(self, model, folder):
        self.saved += 1
        torch.save(model.state_dict(), folder / "weights.pt")


def _cfg(**kw):
    return TrainConfig(**{"epochs": 2, "lr": 1e-2, "patience": 0, "progress": False, "cpu": True, "seed": 0, **kw})


# ------------------------------------------------------------------------------------------
# 1. Non-finite guard
# ------------------------------------------------------------------------------------------

def test_a_few_nan_steps_are_skipped_and_training_goes_on(tmp_path):
    task = ToyTask(nan_steps={3, 4})
    trainer = Trainer(task, _cfg(epochs=1), tmp_path)
    result = trainer.fit()
    assert trainer._guard.skipped == 2 and trainer.state["step"] == 8 - 2
    assert all(torch.isfinite(p).all() for p in task.model.parameters())
    assert result.history[0]["train_loss"] == result.history[0]["train_loss"]  # not NaN
    assert (tmp_path / "model" / "weights.pt").is_file()


def test_nan_steps_in_a_row_stop_training_with_one_line_naming_epoch_and_step(tmp_path):
    task = ToyTask(nan_steps=set(range(3, 100)))
    with pytest.raises(MedcapError) as e:
        Trainer(task, _cfg(max_nonfinite_steps=3), tmp_path).fit()
    msg = e.value.format()
    assert "epoch 1 (step 6)" in msg and "lower the learning rate" in msg and "\n" not in msg
    assert task.saved == 0 and not (tmp_path / "model").exists() and latest_checkpoint(tmp_path) is None


def test_nan_weights_are_never_saved_as_the_best_model(tmp_path):
    class Poisoned(ToyTask):
        def training_step(self, model, batch):
            with torch.no_grad():  # weights go NaN through the optimiser's step, the loss stays finite
                model.net[0].weight[0, 0] = float("nan") if self.steps >= 4 else model.net[0].weight[0, 0]
            self.steps += 1
            x, y = batch
            return nn.functional.mse_loss(model(x).nan_to_num(0.0), y)

    task = Poisoned()
    with pytest.raises(MedcapError, match=r"training diverged in epoch 1 .*NaN or infinite.*not saved"):
        Trainer(task, _cfg(max_nonfinite_steps=100), tmp_path).fit()
    assert task.saved == 0 and not (tmp_path / "model").exists()


def test_a_nan_validation_loss_stops_training_before_the_model_is_saved(tmp_path):
    class NanValid(ToyTask):
        def evaluate(self, model, loader, accelerator):
            return {"score": 0.0, "valid_loss": float("nan")}

    task = NanValid()
    with pytest.raises(MedcapError, match="diverged in epoch 1 .*the valid loss is nan"):
        Trainer(task, _cfg(), tmp_path).fit()
    assert task.saved == 0 and not (tmp_path / "model").exists()


@pytest.mark.slow
def test_train_captions_with_lr_1e9_ends_non_zero_with_one_line_and_no_model(cli, synth_small, tmp_path):
    from test_captions_cli import TINY

    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    rc, _, err = cli("train", "captions", "--config", config, "--data", synth_small, "--out", tmp_path / "run",
                     "--set", "lr=1e9")
    assert rc == 2 and "diverged in epoch 1" in err.strip().splitlines()[-1]
    assert not (tmp_path / "run" / "model").exists()


@pytest.mark.slow
def test_train_concepts_with_lr_1e9_ends_non_zero_with_one_line_and_no_model(cli, synth_small, tmp_path):
    out = tmp_path / "run"
    rc, _, err = cli("train", "concepts", "--config", "demo", "--data", synth_small, "--out", out,
                     "--set", "image_size=64", "--set", "epochs=1", "--set", "max_minutes=0",
                     "--set", "batch_size=16", "--set", "progress=false", "--set", "lr=1e9")
    assert rc == 2
    line = _one_line(err.split("config demo")[-1])
    assert "diverged in epoch 1" in line and "lower the learning rate" in line
    assert not (out / "model").exists()


@pytest.mark.parametrize("setting, message", [
    ("lr=nan", "lr: expected a finite number"), ("lr=-1", "lr: expected above 0"),
    ("batch_size=0", "batch_size: expected at least 1"), ("epochs=x", "epochs: expected int"),
])
def test_bad_config_values_are_one_line_errors_before_anything_is_written(cli, synth_small, tmp_path, setting,
                                                                          message):
    rc, _, err = cli("train", "concepts", "--config", "demo", "--data", synth_small, "--out", tmp_path / "r",
                     "--set", setting)
    assert rc == 2 and message in _one_line(err) and "command line" in err
    assert not (tmp_path / "r").exists()


def test_yaml_values_get_the_same_checks_naming_the_file(cli, synth_small, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: demo\nlr: .nan\n")
    rc, _, err = cli("train", "concepts", "--config", bad, "--data", synth_small, "--out", tmp_path / "r")
    assert rc == 2 and f"{bad}: lr: expected a finite number" in _one_line(err)


# ------------------------------------------------------------------------------------------
# Model folders: damaged, non-finite, wrong types, bad thresholds
# ------------------------------------------------------------------------------------------

@pytest.fixture
def detector_dir(tmp_path):
    from medcap.data.vocab import ConceptVocabulary
    from medcap.models.concept_detector import ConceptDetector, DetectorConfig
    from medcap.models.processing import ConceptProcessor

    seed_everything(0)
    model = ConceptDetector(DetectorConfig(num_classes=3, backbone="resnet18"))
    model.vocabulary = ConceptVocabulary(["C0000001", "C0000002", "C0000003"])
    model.processor = ConceptProcessor(32, "squash", None, None)
    model.thresholds = {"global": 0.5, "never_empty": False, "per_concept": {}}
    return model.save_pretrained(tmp_path / "model")


def _load(folder):
    from medcap.models.concept_detector import ConceptDetector

    return ConceptDetector.from_pretrained(folder)


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_a_damaged_weights_file_is_a_one_line_error_naming_it(detector_dir, damage):
    weights = detector_dir / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")
    with pytest.raises(MedcapError, match="damaged or truncated") as e:
        _load(detector_dir)
    assert e.value.file == str(weights)


def test_weights_with_nan_are_refused_at_load(detector_dir):
    from safetensors.torch import load_file, save_file

    weights = detector_dir / "model.safetensors"
    state = load_file(str(weights))
    key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 10)
    state[key].view(-1)[:5] = float("nan")  # as flipped exponent bits would
    save_file(state, str(weights))
    write_checksums(detector_dir)  # NaN saved as such (the checksums fit): the finite check refuses it
    with pytest.raises(MedcapError, match="5 of .* weights that are NaN or infinite") as e:
        _load(detector_dir)
    assert e.value.file == str(weights)


@pytest.mark.parametrize("value", [float("nan"), 7, -1, "0.5"])
def test_thresholds_outside_0_1_are_refused_at_load(detector_dir, value):
    path = detector_dir / "thresholds.json"
    path.write_text(json.dumps({"global": value}))
    with pytest.raises(MedcapError, match=r"must be a number in \[0, 1\]") as e:
        _load(detector_dir)
    assert e.value.file == str(path)


@pytest.mark.parametrize("file, key, value, message", [
    ("config.json", "num_classes", "many", "num_classes: expected int, got 'many'"),
    ("config.json", "lam", float("inf"), "lam: expected a finite number"),
    ("preprocessor_config.json", "image_size", 0, "image_size: expected at least 16, got 0"),
])
def test_wrong_typed_json_values_in_a_model_folder_are_one_line_errors(detector_dir, file, key, value, message):
    path = detector_dir / file
    data = json.loads(path.read_text())
    data[key] = value
    path.write_text(json.dumps(data))
    with pytest.raises(MedcapError, match=message) as e:
        _load(detector_dir)
    assert e.value.file == str(path)


def test_predict_with_a_damaged_model_exits_2_with_one_line(detector_dir, synth_small, cli, tmp_path):
    (detector_dir / "model.safetensors").write_bytes(b"")
    rc, _, err = cli("predict", "concepts", "--model", detector_dir, "--images", synth_small / "test",
                     "--out", tmp_path / "s.csv")
    assert rc == 2 and "model.safetensors" in _one_line(err) and not (tmp_path / "s.csv").exists()


@pytest.fixture(scope="module")
def captioner_dir(tmp_path_factory):
    from medcap.models.captioner import Captioner

    cap = Captioner.from_scratch("tiny", ["a chest x-ray", "a ct of the head"], image_size=32, vocab_size=100, seed=0)
    return cap.save_pretrained(tmp_path_factory.mktemp("cap") / "model")


def test_captioner_settings_of_the_wrong_type_and_damaged_weights_are_refused(captioner_dir, tmp_path):
    import shutil

    from medcap.models.captioner import METADATA_FILE, Captioner

    folder = Path(shutil.copytree(captioner_dir, tmp_path / "c"))
    meta = json.loads((folder / METADATA_FILE).read_text())
    (folder / METADATA_FILE).write_text(json.dumps({**meta, "max_length": "x"}))
    with pytest.raises(MedcapError, match="max_length: expected int"):
        Captioner.from_pretrained(folder)
    (folder / METADATA_FILE).write_text(json.dumps(meta))
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(MedcapError, match="damaged.* truncated"):
        Captioner.from_pretrained(folder)


def test_a_captioner_with_nan_weights_is_refused(captioner_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from medcap.models.captioner import Captioner

    folder = Path(shutil.copytree(captioner_dir, tmp_path / "c"))
    state = load_file(str(folder / "model.safetensors"))
    key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 10)
    state[key].view(-1)[0] = float("inf")
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    write_checksums(folder)  # NaN saved as such (the checksums fit): the finite check refuses it
    with pytest.raises(MedcapError, match="NaN or infinite"):
        Captioner.from_pretrained(folder)


# ------------------------------------------------------------------------------------------
# 3. Run lock
# ------------------------------------------------------------------------------------------

def _lock_holder(folder: Path):
    """A subprocess holding the run lock of ``folder`` until killed."""
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {SRC!r})
        from medcap.training.runlock import RunLock
        RunLock({str(folder)!r}).acquire()
        print("locked", flush=True)
        time.sleep(300)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_into_a_folder_in_use_refuses_at_once_naming_the_pid(tmp_path):
    holder = _lock_holder(tmp_path / "run")
    try:
        with pytest.raises(MedcapError) as e:
            Trainer(ToyTask(), _cfg(epochs=1), tmp_path / "run").fit()
        assert f"process {holder.pid}" in e.value.format() and e.value.file == str(tmp_path / "run")
        assert not (tmp_path / "run" / "checkpoints").exists()
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_killed_run_is_taken_over_with_a_notice(tmp_path, capsys):
    holder = _lock_holder(tmp_path / "run")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    Trainer(ToyTask(), _cfg(epochs=1), tmp_path / "run").fit()
    err = capsys.readouterr().err
    assert f"took over the run lock of {tmp_path / 'run'} from process {holder.pid}" in err


def test_the_cli_refuses_a_folder_in_use_with_one_line(cli, synth_small, tmp_path):
    holder = _lock_holder(tmp_path / "run")
    try:
        rc, _, err = cli("train", "concepts", "--config", "demo", "--data", synth_small, "--out", tmp_path / "run",
                         "--set", "epochs=1", "--set", "progress=false")
        message = _one_line(err.split("config demo")[-1])
        assert rc == 2 and f"in use by another training run (process {holder.pid})" in message
    finally:
        holder.kill()
        holder.wait()


def test_run_lock_is_released_after_a_failed_run_in_the_same_process(tmp_path):
    with pytest.raises(MedcapError):
        Trainer(ToyTask(nan_steps=set(range(1, 100))), _cfg(max_nonfinite_steps=1), tmp_path).fit()
    with RunLock(tmp_path):
        pass


# ------------------------------------------------------------------------------------------
# 4/5. Checkpoints: damaged, incomplete, changed model; debris of earlier crashes
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["optimizer.bin", "scheduler.bin", "trainer_state.json", "model.safetensors"])
def test_a_truncated_checkpoint_file_names_the_checkpoint_and_what_to_do(tmp_path, name):
    Trainer(ToyTask(), _cfg(epochs=1), tmp_path).fit()
    ckpt = latest_checkpoint(tmp_path)
    data = (ckpt / name).read_bytes()
    (ckpt / name).write_bytes(data[: max(1, len(data) // 2)])
    with pytest.raises(MedcapError) as e:
        Trainer(ToyTask(), _cfg(epochs=1), tmp_path).fit(resume=True)
    msg = e.value.format()
    assert "epoch-000" in msg and "damaged checkpoint" in msg and "--resume from the previous" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("damage", ["symlink-loop", "folder", "not-a-state", "binary"])
def test_an_unreadable_trainer_state_is_one_line_or_a_skipped_checkpoint(tmp_path, damage, capsys):
    Trainer(ToyTask(), _cfg(epochs=1), tmp_path).fit()
    state = latest_checkpoint(tmp_path) / "trainer_state.json"
    state.unlink()
    {"symlink-loop": lambda: state.symlink_to(state), "folder": state.mkdir,
     "not-a-state": lambda: state.write_text("[1, 2]"), "binary": lambda: state.write_bytes(b"\xff\xfe{")}[damage]()
    if damage in ("symlink-loop", "folder"):  # not a file: an incomplete checkpoint, skipped with a notice
        Trainer(ToyTask(), _cfg(epochs=1), tmp_path).fit(resume=True)
        assert "skipped the incomplete checkpoint" in capsys.readouterr().out
        return
    with pytest.raises(MedcapError) as e:
        Trainer(ToyTask(), _cfg(epochs=1), tmp_path).fit(resume=True)
    msg = e.value.format()
    assert str(state) in msg and "damaged checkpoint" in msg and "\n" not in msg


def test_an_empty_checkpoint_file_makes_resume_skip_that_checkpoint(tmp_path, capsys):
    Trainer(ToyTask(), _cfg(epochs=2, keep_checkpoints=2), tmp_path).fit()
    (tmp_path / "checkpoints" / "epoch-001" / "optimizer.bin").write_bytes(b"")
    result = Trainer(ToyTask(), _cfg(epochs=2, keep_checkpoints=2), tmp_path).fit(resume=True)
    out = capsys.readouterr()
    assert "skipped the incomplete checkpoint" in out.out and "optimizer.bin is missing or empty" in out.out
    assert "resumed from" in out.out and "epoch-000" in out.out
    assert result.epochs_run == 2 and [h["epoch"] for h in result.history] == [1, 2]


def test_resume_skips_an_incomplete_checkpoint_and_says_which_it_used(tmp_path, capsys):
    Trainer(ToyTask(), _cfg(epochs=2, keep_checkpoints=2), tmp_path).fit()
    (tmp_path / "checkpoints" / "epoch-001" / "scheduler.bin").unlink()
    (tmp_path / "checkpoints" / ".epoch-002.tmp").mkdir()  # a stale write after ENOSPC
    result = Trainer(ToyTask(), _cfg(epochs=3, keep_checkpoints=2), tmp_path)
    with pytest.raises(MedcapError, match="optimiser steps"):  # 3 epochs != 2: the schedule check still holds
        result.fit(resume=True)
    out = capsys.readouterr()
    text = out.out + out.err
    assert "skipped the incomplete checkpoint" in text and "epoch-001 (scheduler.bin is missing or empty)" in text
    assert not (tmp_path / "checkpoints" / ".epoch-002.tmp").exists()
    result = Trainer(ToyTask(), _cfg(epochs=2, keep_checkpoints=2), tmp_path).fit(resume=True)
    assert "resumed from" in capsys.readouterr().out and result.history[-1]["epoch"] == 2


def test_resuming_with_a_changed_model_is_a_one_line_error(tmp_path):
    Trainer(ToyTask(), _cfg(epochs=1), tmp_path).fit()
    with pytest.raises(MedcapError, match="does not fit the model of this run") as e:
        Trainer(ToyTask(hidden=16), _cfg(epochs=1), tmp_path).fit(resume=True)
    assert "\n" not in e.value.format()


def test_debris_of_earlier_crashes_is_removed_or_restored_at_the_next_start(tmp_path, capsys):
    from medcap.fileio import recover_dir

    (tmp_path / ".model.old").mkdir(parents=True)
    (tmp_path / ".model.old" / "weights.pt").write_text("the only good copy")
    (tmp_path / ".model.x1y2.tmp").mkdir()
    (tmp_path / "checkpoints" / ".epoch-000.tmp").mkdir(parents=True)
    recover_dir(tmp_path / "model")
    assert (tmp_path / "model" / "weights.pt").read_text() == "the only good copy"
    assert not (tmp_path / ".model.x1y2.tmp").exists()
    Trainer(ToyTask(), _cfg(epochs=1), tmp_path / "fresh").fit()
    (tmp_path / "fresh" / ".model.old").mkdir()
    (tmp_path / "fresh" / "checkpoints" / ".epoch-005.tmp").mkdir()
    Trainer(ToyTask(), _cfg(epochs=1), tmp_path / "fresh").fit(resume=True)
    err = capsys.readouterr().err
    assert "restored" in err and "removed" in err
    assert not list((tmp_path / "fresh").glob(".model*")) and not list((tmp_path / "fresh" / "checkpoints").glob(".*"))


def test_a_kill_between_the_two_renames_of_a_folder_swap_loses_nothing(tmp_path):
    """A subprocess is SIGKILLed after renaming the old folder away and before the new one takes its place."""
    target = tmp_path / "model"
    target.mkdir()
    (target / "file").write_text("old")
    code = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {SRC!r})
        from medcap import fileio
        real, calls = os.replace, []
        def replace(a, b):
            calls.append(1)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            real(a, b)
        fileio.os.replace = replace
        with fileio.atomic_dir({str(target)!r}) as tmp:
            (tmp / "file").write_text("new")
    """)
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL
    assert not target.exists() and (tmp_path / ".model.old" / "file").read_text() == "old"
    from medcap.fileio import recover_dir

    notices = recover_dir(target)
    assert (target / "file").read_text() == "old" and any("restored" in n for n in notices)
    assert not list(tmp_path.glob(".model*"))


def test_a_model_loader_restores_a_folder_left_mid_swap(detector_dir):
    old = detector_dir.with_name(".model.old")
    os.replace(detector_dir, old)
    assert _load(detector_dir).config.num_classes == 3 and detector_dir.is_dir() and not old.exists()


@pytest.mark.slow
def test_training_killed_at_random_moments_resumes_to_the_same_weights(tmp_path):
    """SIGKILL a training subprocess three times, at different points after an epoch ends (mid-epoch,
    mid-checkpoint); each restart takes over the stale lock, resumes, and the end result equals an
    uninterrupted run's, bit for bit."""
    import time

    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {SRC!r}); sys.path.insert(0, {str(Path(__file__).parent)!r})
        import torch
        from test_faults import ToyTask, _cfg
        from medcap.training.engine import Trainer, latest_checkpoint

        class Slow(ToyTask):
            def training_step(self, model, batch):
                time.sleep(0.03)
                return super().training_step(model, batch)

        task = Slow()
        out = sys.argv[1]
        Trainer(task, _cfg(epochs=6), out).fit(resume=latest_checkpoint(out) is not None)
        torch.save(task.model.state_dict(), out + "/final.pt")
    """))
    run = [sys.executable, "-u", str(script)]
    assert subprocess.run([*run, str(tmp_path / "a")], check=False, capture_output=True, timeout=300).returncode == 0
    for delay in (0.05, 0.15, 0.3):
        proc = subprocess.Popen([*run, str(tmp_path / "b")], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True)
        while not proc.stdout.readline().startswith("epoch "):  # an epoch ended; its checkpoint is being written
            assert proc.poll() is None
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = subprocess.run([*run, str(tmp_path / "b")], check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "took over the run lock" in done.stderr
    a, b = torch.load(tmp_path / "a" / "final.pt"), torch.load(tmp_path / "b" / "final.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert not list((tmp_path / "b").glob(".model*")) and not list((tmp_path / "b" / "checkpoints").glob(".*"))


# ------------------------------------------------------------------------------------------
# 4. Write paths: full disk, read-only disk, a folder where a file is expected
# ------------------------------------------------------------------------------------------

def _fail_on_fsync(monkeypatch, code):
    def fsync(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only")])
def test_a_full_or_read_only_disk_is_one_line_and_leaves_no_file(cli, synth_small, tmp_path, monkeypatch,
                                                                 code, words):
    _fail_on_fsync(monkeypatch, code)
    out = tmp_path / "sub.csv"
    rc, _, err = cli("baseline", "concepts", "most-frequent", "--data", synth_small, "--out", out)
    assert rc == 1 and words in _one_line(err)
    assert list(tmp_path.iterdir()) == []  # neither the CSV nor its temporary file


def test_a_json_output_on_a_full_disk_is_one_line(detector_dir, synth_small, cli, tmp_path, monkeypatch):
    import medcap.fileio

    real = medcap.fileio.atomic_write

    def failing(path, *a, **k):
        if str(path).endswith(".json"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(medcap.fileio, "atomic_write", failing)
    rc, _, err = cli("predict", "concepts", "--model", detector_dir, "--images", synth_small / "test",
                     "--out", tmp_path / "s.csv", "--json", tmp_path / "p.json")
    assert rc == 1 and _one_line(err) == f"error: {tmp_path / 'p.json'}: no space left on the disk: free some space " \
                                         "or write elsewhere (nothing was half-written)"
    assert not (tmp_path / "p.json").exists()


def test_a_model_folder_on_a_full_disk_leaves_the_old_folder_and_no_debris(detector_dir, monkeypatch):
    from medcap.models.concept_detector import ConceptDetector

    model = _load(detector_dir)
    before = (detector_dir / "model.safetensors").read_bytes()
    import safetensors.torch

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(OSError):
        ConceptDetector.save_pretrained(model, detector_dir)
    assert (detector_dir / "model.safetensors").read_bytes() == before
    assert [p.name for p in detector_dir.parent.iterdir()] == ["model"]


def test_an_existing_folder_where_a_file_is_expected_is_one_line(cli, synth_small, tmp_path):
    (tmp_path / "sub.csv").mkdir()
    rc, _, err = cli("baseline", "concepts", "most-frequent", "--data", synth_small, "--out", tmp_path / "sub.csv")
    assert rc == 2 and "is a folder" in _one_line(err)


def test_a_report_write_eisdir_maps_to_one_line():
    from medcap.cli import os_error_line

    assert os_error_line(IsADirectoryError(errno.EISDIR, "Is a directory", "/x/report.html")) == \
        "/x/report.html: is a folder; expected a file path"
    assert os_error_line(OSError(errno.ECONNRESET, "reset")) is None  # not a disk fault: a real bug shows


# ------------------------------------------------------------------------------------------
# 6. Data checks: control characters, manual-concepts rows
# ------------------------------------------------------------------------------------------

def test_nul_bytes_in_captions_and_names_are_reported_with_file_and_line(tmp_path):
    import shutil

    from medcap.data.check import check_dataset
    from medcap.synth import SynthConfig, generate_dataset

    root = tmp_path / "d"
    generate_dataset(root, SynthConfig(n_train=6, n_valid=3, n_test=0, size=32, seed=0))
    caps = root / "train_captions.csv"
    lines = caps.read_text().splitlines()
    lines[2] = lines[2][:-3] + "\x00" + lines[2][-3:]
    caps.write_text("\n".join(lines) + "\n")
    names = root / "cui_mapping.csv"
    nl = names.read_text().splitlines()
    nl[1] = nl[1] + "\x07"
    names.write_text("\n".join(nl) + "\n")
    manual = root / "valid_concepts_manual.csv"
    ml = manual.read_text().splitlines()
    dropped = ml.pop(2).split(",")[0]
    manual.write_text("\n".join(ml) + "\n")
    found = {(Path(p.file).name, p.line, p.kind): p.message for p in check_dataset(root, decode_images=False)}
    assert "a NUL byte" in found[("train_captions.csv", 3, "control_character")]
    assert "U+0007" in found[("cui_mapping.csv", 2, "control_character")]
    assert any(k[0] == "valid_concepts.csv" and k[2] == "id_mismatch" and dropped in m
               and "valid_concepts_manual.csv" in m for k, m in found.items())
    shutil.rmtree(root)


# ------------------------------------------------------------------------------------------
# 2. The web app within bounds
# ------------------------------------------------------------------------------------------

def _bomb_png(path: Path, side: int = 9000) -> Path:
    """A 9000x9000 PNG of ~100-200 KB: tiny on disk, 243 MB as RGB pixels (81 M pixels, under the
    training limit of 89.5 M)."""
    from PIL import Image, ImageDraw

    im = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(im)
    for i in range(0, side, 300):
        draw.line([(0, i), (side, side - i)], fill=200, width=3)
    im.save(path, optimize=False, compress_level=9)
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    return _bomb_png(tmp_path_factory.mktemp("bomb") / "bomb.png")


def test_the_app_refuses_a_bomb_like_png_from_its_header(bomb):
    from medcap.data.images import MAX_PIXELS
    from medcap.inference.pipeline import DEFAULT_MAX_PIXELS, Pipeline
    from medcap.webapp.server import _outputs_for

    assert 9000 * 9000 <= MAX_PIXELS and DEFAULT_MAX_PIXELS < 9000 * 9000  # stricter than for training data
    assert bomb.stat().st_size < 400_000
    outputs = _outputs_for(Pipeline(), str(bomb))
    assert "over the limit of 40,000,000" in outputs[-1] and "--max-pixels" in outputs[-1]


def test_the_app_reduces_an_accepted_large_image_before_anything_else(tmp_path, detector_dir):
    from PIL import Image

    from medcap.inference.pipeline import Pipeline
    from medcap.webapp.server import RequestOutputs, _handle

    big = tmp_path / "big.png"
    Image.new("L", (4000, 3000), 90).save(big)
    pipeline = Pipeline(detector_dir, None, max_side=512)
    assert pipeline.load(big).size == (512, 384)
    analysis = pipeline.analyze(big)
    assert analysis.image.size == (512, 384) and analysis.heatmap.size == (512, 384)
    outputs = RequestOutputs(tmp_path / "out", keep=2)
    first = _handle(pipeline, outputs, str(big))
    second = _handle(pipeline, outputs, str(big))
    assert first[0] != second[0] and Path(first[0]).read_bytes() == Path(second[0]).read_bytes()  # a file each
    _handle(pipeline, outputs, str(big))
    assert not Path(first[0]).exists() and Path(second[0]).exists()  # only the newest `keep` folders stay


LOAD_TEST = """
import json, sys, threading, time
sys.path.insert(0, {src!r})
from gradio_client import Client, handle_file
from medcap.webapp.server import serve

def rss_mb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024

demo = serve({concepts!r}, {captions!r}, port={port}, block=False, max_pixels=100_000_000, concurrency=2,
             queue_size=64)
base = rss_mb("VmRSS:")
client = Client("http://127.0.0.1:{port}/", verbose=False)
files = [{bomb!r} if i % 5 < 2 else {small!r} for i in range(50)]   # 20 bombs among 50 requests
jobs = [client.submit(handle_file(f), api_name="/analyze") for f in files]
answers = []
for job in jobs:
    status = job.result(timeout=600)[-1]
    answers.append("Analysed" in status)
print("RESULT", json.dumps({{"answered": len(answers), "analysed": sum(answers), "base_mb": base,
                             "peak_mb": rss_mb("VmHWM:")}}))
demo.close()
"""


@pytest.mark.slow
def test_fifty_requests_with_twenty_bomb_like_pngs_stay_within_memory_and_all_get_answers(
        tmp_path, bomb, detector_dir, captioner_dir):
    """Bound: peak resident memory of the server process (with its client) under 2 GB. Measured on a
    2-core CPU machine: 1.23 GB after start-up (Python, torch, Gradio, both models), 1.70 GB peak
    with two bombs decoded at a time; the app before images were reduced took 9 GB for one."""
    import socket

    from PIL import Image

    small = tmp_path / "small.png"
    Image.new("L", (300, 200), 90).save(small)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "load.py"
    script.write_text(LOAD_TEST.format(src=SRC, concepts=str(detector_dir), captions=str(captioner_dir), port=port,
                                       bomb=str(bomb), small=str(small)))
    done = subprocess.run([sys.executable, str(script)], check=False, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT", 1)[1].splitlines()[0])
    assert result["answered"] == 50 and result["analysed"] == 50, result
    assert result["peak_mb"] < 2000, result


class _Evil:
    """Unpickling this creates the file ``marker``: it shows whether a loader ran pickle code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("name", ["optimizer.bin", "scheduler.bin", "random_states_0.pkl"])
def test_malicious_pickles_in_a_checkpoint_execute_nothing(tmp_path, name):
    Trainer(ToyTask(), _cfg(epochs=1), tmp_path / "run").fit()
    marker = tmp_path / "pwned"
    torch.save(_Evil(marker), latest_checkpoint(tmp_path / "run") / name)
    try:
        Trainer(ToyTask(), _cfg(epochs=1), tmp_path / "run").fit(resume=True)
    except MedcapError:
        pass  # refusing the file is right too; running it is not
    assert not marker.exists()


def test_nonfinite_count_is_exact_when_a_sum_overflows_or_values_cancel():
    from medcap.models.nonfinite import nonfinite_count

    nan = torch.randn(100)
    nan[3] = float("nan")
    both_infs = torch.randn(10)
    both_infs[0], both_infs[1] = float("inf"), float("-inf")  # the sum is NaN: counted value by value
    overflow = torch.full((10,), 3e38)  # the fp32 sum overflows: counted, none is bad
    half = torch.randn(5, dtype=torch.float16)
    half[2] = float("inf")
    big_half = torch.full((10,), 60000.0, dtype=torch.float16)  # summed in fp32: no overflow
    complex_nan = torch.randn(4, dtype=torch.complex64)
    complex_nan[1] = complex(float("nan"), 0)
    tensors = [nan, both_infs, overflow, half, big_half, complex_nan, torch.arange(5)]
    assert nonfinite_count(tensors) == (1 + 2 + 0 + 1 + 0 + 1, sum(t.numel() for t in tensors))
