"""Fact-checked captions (medcap.factcheck, `medcap factcheck`)."""
from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import pytest

from medcap.errors import MedcapError
from medcap.factcheck import (
    FactCheckSettings,
    fact_check,
    fact_check_caption,
    knowledge_base,
    parse_concept_probabilities,
    read_concept_probabilities,
)
from medcap.submission import read_caption_submission, validate_caption_submission, write_caption_submission

CT, MRI, XRAY, US = "C0040405", "C0024485", "C1306645", "C0041618"
CHEST, ABDOMEN = "C0817096", "C0000726"
NODULE, CYST, FRACTURE, EFFUSION, RIGHT = "C0028259", "C0010709", "C0016658", "C0032227", "C0205090"


@pytest.fixture(scope="module")
def kb():
    return knowledge_base({CT: "X-Ray Computed Tomography", CHEST: "Chest", NODULE: "Nodule"})


def probs_json(images: dict[str, dict[str, float]], threshold: float = 0.35, top: int = 10, **extra) -> dict:
    """The format `medcap predict concepts --json` writes (predicted above threshold + top-k)."""
    out = {}
    for image_id, probs in images.items():
        ranked = sorted(probs.items(), key=lambda kv: -kv[1])
        out[image_id] = {
            "predicted": [{"cui": c, "name": c, "probability": p} for c, p in ranked if p >= threshold],
            "top": [{"cui": c, "probability": p} for c, p in ranked[:top]]}
    return {"thresholds": {"global": threshold, "never_empty": False, "per_concept": {}}, "images": out, **extra}


def evidence(probs: dict[str, float], **extra):
    return parse_concept_probabilities(probs_json({"img": probs}, **extra))


def check(kb, caption: str, probs: dict[str, float], mode: str = "repair+augment", **settings):
    return fact_check_caption("img", caption, evidence(probs), kb, FactCheckSettings(mode=mode, **settings))


# ---------------------------------------------------------------------------------------
# Matching
# ---------------------------------------------------------------------------------------

def test_matching_is_at_word_boundaries_so_ct_never_matches_inside_fracture(kb):
    found = kb.matcher.find("A fracture and an octopus-shaped lesion on CT (OCT negative).")
    assert [(m.text, m.cuis) for m in found] == [("fracture", (FRACTURE,)), ("CT", (CT,)), ("OCT", ("C0920367",))]
    assert kb.matcher.cuis("Sectional anatomy, no fracture") == {FRACTURE}


def test_matching_uses_catalogue_synonyms_plurals_and_longest_match(kb):
    found = kb.matcher.find("T2-weighted MR image of the lumbar spine with two nodules and a pleural effusion")
    assert [(m.text, m.cuis) for m in found] == [
        ("T2-weighted", (MRI,)), ("MR image", (MRI,)), ("lumbar spine", ("C0037949",)),
        ("nodules", (NODULE,)), ("pleural effusion", (EFFUSION,))]
    assert kb.matcher.cuis("X-Ray Computed Tomography") == {CT}  # the cui_mapping name


# ---------------------------------------------------------------------------------------
# Verdicts
# ---------------------------------------------------------------------------------------

def test_verdicts_supported_unsupported_and_contradicted(kb):
    r = check(kb, "MRI of the chest showing a fracture.", {CT: 0.95, MRI: 0.05, CHEST: 0.9, FRACTURE: 0.1},
              mode="report")
    verdicts = {c.cui: c.verdict for c in r.checks}
    assert verdicts == {MRI: "contradicted", CHEST: "supported", FRACTURE: "unsupported"}
    mri = next(c for c in r.checks if c.cui == MRI)
    assert (mri.alternative, mri.alternative_probability, mri.action) == (CT, 0.95, "kept: report mode")


