"""`medcap train|predict captions` and `medcap baseline captions ...` end to end on synthetic data.

A tiny BLIP (hidden 32, 2 layers, 32 px) from scratch: an epoch over 48 images takes a
second or two, so these tests check the plumbing (engine, files, submission rules, errors),
not caption quality (bench/caption_synthetic.py measures that).
"""
from __future__ import annotations

import csv
import json
import shutil

import pytest
import yaml

from conftest import TINY_CAPTION_CONFIG, split_ids, train_caption_run
from medcap.submission import read_caption_submission, validate_caption_submission

TINY = TINY_CAPTION_CONFIG


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _error_line(err: str) -> str:
    """The last line written to stderr (progress bars use carriage returns before it)."""
    return err.replace("\r", "\n").strip().splitlines()[-1]


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="module")
def trained(synth_small, tmp_path_factory):
    """One tiny training run shared by the tests that only read its outputs."""
    return train_caption_run(TINY, synth_small, tmp_path_factory)



def test_training_writes_a_reloadable_model_folder_metrics_and_checkpoint(trained, synth_small):
    model = trained / "model"
    assert {"config.json", "model.safetensors", "tokenizer.json", "medcap_captioner.json"} <= \
        {p.name for p in model.iterdir()}
    meta = json.loads((model / "medcap_captioner.json").read_text())
    assert meta["image_size"] == 32 and meta["training"]["train_images"] == 48
    from medcap.data import read_captions_csv
    from medcap.models.captioner import Captioner
    from medcap.training.captions import load_caption_config

    # the truncated captions are counted with the model's own tokenizer (max_length from `demo`)
    limit = load_caption_config("demo").max_length
    lengths = Captioner.from_pretrained(model).caption_lengths(
        list(read_captions_csv(synth_small / "train_captions.csv").values()))
    assert meta["training"]["max_length"] == limit and meta["training"]["concept_loss"] == 0
    assert meta["training"]["captions_truncated"] == sum(n > limit for n in lengths) > 0
    with open(trained / "metrics.csv") as f:
        row = next(csv.DictReader(f))
    assert {"train_loss", "valid_loss", "rouge1"} <= set(row)
    assert (trained / "checkpoints" / "epoch-000").is_dir()
    saved = yaml.safe_load((trained / "config.yaml").read_text())   # config.yaml, as concept runs
    assert saved["image_size"] == 32 and saved["epochs"] >= 1 and not (trained / "config.json").exists()
    from test_provenance import check_provenance_and_card

    check_provenance_and_card(model, synth_small, "rouge1")   # provenance.json + README.md model card


def test_predict_writes_an_official_submission_with_every_test_id_once(trained, synth_small, cli, tmp_path):
    sub = tmp_path / "sub.csv"
    rc, out, err = cli("predict", "captions", "--model", trained / "model", "--images", synth_small / "test",
                       "--out", sub, "--beams", "2", "--batch-size", "5")
    assert rc == 0, err
    ids = split_ids(synth_small)
    assert validate_caption_submission(sub, gold_ids=ids) == []
    assert sorted(read_caption_submission(sub)) == sorted(ids)
    lines = sub.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "ID,Caption" and all(line.split(",", 1)[1].startswith('"') for line in lines[1:])
    assert f"{len(ids)} captions" in out


def test_predict_reads_png_and_dicom_files(trained, synth_small, cli, tmp_path):
    from PIL import Image

    pydicom_data = pytest.importorskip("pydicom.data")
    src = next((synth_small / "test").iterdir())
    Image.open(src).save(tmp_path / "scan_png.png")
    shutil.copy(pydicom_data.get_testdata_file("CT_small.dcm"), tmp_path / "scan_dcm.dcm")
    sub = tmp_path / "out" / "sub.csv"
    rc, _, err = cli("predict", "captions", "--model", trained / "model", "--images", tmp_path / "scan_png.png",
                     "--images", tmp_path / "scan_dcm.dcm", "--out", sub)
    assert rc == 0, err
    assert sorted(read_caption_submission(sub)) == ["scan_dcm", "scan_png"]


