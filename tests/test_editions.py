"""The ImageCLEFmedical 2026 edition (REFERENCE §7): each pre-check rule accepts and rejects
what the 2026 checker does, for both tasks, with every violation listed by line; --edition
2025 keeps the 2025 rules; writers follow the gold / ID order; the 2026 caption aggregate;
2026 data file names."""
from __future__ import annotations

import json

import numpy as np
import pytest

from medcap.editions import EDITIONS, LATEST_EDITION, edition_rules, infer_edition
from medcap.errors import MedcapError
from medcap.metrics.editions import (
    aggregate_preset,
    caption_preset,
    load_image_embeddings,
    score_captions_preset,
    similarity_from_embeddings,
)
from medcap.submission import (
    read_caption_submission,
    read_id_order,
    validate_caption_submission,
    validate_concept_submission,
    write_caption_submission,
    write_concept_submission,
)

C1, C2, C3 = "C0040405", "C0817096", "C0024485"
A, B, C = (f"ImageCLEFmedical_Caption_2026_test_{k}" for k in range(3))
GOLD = [A, B, C]


def write(tmp_path, text: str | bytes, name: str = "sub.csv"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def found(path, kind="concepts", gold=GOLD, edition=2026, **kw):
    check = validate_concept_submission if kind == "concepts" else validate_caption_submission
    return [(v.line, v.message) for v in check(path, gold, edition=edition, **kw)]


def concepts(*rows: str) -> str:
    return "ID,CUIs\n" + "".join(r + "\n" for r in rows)


def captions(*rows: str) -> str:
    return "ID,Caption\n" + "".join(r + "\n" for r in rows)


def test_latest_edition_is_2026_and_unknown_editions_are_refused():
    assert LATEST_EDITION == 2026 and set(EDITIONS) == {2025, 2026}
    assert edition_rules(None).year == 2026 and edition_rules("2025").year == 2025
    with pytest.raises(MedcapError, match="unknown edition 2024"):
        edition_rules(2024)


# ---------------------------------------------------------------------------------------
# Pre-check, concepts: one accepted and one rejected file per rule
# ---------------------------------------------------------------------------------------

GOOD_CONCEPTS = concepts(f"{A},{C1};{C2}", f"{B},", f"{C},{C3}")


def test_a_file_in_gold_order_passes_2026(tmp_path):
    assert found(write(tmp_path, GOOD_CONCEPTS)) == []


@pytest.mark.parametrize("text, expected", [
    # order: B and A swapped -> the fewest rows out of order are named (here one)
    (concepts(f"{B},", f"{A},{C1}", f"{C},{C3}"), [(2, "out of order")]),
    (concepts(f"{C},", f"{A},", f"{B},"), [(2, "out of order")]),
    ("\ufeff" + GOOD_CONCEPTS, [(1, "byte-order mark")]),
    (concepts(f"{A},{C1}", "", f"{B},", f"{C},"), [(3, "blank line")]),
    (GOOD_CONCEPTS + "\n", [(5, "blank line")]),
    (concepts(f"{A} ,{C1}", f"{B},", f"{C},"), [(2, "leading or trailing spaces")]),
    (concepts(f"{A},{C1} ", f"{B},", f"{C},"), [(2, "CUIs field has leading or trailing spaces")]),
    (concepts(f"{A},c0040405", f"{B},", f"{C},"), [(2, "not a CUI")]),
    (concepts(f"{A},C12X", f"{B},", f"{C},"), [(2, "not a CUI")]),
    (concepts(f"{A},{C1};", f"{B},", f"{C},"), [(2, "empty CUI")]),
    (concepts(f"{A},{C1};;{C2}", f"{B},", f"{C},"), [(2, "empty CUI")]),
    (concepts(f"{A},{C1};{C1}", f"{B},", f"{C},"), [(2, "more than once")]),
    (concepts(f"{A}," + ";".join(f"C{k:07d}" for k in range(101)), f"{B},", f"{C},"), [(2, "at most 100")]),
    (concepts(f"{A},{C1}", f"{B},"), [(None, "1 of the 3 gold IDs have no row")]),
    (concepts(f"{A},", f"{B},", f"{C},", "extra_id,"), [(5, "not in the gold file")]),
    ("ID,CUI\n" + GOOD_CONCEPTS.split("\n", 1)[1], [(1, "header must be exactly ID,CUIs")]),
])
def test_each_2026_concept_rule_rejects_with_its_line(tmp_path, text, expected):
    assert [(ln, m) for ln, m in found(write(tmp_path, text))
            if any(ln == e_ln and e_msg in m for e_ln, e_msg in expected)] != [], found(write(tmp_path, text))
    assert len(found(write(tmp_path, text))) == len(expected)


@pytest.mark.parametrize("text", [
    concepts(f"{A},{C1}; {C2}", f"{B},", f"{C},"),   # parts are stripped
    concepts(f"{A},", f"{B},", f"{C},"),             # empty lists are allowed
    concepts(f"{A}," + ";".join(f"C{k:07d}" for k in range(100)), f"{B},", f"{C},"),  # exactly 100
])
def test_2026_accepts_what_the_checker_accepts(tmp_path, text):
    assert found(write(tmp_path, text)) == []


def test_concept_gold_order_is_primary_then_manual_only_ids(tmp_path, cli):
    gold = write(tmp_path, concepts(f"{A},{C1}", f"{B},{C2}"), "gold.csv")
    manual = write(tmp_path, concepts(f"{C},{C3}", f"{B},{C2}"), "manual.csv")  # C only in the manual file
    good = write(tmp_path, concepts(f"{A},", f"{B},", f"{C},"), "good.csv")
    bad = write(tmp_path, concepts(f"{C},", f"{A},", f"{B},"), "bad.csv")
    assert cli("validate", "concepts", good, "--gold", gold, "--gold-manual", manual)[0] == 0
    rc, out, _ = cli("validate", "concepts", bad, "--gold", gold, "--gold-manual", manual)
    assert rc == 1 and f"{bad}:2: the ID {C} is out of order" in out


def test_every_violation_is_listed_with_its_line(tmp_path):
    text = "\ufeff" + concepts(f"{B} ,{C1};", f"{A},{C1};{C1}", "", f"{C},x1", f"{C},")
    problems = found(write(tmp_path, text))
    # BOM (1); ID spaces, B before A, empty CUI (2); repeated CUI (3); blank (4); not a CUI (5);
    # repeated ID (6). The spaced ID counts as B: it is neither "unknown" nor "missing".
    assert [ln for ln, _ in problems] == [1, 2, 2, 2, 3, 4, 5, 6]
    assert f"the ID {B} is out of order" in problems[2][1]


# ---------------------------------------------------------------------------------------
# Pre-check, captions
# ---------------------------------------------------------------------------------------

GOOD_CAPTIONS = captions(f'{A},"Chest CT, axial"', f"{B},Plain x-ray", f"{C},")


def test_a_caption_file_in_gold_order_passes_2026(tmp_path):
    assert found(write(tmp_path, GOOD_CAPTIONS), "captions") == []


@pytest.mark.parametrize("text, line, message", [
    (captions(f"{B},x", f"{A},y", f"{C},z"), 2, "out of order"),
    ("\ufeff" + GOOD_CAPTIONS, 1, "byte-order mark"),
    (captions(f"{A},x", "", f"{B},y", f"{C},z"), 3, "blank line"),
    (captions(f" {A},x", f"{B},y", f"{C},z"), 2, "leading or trailing spaces"),
    (captions(f'{A},"chest, axial" view', f"{B},y", f"{C},z"), 2, "comma but is not enclosed"),
    (captions(f'{A}, "chest, axial"', f"{B},y", f"{C},z"), 2, "expected 2 fields"),  # the space opens no quote
    (captions(f"{A},x", f"{B},y"), None, "1 of the 3 gold IDs have no row"),
    (captions(f"{A},x", f"{B},y", f"{C},z", "zzz,w"), 5, "not in the gold file"),
    ("ID,caption\n" + GOOD_CAPTIONS.split("\n", 1)[1], 1, "header must be exactly ID,Caption"),
])
def test_each_2026_caption_rule_rejects_with_its_line(tmp_path, text, line, message):
    problems = found(write(tmp_path, text), "captions")
    assert any(ln == line and message in m for ln, m in problems), problems


def test_spaces_around_a_caption_are_allowed_in_2026_not_in_2025(tmp_path):
    path = write(tmp_path, captions(f'{A}," chest ct "', f"{B},x ", f"{C},"))
    assert found(path, "captions") == []
    assert [ln for ln, _ in found(path, "captions", edition=2025)] == [2, 3]


def test_2025_keeps_accepting_a_reordered_file(tmp_path, cli):
    sub = write(tmp_path, concepts(f"{C},", f"{B},", f"{A},{C1}"))
    gold = write(tmp_path, concepts(f"{A},{C1}", f"{B},{C2}", f"{C},{C3}"), "gold.csv")
    assert found(sub, edition=2025) == []
    assert cli("validate", "concepts", sub, "--gold", gold, "--edition", "2025")[0] == 0
    rc, out, _ = cli("validate", "concepts", sub, "--gold", gold)  # default: 2026
    assert rc == 1 and out.strip().splitlines()[-1] == f"{sub}: 2 rule violation(s) of the 2026 rules"


def test_cli_exit_codes_and_one_line_messages(tmp_path, cli):
    gold = write(tmp_path, captions(f"{A},x", f"{B},y"), "gold.csv")
    good = write(tmp_path, captions(f"{A},a", f"{B},b"), "good.csv")
    bad = write(tmp_path, captions(f"{B},b", f"{A},a"), "bad.csv")
    rc, out, _ = cli("validate", "captions", good, "--gold", gold)
    assert rc == 0 and out.strip() == f"OK: {good} follows every official 2026 rule (all 2 gold IDs present, in the " \
                                      "gold order)"
    rc, out, _ = cli("validate", "captions", bad, "--gold", gold)
    assert rc == 1 and out.splitlines()[0].startswith(f"{bad}:2: the ID {B} is out of order")
    rc, _, err = cli("validate", "captions", good, "--gold", gold, "--edition", "2024")
    assert rc == 2 and err.strip().count("\n") == 0 and "unknown edition" in err
    rc, _, err = cli("evaluate", "captions", "--gold", gold, "--pred", bad, "--bertscore-model", "none")
    assert rc == 1 and "not scored" in err


# ---------------------------------------------------------------------------------------
# Scores JSON records the edition
# ---------------------------------------------------------------------------------------

def test_scores_json_records_the_edition(tmp_path, cli):
    gold = write(tmp_path, concepts(f"{A},{C1}", f"{B},{C2}"), "gold.csv")
    sub = write(tmp_path, concepts(f"{A},{C1}", f"{B},{C1}"))
    for edition in ("2025", "2026"):
        out = tmp_path / f"c{edition}.json"
        assert cli("evaluate", "concepts", "--gold", gold, "--pred", sub, "--json", out, "--edition", edition)[0] == 0
        assert json.loads(out.read_text())["edition"] == int(edition)
    cgold = write(tmp_path, captions(f"{A},chest x-ray", f"{B},ct"), "cgold.csv")
    csub = write(tmp_path, captions(f"{A},chest", f"{B},ct"), "csub.csv")
    out = tmp_path / "cap.json"
    rc, text, err = cli("evaluate", "captions", "--gold", cgold, "--pred", csub, "--bertscore-model", "none",
                        "--bleurt-model", "none", "--json", out)
    assert rc == 0, err
    s = json.loads(out.read_text())
    assert s["edition"] == 2026 and s["preset"] == "2026" and s["relevance"] is None
    assert s["relevance_missing"] == ["bertscore", "similarity", "bleurt"] and "preset 2026" in text
    rc, _, _ = cli("evaluate", "captions", "--gold", cgold, "--pred", csub, "--bertscore-model", "none",
                   "--bleurt-model", "none", "--json", out, "--edition", "2025")
    s = json.loads(out.read_text())
    assert s["edition"] == 2025 and s["preset"] == "public-2025"
    assert s["relevance_missing"] == ["similarity", "bertscore"]
    rc, _, err = cli("evaluate", "captions", "--gold", cgold, "--pred", csub, "--bertscore-model", "none",
                     "--bertscore-measure", "recall")
    assert rc == 2 and "2026 preset is defined with BERTScore f1" in err


# ---------------------------------------------------------------------------------------
# Writers and --order-from
# ---------------------------------------------------------------------------------------

def test_writers_follow_the_gold_order_and_pass_2026(tmp_path):
    preds = {C: [C3], A: [C1, C2], B: []}
    path = write_concept_submission(tmp_path / "c.csv", preds, gold_ids=GOLD)
    assert [line.split(",")[0] for line in path.read_text().splitlines()[1:]] == GOLD
    assert found(path) == []
    # without gold IDs: the order the predictions came in (as the images were listed)
    path = write_concept_submission(tmp_path / "c2.csv", preds)
    assert [line.split(",")[0] for line in path.read_text().splitlines()[1:]] == [C, A, B]


def test_caption_writer_handles_commas_quotes_and_line_breaks_and_passes_2026(tmp_path):
    caps = {B: 'a "quoted" word, and a comma', C: "two\nlines,\r\nthree", A: "  spaces at the ends  "}
    path = write_caption_submission(tmp_path / "cap.csv", caps, gold_ids=GOLD)
    assert found(path, "captions") == [] and found(path, "captions", edition=2025) == []
    back = read_caption_submission(path, GOLD)
    assert list(back) == GOLD
    # line breaks become spaces (the checkers read line by line); quotes survive the round trip
    assert back == {A: "spaces at the ends", B: 'a "quoted" word, and a comma', C: "two lines, three"}


def test_writer_refuses_predictions_that_do_not_cover_the_gold_ids(tmp_path):
    with pytest.raises(MedcapError, match="gold IDs have no row"):
        write_caption_submission(tmp_path / "x.csv", {A: "x", B: "y"}, gold_ids=GOLD)
    with pytest.raises(MedcapError, match="not in the gold file"):
        write_concept_submission(tmp_path / "y.csv", {A: [], B: [], C: [], "other": []}, gold_ids=GOLD)
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "y.csv").exists()


