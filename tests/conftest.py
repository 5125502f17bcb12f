"""Test set-up: never touch the network, keep torch to the cores we have."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

# Nothing may hang waiting for a hub: every library is told it is offline.
for _k, _v in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "TOKENIZERS_PARALLELISM": "false",
    "MPLBACKEND": "Agg",
}.items():
    os.environ[_k] = _v
# The weight-verification cache (models/weights.py) of this test session, not the user's.
os.environ["MEDCAP_CACHE_DIR"] = __import__("tempfile").mkdtemp(prefix="medcap-test-cache-")

import pytest  # noqa: E402

# A caption config that trains a tiny BLIP for one quick epoch (tests only).
TINY_CAPTION_CONFIG = """\
base: demo
model: scratch:tiny
image_size: 32
vocab_size: 300
batch_size: 16
epochs: 1
max_minutes: 0
warmup_steps: 0
eval_images: 4
eval_max_new_tokens: 8
max_new_tokens: 8
num_beams: 1
concept_loss: 0
dropout: 0
progress: false
"""


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    try:
        import torch

        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    except ImportError:
        pass
    yield


@pytest.fixture
def cli(capsys):
    """Run the medcap CLI in-process: returns (exit_code, stdout, stderr)."""
    from medcap.cli import main

    def run(*args: str):
        rc = main([str(a) for a in args])
        out = capsys.readouterr()
        return rc, out.out, out.err

    return run


@pytest.fixture(scope="session")
def synth_small(tmp_path_factory):
    """A small synthetic dataset in the ImageCLEF layout, made once per test session."""
    from medcap.synth import SynthConfig, generate_dataset

    root = tmp_path_factory.mktemp("synth") / "data"
    generate_dataset(root, SynthConfig(n_train=48, n_valid=16, n_test=16, size=64, seed=0))
    return root


@contextlib.contextmanager
def torch_threads(n: int):
    """torch runs on ``n`` threads inside the block (tiny models run fastest on one)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Module-wide single-threaded torch (use with ``pytestmark = pytest.mark.usefixtures(...)``)."""
    with torch_threads(1):
        yield


def train_caption_run(config_text: str, data, tmp_path_factory) -> Path:
    """Train a caption run from ``config_text`` (YAML) on ``data`` -> the run folder."""
    from medcap.cli import main

    config = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    config.write_text(config_text)
    out = tmp_path_factory.mktemp("run") / "run"
    assert main(["train", "captions", "--config", str(config), "--data", str(data), "--out", str(out)]) == 0
    return out


def split_ids(root, labels: str = "captions") -> list[str]:
    """The IDs of ``root``'s test split, in the order of its ``test_<labels>.csv``."""
    import csv

    with open(Path(root) / f"test_{labels}.csv", newline="", encoding="utf-8") as f:
        return [row["ID"] for row in csv.DictReader(f)]


def train_tiny_models(data, out, reuse: bool = True):
    """Tiny, barely trained models (one epoch of the demo's FAST plan) in ``out`` -> their folders
    (``.concepts``, ``.captions``). With ``reuse``, models already in ``out`` are returned as they are."""
    from types import SimpleNamespace

    from medcap.demo.plan import FAST
    from medcap.demo.steps import train_models

    out = Path(out)
    models = SimpleNamespace(concepts=out / "concepts" / "model", captions=out / "captions" / "model")
    if not (reuse and (models.concepts / "config.json").is_file() and (models.captions / "config.json").is_file()):
        train_models(Path(data), out, FAST, log=lambda _msg: None)
    return models
