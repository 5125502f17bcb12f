"""Concept scores equal the organisers' evaluator (REFERENCE §4), by hand and property-based."""
from __future__ import annotations

import csv
import math
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medcap.errors import MedcapError
from medcap.metrics.concepts import (
    SECONDARY_CUIS,
    evaluate_concepts,
    mean_per_image_f1,
    per_image_f1_matrix,
    score_concepts,
)

CT, CHEST, MRI, US, ABDOMEN = "C0040405", "C0817096", "C0024485", "C0041618", "C0000726"


# ---------------------------------------------------------------------------------------
# Reference: the organisers' per-image loop, written plainly with sets and sklearn
# ---------------------------------------------------------------------------------------

def reference_score(gold: dict, pred: dict, allowed: frozenset | None = None) -> float:
    """The official loop with sets: per image precision, recall and their harmonic mean
    (sklearn's binary F1 on the union of CUIs), averaged over images with gold CUIs."""
    total, count = 0.0, 0
    for image_id, gold_cuis in gold.items():
        g = {c.strip().upper() for c in gold_cuis if c.strip()}
        p = {c.strip().upper() for c in pred.get(image_id, []) if c.strip()}
        if allowed is not None:
            g, p = g & allowed, p & allowed
        if not g:
            continue
        hits = len(g & p)
        precision = hits / len(p) if p else 0.0
        recall = hits / len(g)
        total += 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        count += 1
    return total / count if count else float("nan")


# ---------------------------------------------------------------------------------------
# Matrix form
# ---------------------------------------------------------------------------------------

