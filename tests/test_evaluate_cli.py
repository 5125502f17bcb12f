"""`medcap validate` and `medcap evaluate`: exit codes, every violation listed, outputs."""
from __future__ import annotations

import csv
import json

import pytest

CT, CHEST, MRI, US, ABDOMEN = "C0040405", "C0817096", "C0024485", "C0041618", "C0000726"


@pytest.fixture
def concept_files(tmp_path):
    gold = tmp_path / "gold.csv"
    gold.write_text(f"ID,CUIs\nimg_1,{CT};{CHEST}\nimg_2,{MRI}\nimg_3,\nimg_4,c0041618 ;{ABDOMEN}\n")
    manual = tmp_path / "manual.csv"
    manual.write_text(f"ID,CUIs\nimg_1,{CT};{CHEST}\nimg_2,{MRI}\nimg_3,\nimg_4,{US}\n")
    sub = tmp_path / "sub.csv"
    sub.write_text(f"ID,CUIs\nimg_1,{CT}\nimg_2,{MRI};C0000001\nimg_3,\nimg_4,{US};{ABDOMEN}\n")
    return gold, manual, sub


@pytest.fixture
def caption_files(tmp_path):
    gold = tmp_path / "gold_captions.csv"
    gold.write_text('ID,Caption\nimg_1,"The CT scan shows a mass."\nimg_2,"Chest plain x-ray, PA view"\n')
    sub = tmp_path / "captions.csv"
    sub.write_text('ID,Caption\nimg_1,"CT shows mass"\nimg_2,"chest"\n')
    mapping = tmp_path / "cui_mapping.csv"
    mapping.write_text(f"CUI,Canonical name\n{CHEST},Chest\nC1306645,Plain x-ray\n{CT},X-Ray Computed Tomography\n")
    return gold, sub, mapping


# ---------------------------------------------------------------------------------------
# validate
# ---------------------------------------------------------------------------------------

def test_validate_prints_one_ok_line_and_exits_zero(cli, concept_files):
    gold, _, sub = concept_files
    rc, out, err = cli("validate", "concepts", sub, "--gold", gold)
    assert rc == 0
    assert out.strip().splitlines() == [f"OK: {sub} follows every official 2026 rule (all 4 gold IDs present, in the gold order)"]


def test_validate_lists_every_violation_as_file_line_message_and_exits_one(cli, concept_files, tmp_path):
    gold = concept_files[0]
    bad = tmp_path / "bad.csv"
    bad.write_text(f"ID,CUIs\nimg_1,{CT};{CT}\nimg_2,c0024485\n\nimg_2,{MRI}\nimg_9,{CT};\n")
    rc, out, _ = cli("validate", "concepts", bad, "--gold", gold)
    assert rc == 1
    lines = out.strip().splitlines()
    assert lines[:-1] == [
        f"{bad}:2: CUI given more than once: {CT}",
        f"{bad}:3: not a CUI ('C' followed by digits): 'c0024485'",
        f"{bad}:4: blank line; the official checker allows none",
        f"{bad}:5: the ID img_2 appears again (first on line 3)",
        f"{bad}:6: the ID img_9 is not in the gold file",
        f"{bad}:6: empty CUI (a trailing ';' or ';;')",
        f"{bad}: 2 of the 4 gold IDs have no row: img_3, img_4",
    ]
    assert lines[-1] == f"{bad}: 7 rule violation(s) of the 2026 rules"


def test_validate_captions_checks_quotes_and_ids(cli, caption_files, tmp_path):
    gold, sub, _ = caption_files
    assert cli("validate", "captions", sub, "--gold", gold)[0] == 0
    bad = tmp_path / "bad.csv"
    bad.write_text('ID,Caption\nimg_1,"CT, axial" view\n')
    rc, out, _ = cli("validate", "captions", bad, "--gold", gold)
    assert rc == 1
    assert f"{bad}:2: the caption contains a comma but is not enclosed in double quotes" in out
    assert f"{bad}: 1 of the 2 gold IDs have no row: img_2" in out


def test_validate_without_gold_skips_the_id_coverage(cli, concept_files):
    rc, out, _ = cli("validate", "concepts", concept_files[2])
    assert rc == 0 and "not checked" in out