def test_no_contradiction_without_a_confident_alternative_or_enough_margin(kb):
    weak = check(kb, "MRI of the chest.", {CT: 0.6, MRI: 0.05, CHEST: 0.9}, repair_min_probability=0.7)
    close = check(kb, "MRI of the chest.", {CT: 0.9, MRI: 0.3, CHEST: 0.9}, margin=0.7)
    for r in (weak, close):
        assert {c.cui: c.verdict for c in r.checks}[MRI] == "unsupported"
        assert r.new_caption == "MRI of the chest."


def test_unlisted_concepts_get_an_upper_bound_and_unknown_vocabulary_is_unverifiable(kb):
    probs = {CT: 0.9, CHEST: 0.8, **{f"C{n:07d}": 0.3 - n / 100 for n in range(10)}}
    ev = parse_concept_probabilities(probs_json({"img": probs}, top=5))
    p, exact = ev.probability("img", MRI)
    assert not exact and p == pytest.approx(0.28)  # the lowest listed top-5 probability
    ev_vocab = parse_concept_probabilities(probs_json({"img": probs}, vocabulary=[CT, CHEST]))
    r = fact_check_caption("img", "CT of the chest with a nodule.", ev_vocab, kb)
    assert {c.cui: c.verdict for c in r.checks} == {CT: "supported", CHEST: "supported", NODULE: "unverifiable"}


# ---------------------------------------------------------------------------------------
# Repair
# ---------------------------------------------------------------------------------------

def test_repair_replaces_only_the_contradicted_phrase(kb):
    caption = "Axial MRI of the chest showing a fracture (arrow); MRI-compatible findings."
    r = check(kb, caption, {CT: 0.95, MRI: 0.02, CHEST: 0.9}, mode="repair")
    assert r.new_caption == "Axial CT of the chest showing a fracture (arrow); CT-compatible findings."
    assert [(x["old"], x["new"]) for x in r.replacements] == [("MRI", "CT"), ("MRI", "CT")]


def test_repair_keeps_the_phrase_form_and_sentence_capitals(kb):
    r = check(kb, "Abdominal T2-weighted MR image showing a cyst. The abdomen is otherwise normal.",
              {CT: 0.9, MRI: 0.01, CHEST: 0.85, ABDOMEN: 0.05, CYST: 0.8}, mode="repair")
    assert r.new_caption == "Thoracic CT image showing a cyst. The chest is otherwise normal."


def test_repair_leaves_a_phrase_when_the_caption_already_names_the_detector_concept(kb):
    r = check(kb, "CT and MRI of the chest.", {CT: 0.95, MRI: 0.02, CHEST: 0.9}, mode="repair")
    assert r.new_caption == "CT and MRI of the chest."
    assert next(c for c in r.checks if c.cui == MRI).action.startswith("kept: the caption already names")


# ---------------------------------------------------------------------------------------
# Augment
# ---------------------------------------------------------------------------------------

def test_augment_adds_only_confident_omitted_findings(kb):
    probs = {CT: 0.97, MRI: 0.01, CHEST: 0.9, CYST: 0.95, NODULE: 0.93, EFFUSION: 0.88, FRACTURE: 0.6, RIGHT: 0.99,
             US: 0.4}
    r = check(kb, "CT of the chest showing a cyst", probs, mode="augment", augment_min_probability=0.8)
    assert r.added == [NODULE, EFFUSION]  # not the mentioned cyst, the 0.6 fracture, "right", a modality
    assert r.new_caption == "CT of the chest showing a cyst. Nodule and pleural effusion are seen."
    one = check(kb, "CT of the chest.", probs, mode="augment", augment_min_probability=0.8, max_added=1)
    assert one.new_caption == "CT of the chest. Cyst is seen."


def test_repair_and_augment_compose(kb):
    r = check(kb, "MRI of the chest.", {CT: 0.95, MRI: 0.02, CHEST: 0.9, NODULE: 0.9})
    assert r.new_caption == "CT of the chest. Nodule is seen."