def test_read_id_order_takes_gold_csvs_and_plain_lists(tmp_path):
    gold = write(tmp_path, concepts(f"{B},{C1}", f"{A},"), "gold.csv")
    manual = write(tmp_path, concepts(f"{C},{C3}", f"{A},"), "manual.csv")
    plain = write(tmp_path, f"\ufeff{C}\n{A}\n\n{B}\n", "ids.txt")
    assert read_id_order(gold) == [B, A]
    assert read_id_order([gold, manual]) == [B, A, C]
    assert read_id_order(plain) == [C, A, B]


def test_baseline_and_predict_order_from_write_files_that_pass_2026(synth_small, cli, tmp_path):
    test_ids = [line.split(",")[0] for line in (synth_small / "test_concepts.csv").read_text().splitlines()[1:]]
    order = tmp_path / "order.txt"
    order.write_text("\n".join(reversed(test_ids)) + "\n")
    out = tmp_path / "mf.csv"
    rc, _, err = cli("baseline", "concepts", "most-frequent", "--data", synth_small, "--out", out,
                     "--order-from", order)
    assert rc == 0, err
    assert [line.split(",")[0] for line in out.read_text().splitlines()[1:]] == test_ids[::-1]
    assert validate_concept_submission(out, test_ids[::-1], edition=2026) == []
    # an order file that does not list the same images is refused before anything is written
    order.write_text("\n".join(test_ids[:-1]) + "\n")
    rc, _, err = cli("baseline", "concepts", "most-frequent", "--data", synth_small, "--out", tmp_path / "no.csv",
                     "--order-from", order)
    assert rc == 2 and "gold IDs have no row" not in err and "not in the gold file" in err
    assert not (tmp_path / "no.csv").exists()
    # predict: the IDs are checked against the order file before any model is loaded
    rc, _, err = cli("predict", "concepts", "--model", tmp_path / "no-model", "--images", synth_small / "test",
                     "--out", tmp_path / "p.csv", "--order-from", order)
    assert rc == 2 and "does not list the same images" in err