def test_per_image_f1_matrix_is_two_tp_over_sizes_and_nan_for_empty_gold():
    pred = np.array([[1, 1, 0], [0, 0, 0], [1, 0, 0], [0, 0, 1]], dtype=bool)
    gold = np.array([[1, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=bool)
    f1 = per_image_f1_matrix(pred, gold)
    # image 0: 2*1/(2+1); image 1: empty gold -> NaN; image 2: no overlap; image 3: empty gold
    assert f1[0] == pytest.approx(2 / 3, abs=1e-15)
    assert math.isnan(f1[1]) and math.isnan(f1[3])
    assert f1[2] == 0.0
    assert mean_per_image_f1(pred, gold) == pytest.approx(1 / 3, abs=1e-15)


def test_per_image_f1_matrix_accepts_sparse_and_mixed_inputs():
    rng = np.random.default_rng(0)
    pred = rng.random((50, 30)) < 0.1
    gold = rng.random((50, 30)) < 0.1
    dense = per_image_f1_matrix(pred, gold)
    for p, g in ((sp.csr_matrix(pred), sp.csr_matrix(gold)), (sp.csr_matrix(pred), gold),
                 (pred, sp.csc_matrix(gold)), (pred.astype(np.int8), gold.astype(np.float32))):
        np.testing.assert_array_equal(per_image_f1_matrix(p, g), dense)


def test_gold_sizes_count_gold_concepts_outside_the_vocabulary_as_missed():
    pred = np.array([[1, 0], [1, 1]], dtype=bool)
    gold = np.array([[1, 0], [0, 0]], dtype=bool)
    # image 0 has 2 more gold CUIs outside the vocabulary: 2*1/(1+3); image 1 has 1: 0/(2+1)
    f1 = per_image_f1_matrix(pred, gold, gold_sizes=[3, 1])
    np.testing.assert_allclose(f1, [0.5, 0.0], atol=1e-15)
    with pytest.raises(ValueError):
        per_image_f1_matrix(pred, gold, gold_sizes=[0, 0])


def test_mean_per_image_f1_is_nan_when_no_image_has_gold():
    z = np.zeros((3, 4), dtype=bool)
    assert math.isnan(mean_per_image_f1(z, z))


def test_matrix_shapes_must_match():
    with pytest.raises(ValueError):
        per_image_f1_matrix(np.zeros((2, 3), bool), np.zeros((2, 4), bool))


# ---------------------------------------------------------------------------------------
# Dict form, by hand
# ---------------------------------------------------------------------------------------

GOLD = {"img_1": [CT, CHEST], "img_2": [MRI], "img_3": [], "img_4": ["c0041618 ", ABDOMEN]}
MANUAL = {"img_1": [CT, CHEST], "img_2": [MRI], "img_3": [], "img_4": [US]}
PRED = {"img_1": [CT], "img_2": [MRI, "C0000001"], "img_3": [], "img_4": [US, ABDOMEN]}


def test_primary_and_secondary_f1_worked_out_by_hand():
    r = evaluate_concepts(GOLD, PRED, MANUAL)
    # primary: img_1 2/3, img_2 2/3, img_3 left out (empty gold), img_4 1 -> 7/9
    assert r["primary_f1"] == pytest.approx(7 / 9, abs=1e-15)
    # secondary (manual gold, 15 CUIs): img_1 2/3, img_2 1 (C0000001 filtered out),
    # img_3 left out, img_4 {US} vs {US, ABDOMEN} 2/3 -> 7/9
    assert r["secondary_f1"] == pytest.approx(7 / 9, abs=1e-15)
    assert r["n_images"] == 4 and r["n_scored"] == 3 and r["n_scored_secondary"] == 3
    assert r["n_empty_gold"] == 1 and r["secondary_gold"] == "manual"


def test_organisers_code_scores_an_empty_gold_row_one_when_the_prediction_is_empty_too():
    # Their reader turns the gold row "img_3," into {""}; an "img_3," prediction matches it.
    r = evaluate_concepts(GOLD, PRED, MANUAL, empty_gold="organisers-code")
    assert r["primary_f1"] == pytest.approx((7 / 3 + 1) / 4, abs=1e-15)
    assert r["n_scored"] == 4
    wrong = dict(PRED, img_3=[CT])
    assert evaluate_concepts(GOLD, wrong, MANUAL, empty_gold="organisers-code")["primary_f1"] == \
        pytest.approx((7 / 3 + 0) / 4, abs=1e-15)
    # the default result carries that number too
    assert evaluate_concepts(GOLD, PRED, MANUAL)["primary_f1_organisers_code"] == pytest.approx(10 / 12, abs=1e-15)


def test_secondary_leaves_out_images_whose_filtered_gold_is_empty_whatever_was_predicted():
    gold = {"a": ["C0000001"], "b": [CT]}
    for pred_a in ([], [CT], ["C0000001"]):
        r = evaluate_concepts(gold, {"a": pred_a, "b": [CT]})
        assert r["secondary_f1"] == 1.0 and r["n_scored_secondary"] == 1


def test_cuis_are_upper_cased_stripped_and_deduplicated_on_both_sides():
    gold = {"a": [" c0040405", "C0817096 "]}
    pred = {"a": ["C0040405", "c0040405 ", " C0817096"]}
    assert evaluate_concepts(gold, pred)["primary_f1"] == 1.0


def test_empty_prediction_scores_zero_against_non_empty_gold():
    assert evaluate_concepts({"a": [CT]}, {"a": []})["primary_f1"] == 0.0


def test_scores_are_none_when_no_image_has_gold():
    r = evaluate_concepts({"a": []}, {"a": [CT]})
    assert r["primary_f1"] is None and r["secondary_f1"] is None


def test_secondary_uses_the_primary_gold_when_no_manual_gold_is_given():
    r = evaluate_concepts({"a": [CT, "C0000001"]}, {"a": [CT]})
    assert r["secondary_f1"] == 1.0 and "no manual" in r["secondary_gold"]


def test_missing_and_unknown_ids_are_refused_unless_missing_is_allowed():
    with pytest.raises(MedcapError, match="no prediction"):
        evaluate_concepts({"a": [CT], "b": [CT]}, {"a": [CT]})
    with pytest.raises(MedcapError, match="not in the gold"):
        evaluate_concepts({"a": [CT]}, {"a": [CT], "zzz": [CT]})
    r = evaluate_concepts({"a": [CT], "b": [CT]}, {"a": [CT]}, allow_missing=True)
    assert r["primary_f1"] == 0.5


def test_manual_gold_with_other_ids_is_refused():
    with pytest.raises(MedcapError, match="manual gold"):
        evaluate_concepts({"a": [CT]}, {"a": [CT]}, {"b": [CT]})


def test_unknown_empty_gold_mode_is_refused():
    with pytest.raises(MedcapError, match="empty_gold"):
        evaluate_concepts({"a": [CT]}, {"a": [CT]}, empty_gold="nope")


def test_per_image_rows_spell_out_correct_missed_and_extra_cuis():
    rows = {r["ID"]: r for r in score_concepts(GOLD, PRED, MANUAL).per_image_rows()}
    assert rows["img_1"]["correct"] == CT and rows["img_1"]["missed"] == CHEST and rows["img_1"]["extra"] == ""
    assert rows["img_2"]["extra"] == "C0000001"
    assert rows["img_3"]["f1"] is None and rows["img_3"]["secondary_f1"] is None
    assert rows["img_4"]["f1"] == 1.0 and rows["img_4"]["n_gold"] == 2


def test_per_concept_rows_give_precision_recall_f1_over_all_images():
    gold = {"a": [CT, CHEST], "b": [CT], "c": [MRI]}
    pred = {"a": [CT], "b": [MRI], "c": [MRI]}
    rows = {r["CUI"]: r for r in score_concepts(gold, pred).per_concept_rows({CT: "CT"})}
    ct = rows[CT]  # gold in a, b; predicted in a -> P 1, R 1/2, F1 2/3
    assert (ct["support"], ct["predicted"], ct["correct"]) == (2, 1, 1)
    assert ct["precision"] == 1.0 and ct["recall"] == 0.5 and ct["f1"] == pytest.approx(2 / 3)
    assert ct["name"] == "CT"
    mri = rows[MRI]  # gold in c; predicted in b, c -> P 1/2, R 1
    assert mri["precision"] == 0.5 and mri["recall"] == 1.0
    assert rows[CHEST]["f1"] == 0.0
    # most frequent in gold first
    assert list(rows)[0] == CT


# ---------------------------------------------------------------------------------------
# Property-based equivalence with the reference
# ---------------------------------------------------------------------------------------

POOL = [CT, CHEST, MRI, US, ABDOMEN, "C0000001", "C0000002", "C0000003", "C0012345", "C1306645"]


def _variant(cui: str):
    """The same CUI as it may appear in a file: lower-case and/or padded."""
    return st.sampled_from([cui, cui.lower(), f" {cui}", f"{cui.lower()}  "])


cui_lists = st.lists(st.sampled_from(POOL).flatmap(_variant), max_size=6)


@st.composite
def gold_and_pred(draw, max_images: int = 12):
    n = draw(st.integers(1, max_images))
    ids = [f"ImageCLEFmedical_Caption_2025_valid_{i}" for i in range(n)]
    gold = {i: draw(cui_lists) for i in ids}
    pred = {i: draw(cui_lists) for i in ids}
    manual = {i: draw(cui_lists) for i in ids}
    return gold, pred, manual


@settings(max_examples=200, deadline=None)
@given(gold_and_pred())
def test_dict_scores_equal_the_reference_loop(data):
    gold, pred, manual = data
    r = evaluate_concepts(gold, pred, manual)
    for got, want in ((r["primary_f1"], reference_score(gold, pred)),
                      (r["secondary_f1"], reference_score(manual, pred, SECONDARY_CUIS))):
        if math.isnan(want):
            assert got is None
        else:
            assert abs(got - want) <= 1e-12


@settings(max_examples=100, deadline=None)
@given(gold_and_pred())
def test_matrix_scores_equal_the_reference_loop(data):
    gold, pred, _ = data
    vocab = sorted({c.strip().upper() for rows in (gold, pred) for cuis in rows.values() for c in cuis})
    col = {c: j for j, c in enumerate(vocab)}
    G = np.zeros((len(gold), max(len(vocab), 1)), dtype=bool)
    P = np.zeros_like(G)
    for i, image_id in enumerate(gold):
        for c in gold[image_id]:
            G[i, col[c.strip().upper()]] = True
        for c in pred[image_id]:
            P[i, col[c.strip().upper()]] = True
    want = reference_score(gold, pred)
    got = mean_per_image_f1(sp.csr_matrix(P), G)
    assert (math.isnan(got) and math.isnan(want)) or abs(got - want) <= 1e-12


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 100), st.integers(1, 100), st.integers(0, 100))
def test_hundred_concept_rows_equal_the_reference(n_pred, n_gold, shift):
    pool = [f"C{j:07d}" for j in range(250)]
    gold = {"only": pool[shift:shift + n_gold]}
    pred = {"only": pool[:n_pred]}
    assert abs(evaluate_concepts(gold, pred)["primary_f1"] - reference_score(gold, pred)) <= 1e-12


