"""The structure the import contract and the registries promise: the fact-checker does not
read the synthetic data, a caption metric is one scorer object, a baseline is built in one place."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from medcap.errors import MedcapError


def test_the_fact_checker_never_imports_the_synthetic_data_generator():
    code = ("import sys, medcap.factcheck as f; f.knowledge_base({'C0040405': 'CT'}); "
            "print(any(m.startswith('medcap.synth') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_secondary_cuis_are_one_list_split_into_modalities_and_regions():
    from medcap.factcheck import exclusive_groups
    from medcap.metrics.concepts import MODALITY_CUIS, REGION_CUIS, SECONDARY_CUIS
    from medcap.synth import SECONDARY_CUIS as SYNTH_SECONDARY

    assert len(MODALITY_CUIS) == 7 and len(REGION_CUIS) == 8  # REFERENCE §4
    assert SYNTH_SECONDARY is SECONDARY_CUIS == set(MODALITY_CUIS) | set(REGION_CUIS)
    assert exclusive_groups() == {"modality": MODALITY_CUIS, "region": REGION_CUIS}


def test_a_new_caption_metric_is_one_registered_scorer_and_a_preset(monkeypatch):
    # medcap.metrics.editions (the 2026 rules) reads the same presets
    from medcap.metrics import captions, editions, registry
    from medcap.metrics.captions import CaptionSettings, score_captions

    class CaptionLength(registry.CaptionScorer):
        key, title, label = "length_ratio", "Length ratio", "Length ratio"

        def score(self, pairs):
            return np.array([len(p) / max(1, len(g)) for g, p in zip(pairs.gold, pairs.pred, strict=True)])

    preset = registry.CaptionPreset(name="test", scorers=("rouge1", "length_ratio"),
                                    aggregates=(("overall", ("rouge1", "length_ratio")),))
    monkeypatch.setitem(registry.SCORERS, "length_ratio", CaptionLength())
    monkeypatch.setitem(registry.PRESETS, "test", preset)
    assert captions.PRESETS is registry.PRESETS is editions.PRESETS
    gold, pred = {"a": "ct of the chest", "b": "mass"}, {"a": "ct chest", "b": "mass"}
    s = score_captions(gold, pred, CaptionSettings(relevance="test")).summary
    assert s["length_ratio"] == pytest.approx((8 / 15 + 1) / 2)
    assert s["overall"] == pytest.approx((s["rouge1"] + s["length_ratio"]) / 2)
    assert "bertscore" not in s and "relevance" not in s
    with pytest.raises(MedcapError, match="relevance must be one of public-2025, paper, 2026"):
        CaptionSettings(relevance="1999")


def test_score_tables_name_every_registered_caption_metric():
    from medcap.metrics.registry import PRESETS, SCORERS
    from medcap.metrics.tables import CAPTION_METRICS, score_table

    for preset in PRESETS.values():
        assert set(preset.scorers) <= set(SCORERS) <= set(CAPTION_METRICS)
    table = score_table({"captions": {"BLIP": {"rouge1": 0.25, "bertscore": None}}})
    assert table.splitlines()[0].split() == ["Caption", "prediction", "ROUGE-1"]
    assert "0.2500" in table and "BERTScore" not in table


def test_split_baselines_are_the_ones_the_cli_demo_and_report_use(synth_small):
    from medcap.data import read_dataset
    from medcap.methods.baselines import (
        CONSTANT_CAPTION_SAMPLE,
        constant_caption,
        constant_caption_baseline,
        fit_most_frequent,
        most_frequent_baseline,
    )

    ds = read_dataset(synth_small)
    train, valid, test = ds.split("train"), ds.split("valid"), ds.split("test")
    cuis, report = most_frequent_baseline(train, valid)
    assert (cuis, report) == fit_most_frequent(train.concepts, valid.concepts)
    median_cuis, median_report = most_frequent_baseline(train, None)  # no validation split: the median count
    assert median_report["valid_f1"] is None and len(median_cuis) == median_report["k"] >= 1
    preds, caption = constant_caption_baseline(train, test.ids)
    assert set(preds) == set(test.ids) and set(preds.values()) == {caption}
    assert caption == constant_caption(train.captions, sample=CONSTANT_CAPTION_SAMPLE)


# -- the layout: one package per stage ---------------------------------------------------------

def _package_root():
    from pathlib import Path

    import medcap

    return Path(medcap.__file__).parent


def test_the_package_root_holds_only_the_shared_foundations():
    root = _package_root()
    modules = sorted(p.name for p in root.glob("*.py"))
    assert len(modules) <= 12, modules
    for stage in ("training", "inference", "methods", "demo", "webapp", "data", "models", "metrics", "cli"):
        assert (root / stage / "__init__.py").is_file(), stage
    assert not (root / "tasks").exists() and not (root / "app.py").exists()   # no second "app" beside cli/app.py


def test_nothing_outside_a_package_init_re_exports():
    root = _package_root()
    shims = [f"{p.relative_to(root)}:{n}" for p in sorted(root.rglob("*.py")) if p.name != "__init__.py"
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if "noqa: F401" in line]
    assert shims == []


def test_every_caption_preset_runs_every_registered_scorer():
    from medcap.metrics.registry import PRESETS, SCORERS

    for preset in PRESETS.values():
        assert preset.scorers == tuple(SCORERS), preset.name


def test_a_split_lists_its_ids_with_an_image_and_with_a_label(synth_small):
    from medcap.data import read_dataset

    train = read_dataset(synth_small).split("train")
    dropped, unlabelled = train.ids[0], train.ids[1]
    train.image_paths.pop(dropped)
    train.captions.pop(unlabelled)
    assert train.image_ids() == [i for i in train.ids if i != dropped]
    assert train.labelled_ids("captions") == [i for i in train.ids if i not in (dropped, unlabelled)]
    assert train.labelled_ids("concepts") == [i for i in train.ids if i != dropped]
    train.concepts = None
    assert train.labelled_ids("concepts") == []


def test_every_source_file_stays_readable_in_one_sitting():
    """nanoGPT's habit (docs/ARCHITECTURE.md): no module grows past 500 lines; split by concern."""
    root = _package_root()
    long = {str(p.relative_to(root)): n for p in root.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500}
    assert long == {}
