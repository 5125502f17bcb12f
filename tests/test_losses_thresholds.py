"""Losses (BCE, focal, ASL) and threshold selection by the official per-image F1."""
from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from medcap.errors import MedcapError
from medcap.metrics.concepts import mean_per_image_f1
from medcap.thresholds import GRIDS, Thresholds, _fit_per_concept, select_thresholds, sweep_global
from medcap.training.losses import LossConfig, build_loss


def _loss(name, **kw):
    return build_loss(LossConfig(loss=name, **kw))


def test_bce_is_the_papers_equation_averaged():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    p = torch.sigmoid(logits)
    eq1 = -(y * p.log() + (1 - y) * (1 - p).log()).sum(dim=1)  # paper eq. 1, per image
    torch.testing.assert_close(_loss("bce")(logits, y), eq1.mean() / 3)


def test_focal_and_asl_reduce_to_bce_without_focusing():
    torch.manual_seed(0)
    logits, y = torch.randn(4, 6), (torch.rand(4, 6) > 0.5).float()
    bce = _loss("bce")(logits, y)
    torch.testing.assert_close(_loss("focal", focal_gamma=0.0)(logits, y), bce)
    torch.testing.assert_close(_loss("asl", asl_gamma_neg=0.0, asl_gamma_pos=0.0, asl_clip=0.0)(logits, y), bce,
                               rtol=1e-4, atol=1e-6)


def test_focal_and_asl_down_weight_easy_negatives():
    logits = torch.full((1, 4), -4.0)  # confident, correct negatives
    y = torch.zeros(1, 4)
    assert _loss("focal")(logits, y) < _loss("bce")(logits, y) / 10
    assert _loss("asl")(logits, y) < _loss("bce")(logits, y) / 10


@pytest.mark.parametrize("name", ["bce", "focal", "asl"])
def test_every_loss_falls_as_logits_approach_the_targets(name):
    y = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    loss = _loss(name)
    values = [loss(s * (2 * y - 1), y).item() for s in (-2.0, 0.0, 2.0, 5.0)]
    assert values == sorted(values, reverse=True)


def test_unknown_loss_is_an_error():
    with pytest.raises(MedcapError, match="loss"):
        build_loss(SimpleNamespace(loss="hinge"))


def test_the_paper_grid_is_005_to_055():
    assert GRIDS["paper"].tolist() == [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55]
    assert GRIDS["fine"][0] == 0.01 and len(GRIDS["fine"]) == 95


def _random_problem(seed=0, n=120, k=8):
    rng = np.random.default_rng(seed)
    gold = rng.random((n, k)) < 0.25
    gold[np.arange(n), rng.integers(0, k, n)] = True
    probs = np.clip(0.35 * gold + rng.random((n, k)) * 0.6, 0, 1)
    return probs, gold


def test_global_sweep_picks_the_best_official_f1():
    probs, gold = _random_problem()
    th, f1, _ = sweep_global(probs, gold, None, "paper", never_empty="off")
    brute = {t: mean_per_image_f1(probs >= t, gold) for t in GRIDS["paper"]}
    assert f1 == pytest.approx(max(brute.values()))
    assert brute[th.global_threshold] == pytest.approx(f1)


def test_selection_uses_per_image_f1_not_micro_f1():
    # Image 0 has 10 gold concepts with probability 0.3; images 1..4 one each at 0.9 with many
    # 0.3 decoys. Micro-F1 favours 0.25 (the 10 hits dominate); per-image F1 favours 0.35.
    k = 14
    gold = np.zeros((5, k), bool)
    probs = np.zeros((5, k))
    gold[0, :10] = True
    probs[0, :10] = 0.3
    for i in range(1, 5):
        gold[i, 10] = True
        probs[i, 10] = 0.9
        probs[i, :4] = 0.3
    th, _, _ = sweep_global(probs, gold, None, "paper", never_empty="off")
    assert th.global_threshold == 0.35

    def micro(t):
        p = probs >= t
        tp = (p & gold).sum()
        return 2 * tp / (p.sum() + gold.sum())
    assert micro(0.25) > micro(0.35)