def test_validate_no_empty_applies_the_2026_rule(cli, concept_files):
    gold, _, sub = concept_files
    rc, out, _ = cli("validate", "concepts", sub, "--gold", gold, "--no-empty")
    assert rc == 1 and f"{sub}:4: no CUIs for img_3" in out


# ---------------------------------------------------------------------------------------
# evaluate concepts
# ---------------------------------------------------------------------------------------

def test_evaluate_concepts_prints_and_writes_the_official_scores(cli, concept_files, tmp_path):
    gold, manual, sub = concept_files
    out_json, per_image, per_concept = tmp_path / "s.json", tmp_path / "pi.csv", tmp_path / "pc.csv"
    rc, out, _ = cli("evaluate", "concepts", "--gold", gold, "--gold-manual", manual, "--pred", sub,
                     "--json", out_json, "--per-image", per_image, "--per-concept", per_concept, "--top", "2")
    assert rc == 0
    assert "primary F1    0.7778" in out and "secondary F1  0.7778" in out
    assert "best 2 concepts by F1" in out and "worst 2 concepts by F1" in out
    assert "1 gold rows are empty" in out  # the note about the organisers' code
    scores = json.loads(out_json.read_text())
    assert scores["primary_f1"] == pytest.approx(7 / 9, abs=1e-15)
    assert scores["secondary_f1"] == pytest.approx(7 / 9, abs=1e-15)
    assert scores["n_images"] == 4 and scores["primary_f1_organisers_code"] == pytest.approx(10 / 12, abs=1e-15)
    rows = list(csv.DictReader(per_image.open()))
    assert [r["ID"] for r in rows] == ["img_1", "img_2", "img_3", "img_4"]
    assert rows[0]["missed"] == CHEST and rows[1]["extra"] == "C0000001" and rows[2]["f1"] == ""
    concepts = {r["CUI"]: r for r in csv.DictReader(per_concept.open())}
    assert len(concepts) == 6 and concepts[CHEST]["recall"] == "0.0"


def test_evaluate_concepts_can_score_empty_gold_rows_as_the_organisers_code(cli, concept_files, tmp_path):
    gold, manual, sub = concept_files
    rc, _, _ = cli("evaluate", "concepts", "--gold", gold, "--pred", sub, "--empty-gold", "organisers-code",
                   "--json", tmp_path / "s.json")
    assert rc == 0
    assert json.loads((tmp_path / "s.json").read_text())["primary_f1"] == pytest.approx(10 / 12, abs=1e-15)
    assert cli("evaluate", "concepts", "--gold", gold, "--pred", sub, "--empty-gold", "nope")[0] == 2


def test_evaluate_refuses_an_invalid_submission_listing_every_violation(cli, concept_files, tmp_path):
    gold = concept_files[0]
    bad = tmp_path / "bad.csv"
    bad.write_text(f"ID,CUIs\nimg_1,{CT};x\nimg_2,{MRI}\nimg_3,\nimg_4,{US}\nimg_4,{US}\n")
    out_json = tmp_path / "s.json"
    rc, out, err = cli("evaluate", "concepts", "--gold", gold, "--pred", bad, "--json", out_json)
    assert rc == 1 and out == ""
    assert f"{bad}:2: not a CUI" in err and f"{bad}:6: the ID img_4 appears again" in err
    assert "2 rule violation(s); not scored" in err
    assert not out_json.exists()


def test_missing_gold_file_is_a_one_line_error(cli, concept_files, tmp_path):
    rc, _, err = cli("evaluate", "concepts", "--gold", tmp_path / "none.csv", "--pred", concept_files[2])
    assert rc == 2 and err.startswith("error: ") and "none.csv" in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------
# evaluate captions
# ---------------------------------------------------------------------------------------

