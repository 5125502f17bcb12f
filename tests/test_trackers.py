"""Experiment trackers (report_to): step-level train/ and valid/ scalars through Accelerate's trackers."""
from __future__ import annotations

import csv
import importlib.util

import pytest

from medcap.errors import MedcapError
from medcap.training.engine import Trainer
from medcap.training.trackers import check_installed, parse_report_to
from test_engine import ToyTask, _cfg  # the engine tests' toy regression task


def _mlflow_runs(uri: str) -> list:
    from mlflow.tracking import MlflowClient

    (experiment,) = [e for e in MlflowClient(uri).search_experiments() if e.name == "medcap"]
    return MlflowClient(uri).search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def _mlflow_metrics(uri: str) -> dict[str, list[tuple[int, float]]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    (run,) = _mlflow_runs(uri)
    assert run.info.status == "FINISHED" and run.data.params["lr"] == "0.01"
    return {key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
            for key in run.data.metrics}


def test_mlflow_with_a_local_file_store_gets_step_level_train_and_valid_scalars(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    store = tmp_path / "mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow 3.x keeps file stores behind this switch
    result = Trainer(ToyTask(), _cfg(epochs=2, report_to="mlflow", logging_steps=2), tmp_path / "run").fit()
    metrics = _mlflow_metrics(store.as_uri())
    assert {"train/loss", "train/lr", "train/epoch", "valid/score", "valid/mse"} <= set(metrics)
    assert not {"step", "elapsed_s", "epoch", "train_loss"} & set(metrics)  # no flat, per-epoch tags
    # 64 examples / batch 8 = 8 optimiser steps an epoch: a report every 2 steps, validation per epoch
    assert [s for s, _ in metrics["train/loss"]] == [2, 4, 6, 8, 10, 12, 14, 16]
    assert [s for s, _ in metrics["valid/mse"]] == [8, 16]
    assert [v for _, v in metrics["valid/mse"]] == pytest.approx([r["mse"] for r in result.history])
    assert metrics["train/epoch"][-1][1] == pytest.approx(2.0)
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_a_run_that_crashes_is_marked_failed_and_the_next_one_starts_clean(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    store = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(ToyTask(crash_after_steps=3), _cfg(epochs=1, report_to="mlflow"), tmp_path / "a").fit()
    Trainer(ToyTask(), _cfg(epochs=1, report_to="mlflow"), tmp_path / "b").fit()
    assert [(r.info.run_name, r.info.status) for r in _mlflow_runs(store)] == [("a", "FAILED"), ("b", "FINISHED")]


def test_tensorboard_tags_are_train_and_valid_per_logging_step(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    Trainer(ToyTask(), _cfg(epochs=1, logging_steps=4), tmp_path).fit()  # report_to defaults to tensorboard
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "valid/score", "valid/mse"} <= tags and "step" not in tags
    assert [e.step for e in events.Scalars("train/loss")] == [4, 8]


def test_report_to_none_writes_no_tracker_files(tmp_path):
    Trainer(ToyTask(), _cfg(epochs=1, report_to="none"), tmp_path).fit()
    assert (tmp_path / "metrics.csv").is_file()
    assert not (tmp_path / "tensorboard").exists() and not (tmp_path / "mlflow.db").exists()


def test_report_to_names_are_checked_in_one_line():
    assert parse_report_to("none") == [] and parse_report_to("tensorboard, mlflow") == ["tensorboard", "mlflow"]
    with pytest.raises(MedcapError, match="report_to: expected tensorboard, mlflow, wandb or none"):
        _cfg(report_to="comet")
    with pytest.raises(MedcapError, match="logging_steps must be at least 1"):
        _cfg(logging_steps=0)


def test_a_tracker_whose_package_is_missing_is_a_one_line_error(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(MedcapError) as e:
        check_installed(["wandb"])
    assert "pip install 'medcap[wandb]'" in e.value.format() and "\n" not in e.value.format()
    with pytest.raises(MedcapError, match="report_to=wandb needs the wandb package"):
        Trainer(ToyTask(), _cfg(epochs=1, report_to="wandb"), tmp_path).fit()
    assert not (tmp_path / "checkpoints").exists()


def test_train_concepts_with_report_to_mlflow_logs_step_level_scalars(synth_small, cli, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    store = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    rc, _, err = cli("train", "concepts", "--config", "demo", "--data", synth_small, "--out", tmp_path / "run",
                     "--set", "epochs=1", "--set", "max_minutes=0", "--set", "image_size=32", "--set", "progress=false",
                     "--set", "report_to=mlflow", "--set", "logging_steps=1")
    assert rc == 0, err
    from mlflow.tracking import MlflowClient

    (run,) = _mlflow_runs(store)
    steps = {k: [m.step for m in MlflowClient(store).get_metric_history(run.info.run_id, k)] for k in run.data.metrics}
    (row,) = csv.DictReader((tmp_path / "run" / "metrics.csv").open())  # one epoch
    n = int(row["step"])
    assert steps["train/loss"] == list(range(1, n + 1)) and steps["valid/f1"] == [n] and steps["valid/loss"] == [n]
    assert run.data.params["report_to"] == "mlflow"
