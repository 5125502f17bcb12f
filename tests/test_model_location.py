"""Where a model is (medcap.models.location.resolve_model_folder): run folder, model folder, hub id."""
from __future__ import annotations

import json
import time

import pytest

from medcap.errors import MedcapError, MissingWeightsError
from medcap.models.location import is_hub_id, model_kind, resolve_model_folder


def _concept_folder(folder):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "medcap-concept-detector", "num_classes": 1}))
    (folder / "concepts.json").write_text("{}")
    return folder


def _caption_folder(folder):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "blip"}))
    (folder / "medcap_captioner.json").write_text("{}")
    return folder


def test_a_run_folder_resolves_to_its_model_folder(tmp_path):
    model = _concept_folder(tmp_path / "runs" / "concepts" / "model")
    assert resolve_model_folder(tmp_path / "runs" / "concepts", "concepts") == model
    assert resolve_model_folder(model, "concepts") == model
    assert resolve_model_folder(str(model), None) == model and model_kind(model) == "concepts"
    captions = _caption_folder(tmp_path / "runs" / "captions" / "model")
    assert resolve_model_folder(tmp_path / "runs" / "captions", "captions") == captions
    assert model_kind(captions) == "captions"


def test_a_missing_local_path_fails_at_once_without_a_hub_lookup(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    started = time.monotonic()
    for name in ("runs/captions", "./nope", str(tmp_path / "nowhere")):
        with pytest.raises(MedcapError, match="model folder not found: "):
            resolve_model_folder(name, "captions")
    with pytest.raises(MedcapError, match="model folder not found: runs/concepts"):
        resolve_model_folder("runs/concepts", "concepts")
    assert time.monotonic() - started < 1.0  # no network retries
    assert not is_hub_id("runs/captions") and is_hub_id("Salesforce/blip-image-captioning-large")


def test_a_hub_id_not_on_this_machine_is_a_missing_weights_error_for_either_task(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for kind in ("captions", "concepts"):  # HF_HUB_OFFLINE=1 (conftest): the cache only
        with pytest.raises(MissingWeightsError, match="hf download owner/never-cached"):
            resolve_model_folder("owner/never-cached", kind)


def test_a_folder_of_the_other_task_says_which_command_reads_it(tmp_path):
    concepts = _concept_folder(tmp_path / "c" / "model")
    captions = _caption_folder(tmp_path / "k" / "model")
    with pytest.raises(MedcapError, match="is a concept detector; use `medcap predict concepts`"):
        resolve_model_folder(tmp_path / "c", "captions")
    with pytest.raises(MedcapError, match="is a captioner; use `medcap predict captions`"):
        resolve_model_folder(captions, "concepts")
    assert resolve_model_folder(concepts.parent, None) == concepts


def test_a_file_is_not_a_model_folder(tmp_path):
    (tmp_path / "x.bin").write_text("")
    with pytest.raises(MedcapError, match="expected a model folder, got a file"):
        resolve_model_folder(tmp_path / "x.bin", "concepts")
