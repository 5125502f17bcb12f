"""The Hugging Face hub: `medcap push` (against a stand-in HfApi; offline: one line) and loading a
hub id pinned with --revision (from a Hugging Face cache laid out as huggingface_hub writes it)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medcap.errors import MissingWeightsError
from medcap.export.push import push_model
from medcap.models.concept_detector import ConceptDetector
from test_concept_model import _detector

COMMITS = ("1" * 40, "2" * 40)


class RecordingApi:
    """Stands in for huggingface_hub.HfApi: records the calls, uploads nothing."""

    def __init__(self, *args, **kwargs):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, folder_path, repo_id, **kwargs):
        files = sorted(p.name for p in Path(folder_path).iterdir())
        self.calls.append(("upload_folder", repo_id, {"files": files, **kwargs}))
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc"})()


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory):
    """Two detector folders with different weights (two commits of one hub repository)."""
    root = tmp_path_factory.mktemp("hub")
    folders = []
    for i in range(2):
        model = _detector(backbone="test_resnet")
        with torch.no_grad():
            next(iter(model.head.parameters())).add_(float(i))
        folders.append(model.save_pretrained(root / f"run{i}" / "model"))
    return folders


def test_push_creates_the_repo_and_uploads_the_model_folder(model_folders, monkeypatch, cli):
    api = RecordingApi()
    url = push_model(model_folders[0].parent, "owner/detector", private=True, api=api)
    assert url == "https://huggingface.co/owner/detector/commit/abc"
    (create, upload) = api.calls
    assert create == ("create_repo", "owner/detector", {"repo_type": "model", "private": True, "exist_ok": True})
    assert upload[1] == "owner/detector" and {"config.json", "model.safetensors", "concepts.json"} <= set(
        upload[2]["files"])  # the model/ folder of the run, not the run folder
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    rc, out, err = cli("push", model_folders[0].parent, "owner/detector", "--private")
    assert rc == 0 and "https://huggingface.co/owner/detector/commit/abc" in out


def test_push_refuses_a_folder_whose_weights_changed_since_saved(model_folders, tmp_path):
    import shutil

    from medcap.errors import MedcapError

    folder = Path(shutil.copytree(model_folders[0], tmp_path / "model"))
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-3] ^= 0x04
    (folder / "model.safetensors").write_bytes(bytes(data))
    api = RecordingApi()
    with pytest.raises(MedcapError, match="sha256") as e:
        push_model(folder, "owner/detector", api=api)
    assert e.value.file == str(folder / "model.safetensors") and api.calls == []  # nothing uploaded


def test_push_offline_or_to_a_bad_id_is_one_line(model_folders, tmp_path, cli):
    rc, _, err = cli("push", model_folders[0], "owner/detector")  # HF_HUB_OFFLINE=1 (conftest)
    assert rc == 2 and err.count("\n") == 1 and "cannot push to the Hugging Face hub" in err and "offline" in err
    rc, _, err = cli("push", model_folders[0], "just-a-name")
    assert rc == 2 and "expected a hub repository id owner/name" in err
    (tmp_path / "empty").mkdir()
    rc, _, err = cli("push", tmp_path / "empty", "owner/detector")
    assert rc == 2 and "not a model folder" in err


def cache_repo(cache, repo_id: str, refs: dict[str, Path]) -> Path:
    """Lay out ``repo_id`` in Hugging Face cache ``cache`` as huggingface_hub does: one snapshot
    folder per commit, refs/<name> holding the commit (refs: ref name -> model folder)."""
    import shutil

    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    for commit, (ref, folder) in zip(COMMITS, refs.items(), strict=False):
        shutil.copytree(folder, repo / "snapshots" / commit)
        (repo / "refs" / ref).write_text(commit)
    return repo


@pytest.fixture
def hub_cache(model_folders, tmp_path, monkeypatch):
    """A Hugging Face cache holding owner/detector: tag v1 = the first folder, main = the second."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    return cache_repo(tmp_path / "hub", "owner/detector", {"v1": model_folders[0], "main": model_folders[1]})


def _same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_a_hub_id_loads_at_the_pinned_revision(hub_cache, model_folders, synth_small, cli, tmp_path):
    first, second = (ConceptDetector.from_pretrained(f) for f in model_folders)
    assert not _same_weights(first, second)
    assert _same_weights(ConceptDetector.from_pretrained("owner/detector", revision="v1"), first)  # a tag
    assert _same_weights(ConceptDetector.from_pretrained("owner/detector", revision=COMMITS[0]), first)  # a commit
    assert _same_weights(ConceptDetector.from_pretrained("owner/detector"), second)  # main
    rc, _, err = cli("predict", "concepts", "--model", "owner/detector", "--revision", "v1", "--images",
                     synth_small / "test", "--out", tmp_path / "v1.csv", "--json", tmp_path / "v1.json")
    assert rc == 0, err
    rc, _, err = cli("predict", "concepts", "--model", model_folders[0], "--images", synth_small / "test",
                     "--out", tmp_path / "local.csv", "--json", tmp_path / "local.json")
    assert json.loads((tmp_path / "v1.json").read_text()) == json.loads((tmp_path / "local.json").read_text())


def test_a_revision_not_on_this_machine_is_one_line_with_how_to_get_it(hub_cache, cli, synth_small, tmp_path):
    with pytest.raises(MissingWeightsError) as e:
        ConceptDetector.from_pretrained("owner/detector", revision="v2")
    assert "hf download owner/detector --revision v2" in e.value.format() and "\n" not in e.value.format()
    rc, _, err = cli("predict", "concepts", "--model", hub_cache.parent.parent / "nowhere", "--revision", "v1",
                     "--images", synth_small / "test", "--out", tmp_path / "x.csv")
    assert rc == 2 and "--revision applies to a hub id" in err


def test_a_captioner_loads_from_the_hub_at_a_revision(hub_cache, tmp_path):
    from medcap.models.captioner import Captioner

    captioner = Captioner.from_scratch("tiny", ["a chest x-ray", "a ct scan of the head"], vocab_size=200, seed=0,
                                       image_size=32)
    cache_repo(hub_cache.parent, "owner/captioner", {"v1": captioner.save_pretrained(tmp_path / "captioner")})
    loaded = Captioner.from_pretrained("owner/captioner", revision="v1")
    assert _same_weights(loaded.model, captioner.model) and loaded.image_size == 32
    assert loaded.tokenizer.get_vocab() == captioner.tokenizer.get_vocab()