def test_caption_baseline_and_predict_follow_the_order_file(synth_small, cli, tmp_path):
    from medcap.inference.captions import predict_captions

    test_ids = list(read_id_order(synth_small / "test_captions.csv"))
    order = tmp_path / "order.txt"
    order.write_text("\n".join(reversed(test_ids)) + "\n")
    out = tmp_path / "constant.csv"
    rc, _, err = cli("baseline", "captions", "constant", "--data", synth_small, "--out", out, "--order-from", order)
    assert rc == 0, err
    assert list(read_caption_submission(out, test_ids[::-1])) == test_ids[::-1]
    assert validate_caption_submission(out, test_ids, edition=2025) == []  # 2025: any order
    assert [ln for ln, _ in found(out, "captions", gold=test_ids)] != []     # 2026: not the gold order
    with pytest.raises(MedcapError, match="does not list the same images"):
        predict_captions(tmp_path / "no-model", [synth_small / "test"], tmp_path / "p.csv", order=test_ids[1:])


# ---------------------------------------------------------------------------------------
# The 2026 caption aggregate
# ---------------------------------------------------------------------------------------

def test_2026_aggregate_arithmetic_matches_the_reported_leaderboard_row():
    means = {"bertscore": 0.625, "rouge1": 0.323, "similarity": 1.010, "bleurt": 0.356,
             "umls_f1": 0.216, "alignscore": 0.129}
    agg = aggregate_preset(means, "2026")
    assert agg["relevance"] == pytest.approx((0.625 + 0.323 + 1.010 + 0.356) / 4)
    assert agg["factuality"] == pytest.approx((0.216 + 0.129) / 2)
    assert agg["overall"] == pytest.approx((agg["relevance"] + agg["factuality"]) / 2)
    # as reported by participants: Relevance 0.5786, Factuality 0.1724, Overall 0.3755
    assert abs(agg["relevance"] - 0.5786) < 2e-4 and abs(agg["factuality"] - 0.1724) < 2e-4
    assert abs(agg["overall"] - 0.3755) < 2e-4
    # the 2025 public aggregate leaves BLEURT out, and so does the public 2026 evaluator.py's `score`
    assert aggregate_preset(means, "public-2025")["relevance"] == pytest.approx((0.625 + 0.323 + 1.010) / 3)
    public = aggregate_preset(means, "public-2026")
    assert public["relevance"] == pytest.approx((0.625 + 0.323 + 1.010) / 3)
    assert public["factuality"] == agg["factuality"]


