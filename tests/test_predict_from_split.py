"""Predict, explain and caption the images of a dataset split (`--data DIR --split S`), in
both layouts: ImageCLEF folders and the Hugging Face parquet mirror."""
from __future__ import annotations

import csv
import json

import pytest

from conftest import TINY_CAPTION_CONFIG, torch_threads
from medcap.submission import read_caption_submission, read_concept_submission

FAST = ["--set", "image_size=32", "--set", "epochs=1", "--set", "max_minutes=0", "--set", "batch_size=16",
        "--set", "progress=false"]
TINY_CAPTIONER = TINY_CAPTION_CONFIG


@pytest.fixture(scope="module")
def parquet_data(synth_small, tmp_path_factory):
    pytest.importorskip("pyarrow")
    from medcap.synth.mirror import write_parquet_mirror

    out = tmp_path_factory.mktemp("mirror") / "roco"
    counts = write_parquet_mirror(synth_small, out, row_group_size=5, shard_rows=30)
    assert counts == {"train": 48, "valid": 16, "test": 16}
    assert sorted(p.name for p in (out / "data").iterdir()) == [
        "test-00000-of-00001.parquet", "train-00000-of-00002.parquet", "train-00001-of-00002.parquet",
        "validation-00000-of-00001.parquet"]
    return out


@pytest.fixture(scope="module")
def concept_model(synth_small, tmp_path_factory):
    from medcap.cli import main

    out = tmp_path_factory.mktemp("run") / "concepts"
    assert main(["train", "concepts", "--config", "demo", "--data", str(synth_small), "--out", str(out), *FAST]) == 0
    return out / "model"


def _ids(root, split="test"):
    with open(root / f"{split}_concepts.csv", newline="") as f:
        return [r["ID"] for r in csv.DictReader(f)]


@pytest.mark.parametrize("layout", ["folders", "parquet"])
@pytest.mark.parametrize("split", ["test", "valid"])
def test_predict_concepts_from_a_split_writes_a_valid_submission(cli, concept_model, synth_small, parquet_data,
                                                                  tmp_path, layout, split):
    data = synth_small if layout == "folders" else parquet_data
    sub = tmp_path / "sub.csv"
    rc, _, err = cli("predict", "concepts", "--model", concept_model, "--data", data, "--split", split,
                       "--out", sub)
    assert rc == 0, err
    ids = _ids(synth_small, split)
    preds = read_concept_submission(sub, gold_ids=ids)  # every official rule
    assert set(preds) == set(ids)


def test_a_split_gives_the_same_predictions_as_its_image_files(cli, concept_model, synth_small, parquet_data,
                                                               tmp_path):
    rc, _, err = cli("predict", "concepts", "--model", concept_model, "--images", synth_small / "test",
                     "--out", tmp_path / "files.csv", "--json", tmp_path / "files.json")
    assert rc == 0, err
    rc, _, err = cli("predict", "concepts", "--model", concept_model, "--data", parquet_data, "--split", "test",
                     "--out", tmp_path / "split.csv", "--json", tmp_path / "split.json")
    assert rc == 0, err
    a, b = (json.loads((tmp_path / f).read_text())["images"] for f in ("files.json", "split.json"))
    assert a.keys() == b.keys()
    for i in a:
        assert [t["probability"] for t in a[i]["top"]] == pytest.approx([t["probability"] for t in b[i]["top"]],
                                                                        abs=1e-6)


def test_images_and_data_are_exclusive_and_one_is_needed(cli, concept_model, synth_small, tmp_path):
    sub = tmp_path / "sub.csv"
    rc, _, err = cli("predict", "concepts", "--model", concept_model, "--images", synth_small / "test",
                     "--data", synth_small, "--out", sub)
    assert rc != 0 and "either --images or --data" in err and not sub.exists()
    rc, _, err = cli("predict", "concepts", "--model", concept_model, "--out", sub)
    assert rc != 0 and "--data DATASET --split test" in err and not sub.exists()
    rc, _, err = cli("predict", "concepts", "--model", concept_model, "--data", synth_small, "--split", "dev2",
                     "--out", sub)
    assert rc != 0 and "no 'dev2' split" in err and not sub.exists()


def test_explain_an_image_of_a_parquet_split_by_id(cli, concept_model, parquet_data, synth_small, tmp_path):
    image_id = _ids(synth_small)[3]
    out = tmp_path / "explain"
    rc, _, err = cli("explain", "--model", concept_model, "--data", parquet_data, "--split", "test",
                     "--id", image_id, "--out", out, "--top", "2")
    assert rc == 0, err
    report = json.loads((out / "explain.json").read_text())
    assert report["image"] == f"test/{image_id}" and len(report["concepts"]) == 2
    rc, _, err = cli("explain", "--model", concept_model, "--data", parquet_data, "--id", "nope", "--out", out)
    assert rc != 0 and "no image with ID 'nope'" in err


def test_predict_captions_from_a_parquet_split(cli, synth_small, parquet_data, tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_CAPTIONER)
    with torch_threads(1):
        rc, _, err = cli("train", "captions", "--config", cfg, "--data", parquet_data, "--out", tmp_path / "run")
        assert rc == 0, err
        sub = tmp_path / "captions.csv"
        rc, _, err = cli("predict", "captions", "--model", tmp_path / "run" / "model", "--data", parquet_data,
                         "--split", "test", "--out", sub)
    assert rc == 0, err
    assert set(read_caption_submission(sub)) == set(_ids(synth_small))
