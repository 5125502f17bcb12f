"""Concept ensembles (medcap.methods.ensemble): fusion math, kNN as a probability source, choices made on
validation only, and the ensemble folder predicting like any detector."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import train_tiny_models
from medcap.methods.ensemble import fit_fusion, fuse, knn_probabilities, weight_grid
from medcap.models.ensemble import ConceptEnsemble, is_ensemble_folder

# -- fusion math on hand-made probabilities ----------------------------------------------------

P1 = np.array([[0.9, 0.2, 0.6], [0.1, 0.8, 0.4]])
P2 = np.array([[0.5, 0.6, 0.2], [0.3, 0.2, 0.9]])


def test_mean_and_weighted_fusion():
    np.testing.assert_allclose(fuse([P1, P2], "mean"), (P1 + P2) / 2)
    np.testing.assert_allclose(fuse([P1, P2], "weighted", [3, 1]), 0.75 * P1 + 0.25 * P2)
    np.testing.assert_allclose(fuse([P1, P2], "weighted", [1, 0]), P1)


def test_union_and_intersection_are_or_and_of_member_decisions():
    t1, t2 = np.array([0.5, 0.5, 0.5]), np.array([0.4, 0.7, 0.3])
    d1, d2 = P1 >= t1, P2 >= t2
    union = fuse([P1, P2], "union", member_thresholds=[t1, t2])
    inter = fuse([P1, P2], "intersection", member_thresholds=[t1, t2])
    np.testing.assert_array_equal(union >= 0.5, d1 | d2)
    np.testing.assert_array_equal(inter >= 0.5, d1 & d2)
    assert union.min() >= 0 and union.max() <= 1
    # 0.5 + the best member margin: image 0, concept 0: max(0.9 - 0.5, 0.5 - 0.4) = 0.4
    assert union[0, 0] == pytest.approx(0.9)
    assert inter[0, 0] == pytest.approx(0.6)


def test_weight_grid_is_on_the_simplex():
    grid = weight_grid(2)
    assert len(grid) == 11 and all(abs(sum(w) - 1) < 1e-9 for w in grid)
    assert (0.0, 1.0) in grid and (1.0, 0.0) in grid
    assert all(abs(sum(w) - 1) < 1e-9 for w in weight_grid(3))


def test_knn_probabilities_are_neighbour_vote_shares():
    train = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float64)
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    labels = np.array([[1, 0], [1, 1], [0, 1], [0, 1]])
    p = knn_probabilities(train, labels, np.array([[1.0, 0.0]]), k=2)
    np.testing.assert_allclose(p, [[1.0, 0.5]])
    p = knn_probabilities(train, labels, train, k=1, exclude_self=True)          # never the image itself
    np.testing.assert_allclose(p[0], labels[1])


def test_fit_fusion_prefers_the_informative_source():
    rng = np.random.default_rng(0)
    gold = rng.random((200, 6)) < 0.3
    good = np.where(gold, 0.8, 0.2) + rng.normal(0, 0.05, gold.shape)
    noise = rng.random(gold.shape)
    choice = fit_fusion([good, noise], gold, None, [f"C{i}" for i in range(6)], [0.5, 0.5],
                        fusions=("mean", "weighted"), per_concept=False)
    assert choice.fusion == "weighted" and choice.weights[0] > choice.weights[1]
    assert choice.valid_f1 > 0.95


# -- ensemble folders on the small synthetic dataset ------------------------------------------

@pytest.fixture(scope="module")
def members(tmp_path_factory, synth_small):
    """Two detectors that differ in input size, head and pooling: the shared one-epoch tiny
    detector, and an untrained global-head GeM detector at 48 px over the same concepts."""
    from medcap.inference.concepts import load_detector
    from medcap.models.concept_detector import ConceptDetector, DetectorConfig

    tiny = train_tiny_models(synth_small, tmp_path_factory.getbasetemp() / "medcap-tiny-models").concepts
    a = load_detector(tiny)
    b = ConceptDetector(DetectorConfig(num_classes=len(a.vocabulary.cuis), backbone="test_resnet", head="global",
                                       global_pool="gem"))
    b.vocabulary, b.thresholds = a.vocabulary, {"global": 0.3}
    b.preprocessing = {**a.preprocessing, "image_size": 48}
    other = b.save_pretrained(tmp_path_factory.mktemp("members") / "b")
    return [tiny, other]


@pytest.fixture(scope="module")
def ensemble_dir(tmp_path_factory, members, synth_small):
    from medcap.methods.ensemble import build_ensemble

    out = tmp_path_factory.mktemp("ens") / "ens"
    build_ensemble(members, synth_small, out, knn=True, ks=(1, 3), log=lambda _m: None)
    return out


def test_ensemble_folder_reloads_and_fuses_its_members(ensemble_dir, members, synth_small):
    from medcap.inference.concepts import load_detector, predict_probabilities

    assert is_ensemble_folder(ensemble_dir) and not is_ensemble_folder(members[0])
    cfg = json.loads((ensemble_dir / "config.json").read_text())
    assert cfg["model_type"] == "medcap-concept-ensemble" and cfg["knn"]["k"] in (1, 3)
    assert (ensemble_dir / "members" / "m1" / "model.safetensors").is_file()
    ens = load_detector(ensemble_dir)
    assert isinstance(ens, ConceptEnsemble) and ens.num_sources == 3
    ids, probs = predict_probabilities(ens, synth_small / "test")
    assert probs.shape == (len(ids), len(ens.vocabulary.cuis))
    assert probs.min() >= 0 and probs.max() <= 1
    # The saved fusion of the sources' probabilities, recomputed with the numpy reference.
    import torch

    from medcap.inference.concepts import map_images

    _, src = map_images(lambda x: torch.stack(ens.source_probabilities(x), dim=1), synth_small / "test",
                        ens.preprocessing)
    t = ens.member_thresholds.numpy()
    expected = fuse([src[:, m] for m in range(3)], cfg["fusion"], cfg["weights"], list(t))
    np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_an_ensemble_folder_left_mid_swap_loads_as_an_ensemble(ensemble_dir, tmp_path):
    """load_detector resolves the folder (models.location: .NAME.old put back) before it tells
    an ensemble from a detector."""
    import os
    import shutil

    from medcap.inference.concepts import load_detector

    folder = tmp_path / "ens"
    shutil.copytree(ensemble_dir, tmp_path / ".ens.old")
    assert isinstance(load_detector(folder), ConceptEnsemble) and folder.is_dir()
    assert not (tmp_path / ".ens.old").exists() and os.listdir(folder)


def test_ensemble_folder_keeps_its_processor_as_a_detector_does(ensemble_dir, tmp_path):
    from medcap.inference.concepts import load_detector
    from medcap.models.processing import PROCESSOR_FILE

    saved = json.loads((ensemble_dir / PROCESSOR_FILE).read_text())
    assert saved["processor_class"] == "ConceptProcessor" and not (ensemble_dir / "preprocessing.json").exists()
    # an ensemble saved before the processor file (preprocessing.json) still loads
    old = shutil.copytree(ensemble_dir, tmp_path / "old")
    (old / PROCESSOR_FILE).unlink()
    (old / "preprocessing.json").write_text(json.dumps({k: v for k, v in saved.items() if k != "processor_class"}))
    assert load_detector(old).preprocessing == load_detector(ensemble_dir).preprocessing


def test_predict_concepts_cli_uses_the_ensemble(cli, ensemble_dir, synth_small, tmp_path):
    out = tmp_path / "run.csv"
    rc, _, err = cli("predict", "concepts", "--model", ensemble_dir, "--images", synth_small / "test",
                          "--out", out, "--json", tmp_path / "p.json")
    assert rc == 0, err
    rows = out.read_text().splitlines()
    assert rows[0] == "ID,CUIs" and len(rows) == 1 + len(list((synth_small / "test").iterdir()))
    assert json.loads((tmp_path / "p.json").read_text())["thresholds"]["global"] > 0


def test_choices_are_made_on_validation_never_test(tmp_path, members, synth_small, ensemble_dir):
    """Without any test split the same ensemble comes out: test is never read."""
    from medcap.methods.ensemble import build_ensemble

    data = tmp_path / "data"
    shutil.copytree(synth_small, data)
    shutil.rmtree(data / "test")
    for f in data.glob("test*"):
        f.unlink()
    out = tmp_path / "ens"
    build_ensemble(members, data, out, knn=True, ks=(1, 3), log=lambda _m: None)
    for name in ("thresholds.json", "config.json"):
        assert json.loads((out / name).read_text()) == json.loads((ensemble_dir / name).read_text())


def test_ensemble_cli_writes_a_folder_and_refuses_nonsense(cli, members, synth_small, tmp_path):
    rc, stdout, err = cli("ensemble", "concepts", "--member", members[0], "--member", members[1],
                          "--data", synth_small, "--out", tmp_path / "e", "--fusion", "union",
                          "--fusion", "intersection")
    assert rc == 0, err
    assert "validation F1" in stdout
    assert json.loads((tmp_path / "e" / "config.json").read_text())["fusion"] in ("union", "intersection")
    rc, _, err = cli("ensemble", "concepts", "--member", members[0], "--data", synth_small, "--out", tmp_path / "f")
    assert rc != 0 and "not an ensemble" in err and not (tmp_path / "f").exists()
    rc, _, err = cli("ensemble", "concepts", "--member", members[0], "--knn", "--data", synth_small,
                     "--out", tmp_path / "g", "--fusion", "max")
    assert rc != 0 and "--fusion" in err
    rc, _, err = cli("ensemble", "concepts", "--member", members[1], "--knn", "--data", synth_small,
                     "--out", members[1].parent)
    assert rc != 0 and "replace a member" in err and (members[1] / "model.safetensors").is_file()


def test_serve_pipeline_and_explain_accept_an_ensemble(ensemble_dir, synth_small, tmp_path):
    from medcap.inference.explain import explain_image
    from medcap.inference.pipeline import Pipeline

    image = min((synth_small / "test").iterdir())
    result = Pipeline(ensemble_dir, None).analyze(image)
    assert result.concepts and result.heatmap is not None
    report = explain_image(ensemble_dir, image, tmp_path / "x", top=2)
    assert report["head"] == "ensemble" and len(report["concepts"]) == 2