def test_an_unreadable_image_is_a_one_line_error_and_no_submission_is_written(trained, synth_small, cli, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(synth_small / "test", images)
    (images / "broken.jpg").write_bytes(b"not a jpeg at all")
    sub = tmp_path / "sub.csv"
    rc, _, err = cli("predict", "captions", "--model", trained / "model", "--images", images, "--out", sub)
    assert rc == 2
    assert _error_line(err).startswith("error: ") and "broken.jpg" in _error_line(err)
    assert not sub.exists() and list(tmp_path.iterdir()) == [images]


def test_a_model_folder_missing_files_is_a_one_line_error(trained, synth_small, cli, tmp_path):
    broken = tmp_path / "model"
    shutil.copytree(trained / "model", broken)
    (broken / "model.safetensors").unlink()
    rc, _, err = cli("predict", "captions", "--model", broken, "--images", synth_small / "test",
                     "--out", tmp_path / "sub.csv")
    assert rc == 2 and "missing model.safetensors" in err and err.count("\n") == 1
    assert not (tmp_path / "sub.csv").exists()


def test_paper_config_without_weights_fails_with_how_to_get_them(synth_small, cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    out = tmp_path / "run"
    rc, _, err = cli("train", "captions", "--config", "paper", "--data", synth_small, "--out", out)
    assert rc == 2 and err.count("\n") == 1
    assert "Salesforce/blip-image-captioning-large" in err and "hf download" in err
    assert not (out / "model").exists()


def test_resume_continues_an_interrupted_run_with_the_same_tokenizer(synth_small, tiny_config, cli, tmp_path):
    out = tmp_path / "run"
    # A time budget of ~0 stops the first epoch after one batch, as an interruption would.
    rc, _, err = cli("train", "captions", "--config", tiny_config, "--data", synth_small, "--out", out,
                     "--set", "epochs=2", "--set", "max_minutes=0.00001")
    assert rc == 0, err
    vocab = (out / "processor" / "tokenizer.json").read_text()
    rc, _, err = cli("train", "captions", "--config", tiny_config, "--data", synth_small, "--out", out,
                     "--set", "epochs=2")
    assert rc == 2 and "--resume" in err                      # an existing run is never overwritten
    rc, out_text, err = cli("train", "captions", "--config", tiny_config, "--data", synth_small, "--out", out,
                            "--set", "epochs=2", "--resume")
    assert rc == 0, err
    with open(out / "metrics.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2]
    assert (out / "model" / "tokenizer.json").read_text() == vocab
    assert "at epoch" in out_text


def test_concept_guided_training_saves_a_plain_blip_and_resumes(synth_small, tiny_config, cli, tmp_path):
    from safetensors import safe_open

    out = tmp_path / "run"
    rc, _, err = cli("train", "captions", "--config", tiny_config, "--data", synth_small, "--out", out,
                     "--set", "concept_loss=1.0", "--set", "dropout=0.1", "--set", "epochs=2",
                     "--set", "max_minutes=0.00001")
    assert rc == 0, err
    assert "concept probe:" in err and "CUIs, weight 1.0" in err
    rc, _, err = cli("train", "captions", "--config", tiny_config, "--data", synth_small, "--out", out,
                     "--set", "concept_loss=1.0", "--set", "dropout=0.1", "--set", "epochs=2", "--resume")
    assert rc == 0, err
    with safe_open(out / "model" / "model.safetensors", "pt") as f:  # the probe is training-only
        assert not [k for k in f.keys() if "probe" in k] and any(k.startswith("vision_model") for k in f.keys())
    meta = json.loads((out / "model" / "medcap_captioner.json").read_text())
    assert meta["training"]["concept_loss"] == 1.0
    rc, _, err = cli("predict", "captions", "--model", out / "model", "--images", synth_small / "test",
                     "--out", tmp_path / "sub.csv")
    assert rc == 0, err


def test_concept_guided_training_without_training_concepts_is_a_one_line_error(synth_small, tiny_config, cli,
                                                                                  tmp_path):
    data = _copy_dataset(synth_small, tmp_path / "data")
    (data / "train_concepts.csv").unlink()
    rc, _, err = cli("train", "captions", "--config", tiny_config, "--data", data, "--out", tmp_path / "run",
                     "--set", "concept_loss=1.0")
    assert rc == 2 and err.count("\n") == 1 and "train_concepts.csv" in err
    assert not (tmp_path / "run" / "model").exists()


def test_concept_prompted_training_and_prediction_from_a_concept_submission(synth_small, tiny_config, cli, tmp_path):
    out = tmp_path / "run"
    rc, _, err = cli("train", "captions", "--config", tiny_config, "--data", synth_small, "--out", out,
                     "--set", "concept_prompt=true", "--set", "concept_prompt_drop=0.2")
    assert rc == 0, err
    meta = json.loads((out / "model" / "medcap_captioner.json").read_text())
    names = dict(meta["concept_prompt"]["concepts"])
    with open(synth_small / "cui_mapping.csv", newline="", encoding="utf-8") as f:
        mapping = {row[0]: row[1] for row in csv.reader(f) if row and row[0] != "CUI"}
    assert names and all(names[c] == mapping[c] for c in names)      # prompts use the canonical names
    assert meta["training"]["concept_prompt"] is True
    model, test, sub = out / "model", synth_small / "test", tmp_path / "sub.csv"

    rc, _, err = cli("predict", "captions", "--model", model, "--images", test, "--out", sub)
    line = _error_line(err)
    assert rc == 2 and "trained with concept prompts" in line and str(model) in line and not sub.exists()
    partial = tmp_path / "partial.csv"
    lines = (synth_small / "test_concepts.csv").read_text().splitlines()
    partial.write_text("\n".join(lines[:-1]) + "\n")                 # the last image has no row
    rc, _, err = cli("predict", "captions", "--model", model, "--images", test, "--out", sub, "--concepts", partial)
    assert rc == 2 and "no concepts for 1 of" in _error_line(err) and "partial.csv" in err and not sub.exists()
    rc, _, err = cli("predict", "captions", "--model", model, "--images", test, "--out", sub,
                     "--concepts", synth_small / "test_concepts.csv")
    assert rc == 0, err
    assert not validate_caption_submission(sub, split_ids(synth_small))


def test_concept_prompt_beside_a_text_prompt_is_a_one_line_error(synth_small, tiny_config, cli, tmp_path):
    rc, _, err = cli("train", "captions", "--config", tiny_config, "--data", synth_small, "--out", tmp_path / "run",
                     "--set", "concept_prompt=true", "--set", "prompt=a picture of")
    assert rc == 2 and err.count("\n") == 1 and "concept_prompt" in err and not (tmp_path / "run").exists()


def _copy_dataset(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_long_captions_are_truncated_and_counted(synth_small, tiny_config, cli, tmp_path):
    data = _copy_dataset(synth_small, tmp_path / "data")
    path = data / "train_captions.csv"
    rows = list(csv.reader(path.open(newline="", encoding="utf-8")))
    rows[1][1] = " ".join(["nodule"] * 500)
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f, quoting=csv.QUOTE_NONNUMERIC).writerows(rows)
    rc, _, err = cli("train", "captions", "--config", tiny_config, "--data", data, "--out", tmp_path / "run",
                     "--set", "max_length=400", "--set", "eval_images=0")
    assert rc == 0, err
    assert "1 longer than 400 tokens (truncated), longest 502 tokens" in err
    meta = json.loads((tmp_path / "run" / "model" / "medcap_captioner.json").read_text())
    assert meta["training"]["captions_truncated"] == 1


@pytest.mark.parametrize("content, expected", [
    (b'ID,Caption\nSYNTH_2025_train_000001,"caf\xe9 au lait spots"\n', "UTF-8"),
    (b'ID,Caption\nSYNTH_2025_train_000001,""\n', "empty caption"),
])
def test_bad_caption_files_are_one_line_errors_naming_the_file(synth_small, tiny_config, cli, tmp_path, content,
                                                                expected):
    data = _copy_dataset(synth_small, tmp_path / "data")
    (data / "train_captions.csv").write_bytes(content)
    rc, _, err = cli("train", "captions", "--config", tiny_config, "--data", data, "--out", tmp_path / "run")
    assert rc == 2 and err.count("\n") == 1
    assert "train_captions.csv" in err and expected in err
    assert not (tmp_path / "run" / "model").exists()


def test_unknown_config_key_is_a_one_line_error(synth_small, cli, tmp_path):
    rc, _, err = cli("train", "captions", "--config", "demo", "--data", synth_small, "--out", tmp_path / "run",
                     "--set", "beams=3")
    assert rc == 2 and "unknown config key 'beams'" in err


def test_constant_baseline_gives_one_training_caption_to_every_image(synth_small, cli, tmp_path):
    sub = tmp_path / "const.csv"
    rc, out, err = cli("baseline", "captions", "constant", "--data", synth_small, "--out", sub)
    assert rc == 0, err
    captions = read_caption_submission(sub, gold_ids=split_ids(synth_small))
    train = read_caption_submission_like(synth_small / "train_captions.csv")
    assert len(set(captions.values())) == 1 and next(iter(captions.values())) in train.values()
    assert "test ROUGE-1" in out


def test_retrieval_baseline_gives_the_caption_of_the_nearest_training_image(trained, synth_small, cli, tmp_path):
    sub = tmp_path / "ret.csv"
    rc, _, err = cli("baseline", "captions", "retrieval", "--data", synth_small, "--out", sub,
                       "--model", trained / "model", "--split", "train")
    assert rc == 0, err
    captions = read_caption_submission(sub)
    train = read_caption_submission_like(synth_small / "train_captions.csv")
    # Retrieving for the training images themselves: each one's nearest neighbour is itself.
    assert sum(captions[i] == train[i] for i in train) >= 0.9 * len(train)


def read_caption_submission_like(path):
    from medcap.data import read_captions_csv

    return read_captions_csv(path)


def test_named_configs_follow_the_paper_and_the_authors_code():
    from medcap.training.captions import load_caption_config

    paper = load_caption_config("paper")
    assert (paper.model, paper.lr, paper.optimizer, paper.batch_size, paper.epochs) == \
        ("Salesforce/blip-image-captioning-large", 1e-5, "adamw", 4, 2)            # REFERENCE §1
    assert (paper.image_size, paper.max_length, paper.padding) == (224, 200, "max_length")
    assert (paper.num_beams, paper.no_repeat_ngram_size, paper.max_new_tokens) == (5, 2, 200)  # REFERENCE §2
    authors = load_caption_config("authors-code")
    assert (authors.pre_resize, authors.image_size, authors.lr) == (224, 384, 1e-5)
    demo = load_caption_config("demo", ["image_size=64"])
    assert demo.model == "scratch:small" and demo.image_size == 64 and demo.max_minutes > 0
    prompted = load_caption_config("demo-prompted")
    assert prompted.concept_prompt and prompted.name == "demo-prompted"
    assert {k: v for k, v in vars(prompted).items() if not k.startswith(("concept_prompt", "name"))} == \
        {k: v for k, v in vars(load_caption_config("demo")).items() if not k.startswith(("concept_prompt", "name"))}


def test_a_run_folder_stands_for_its_captioner_and_the_other_task_is_named(trained, cli, synth_small, tmp_path):
    from medcap.inference.pipeline import Pipeline
    from medcap.models.captioner import Captioner

    sub = tmp_path / "sub.csv"
    image = sorted((synth_small / "test").iterdir())[0]
    rc, _, err = cli("predict", "captions", "--model", trained, "--images", image, "--out", sub, "--beams", "1")
    assert rc == 0 and sub.is_file(), err
    assert Captioner.from_pretrained(trained).tokenizer.get_vocab() == \
        Captioner.from_pretrained(trained / "model").tokenizer.get_vocab()
    assert Pipeline(None, trained).captions_dir == trained / "model"
    rc, _, err = cli("predict", "concepts", "--model", trained, "--images", image, "--out", tmp_path / "c.csv")
    assert rc == 2 and "is a captioner; use `medcap predict captions`" in err
    rc, _, err = cli("predict", "captions", "--model", tmp_path / "runs" / "nope", "--images", image,
                     "--out", tmp_path / "x.csv")
    assert rc == 2 and "model folder not found" in err
    rc, _, err = cli("baseline", "captions", "retrieval", "--data", synth_small, "--out", tmp_path / "r.csv",
                     "--model", trained)
    assert rc == 0, err


def test_a_limited_id_list_is_the_same_seeded_sample_in_split_order():
    import random
    from types import SimpleNamespace

    from medcap.training.captions import _labelled_ids

    ids = [f"img_{i:05d}" for i in range(5000)]
    split = SimpleNamespace(captions=dict.fromkeys(ids, "c"), name="train", image_dir=None,
                            labelled_ids=lambda kind: list(ids))
    want = sorted(random.Random(7).sample(ids, 300), key=ids.index)   # the earlier O(limit x N) formula
    assert _labelled_ids(split, 300, 7) == want