def test_missing_terms_make_the_aggregate_null_unless_partial():
    means = {"bertscore": 0.5, "rouge1": 0.3, "similarity": None, "bleurt": None, "umls_f1": 0.2,
             "alignscore": None}
    agg = aggregate_preset(means, "2026")
    assert agg["relevance"] is None and agg["relevance_missing"] == ["similarity", "bleurt"]
    assert agg["overall"] is None
    agg = aggregate_preset(means, "2026", partial=True)
    assert agg["relevance"] == pytest.approx(0.4) and agg["relevance_partial"]
    assert agg["factuality"] == pytest.approx(0.2) and agg["overall"] == pytest.approx(0.3)


def test_default_preset_follows_the_edition():
    assert caption_preset(edition=2026).name == "2026" and caption_preset(edition=2025).name == "public-2025"
    with pytest.raises(MedcapError, match="unknown caption preset"):
        caption_preset("2027")


def test_similarity_from_precomputed_embeddings(tmp_path):
    emb = {A: np.array([1.0, 0.0]), B: np.array([0.0, 1.0]), C: np.array([1.0, 1.0])}
    text = {"along x": [2.0, 0.0], "against x": [-1.0, 0.0], "diagonal": [1.0, 0.0]}

    def encode(texts):
        return np.array([text[t] for t in texts])

    s = similarity_from_embeddings([A, B, C], ["along x", "against x", "diagonal"], emb, encode)
    assert s == pytest.approx([2.5, 0.0, 2.5 / np.sqrt(2)])  # cos 1, cos < 0 -> 0, cos 45 degrees
    assert similarity_from_embeddings([A], [""], emb, encode) == pytest.approx([0.0])  # empty caption: 0
    np.savez(tmp_path / "emb.npz", **emb)
    assert set(load_image_embeddings(tmp_path / "emb.npz")) == {A, B, C}
    with pytest.raises(MedcapError, match="no precomputed embedding"):
        similarity_from_embeddings(["other"], ["x"], emb, encode)