def test_single_image_with_one_match_out_of_many():
    gold = {"x": [f"C{j}" for j in range(100)]}
    pred = {"x": ["C0"] + [f"C{j}" for j in range(1000, 1099)]}
    assert evaluate_concepts(gold, pred)["primary_f1"] == pytest.approx(2 / 200, abs=1e-15)


# ---------------------------------------------------------------------------------------
# From files: medcap's readers + scores == the organisers' file reader + loop
# ---------------------------------------------------------------------------------------

def organisers_file_score(gold_path, pred_path) -> float:
    """Their reading (csv, header skipped, split(';'), strip) and their loop (incl. {""} rows)."""
    from sklearn.metrics import f1_score

    def load(path):
        out = {}
        with open(path, encoding="utf-8") as f:
            for row in csv.reader(f):
                if "ID" in row[0]:
                    continue
                out[row[0]] = tuple(c.strip() for c in row[1].split(";")) if len(row) > 1 else ()
        return out

    gold, pred = load(gold_path), load(pred_path)
    total, count = 0.0, len(gold)
    for image_id, p in pred.items():
        p = tuple(c.upper() for c in p)
        g = tuple(c.upper() for c in gold[image_id])
        if len(g) == 0:
            count -= 1
            continue
        union = sorted(set(g + p))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            total += f1_score([int(c in g) for c in union], [int(c in p) for c in union], average="binary")
    return total / count


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(gold_and_pred(max_images=8))
def test_scores_from_files_equal_the_organisers_code(tmp_path, data):
    from medcap.data.csvio import read_concepts_csv
    from medcap.submission import read_concept_submission, write_concept_submission

    gold, pred, _ = data
    clean = {i: sorted({c.strip().upper() for c in cuis}) for i, cuis in pred.items()}
    gold_path, pred_path = tmp_path / "gold.csv", tmp_path / "sub.csv"
    with open(gold_path, "w", encoding="utf-8") as f:
        f.write("ID,CUIs\n" + "".join(f"{i},{';'.join(c)}\n" for i, c in gold.items()))
    write_concept_submission(pred_path, clean)
    r = evaluate_concepts(read_concepts_csv(gold_path), read_concept_submission(pred_path),
                          empty_gold="organisers-code")
    assert abs(r["primary_f1"] - organisers_file_score(gold_path, pred_path)) <= 1e-12
