"""Baselines: most frequent concepts, kNN retrieval, caption baselines, image embeddings."""
from __future__ import annotations

import numpy as np
import pytest

from medcap.inference.concepts import image_embeddings
from medcap.methods.baselines import (
    constant_caption,
    fit_knn,
    fit_most_frequent,
    knn_concepts,
    knn_vote,
    most_frequent_concepts,
    retrieval_captions,
)
from medcap.models.retrieval import nearest_neighbours, plain_backbone
from medcap.submission import read_concept_submission


def test_most_frequent_ranks_by_images_and_chooses_k_on_validation():
    train = {"a": ["C1", "C2"], "b": ["C1", "C1"], "c": ["C1", "C3"], "d": ["C2"]}
    assert most_frequent_concepts(train) == ["C1", "C2", "C3"]
    cuis, report = fit_most_frequent(train, {"v1": ["C1", "C2"], "v2": ["C1", "C2"]}, max_k=3)
    assert cuis == ["C1", "C2"] and report["k"] == 2 and report["valid_f1"] == 1.0


def _clusters(n_per=10, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[:3]
    x = np.concatenate([c + 0.05 * rng.standard_normal((n_per, dim)) for c in centres])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = [["C1"], ["C2", "C5"], ["C3"]]
    return x, [labels[i // n_per] for i in range(len(x))]


def test_nearest_neighbours_are_sorted_by_cosine_and_can_exclude_themselves():
    x, _ = _clusters()
    idx, sim = nearest_neighbours(x, x, 3)
    assert (idx[:, 0] == np.arange(len(x))).all() and (np.diff(sim, axis=1) <= 1e-12).all()
    idx, _ = nearest_neighbours(x, x, 3, exclude_self=True)
    assert not (idx == np.arange(len(x))[:, None]).any()
    assert all(i // 10 == row // 10 for row, r in enumerate(idx) for i in r)  # same cluster


def test_knn_vote_keeps_concepts_of_enough_neighbours():
    neighbours = [[["C1", "C2"], ["C1"], ["C3"], ["C1", "C3"]]]
    assert knn_vote(neighbours, 0.5) == [["C1", "C3"]]
    assert knn_vote(neighbours, 0.75) == [["C1"]]


def test_knn_recovers_cluster_concepts_and_tunes_k_and_vote():
    x, lists = _clusters()
    q, qlists = _clusters(seed=1)
    ids = [f"q{i}" for i in range(len(q))]
    report = fit_knn(x, lists, q, ids, dict(zip(ids, qlists, strict=True)), ks=(1, 5), votes=(0.3, 0.6))
    assert report["valid_f1"] == 1.0 and len(report["table"]) == 4
    assert knn_concepts(x, lists, q[:1], 5, 0.5) == [["C1"]]


def test_retrieval_captions_copy_the_nearest_training_caption():
    x, _ = _clusters()
    captions = [f"caption of cluster {i // 10}" for i in range(len(x))]
    q, _ = _clusters(seed=2)
    out = retrieval_captions(x, captions, q)
    assert out[0] == "caption of cluster 0" and out[-1] == "caption of cluster 2"
    with pytest.raises(ValueError):
        retrieval_captions(x, captions[:3], q)


def test_constant_caption_is_the_most_typical_training_caption():
    captions = {f"i{i}": c for i, c in enumerate(
        ["ct scan of the chest", "ct scan of the abdomen", "ct of the chest", "mri of the brain",
         "bananas are yellow", "ct scan of the chest with contrast"])}
    assert constant_caption(captions) in ("ct scan of the chest", "ct scan of the abdomen")
    assert constant_caption(["only one"]) == "only one"


def test_image_embeddings_are_unit_vectors_for_a_plain_backbone_and_a_detector(synth_small, tmp_path):
    import torch

    from medcap.data.vocab import ConceptVocabulary
    from medcap.models.concept_detector import ConceptDetector, DetectorConfig

    backbone = plain_backbone("resnet18", image_size=32)
    ids, emb = image_embeddings(backbone, [synth_small / "test"], batch_size=8)
    assert len(ids) == 16 and emb.shape == (16, 512)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)

    det = ConceptDetector(DetectorConfig(num_classes=2, backbone="resnet18"))
    det.vocabulary = ConceptVocabulary(["C0000001", "C0000002"])
    det.preprocessing = {"image_size": 32, "resize": "squash", "mean": None, "std": None}
    det.save_pretrained(tmp_path / "m")
    ids2, emb2 = image_embeddings(tmp_path / "m", [synth_small / "test"])
    assert ids2 == ids and emb2.shape == (16, 512)
    assert torch.is_grad_enabled()


def test_baseline_cli_writes_valid_submissions_and_prints_the_test_score(cli, synth_small, tmp_path):
    ids = [line.split(",")[0] for line in (synth_small / "test_concepts.csv").read_text().splitlines()[1:]]
    rc, out, err = cli("baseline", "concepts", "most-frequent", "--data", synth_small, "--out", tmp_path / "mf.csv")
    assert rc == 0, err
    assert "test primary F1" in out and set(read_concept_submission(tmp_path / "mf.csv", gold_ids=ids)) == set(ids)
    rc, out, err = cli("baseline", "concepts", "knn", "--data", synth_small, "--out", tmp_path / "knn.csv",
                       "--image-size", "32")
    assert rc == 0, err
    assert '"k":' in out and set(read_concept_submission(tmp_path / "knn.csv")) == set(ids)