def test_score_captions_preset_uses_embeddings_and_reports_missing_scorers():
    gold, pred = {A: "chest x-ray", B: "ct of the head"}, {A: "chest x-ray", B: ""}
    emb = {A: np.array([1.0, 0.0]), B: np.array([0.0, 1.0])}
    scores = score_captions_preset(gold, pred, preset="2026", image_embeddings=emb,
                                   text_encoder=lambda texts: np.array([[1.0, 0.0]] * len(texts)),
                                   bertscore_model=None, bleurt_model=None, partial_aggregates=True)
    s = scores.summary
    assert s["similarity"] == pytest.approx((2.5 + 0.0) / 2) and "similarity" not in s["not_available"]
    assert s["rouge1"] == pytest.approx(0.5)
    assert s["relevance"] == pytest.approx((0.5 + 1.25) / 2) and s["relevance_partial"]
    assert "bertscore" in s["not_available"] and "bleurt" in s["not_available"]
    assert "--medcat-model" in s["not_available"]["umls_f1"] and s["umls_f1"] is None  # never a silent zero
    assert s["preset"] == "2026" and s["settings"]["similarity_images"] == "precomputed embeddings"
    # without a text encoder or MedImageInsight the similarity is "not available", with how to enable it
    s = score_captions_preset(gold, pred, image_embeddings=emb, bertscore_model=None, bleurt_model=None).summary
    assert s["similarity"] is None and "--medimageinsight" in s["not_available"]["similarity"]


