"""The HTML report: self-contained, built from whatever inputs exist, written atomically."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import train_tiny_models
from medcap.data import is_synthetic
from medcap.errors import MedcapError
from medcap.report import ReportInputs, build_report, figures
from medcap.report.build import read_thresholds, saved_sweep
from medcap.report.gallery import pick_ids

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

SCORES = {
    "concepts": {"MedCSRA (demo)": {"primary_f1": 0.71, "secondary_f1": 0.93},
                 "Most frequent": {"primary_f1": 0.32, "secondary_f1": 0.41}},
    "captions": {"BLIP (demo)": {"rouge1": 0.45, "bertscore": 0.61, "bleurt": None},
                 "Constant caption": {"rouge1": 0.30, "bertscore": 0.52, "bleurt": None}},
}


def _fake_training_run(root: Path, threshold_json: dict | None = None) -> Path:
    """A training folder as the engine writes it: metrics.csv beside the model folder."""
    model = root / "model"
    model.mkdir(parents=True)
    (root / "metrics.csv").write_text(
        "epoch,step,train_loss,lr,f1,elapsed_s\n1,10,0.61,1e-4,0.30,5.0\n2,20,0.42,5e-5,0.48,10.0\n"
        "3,30,0.35,1e-5,0.52,15.0\n", encoding="utf-8")
    if threshold_json is not None:
        (model / "thresholds.json").write_text(json.dumps(threshold_json), encoding="utf-8")
    return model


def assert_self_contained(html: str) -> None:
    assert "<script" not in html.lower()
    # Every image is embedded; nothing is fetched from anywhere.
    sources = re.findall(r'src="([^"]*)"', html)
    assert sources and all(s.startswith("data:image/") for s in sources)
    assert not re.search(r'(href|src)="https?://', html)
    assert "@import" not in html and "url(http" not in html


def test_every_plot_function_writes_a_png(tmp_path):
    rows = [{"epoch": "1", "train_loss": "0.5", "f1": "0.3"}, {"epoch": "2", "train_loss": "0.4", "f1": ""}]
    paths = [
        figures.plot_training_curves(rows, tmp_path / "a.png", title="t"),
        figures.plot_threshold_curve([0.1, 0.2, 0.3], [0.2, 0.5, 0.4], tmp_path / "b.png", chosen=0.2),
        figures.plot_concept_f1([{"CUI": f"C{i:07d}", "name": f"concept {i}", "support": i + 1, "f1": i / 30}
                                 for i in range(30)], tmp_path / "c.png"),
        figures.plot_score_bars(SCORES["concepts"], "primary_f1", tmp_path / "d.png", title="t"),
    ]
    for p in paths:
        assert p.read_bytes()[:8] == PNG_MAGIC


def test_report_from_scores_and_a_training_folder_is_self_contained(tmp_path):
    model = _fake_training_run(tmp_path / "run", {
        "global": 0.35, "sweep": [{"threshold": t / 20, "f1": 0.3 + t / 100} for t in range(1, 12)]})
    html_path = build_report(ReportInputs(concept_model=model, scores=SCORES), tmp_path / "report")
    html = html_path.read_text(encoding="utf-8")
    assert_self_contained(html)
    for text in ("MedCSRA (demo)", "Most frequent", "0.7100", "ROUGE-1", "BERTScore", "Training curves",
                 "Decision threshold", "0.35"):
        assert text in html
    assert "BLEURT" not in html  # a metric no method has is not a column
    # The PNG files are beside the page too.
    names = {p.name for p in (tmp_path / "report").glob("*.png")}
    assert {"scores_concepts.png", "scores_captions.png", "training_concept.png", "threshold_f1.png"} <= names


def test_missing_inputs_leave_sections_out_with_a_note(tmp_path):
    html = build_report(ReportInputs(scores={"concepts": SCORES["concepts"]}), tmp_path / "r").read_text()
    assert "Left out of this report" in html
    assert "no dataset given (--data)" in html
    assert "no concept model given (--concepts)" in html
    assert "Caption prediction: no scores." in html
    assert 'id="gallery"' not in html and 'id="dataset"' not in html


def test_report_with_nothing_at_all_is_still_a_page(tmp_path):
    html = build_report(ReportInputs(), tmp_path / "r").read_text()
    assert html.startswith("<!DOCTYPE html>") and "Left out of this report" in html


def test_synthetic_data_is_announced_at_the_top(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "README.txt").write_text("SYNTHETIC DATA made by medcap synth.\n\nMore details.", encoding="utf-8")
    assert is_synthetic(data) == "SYNTHETIC DATA made by medcap synth."
    html = build_report(ReportInputs(data=data), tmp_path / "r").read_text()
    banner = html.index('class="banner"')
    assert banner < html.index("<section") and "Synthetic data." in html
    (data / "README.txt").write_text("The ImageCLEFmedical 2025 data.", encoding="utf-8")
    assert is_synthetic(data) is None


def test_a_bad_submission_file_fails_and_keeps_the_previous_report(tmp_path):
    out = tmp_path / "r"
    build_report(ReportInputs(scores=SCORES), out)
    before = (out / "report.html").read_text()
    bad = tmp_path / "bad.csv"
    bad.write_text("ID,CUIs\nimg1,not-a-cui\n", encoding="utf-8")
    with pytest.raises(MedcapError):
        build_report(ReportInputs(concept_pred=bad), out)
    assert (out / "report.html").read_text() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_saved_threshold_sweep_draws_the_models_fallback_setting(tmp_path):
    # select_thresholds' report: entries for both fallback settings; the model's one is drawn
    entries = [{"threshold": 0.1, "never_empty": False, "f1": 0.4}, {"threshold": 0.1, "never_empty": True, "f1": 0.5},
               {"threshold": 0.3, "never_empty": False, "f1": 0.6}]
    (tmp_path / "thresholds.json").write_text(json.dumps({"global": 0.3, "never_empty": False, "sweep": entries}))
    assert saved_sweep(read_thresholds(tmp_path)) == ([0.1, 0.3], [0.4, 0.6])
    assert saved_sweep({"never_empty": True, "sweep": entries}) == ([0.1], [0.5])
    assert saved_sweep({"global": 0.3}) is None


def test_gallery_ids_are_spread_over_the_split():
    ids = [f"id{i}" for i in range(100)]
    assert pick_ids(ids, 4) == ["id0", "id25", "id50", "id75"]
    assert pick_ids(ids[:3], 8) == ids[:3]
    assert pick_ids(ids, 0) == []


def test_report_command_writes_the_page(cli, tmp_path):
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({"scores": SCORES}))
    rc, out, err = cli("report", "--scores", scores, "--out", tmp_path / "r")
    assert rc == 0, err
    assert (tmp_path / "r" / "report.html").is_file() and "report.html" in out
    rc, out, err = cli("report", "--data", tmp_path / "missing", "--out", tmp_path / "r2")
    assert rc == 2 and "not found" in err and not (tmp_path / "r2").exists()


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory, synth_small):
    """Tiny models trained for one epoch on the small synthetic dataset (shared by the test files)."""

    return train_tiny_models(synth_small, tmp_path_factory.getbasetemp() / "medcap-tiny-models")


def test_full_report_on_a_dataset_with_models_and_submissions(tmp_path, synth_small, tiny_models):
    from medcap.data.dataset import read_dataset
    from medcap.submission import write_caption_submission, write_concept_submission

    test = read_dataset(synth_small).split("test")
    concept_csv = write_concept_submission(tmp_path / "c.csv", {i: test.concepts[i][:1] for i in test.ids})
    caption_csv = write_caption_submission(tmp_path / "k.csv", {i: "CT of the chest." for i in test.ids})
    html_path = build_report(ReportInputs(data=synth_small, concept_model=tiny_models.concepts,
                                          caption_model=tiny_models.captions, concept_pred=concept_csv,
                                          caption_pred=caption_csv, gallery_size=3), tmp_path / "report")
    html = html_path.read_text(encoding="utf-8")
    assert_self_contained(html)
    for section in ("scores", "dataset", "training", "thresholds", "per-concept", "gallery"):
        assert f'id="{section}"' in html
    assert "Left out of this report" not in html
    assert "Synthetic data." in html and "the sweep saved with the model" in html
    assert "Figure 2" in html and "Figure 3" in html
    # The submissions are scored, with the cheap baselines beside them.
    for method in ("Concept model", "Most frequent concepts (baseline)", "Caption model",
                   "Constant caption (baseline)"):
        assert method in html
    assert html.count('class="card"') == 3 and html.count("heatmap:") == 3
    assert "CT of the chest." in html  # the submitted caption, not a regenerated one
    out = tmp_path / "report"
    assert len(list((out / "gallery").glob("*_heatmap.png"))) == 3
    assert {"caption_lengths.png", "concepts_per_image.png"} <= {p.name for p in (out / "dataset").iterdir()}


def test_a_model_without_a_saved_sweep_gets_it_recomputed_on_validation(tmp_path, synth_small, tiny_models):
    import shutil

    model = shutil.copytree(tiny_models.concepts, tmp_path / "concepts")
    th = json.loads((model / "thresholds.json").read_text())
    del th["sweep"]  # a model folder from before thresholds.json kept the sweep
    (model / "thresholds.json").write_text(json.dumps(th))
    html = build_report(ReportInputs(data=synth_small, concept_model=model, gallery_size=1),
                        tmp_path / "report").read_text(encoding="utf-8")
    assert "recomputed on the validation split" in html


def test_the_validation_sweep_does_not_depend_on_the_report_workers(synth_small, tiny_models):
    """`medcap report --workers N`: images decoded beside the model, the same sweep as with none."""
    from medcap.data import read_dataset
    from medcap.report.build import read_thresholds, sweep_on_validation

    valid = read_dataset(synth_small).split("valid")
    th = read_thresholds(tiny_models.concepts)
    assert sweep_on_validation(tiny_models.concepts, valid, th, num_workers=0) == \
        sweep_on_validation(tiny_models.concepts, valid, th, num_workers=2)