def test_never_empty_is_chosen_when_it_helps():
    probs = np.array([[0.9, 0.1], [0.2, 0.1], [0.3, 0.05]])
    gold = np.array([[1, 0], [1, 0], [1, 0]], bool)
    th, f1, _ = sweep_global(probs, gold, None, [0.5], never_empty="auto")
    assert th.never_empty and f1 == 1.0
    assert th.apply(probs).sum(axis=1).tolist() == [1, 1, 1]
    off, f1_off, _ = sweep_global(probs, gold, None, [0.5], never_empty="off")
    assert not off.never_empty and f1_off == pytest.approx(1 / 3)


def test_gold_concepts_outside_the_vocabulary_count_as_missed():
    probs = np.array([[0.9, 0.1]])
    gold = np.array([[True, False]])
    _, f1, _ = sweep_global(probs, gold, np.array([2]), [0.5], never_empty="off")
    assert f1 == pytest.approx(2 * 1 / (1 + 2))


def test_incremental_per_concept_fit_scores_like_the_official_metric():
    probs, gold = _random_problem(1)
    n_gold = gold.sum(axis=1)
    fitted = _fit_per_concept(probs, gold, n_gold, 0.35, GRIDS["paper"], min_positives=1, shrinkage=0.0)
    th = Thresholds(0.35, fitted)
    # Coordinate ascent never makes the score worse than the global threshold.
    assert mean_per_image_f1(th.apply(probs), gold) >= mean_per_image_f1(probs >= 0.35, gold) - 1e-12


def test_per_concept_thresholds_help_a_miscalibrated_concept_and_skip_rare_ones():
    rng = np.random.default_rng(0)
    n = 400
    gold = np.zeros((n, 3), bool)
    gold[:, 0] = rng.random(n) < 0.5                          # positives at 0.9, negatives at 0.5
    gold[:, 1] = rng.random(n) < 0.5                          # positives at 0.2, negatives at 0.05
    gold[:5, 2] = True                                        # rare: 5 positives
    probs = np.zeros((n, 3))
    probs[:, 0] = np.where(gold[:, 0], 0.9, 0.5)             # no single threshold suits both
    probs[:, 1] = np.where(gold[:, 1], 0.2, 0.05)
    probs[:, 2] = np.where(gold[:, 2], 0.08, 0.02)
    th, report = select_thresholds(probs, gold, grid="paper", never_empty="off", per_concept=True,
                                   min_positives=10, shrinkage=1.0)
    assert report["per_concept_used"] and report["per_concept_held_out_gain"] > 0
    t = th.vector(3)
    assert t[0] > 0.5 and 0.05 < t[1] <= 0.2
    assert 2 not in th.per_concept                            # too few positives to trust
    assert report["f1"] > report["f1_global"]
    assert report["f1"] == pytest.approx(mean_per_image_f1(th.apply(probs), gold))


def test_per_concept_thresholds_are_dropped_when_they_do_not_generalise():
    rng = np.random.default_rng(3)
    n, k = 300, 6
    gold = rng.random((n, k)) < 0.3
    probs = rng.random((n, k))                                # pure noise: nothing to learn
    th, report = select_thresholds(probs, gold, per_concept=True, min_positives=5, shrinkage=0.0)
    if not report["per_concept_used"]:
        assert th.per_concept == {} and report["f1"] == report["f1_global"]
    else:  # allowed only with a real held-out gain
        assert report["per_concept_held_out_gain"] > 0


def test_thresholds_round_trip_through_json_with_cuis():
    cuis = ["C01", "C02", "C03"]
    th = Thresholds(0.35, {2: 0.2}, True)
    data = th.to_json(cuis)
    assert data == {"global": 0.35, "never_empty": True, "per_concept": {"C03": 0.2}}
    assert Thresholds.from_json(data, cuis) == th
    with pytest.raises(MedcapError, match="C09"):
        Thresholds.from_json({"global": 0.3, "per_concept": {"C09": 0.1}}, cuis)


def test_bad_threshold_options_are_errors():
    probs, gold = _random_problem()
    for kw in ({"grid": "coarse"}, {"never_empty": "sometimes"}):
        with pytest.raises(MedcapError):
            select_thresholds(probs, gold, **kw)


def test_apply_respects_per_concept_thresholds():
    probs = np.array([[0.3, 0.3, 0.3]])
    pred = Thresholds(0.5, {1: 0.25}).apply(probs)
    assert pred.tolist() == [[False, True, False]]
    assert list(itertools.chain(*Thresholds(0.5, {}, True).apply(probs).tolist())) == [True, False, False]