# ---------------------------------------------------------------------------------------
# Data files of the 2026 edition
# ---------------------------------------------------------------------------------------

def test_edition_is_inferred_from_file_and_image_names():
    assert infer_edition(["ImageCLEFmedical_Caption_2026_train_concepts.csv"]) == "2026"
    assert infer_edition(["imageclefmedical_caption_2025_valid_0"]) == "2025"
    assert infer_edition(["train_concepts.csv", "SYNTH_2025_train_000001"]) == "unknown"
    assert infer_edition(["ImageCLEFmedical_Caption_2025_x", "ImageCLEFmedical_Caption_2026_y"]) == "unknown"


@pytest.mark.parametrize("year", ["2026", "2031"])
def test_dataset_reader_understands_any_year_prefix(tmp_path, year, cli):
    from PIL import Image

    from medcap.data import read_dataset

    root = tmp_path / "data"
    prefix = f"ImageCLEFmedical_Caption_{year}_"
    for split in ("train", "valid"):
        ids = [f"{prefix}{split}_{k}" for k in range(2)]
        folder = root / f"{prefix}{split}_images"
        folder.mkdir(parents=True)
        for i in ids:
            Image.new("RGB", (8, 8)).save(folder / f"{i}.jpg")
        (root / f"{prefix}{split}_concepts.csv").write_text(concepts(*(f"{i},{C1}" for i in ids)))
        (root / f"{prefix}{split}_concepts_manual.csv").write_text(concepts(*(f"{i},{C1}" for i in ids)))
        (root / f"{prefix}{split}_captions.csv").write_text(captions(*(f"{i},chest" for i in ids)))
    ds = read_dataset(root)
    assert set(ds.splits) == {"train", "valid"} and ds.edition == year
    train = ds.split("train")
    assert train.ids == [f"{prefix}train_0", f"{prefix}train_1"] and train.manual_concepts is not None
    assert train.captions is not None and train.image_dir.name == f"{prefix}train_images"
    rc, out, err = cli("data", "stats", root, "--out", tmp_path / "stats")
    assert rc == 0, err
    assert f"edition: {year}" in out
    assert json.loads((tmp_path / "stats" / "stats.json").read_text())["edition"] == year


def test_synthetic_data_has_an_unknown_edition(synth_small):
    from medcap.data import read_dataset

    assert read_dataset(synth_small).edition == "unknown"
