"""Provenance, model cards, synthetic notices and file permissions of saved model folders."""
from __future__ import annotations

import json
import logging
import os
import stat

import pytest
import yaml

from conftest import train_tiny_models
from medcap.models.card import CARD_FILE, PROVENANCE_FILE


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory, synth_small):
    """The tiny models test_app trains (reused from the session's folder when already there)."""
    return train_tiny_models(synth_small, tmp_path_factory.getbasetemp() / "medcap-tiny-models")


def _card_header(folder) -> tuple[dict, str]:
    text = (folder / CARD_FILE).read_text(encoding="utf-8")
    assert text.startswith("---\n")
    header, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body


def check_provenance_and_card(folder, data, score: str | None) -> None:
    """The checks of a trained model folder (test_captions_cli reuses them for a validated captioner)."""
    prov = json.loads((folder / PROVENANCE_FILE).read_text())
    assert prov["data"]["path"] == str(data.resolve()) and prov["data"]["synthetic"] is True
    assert "SYNTHETIC" in prov["data"]["synthetic_note"] and prov["data"]["train_images"] > 0
    assert prov["config"]["seed"] is not None            # the whole training config
    meta, body = _card_header(folder)
    assert meta["library_name"] == "medcap" and meta["synthetic_data"] is True
    assert "synthetic-data" in meta["tags"] and meta["datasets"] == [data.resolve().name]
    assert "Not for clinical use" in body and "SYNTHETIC data" in body
    if score is None:   # trained without validation: nothing to report
        assert prov["validation"] == {} and "Not recorded" in body and "model-index" not in meta
        return
    assert isinstance(prov["validation"][score], float) and prov["data"]["valid_images"] > 0
    assert score in meta["metrics"]
    result = meta["model-index"][0]["results"][0]
    assert {m["type"]: m["value"] for m in result["metrics"]}[score] == prov["validation"][score]


@pytest.mark.parametrize("kind, score", [("concepts", "f1"), ("captions", None)])   # FAST: no caption validation
def test_trained_model_folders_record_their_data_scores_and_config(tiny_models, synth_small, kind, score):
    check_provenance_and_card(getattr(tiny_models, kind), synth_small, score)


def test_loading_a_synthetic_model_says_so_once(tiny_models, caplog):
    from medcap.inference.concepts import load_detector
    from medcap.models import card
    from medcap.models.captioner import Captioner

    card._noticed.clear()
    with caplog.at_level(logging.WARNING, logger="medcap"):
        det = load_detector(tiny_models.concepts)
        load_detector(tiny_models.concepts)
        Captioner.from_pretrained(tiny_models.captions)
    lines = [r.getMessage() for r in caplog.records if r.name == "medcap"]
    assert len(lines) == 2 and all("SYNTHETIC" in line for line in lines)
    assert "f1" in lines[0] and "concept detector" in lines[0] and "captioner" in lines[1]
    assert det.provenance["data"]["synthetic"] is True


def test_serve_shows_a_synthetic_banner_with_the_validation_scores(tiny_models):
    from medcap.webapp.server import Pipeline, build_ui

    pipeline = Pipeline(tiny_models.concepts, tiny_models.captions)
    banner = pipeline.synthetic_banner()
    assert "Synthetic training data" in banner and "concept detector" in banner and "captioner" in banner
    assert "f1" in banner and "not recorded" in banner    # the FAST captioner had no validation
    ui = build_ui(pipeline)
    shown = [b for b in ui.blocks.values() if getattr(b, "elem_id", None) == "synthetic-banner"]
    assert len(shown) == 1 and shown[0].value == banner


def test_real_data_models_get_no_banner_and_a_card_without_the_synthetic_tag(tmp_path):
    from medcap.models.card import model_card, synthetic_banner

    prov = {"kind": "captioner", "data": {"name": "rocov2", "path": "/d/rocov2", "synthetic": False},
            "validation": {"rouge1": 0.25}, "config": {}}
    assert synthetic_banner({"captioner": prov}) == ""
    meta, body = _card_header_of(model_card(prov))
    assert meta["synthetic_data"] is False and "synthetic-data" not in meta["tags"]
    assert "Not for clinical use" in body


def _card_header_of(text: str) -> tuple[dict, str]:
    header, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body