def test_evaluate_captions_writes_every_key_with_null_for_scorers_that_did_not_run(cli, caption_files, tmp_path):
    gold, sub, mapping = caption_files
    out_json, per_image = tmp_path / "c.json", tmp_path / "pi.csv"
    rc, out, _ = cli("evaluate", "captions", "--gold", gold, "--pred", sub, "--bertscore-model", "none",
                     "--bleurt-model", "none", "--cui-mapping", mapping, "--json", out_json, "--per-image", per_image)
    assert rc == 0
    s = json.loads(out_json.read_text())
    for key in ("rouge1", "bertscore", "bleurt", "similarity", "umls_f1", "umls_f1_approx", "alignscore",
                "relevance", "factuality", "overall"):
        assert key in s
    # img_1: 3 of 3 words in 6 -> 2/3; img_2: "chest" of "chest plain xray pa view" -> 2*1/(1+5)
    assert s["rouge1"] == pytest.approx((2 / 3 + 1 / 3) / 2, abs=1e-12)
    # img_1: no name on either side -> 0; img_2: {chest} of {chest, plain x-ray} -> 2/3
    assert s["umls_f1_approx"] == pytest.approx((0 + 2 / 3) / 2, abs=1e-12)
    assert s["bertscore"] is None and s["similarity"] is None and s["relevance"] is None
    assert "not available" in out and "UMLS F1 (approximate)" in out
    rows = list(csv.DictReader(per_image.open()))
    assert rows[1]["gold"] == "Chest plain x-ray, PA view" and float(rows[1]["rouge1"]) == pytest.approx(1 / 3)


def test_evaluate_captions_partial_aggregates_are_labelled(cli, caption_files, tmp_path):
    gold, sub, _ = caption_files
    rc, out, _ = cli("evaluate", "captions", "--gold", gold, "--pred", sub, "--bertscore-model", "none",
                     "--bleurt-model", "none", "--partial-aggregates", "--json", tmp_path / "c.json")
    assert rc == 0 and "(PARTIAL)" in out
    s = json.loads((tmp_path / "c.json").read_text())
    assert s["relevance"] == pytest.approx(s["rouge1"]) and s["relevance_partial"] is True


def test_evaluate_captions_refuses_an_invalid_submission(cli, caption_files, tmp_path):
    gold = caption_files[0]
    bad = tmp_path / "bad.csv"
    bad.write_text('\ufeffID,Caption\nimg_1,"x"\nimg_2,"y"\n', encoding="utf-8")
    rc, _, err = cli("evaluate", "captions", "--gold", gold, "--pred", bad, "--bertscore-model", "none")
    assert rc == 1 and f"{bad}:1: the file starts with a UTF-8 byte-order mark" in err


# ---------------------------------------------------------------------------------------
# The synthetic dataset's gold files
# ---------------------------------------------------------------------------------------

def test_commands_work_on_the_synthetic_gold_files(cli, synth_small, tmp_path):
    from medcap.data.csvio import read_captions_csv, read_concepts_csv
    from medcap.submission import write_caption_submission, write_concept_submission

    gold = synth_small / "valid_concepts.csv"
    gold_sets = read_concepts_csv(gold)
    # a submission that drops the last CUI of every image
    sub = write_concept_submission(tmp_path / "sub.csv", {i: c[:-1] for i, c in gold_sets.items()})
    assert cli("validate", "concepts", sub, "--gold", gold)[0] == 0
    rc, out, _ = cli("evaluate", "concepts", "--gold", gold, "--gold-manual", synth_small / "valid_concepts_manual.csv",
                     "--pred", sub, "--cui-mapping", synth_small / "cui_mapping.csv", "--json", tmp_path / "s.json")
    assert rc == 0
    s = json.loads((tmp_path / "s.json").read_text())
    scored = [c for c in gold_sets.values() if c]
    want = sum(2 * (len(c) - 1) / (2 * len(c) - 1) for c in scored) / len(scored)
    assert s["primary_f1"] == pytest.approx(want, abs=1e-12)

    gold_captions = synth_small / "valid_captions.csv"
    caps = write_caption_submission(tmp_path / "caps.csv", read_captions_csv(gold_captions))
    assert cli("validate", "captions", caps, "--gold", gold_captions)[0] == 0
    rc, _, _ = cli("evaluate", "captions", "--gold", gold_captions, "--pred", caps, "--bertscore-model", "none",
                   "--bleurt-model", "none", "--cui-mapping", synth_small / "cui_mapping.csv",
                   "--json", tmp_path / "c.json")
    assert rc == 0
    c = json.loads((tmp_path / "c.json").read_text())
    assert c["rouge1"] == pytest.approx(1.0) and c["umls_f1_approx"] is not None
