"""`medcap train concepts`, `medcap predict concepts`, bad input; the paper config end to end."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from conftest import split_ids
from medcap.errors import MedcapError
from medcap.submission import read_concept_submission

FAST = ["--set", "image_size=64", "--set", "epochs=2", "--set", "max_minutes=0", "--set", "batch_size=16",
        "--set", "progress=false"]


@pytest.fixture(scope="module")
def trained(synth_small, tmp_path_factory):
    """A demo model trained for two short epochs on the small synthetic set, via the CLI."""
    from medcap.cli import main

    out = tmp_path_factory.mktemp("run") / "demo"
    assert main(["train", "concepts", "--config", "demo", "--data", str(synth_small), "--out", str(out), *FAST]) == 0
    return out



def test_training_writes_a_reloadable_model_folder_metrics_and_checkpoints(trained):
    model = trained / "model"
    assert {p.name for p in model.iterdir()} == {"config.json", "model.safetensors", "concepts.json",
                                                 "thresholds.json", "preprocessor_config.json",
                                                 "provenance.json", "README.md", "checksums.json"}
    th = json.loads((model / "thresholds.json").read_text())
    assert 0 < th["global"] < 1 and th["grid"] == "fine" and "valid_f1" in th
    chosen = [e for e in th["sweep"] if e["never_empty"] == th["never_empty"]]  # the validation sweep
    assert th["global"] in [e["threshold"] for e in chosen]
    assert max(e["f1"] for e in chosen) == pytest.approx(th["valid_f1"], abs=1e-6)
    rows = list(csv.DictReader(open(trained / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"] and "f1" in rows[0]
    assert (trained / "checkpoints" / "epoch-001" / "trainer_state.json").is_file()
    assert json.loads((model / "preprocessor_config.json").read_text())["image_size"] == 64
    assert "backbone: resnet10t" in (trained / "config.yaml").read_text()


def test_predict_writes_a_valid_submission_for_every_test_image_and_probabilities(cli, trained, synth_small,
                                                                                   tmp_path):
    sub, probs = tmp_path / "submission.csv", tmp_path / "probs.json"
    rc, out, err = cli("predict", "concepts", "--model", trained / "model", "--images", synth_small / "test",
                       "--out", sub, "--json", probs, "--batch-size", "5")
    assert rc == 0, err
    ids = split_ids(synth_small, "concepts")
    preds = read_concept_submission(sub, gold_ids=ids)  # raises on any official-rule violation
    assert set(preds) == set(ids)
    data = json.loads(probs.read_text())
    first = data["images"][ids[0]]
    assert [p["cui"] for p in first["predicted"]] == preds[ids[0]]
    assert len(first["top"]) == 10 and data["thresholds"]["global"] > 0
    assert "probabilities" not in first and "vocabulary" not in data
    rc, _, err = cli("predict", "concepts", "--model", trained / "model", "--images", synth_small / "test",
                     "--out", sub, "--json", probs, "--all-probabilities")
    assert rc == 0, err
    data = json.loads(probs.read_text())
    assert set(data["images"][ids[0]]["probabilities"]) == set(data["vocabulary"])


def test_predict_reads_dicom_files_and_explicit_file_lists(cli, trained, tmp_path, synth_small):
    pydicom_data = pytest.importorskip("pydicom.data")
    dcm = pydicom_data.get_testdata_file("CT_small.dcm")
    img = shutil.copy(dcm, tmp_path / "scan_1.dcm")
    jpg = sorted((synth_small / "test").iterdir())[0]
    sub = tmp_path / "s.csv"
    rc, _, err = cli("predict", "concepts", "--model", trained / "model", "--images", img, "--images", jpg,
                     "--out", sub)
    assert rc == 0, err
    assert set(read_concept_submission(sub)) == {"scan_1", jpg.stem}


def test_an_unreadable_image_is_a_one_line_error_and_nothing_is_written(cli, trained, tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"not a jpeg at all")
    sub = tmp_path / "s.csv"
    rc, out, err = cli("predict", "concepts", "--model", trained / "model", "--images", tmp_path / "imgs",
                       "--out", sub)
    assert rc == 2 and "broken.jpg" in err and len(err.strip().splitlines()) == 1
    assert not sub.exists()


def test_a_model_folder_missing_a_file_is_a_one_line_error(cli, trained, tmp_path, synth_small):
    broken = tmp_path / "model"
    shutil.copytree(trained / "model", broken)
    (broken / "thresholds.json").unlink()
    rc, _, err = cli("predict", "concepts", "--model", broken, "--images", synth_small / "test",
                     "--out", tmp_path / "s.csv")
    assert rc == 2 and "thresholds.json" in err and len(err.strip().splitlines()) == 1


def test_training_twice_into_one_folder_needs_resume_and_resume_continues(cli, synth_small, tmp_path):
    out = tmp_path / "run"
    args = ["train", "concepts", "--config", "demo", "--data", synth_small, "--out", out, *FAST]
    assert cli(*args[:-2], "--set", "epochs=1", "--set", "progress=false")[0] == 0
    rc, _, err = cli(*args[:-2], "--set", "epochs=1", "--set", "progress=false")
    assert rc == 2 and "--resume" in err
    rc, out_text, err = cli(*args[:-2], "--set", "epochs=1", "--set", "progress=false", "--resume")
    assert rc == 0 and "1 epochs" in out_text  # nothing left to do: epoch 1 of 1 was done


def test_unknown_config_keys_are_refused_with_the_key(cli, synth_small, tmp_path):
    rc, _, err = cli("train", "concepts", "--config", "demo", "--data", synth_small, "--out", tmp_path / "r",
                     "--set", "learning_rate=0.1")
    assert rc == 2 and "learning_rate" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def _without_valid(synth_small, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synth_small, root, ignore=shutil.ignore_patterns("valid*"))
    return root


def test_a_data_folder_without_validation_split_needs_valid_fraction(cli, synth_small, tmp_path):
    root = _without_valid(synth_small, tmp_path)
    rc, _, err = cli("train", "concepts", "--config", "demo", "--data", root, "--out", tmp_path / "r", *FAST)
    assert rc == 2 and "valid_fraction" in err
    rc, _, err = cli("train", "concepts", "--config", "demo", "--data", root, "--out", tmp_path / "r2", *FAST[:-4],
                     "--set", "epochs=1", "--set", "progress=false", "--valid-fraction", "0.25")
    assert rc == 0, err
    assert "holding out 12 training images" in err


def test_unknown_validation_cuis_are_reported_not_dropped(synth_small, tmp_path):
    from medcap.training.concepts import load_concept_config, load_concept_data

    root = tmp_path / "data"
    shutil.copytree(synth_small, root)
    path = root / "valid_concepts.csv"
    lines = path.read_text().splitlines()
    lines[1] += ";C9999999"
    path.write_text("\n".join(lines) + "\n")
    logged = []
    data = load_concept_data(root, load_concept_config("demo"), log=logged.append)
    assert "C9999999" in data.valid_unknown
    assert data.valid_gold_sizes[0] >= data.valid_targets[0].sum() + 1  # still counted in |G|
    assert any("C9999999" in m for m in logged)


def test_the_paper_config_trains_a_step_and_predicts_with_random_weights(tmp_path):
    from medcap.inference.concepts import predict_concepts
    from medcap.synth import SynthConfig, generate_dataset
    from medcap.training.concepts import train_concepts

    root = tmp_path / "data"
    generate_dataset(root, SynthConfig(n_train=4, n_valid=2, n_test=2, size=32, seed=1))
    result = train_concepts("paper", root, tmp_path / "run", log=lambda m: None,
                            overrides={"pretrained": False, "image_size": 32, "batch_size": 2, "epochs": 1,
                                       "eval_batch_size": 2, "progress": False})
    assert result.epochs_run == 1 and result.history[0]["train_loss"] > 0
    preds = predict_concepts(result.best_dir, [root / "test"])
    assert len(preds) == 2
    assert all(0 <= p <= 1 for row in preds.values() for _, p in row)


def test_the_paper_config_without_weights_says_how_to_get_them(cli, synth_small, tmp_path):
    rc, _, err = cli("train", "concepts", "--config", "paper", "--data", synth_small, "--out", tmp_path / "r")
    assert rc == 2 and "pretrained_path" in err and "random-init" in err


def test_predict_api_returns_cuis_with_probabilities_most_probable_first(trained, synth_small):
    from medcap.inference.concepts import predict_concepts

    preds = predict_concepts(trained / "model", [synth_small / "test"])
    for row in preds.values():
        probs = [p for _, p in row]
        assert probs == sorted(probs, reverse=True)


def test_load_detector_refuses_a_missing_folder(tmp_path):
    from medcap.inference.concepts import load_detector

    with pytest.raises(MedcapError, match="model folder not found"):
        load_detector(tmp_path / "nope")
    assert np.isfinite(0.0)


def test_a_run_folder_stands_for_its_model_everywhere_as_the_readme_shows(cli, trained, synth_small, tmp_path):
    """`--model runs/concepts` (the --out of training) works for predict, explain, baseline knn,
    the web app's pipeline and from_pretrained (medcap.models.location)."""
    from medcap.inference.pipeline import Pipeline
    from medcap.models.concept_detector import ConceptDetector

    image = sorted((synth_small / "test").iterdir())[0]
    rc, _, err = cli("predict", "concepts", "--model", trained, "--images", image, "--out", tmp_path / "sub.csv")
    assert rc == 0, err
    rc, _, err = cli("explain", "--model", trained, "--image", image, "--out", tmp_path / "explain")
    assert rc == 0 and (tmp_path / "explain" / "explain.json").is_file(), err
    rc, _, err = cli("baseline", "concepts", "knn", "--data", synth_small, "--out", tmp_path / "knn.csv",
                     "--model", trained)
    assert rc == 0, err
    assert Pipeline(trained, None).concepts_dir == trained / "model"
    assert ConceptDetector.from_pretrained(trained).vocabulary.cuis == \
        ConceptDetector.from_pretrained(trained / "model").vocabulary.cuis


def test_a_concept_model_given_to_a_caption_command_says_which_command_reads_it(cli, trained, synth_small, tmp_path):
    rc, _, err = cli("predict", "captions", "--model", trained, "--images", synth_small / "test",
                     "--out", tmp_path / "c.csv")
    assert rc == 2 and "is a concept detector; use `medcap predict concepts`" in err
    assert not (tmp_path / "c.csv").exists()
