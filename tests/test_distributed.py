"""Two processes on the CPU (`accelerate launch --multi_gpu --num_processes 2 -m medcap train ...
--set cpu=true`): the distributed path of both tasks on tiny synthetic data. Both ranks must
finish, the data must be split between them, the model folder must be written once (by the
main process, no leftover temporary folders) and reload.

Why not `accelerate launch --num_processes 2 --cpu`: accelerate 1.x then starts ONE process
(its simple launcher; multi-CPU needs MPI), so nothing distributed would be tested.
`--multi_gpu` starts the processes through torchrun, and medcap's ``cpu`` setting makes
Accelerate join them with the gloo backend (its MULTI_CPU mode).
"""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CONCEPTS = ["--config", "demo", "--set", "image_size=32", "--set", "epochs=2", "--set", "max_minutes=0",
            "--set", "batch_size=8", "--set", "progress=false"]
CAPTIONS = ["--config", "demo", "--set", "model=scratch:tiny", "--set", "image_size=32", "--set", "vocab_size=300",
            "--set", "epochs=1", "--set", "max_minutes=0", "--set", "batch_size=8", "--set", "warmup_steps=0",
            "--set", "eval_images=4", "--set", "eval_max_new_tokens=8", "--set", "max_new_tokens=8",
            "--set", "progress=false"]


def _launch(task: str, data: Path, out: Path, options: list[str]) -> subprocess.CompletedProcess:
    launcher = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or shutil.which("accelerate")
    if launcher is None:
        pytest.skip("accelerate is not installed")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    cmd = [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "medcap", "train", task, "--data", str(data), "--out", str(out), *options,
           "--set", "cpu=true"]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, cwd=out.parent, check=False)


def _one_clean_model_folder(out: Path) -> Path:
    leftovers = [p.name for p in out.rglob(".*") if p.name.endswith(".tmp") or p.name.endswith(".old")]
    assert leftovers == []
    model = out / "model"
    assert model.is_dir() and (model / "config.json").is_file()
    return model


def test_two_processes_train_concepts_and_the_model_reloads(synth_small, tmp_path):
    out = tmp_path / "concepts"
    proc = _launch("concepts", synth_small, out, CONCEPTS)
    assert proc.returncode == 0, proc.stderr[-4000:]  # the launcher fails if either rank fails
    model = _one_clean_model_folder(out)
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]  # one row per epoch: only the main process writes
    # 48 training images in batches of 8 per process: 3 steps per epoch on each of 2 ranks (6 on one).
    assert [r["step"] for r in rows] == ["3", "6"]
    from medcap.inference.concepts import predict_concepts

    preds = predict_concepts(model, synth_small / "test")
    assert len(preds) == 16


def test_two_processes_train_captions_and_the_model_reloads(synth_small, tmp_path):
    out = tmp_path / "captions"
    proc = _launch("captions", synth_small, out, CAPTIONS)
    assert proc.returncode == 0, proc.stderr[-4000:]
    model = _one_clean_model_folder(out)
    with open(out / "metrics.csv", newline="") as f:
        assert [r["step"] for r in csv.DictReader(f)] == ["3"]  # 48 images, 8 per process and step, 2 ranks
    from medcap.inference.captions import predict_captions

    captions = predict_captions(model, sorted((synth_small / "test").iterdir())[:3], num_beams=1, max_new_tokens=8)
    assert len(captions) == 3 and all(isinstance(c, str) for c in captions.values())


# --------------------------------------------------------------------------- prediction (issue 22)
def _accelerate(args: list[str], cwd: Path, launch: list[str] | None = None, wait: bool = True):
    launcher = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or shutil.which("accelerate")
    if launcher is None:
        pytest.skip("accelerate is not installed")
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    cmd = [launcher, "launch", "--multi_gpu", *(launch or ["--num_processes", "2", "--num_machines", "1"]),
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "medcap", *args]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, cwd=cwd, check=False)


def _one_process(args: list[str], cwd: Path) -> None:
    """``medcap args`` in one process with the launched ones' torch threads (1): the thread count
    changes CPU rounding, the number of processes must not change anything."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, "-m", "medcap", *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_machines(args: list[str], cwd: Path) -> None:
    """``args`` on two 'machines' of one process each, joined over the loopback address with gloo."""
    port = str(_free_port())
    procs = [_accelerate(args, cwd, ["--num_machines", "2", "--num_processes", "2", "--machine_rank", str(rank),
                                     "--main_process_ip", "127.0.0.1", "--main_process_port", port], wait=False)
             for rank in (0, 1)]
    for p in procs:
        _, err = p.communicate(timeout=900)
        assert p.returncode == 0, err[-4000:]


def test_two_machines_on_loopback_train_and_predict_concepts(synth_small, tmp_path):
    _two_machines(["train", "concepts", "--data", str(synth_small), "--out", str(tmp_path / "run"), *CONCEPTS,
                   "--set", "cpu=true"], tmp_path)
    model = _one_clean_model_folder(tmp_path / "run")
    _two_machines(["predict", "concepts", "--model", str(model), "--data", str(synth_small), "--split", "test",
                   "--out", str(tmp_path / "two.csv"), "--device", "cpu"], tmp_path)
    _one_process(["predict", "concepts", "--model", str(model), "--data", str(synth_small), "--split", "test",
                  "--out", str(tmp_path / "one.csv"), "--device", "cpu"], tmp_path)
    assert (tmp_path / "two.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()


def test_two_processes_caption_and_run_knn_as_one(synth_small, tmp_path, tmp_path_factory):
    from conftest import TINY_CAPTION_CONFIG, train_caption_run

    run = train_caption_run(TINY_CAPTION_CONFIG, synth_small, tmp_path_factory)
    common = ["--data", str(synth_small), "--split", "test", "--batch-size", "3"]
    for name, args in (("captions", ["predict", "captions", "--model", str(run / "model"), "--device", "cpu",
                                     *common]),
                       ("knn", ["baseline", "concepts", "knn", "--image-size", "32", *common])):
        proc = _accelerate([*args, "--out", str(tmp_path / f"{name}-two.csv")], tmp_path)
        assert proc.returncode == 0, proc.stderr[-4000:]
        _one_process([*args, "--out", str(tmp_path / f"{name}-one.csv")], tmp_path)
        assert (tmp_path / f"{name}-two.csv").read_bytes() == (tmp_path / f"{name}-one.csv").read_bytes(), name