def test_report_mode_changes_nothing(kb):
    caption = "Abdominal MRI showing a cyst"
    probs = {CT: 0.95, MRI: 0.02, CHEST: 0.9, NODULE: 0.99}
    r = check(kb, caption, probs, mode="report")
    assert r.new_caption == caption and r.replacements == [] and r.added == []
    assert {c.verdict for c in r.checks} == {"contradicted", "unsupported"}


def test_settings_refuse_bad_values():
    with pytest.raises(MedcapError, match="mode must be one of"):
        FactCheckSettings(mode="fix")
    with pytest.raises(MedcapError, match="margin must be a number from 0 to 1"):
        FactCheckSettings(margin=1.5)


def test_every_caption_id_needs_probabilities(kb):
    with pytest.raises(MedcapError, match="1 caption image IDs have no concept probabilities, e.g. 'other'"):
        fact_check({"img": "CT.", "other": "CT."}, evidence({CT: 0.9}), kb)


# ---------------------------------------------------------------------------------------
# Reading the detector's JSON
# ---------------------------------------------------------------------------------------

def test_reads_the_json_that_predict_concepts_writes(tmp_path, kb):
    import numpy as np

    from medcap.data import ConceptVocabulary
    from medcap.inference.concepts import probabilities_json

    model = SimpleNamespace(  # what probabilities_json reads from a ConceptDetector
        vocabulary=ConceptVocabulary([CT, MRI, CHEST, NODULE], {CT: "CT", MRI: "MRI", CHEST: "Chest"}),
        thresholds={"global": 0.4, "never_empty": False, "per_concept": {NODULE: 0.8}})
    data = probabilities_json(model, ["a"], np.array([[0.9, 0.1, 0.7, 0.75]]), top=3)
    (tmp_path / "p.json").write_text(json.dumps(data))
    ev = read_concept_probabilities(tmp_path / "p.json")
    assert ev.images["a"].predicted == {CT, CHEST}  # the nodule's own threshold is 0.8
    assert ev.threshold(NODULE) == 0.8 and ev.probability("a", NODULE) == (0.75, True)
    assert ev.probability("a", MRI) == (0.4, False)  # not in the top 3: below its threshold, bounded


def test_the_full_json_makes_every_probability_exact(tmp_path, kb):
    import numpy as np

    from medcap.data import ConceptVocabulary
    from medcap.inference.concepts import probabilities_json

    model = SimpleNamespace(vocabulary=ConceptVocabulary([CT, MRI, CHEST, NODULE], {CT: "CT"}),
                            thresholds={"global": 0.4, "never_empty": False, "per_concept": {}})
    data = probabilities_json(model, ["a"], np.array([[0.9, 0.1, 0.7, 0.75]]), top=1, full=True)
    assert data["vocabulary"] == [CT, MRI, CHEST, NODULE]
    (tmp_path / "p.json").write_text(json.dumps(data))
    ev = read_concept_probabilities(tmp_path / "p.json")
    assert ev.probability("a", MRI) == (0.1, True)  # outside the top 1, still exact
    assert ev.probability("a", US)[0] == 0.0  # not in the vocabulary: the detector cannot see it


@pytest.mark.parametrize("text, message", [
    ("{\"images\": {", "not valid JSON"),
    ("[1, 2]", "expected a JSON object with an \"images\" object"),
    ("{\"images\": {}}", "expected \"thresholds\""),
    (json.dumps({"thresholds": {"global": 0.3}, "images": {"a": {"predicted": [{"cui": "C1", "probability": 2}]}}}),
     "images['a'].predicted[0].probability: expected a probability from 0 to 1"),
])
def test_malformed_probability_files_give_one_line_errors(tmp_path, text, message):
    path = tmp_path / "p.json"
    path.write_text(text)
    with pytest.raises(MedcapError, match=message.replace("[", r"\[").replace("]", r"\]")) as e:
        read_concept_probabilities(path)
    assert "\n" not in e.value.format() and str(path) in e.value.format()


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------