def _tiny_detector():
    from medcap.data.vocab import ConceptVocabulary
    from medcap.models.concept_detector import ConceptDetector, DetectorConfig
    from medcap.models.processing import ConceptProcessor

    model = ConceptDetector(DetectorConfig(num_classes=2, backbone="resnet10t"))
    model.vocabulary = ConceptVocabulary(["C1", "C2"], {})
    model.processor = ConceptProcessor(image_size=32)
    model.thresholds = {"global": 0.5}
    return model


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)],
                         ids=["umask-022", "umask-027"])
def test_model_folders_are_written_with_the_users_umask(tmp_path, umask, file_mode, dir_mode):
    """safetensors writes 0600 files; a teammate on a shared server must be able to load the model."""
    from medcap.models.concept_detector import ConceptDetector

    model = _tiny_detector()
    old = os.umask(umask)
    try:
        model.save_pretrained(tmp_path / "run" / "model")
    finally:
        os.umask(old)
    folder = tmp_path / "run" / "model"
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.rglob("*")}
    assert "model.safetensors" in modes and CARD_FILE in modes and PROVENANCE_FILE in modes
    assert set(modes.values()) == {file_mode}
    assert stat.S_IMODE(folder.stat().st_mode) == dir_mode
    # saved from Python without training information: the card says the data is unknown
    prov = json.loads((folder / PROVENANCE_FILE).read_text())
    assert prov["data"] == {"name": None, "path": None, "synthetic": None}
    assert "Unknown" in (folder / CARD_FILE).read_text()
    assert ConceptDetector.from_pretrained(folder).provenance == prov


def test_is_synthetic_lives_in_the_data_package():
    import medcap.data
    import medcap.report

    assert medcap.data.is_synthetic is medcap.data.provenance.is_synthetic
    assert not hasattr(medcap.report, "is_synthetic")


def test_predict_says_once_that_the_model_learnt_from_synthetic_data(tiny_models, synth_small, cli, tmp_path,
                                                                    caplog):
    """One `medcap` logger line (on stderr when nothing configured logging; pytest captures it)."""
    from medcap.models import card

    card._noticed.clear()
    with caplog.at_level(logging.WARNING, logger="medcap"):
        rc, _, _ = cli("predict", "concepts", "--model", tiny_models.concepts, "--images", synth_small / "test",
                       "--out", tmp_path / "c.csv")
    lines = [r.getMessage() for r in caplog.records if r.name == "medcap"]
    assert rc == 0 and len(lines) == 1 and "learnt from SYNTHETIC data" in lines[0]


def test_an_ensemble_folder_records_its_fitting_data_and_members(tiny_models, synth_small, tmp_path):
    from medcap.methods.ensemble import build_ensemble
    from medcap.models.ensemble import ConceptEnsemble

    out = tmp_path / "ens"
    report = build_ensemble([tiny_models.concepts], synth_small, out, knn=True, log=lambda _m: None)
    prov = json.loads((out / PROVENANCE_FILE).read_text())
    assert prov["kind"] == "concept-ensemble" and prov["data"]["synthetic"] is True
    assert prov["validation"]["f1"] == round(report["valid_f1"], 6) and prov["members"][0]["synthetic"] is True
    meta, body = _card_header(out)
    assert meta["synthetic_data"] is True and "Not for clinical use" in body
    assert stat.S_IMODE((out / "knn.safetensors").stat().st_mode) == 0o666 & ~_umask()
    assert ConceptEnsemble.from_pretrained(out).provenance == prov


def test_the_report_banner_names_models_that_learnt_from_synthetic_data(tiny_models):
    from medcap.report.build import ReportInputs, _banner

    banner = _banner(ReportInputs(concept_model=tiny_models.concepts, caption_model=tiny_models.captions))
    assert "concept detector and captioner learnt from synthetic data" in banner
    assert _banner(ReportInputs()) == ""


def _umask() -> int:
    from medcap.fileio import _umask as read

    return read()


def test_an_unreadable_readme_is_one_line_naming_it(tmp_path, monkeypatch):
    import builtins

    from medcap.data import is_synthetic
    from medcap.errors import MedcapError

    (tmp_path / "README.txt").write_text("SYNTHETIC DATA - made by medcap synth\r\n\r\nmore\r\n", newline="")
    assert is_synthetic(tmp_path) == "SYNTHETIC DATA - made by medcap synth"

    def refused(path, *a, **k):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(builtins, "open", refused)
    with pytest.raises(MedcapError) as e:
        is_synthetic(tmp_path)
    assert e.value.file == str(tmp_path / "README.txt") and "permission denied" in e.value.message
