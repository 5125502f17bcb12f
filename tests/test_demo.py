"""`medcap demo --fast` end to end: report, valid submissions, scores, nothing outside --out."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from medcap.submission import validate_caption_submission, validate_concept_submission

MODEL_LOADS: list[tuple[str, Path]] = []   # (class, folder) of every model load of the demo below


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """Run the fast demo once from an empty working folder with an empty HOME."""
    root = tmp_path_factory.mktemp("demo")
    work, home = root / "work", root / "home"
    work.mkdir()
    home.mkdir()
    saved = {k: os.environ.get(k) for k in ("HOME", "TMPDIR")}
    cwd = os.getcwd()
    os.environ["HOME"] = str(home)
    os.chdir(work)
    import torch

    from medcap.models.captioner import Captioner
    from medcap.models.concept_detector import ConceptDetector
    from medcap.models.ensemble import ConceptEnsemble

    loads = []   # every model folder the demo loads: each trained model once, then handed on
    originals = {cls: cls.__dict__["from_pretrained"] for cls in (ConceptDetector, Captioner, ConceptEnsemble)}

    def counting(cls):
        def from_pretrained(klass, folder, *args, **kwargs):
            loads.append((klass.__name__, Path(folder).resolve()))
            return originals[cls].__func__(klass, folder, *args, **kwargs)
        return classmethod(from_pretrained)

    threads = torch.get_num_threads()
    try:
        from medcap.cli import main

        for cls in originals:
            cls.from_pretrained = counting(cls)
        rc = main(["demo", "--out", "out", "--fast"])
        assert torch.get_num_threads() == threads  # the demo gives back the threads it changed
    finally:
        for cls, method in originals.items():
            cls.from_pretrained = method
        os.chdir(cwd)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    MODEL_LOADS[:] = loads
    return rc, work / "out", work, home


def test_demo_writes_report_submissions_and_scores(demo_run):
    rc, out, _, _ = demo_run
    assert rc == 0
    report = out / "report" / "report.html"
    html = report.read_text(encoding="utf-8")
    for section in ('id="scores"', 'id="dataset"', 'id="training"', 'id="thresholds"', 'id="per-concept"',
                    'id="gallery"', "Synthetic data."):
        assert section in html
    scores = json.loads((out / "scores.json").read_text())
    concepts, captions = scores["scores"]["concepts"], scores["scores"]["captions"]
    assert {"MedCSRA (demo config)", "Most frequent concepts (baseline)"} <= set(concepts)
    assert any(name.startswith("kNN retrieval") for name in concepts)
    assert {"BLIP from scratch (demo config)", "Constant caption (baseline)",
            "Nearest-neighbour caption (baseline)"} <= set(captions)
    # The combined recipes (medcap.demo.steps) sit beside the single models; only baselines say "(baseline)".
    assert "MedCSRA + kNN ensemble" in concepts
    assert any(name.startswith("Concept-consistent retrieval") for name in captions)
    assert all(("(baseline)" in n) == ("kNN retrieval" in n or "Most frequent" in n or "Constant" in n
                                      or "Nearest-neighbour" in n) for n in [*concepts, *captions])
    assert (out / "submissions" / "recipes" / "concepts_medcsra-knn-ensemble.csv").is_file()
    for s in concepts.values():
        assert 0.0 <= s["primary_f1"] <= 1.0 and 0.0 <= s["secondary_f1"] <= 1.0
    for s in captions.values():
        assert 0.0 <= s["rouge1"] <= 1.0
    assert scores["synthetic_data"] is True and scores["n_test_images"] == 24
    assert scores["edition"] == 2026  # the latest edition's rules, recorded (REFERENCE §7)


def test_demo_submissions_pass_the_official_rules(demo_run):
    from medcap.data.csvio import read_concepts_csv

    _, out, _, _ = demo_run
    test_ids = list(read_concepts_csv(out / "data" / "test_concepts.csv"))
    assert validate_concept_submission(out / "submissions" / "concepts.csv", test_ids) == []
    assert validate_caption_submission(out / "submissions" / "captions.csv", test_ids) == []
    for baseline in [*(out / "submissions" / "baselines").iterdir(), *(out / "submissions" / "recipes").iterdir()]:
        check = validate_concept_submission if baseline.name.startswith("concepts") else validate_caption_submission
        assert check(baseline, test_ids) == [], baseline


def test_demo_writes_nothing_outside_its_folder(demo_run):
    _, out, work, home = demo_run
    assert [p.name for p in work.iterdir()] == ["out"]
    assert list(home.iterdir()) == []
    assert not (out / ".cache" / "tmp").exists()  # scratch files cleaned up


def test_demo_reuses_its_data_and_regenerates_it_when_the_settings_change(tmp_path):
    from dataclasses import replace

    from medcap.demo.plan import FAST
    from medcap.demo.steps import prepare_data

    plan = replace(FAST, n_train=8, n_valid=4, n_test=4, image_px=32)
    messages = []
    root = prepare_data(tmp_path, plan, seed=0, log=messages.append)
    stamp = (root / "train_concepts.csv").stat().st_mtime_ns
    assert prepare_data(tmp_path, plan, seed=0, log=messages.append) == root
    assert "reusing" in messages[-1] and (root / "train_concepts.csv").stat().st_mtime_ns == stamp
    prepare_data(tmp_path, replace(plan, n_test=5), seed=0, log=messages.append)
    assert "generating" in messages[-1]
    assert len(list((root / "test").iterdir())) == 5


def test_summary_says_where_everything_is_and_ends_with_the_score_table(tmp_path):
    from medcap.demo.plan import DemoResult

    scores = {"concepts": {"MedCSRA": {"primary_f1": 0.61, "secondary_f1": 0.9},
                           "Most frequent": {"primary_f1": 0.25, "secondary_f1": None}},
              "captions": {"BLIP": {"rouge1": 0.4, "bertscore": 0.5, "bleurt": None}}}
    result = DemoResult(out=tmp_path, report=tmp_path / "report" / "report.html",
                        concept_submission=tmp_path / "c.csv", caption_submission=tmp_path / "k.csv",
                        scores_file=tmp_path / "scores.json", scores=scores, seconds=187.4)
    text = result.summary()
    assert "finished in 3 min 07 s" in text
    for path in ("report.html", "c.csv", "k.csv", "scores.json"):
        assert path in text
    table = text[text.index("Concept detection"):]
    assert "0.6100" in table and "n/a" in table and "ROUGE-1" in table and "BLEURT" not in table
    assert text.rstrip().endswith("real ImageCLEFmedical images.")


def test_torch_threads_leave_the_cores_other_jobs_are_using(monkeypatch):
    import medcap.demo.machine as demo

    cores = os.cpu_count() or 1
    assert 0 <= demo.busy_cores(interval=0.05) <= cores + 0.01  # sampled from /proc/stat here
    monkeypatch.setattr(demo.os, "cpu_count", lambda: 4)
    for busy, threads in ((0.0, 4), (0.4, 4), (1.0, 3), (2.6, 1), (9.0, 1)):
        monkeypatch.setattr(demo, "busy_cores", lambda interval=0.5, b=busy: b)
        assert demo.torch_threads() == threads


def test_the_full_demo_captioner_starts_from_the_detected_concepts():
    from medcap.demo.plan import FAST, FULL, caption_model_name
    from medcap.training.captions import load_caption_config

    assert load_caption_config(FULL.caption_config, FULL.captions).concept_prompt
    assert not load_caption_config(FAST.caption_config, FAST.captions).concept_prompt
    assert caption_model_name(FULL) == "BLIP from scratch (demo-prompted config)"


def test_the_caption_candidates_bench_replays_a_demo_folder(demo_run):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "caption_candidates.py"
    spec = importlib.util.spec_from_file_location("caption_candidates", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    _, out, _, _ = demo_run
    rows = bench.replay(out)
    nn = rows.pop("nearest-neighbour caption (baseline)")
    assert set(rows) == set(bench.VARIANTS)
    for r in rows.values():
        assert 0.0 <= r["rouge1"] <= 1.0 and r["rouge1_margin"] == r["rouge1"] - nn["rouge1"]
        assert r["umls_margin"] == r["umls_f1_approx"] - nn["umls_f1_approx"]


def test_the_demo_loads_each_trained_model_once(demo_run):
    """The demo holds models, not paths: the detector and the captioner are loaded once after
    training and handed to the ensemble, the predictions, the recipes, the baselines and the
    report; the ensemble is fitted in memory and never loaded back."""
    from collections import Counter

    _, out, _, _ = demo_run
    counts = Counter(MODEL_LOADS)
    runs = (out / "runs").resolve()
    assert counts == Counter({("ConceptDetector", runs / "concepts" / "model"): 1,
                              ("Captioner", runs / "captions" / "model"): 1}), counts
