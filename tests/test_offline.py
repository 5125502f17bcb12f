"""Offline-first weights: without network a missing model is one line at once, with no retry loop.

The time it takes is measured in bench/offline_start.py (BENCHMARKS.md); here the tests check
the mechanism: one connection probe, then the hub's offline mode, and no back-off sleeps.
"""
from __future__ import annotations

import socket
import time

import pytest
from huggingface_hub import constants

from medcap.models import hub


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE unset, an empty hub cache, every connection refused (and counted), the
    hub client's back-off sleeps counted instead of slept."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    seen = {"connections": [], "sleeps": []}

    def refuse(address, *args, **kwargs):
        seen["connections"].append(address)
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(time, "sleep", lambda s: seen["sleeps"].append(s))
    hub.reachable.cache_clear()
    yield seen
    hub.reachable.cache_clear()


def test_paper_config_without_network_fails_after_one_probe_and_no_retry(no_network, cli, synth_small, tmp_path):
    rc, _, err = cli("train", "concepts", "--config", "paper", "--data", synth_small, "--out", tmp_path / "r")
    assert rc == 2 and "not on this machine" in err and "pretrained_path" in err
    assert len(no_network["connections"]) == 1          # the probe; the hub client never tried
    assert no_network["sleeps"] == []                   # no back-off
    assert constants.HF_HUB_OFFLINE is False            # the hub's offline mode only for the download


def test_a_hub_captioner_without_network_fails_after_one_probe_and_no_retry(no_network):
    from medcap.errors import MissingWeightsError
    from medcap.models.captioner import Captioner

    with pytest.raises(MissingWeightsError, match="hf download"):
        Captioner.from_pretrained("Salesforce/blip-image-captioning-large")
    assert len(no_network["connections"]) == 1 and no_network["sleeps"] == []


def test_a_hub_vision_language_model_without_network_fails_after_one_probe_and_no_retry(no_network):
    from medcap.errors import MissingWeightsError
    from medcap.models.vlm import VLMCaptioner

    with pytest.raises(MissingWeightsError, match="hf download"):
        VLMCaptioner.from_pretrained("Qwen/Qwen2-VL-2B-Instruct")
    assert len(no_network["connections"]) == 1 and no_network["sleeps"] == []


def test_hf_hub_offline_means_not_even_a_probe(no_network, monkeypatch):
    from medcap.errors import MissingWeightsError
    from medcap.models.backbones import create_backbone

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError):
        create_backbone("resnet18", pretrained=True)
    with pytest.raises(MissingWeightsError):
        create_backbone("tv/resnet18", pretrained=True)
    assert no_network["connections"] == [] and no_network["sleeps"] == []


def test_online_the_hub_downloads_as_usual(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "reachable", lambda url, timeout=hub.PROBE_TIMEOUT_S: True)
    with hub.hub_access() as offline:
        assert offline is False and constants.HF_HUB_OFFLINE is False


def test_the_probe_gives_up_after_its_time_out(monkeypatch):
    """A resolver that hangs cannot hold a command: the probe answers 'offline' after its time-out."""
    import threading

    release = threading.Event()
    def hang(*args, **kwargs):
        release.wait(5)
        raise OSError("timed out")

    monkeypatch.setattr(socket, "create_connection", hang)
    hub.reachable.cache_clear()
    try:
        assert hub.reachable("https://hub.invalid", timeout=0.05) is False
    finally:
        release.set()
        hub.reachable.cache_clear()


def test_random_or_file_weights_never_ask_the_network(no_network):
    from medcap.models.backbones import create_backbone

    create_backbone("resnet18", pretrained=False)
    assert no_network["connections"] == []


@pytest.mark.parametrize("task, reader", [("concepts", "medcap.training.concepts.load_concept_data"),
                                          ("captions", "medcap.data.read_dataset")])
def test_missing_weights_stop_training_before_the_data_is_read(no_network, cli, synth_small, tmp_path, monkeypatch,
                                                               task, reader):
    """On ROCOv2 reading the labels takes a while: a missing model must not wait for it."""
    module, name = reader.rsplit(".", 1)

    def read(*args, **kwargs):
        raise AssertionError("the data was read before the weights were checked")

    monkeypatch.setattr(__import__(module, fromlist=[name]), name, read)
    rc, _, err = cli("train", task, "--config", "paper", "--data", synth_small, "--out", tmp_path / "r")
    assert rc == 2 and "not on this machine" in err and len(no_network["connections"]) == 1


def test_the_backbones_hub_ids_known_without_timm_are_timms_own():
    """models.backbones.TIMM_HUB_IDS saves importing timm (3 s) before the offline check; it must
    name the repository timm itself would download."""
    import timm

    from medcap.models.backbones import TIMM_HUB_IDS

    assert {n: timm.models.get_pretrained_cfg(n).hf_hub_id for n in TIMM_HUB_IDS} == TIMM_HUB_IDS


def test_paper_config_offline_fails_before_timm_torchvision_or_transformers_load(synth_small, tmp_path):
    """What makes the one-line error come within seconds: nothing heavier than torch is imported
    before it (a fresh process, as a user runs it; HF_HUB_OFFLINE=1, an empty cache)."""
    import os
    import subprocess
    import sys

    code = ("import sys\nfrom medcap.cli import main\n"
            "try:\n    rc = main(['train', 'concepts', '--config', 'paper', '--data', sys.argv[1],\n"
            "              '--out', sys.argv[2]])\n"
            "except SystemExit as e:\n    rc = e.code\n"
            "print(rc, *(m in sys.modules for m in ('timm', 'torchvision', 'transformers')))\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty-cache")}
    run = subprocess.run([sys.executable, "-c", code, str(synth_small), str(tmp_path / "run")], env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.stdout.split() == ["2", "False", "False", "False"], run.stdout + run.stderr
    assert "not on this machine" in run.stderr and not (tmp_path / "run").exists()