@pytest.fixture
def files(tmp_path):
    captions = {"img1": "Axial MRI of the chest, showing a cyst.", "img2": "Ultrasound of the abdomen."}
    write_caption_submission(tmp_path / "sub.csv", captions)
    probs = {"img1": {CT: 0.96, MRI: 0.02, CHEST: 0.9, CYST: 0.9, NODULE: 0.92},
             "img2": {US: 0.9, ABDOMEN: 0.85}}
    (tmp_path / "probs.json").write_text(json.dumps(probs_json(probs)))
    (tmp_path / "cui_mapping.csv").write_text("CUI,Canonical name\nC0041618,Ultrasonography\n")
    return tmp_path


def test_cli_round_trip_writes_a_valid_repaired_and_augmented_submission(cli, files):
    rc, out, err = cli("factcheck", "--captions", files / "sub.csv", "--concept-probs", files / "probs.json",
                       "--cui-mapping", files / "cui_mapping.csv", "--mode", "repair+augment",
                       "--out", files / "new.csv", "--report", files / "report.json")
    assert rc == 0, err
    assert validate_caption_submission(files / "new.csv") == []
    assert read_caption_submission(files / "new.csv") == {
        "img1": "Axial CT of the chest, showing a cyst. Nodule is seen.", "img2": "Ultrasound of the abdomen."}
    report = json.loads((files / "report.json").read_text())
    assert report["summary"]["verdicts"] == {"supported": 4, "unsupported": 0, "contradicted": 1, "unverifiable": 0}
    assert report["images"]["img1"]["replacements"][0]["old"] == "MRI"
    assert "replaced 1 phrases in 1 captions" in out and "added 1 concepts to 1 captions" in out


def test_cli_report_mode_writes_a_csv_report_and_an_unchanged_submission(cli, files):
    rc, _, err = cli("factcheck", "-c", files / "sub.csv", "-p", files / "probs.json", "--out", files / "same.csv",
                     "--report", files / "report.csv")
    assert rc == 0, err
    assert read_caption_submission(files / "same.csv") == read_caption_submission(files / "sub.csv")
    rows = list(csv.DictReader((files / "report.csv").open()))
    mri = next(r for r in rows if r["CUI"] == MRI)
    assert (mri["ID"], mri["text"], mri["verdict"], mri["alternative"]) == ("img1", "MRI", "contradicted", CT)


@pytest.mark.parametrize("breakage, message", [
    ("bad-json", "probs.json:1: not valid JSON"),
    ("missing-id", "1 of 3 caption IDs are not in"),
    ("no-out", "--mode repair changes captions: pass --out"),
    ("bad-mode", "mode must be one of report, repair, augment, repair+augment"),
])
def test_cli_bad_inputs_give_one_line_errors_and_leave_no_output(cli, files, breakage, message):
    args = ["factcheck", "-c", files / "sub.csv", "-p", files / "probs.json", "--mode", "repair",
            "--out", files / "new.csv", "--report", files / "r.json"]
    if breakage == "bad-json":
        (files / "probs.json").write_text("{\"images\": ")
    elif breakage == "missing-id":
        write_caption_submission(files / "sub.csv", {"img1": "CT.", "img2": "CT.", "img3": "CT."})
    elif breakage == "no-out":
        args = args[:-4]
    else:
        args[args.index("repair")] = "fix"
    rc, _, err = cli(*args)
    assert rc == 2 and message in err and err.count("\n") == 1
    assert not (files / "new.csv").exists() and not (files / "r.json").exists()
    assert sorted(p.name for p in files.iterdir()) == ["cui_mapping.csv", "probs.json", "sub.csv"]


def test_cli_defaults_are_the_settings_defaults():
    import inspect

    from medcap.cli.factcheck import factcheck_command

    params = inspect.signature(factcheck_command).parameters
    names = {"mode": "mode", "margin": "margin", "repair_min_prob": "repair_min_probability",
             "augment_min_prob": "augment_min_probability", "max_added": "max_added"}
    defaults = FactCheckSettings()
    for param, field in names.items():
        assert params[param].default.default == getattr(defaults, field), param
