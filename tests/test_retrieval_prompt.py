"""Retrieval-augmented captions (medcap.models.retrieval.RetrievalPrompt, ``retrieval_prompt: true``).

The decoder's prompt holds, after the optional concept names, the captions of the nearest
training images: in training never the image's own, at prediction retrieved by the captioner
folder's own embedder and index. Tiny BLIP (32 px) and a resnet18 embedder at 32 px on the
synthetic ``synth_small`` data; a training run is one epoch of 48 images.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import TINY_CAPTION_CONFIG, split_ids, train_caption_run
from medcap.errors import MedcapError
from medcap.models.retrieval import INDEX_FILE, RetrievalPrompt, nearest_neighbours
from medcap.submission import read_caption_submission, validate_caption_submission

TINY = TINY_CAPTION_CONFIG + """\
retrieval_prompt: true
retrieval_image_size: 32
retrieval_prompt_tokens: 12
"""


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny-retrieval.yaml"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="module")
def trained(synth_small, tmp_path_factory):
    """One retrieval-prompted run (plain resnet18 embedder) shared by the tests that read it."""
    return train_caption_run(TINY, synth_small, tmp_path_factory)



def _unit(x):
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_training_neighbours_exclude_the_image_itself_and_prediction_does_not():
    emb = _unit([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0.9, 0.2]])
    index = RetrievalPrompt(["a", "b", "c", "d"], emb, neighbours=2, max_tokens=8)
    assert index.retrieve(emb, exclude_self=True) == [["b", "c"], ["a", "c"], ["d", "b"], ["c", "b"]]
    assert [r[0] for r in index.retrieve(emb)] == ["a", "b", "c", "d"]       # a query outside training: itself
    idx, _ = nearest_neighbours(emb, emb, 10, exclude_self=True)               # k cut to N - 1
    assert idx.shape == (4, 3) and all(i not in row for i, row in enumerate(idx))
    with pytest.raises(MedcapError, match="one embedding per caption"):
        RetrievalPrompt(["a"], emb)
    with pytest.raises(MedcapError, match="neighbours"):
        RetrievalPrompt(["a", "b", "c", "d"], emb, neighbours=3, max_tokens=2)


def test_the_training_prompt_is_concepts_sep_nearest_other_caption_sep_and_never_a_target(synth_small):
    from medcap.data import read_dataset
    from medcap.training.captions import CaptionTask, load_caption_config

    cfg = load_caption_config("demo", ["model=scratch:tiny", "image_size=32", "vocab_size=300", "batch_size=8",
                                       "eval_images=0", "concept_loss=0", "dropout=0", "progress=false",
                                       "concept_prompt=true", "retrieval_prompt=true", "retrieval_image_size=32",
                                       "retrieval_prompt_tokens=6", "max_train_images=16"])
    task = CaptionTask(cfg, read_dataset(synth_small), log=lambda *_: None)
    index, tok = task.retrieval, task.captioner.tokenizer
    assert index is not None and task.captioner.processor.retrieval_prompt is index
    captions = index.captions
    sim = index.embeddings @ index.embeddings.T
    np.fill_diagonal(sim, -np.inf)                                             # never the image itself
    idx, best = nearest_neighbours(index.embeddings, index.embeddings, 1, exclude_self=True)
    assert task.retrieved["train"] == [[captions[j]] for j in idx[:, 0]]
    assert all(j != i for i, j in enumerate(idx[:, 0]))
    np.testing.assert_allclose(best[:, 0], sim.max(axis=1), atol=1e-5)         # the nearest other image
    assert all(r[0] != c or captions.count(c) > 1 for r, c in zip(task.retrieved["train"], captions, strict=True))

    dataset = task.train_loader.dataset
    batch = task.train_loader.collate_fn([dataset[i] for i in range(4)])
    sep = tok.sep_token_id
    for row, i in enumerate(range(4)):
        concept_ids = task.prompt.ids(tok, dataset.cuis[i])
        retrieved = tok(task.retrieved["train"][i][0], add_special_tokens=False)["input_ids"][:6] + [sep]
        prompt = concept_ids + retrieved                                       # [concepts][SEP][caption][SEP]
        assert batch["prompts"][row] == prompt
        start = 1 + len(prompt)
        assert batch["input_ids"][row, 1:start].tolist() == prompt
        assert (batch["labels"][row, :start] == -100).all()                    # the prompt is never a target
        own = tok(dataset.split.captions[dataset.ids[i]], truncation=True, max_length=cfg.max_length)["input_ids"]
        n = len(own) - 1
        assert batch["labels"][row, start:start + n].tolist() == own[1:]       # the caption is the target


def test_the_index_and_the_embedder_survive_save_and_reload(trained, synth_small, tmp_path):
    from medcap.data import read_dataset
    from medcap.data.items import ImageFolderItems
    from medcap.inference.concepts import image_embeddings
    from medcap.models.captioner import Captioner

    model = trained / "model"
    meta = json.loads((model / "medcap_captioner.json").read_text())
    assert meta["retrieval_prompt"]["embedder"]["kind"] == "backbone" and meta["training"]["retrieval_prompt"]
    index = Captioner.from_pretrained(trained).processor.retrieval_prompt
    train = read_dataset(synth_small).split("train")
    assert len(index.captions) == 48 and set(index.captions) <= set(train.captions.values())
    assert index.embeddings.shape[0] == 48 and (index.neighbours, index.max_tokens) == (1, 12)
    np.testing.assert_allclose(np.linalg.norm(index.embeddings, axis=1), 1.0, rtol=1e-5)
    # the rebuilt embedder gives the indexed embeddings back: each training image finds itself
    ids = train.labelled_ids("captions")
    _, emb = image_embeddings(index.load_embedder(), ImageFolderItems.from_split(train, ids))
    np.testing.assert_allclose(emb, index.embeddings, atol=1e-5)

    # PIL images (the web app, reranking): the captioner retrieves for them by itself
    captioner = Captioner.from_pretrained(trained)
    images = [train.load_image(i) for i in ids[:3]]
    retrieved = captioner.processor.retrieval_prompt.retrieve_images(images)
    assert len(retrieved) == 3 and all(len(r) == 1 and r[0] in index.captions for r in retrieved)
    assert captioner.generate(images) == captioner.generate(images, retrieved=retrieved)

    broken = tmp_path / "broken"
    shutil.copytree(model, broken)
    (broken / INDEX_FILE).unlink()
    with pytest.raises(MedcapError, match=INDEX_FILE):
        Captioner.from_pretrained(broken)


def test_predict_captions_retrieves_by_itself_from_images_and_from_a_split(trained, cli, synth_small, tmp_path):
    sub = tmp_path / "sub.csv"
    rc, _, err = cli("predict", "captions", "--model", trained, "--images", synth_small / "test", "--out", sub)
    assert rc == 0, err
    assert not validate_caption_submission(sub, split_ids(synth_small))
    sub2 = tmp_path / "split.csv"
    rc, _, err = cli("predict", "captions", "--model", trained, "--data", synth_small, "--split", "test",
                     "--out", sub2)
    assert rc == 0, err
    assert read_caption_submission(sub2) == read_caption_submission(sub)


def test_concept_and_retrieval_prompts_with_a_concept_detector_embedder(synth_small, tiny_config, cli, tmp_path):
    from medcap.data.vocab import ConceptVocabulary
    from medcap.models.concept_detector import ConceptDetector, DetectorConfig

    det = ConceptDetector(DetectorConfig(num_classes=2, backbone="resnet18"))
    det.vocabulary = ConceptVocabulary(["C0000001", "C0000002"])
    det.preprocessing = {"image_size": 32, "resize": "squash", "mean": None, "std": None}
    det.save_pretrained(tmp_path / "detector")
    out = tmp_path / "run"
    rc, _, err = cli("train", "captions", "--config", tiny_config, "--data", synth_small, "--out", out,
                     "--set", "concept_prompt=true", "--set", f"retrieval_model={tmp_path / 'detector'}")
    assert rc == 0, err
    model = out / "model"
    assert (model / "retrieval_embedder" / "config.json").is_file()            # the folder carries its embedder
    assert json.loads((model / "medcap_captioner.json").read_text())["retrieval_prompt"]["embedder"] == \
        {"kind": "detector"}
    sub = tmp_path / "sub.csv"
    rc, _, err = cli("predict", "captions", "--model", out, "--images", synth_small / "test", "--out", sub)
    assert rc == 2 and "concept prompts" in err and not sub.exists()
    rc, _, err = cli("predict", "captions", "--model", out, "--images", synth_small / "test", "--out", sub,
                     "--concepts", synth_small / "test_concepts.csv")
    assert rc == 0, err
    assert not validate_caption_submission(sub, split_ids(synth_small))


def test_the_named_config_and_bad_values(synth_small, tiny_config, cli, tmp_path):
    from medcap.training.captions import load_caption_config

    cfg = load_caption_config("demo-retrieval")
    prompted = load_caption_config("demo-prompted")
    assert cfg.name == "demo-retrieval" and cfg.retrieval_prompt and cfg.concept_prompt
    assert (cfg.retrieval_neighbours, cfg.retrieval_prompt_tokens) == (1, 32)
    assert {k: v for k, v in vars(cfg).items() if not k.startswith(("retrieval_", "name"))} == \
        {k: v for k, v in vars(prompted).items() if not k.startswith(("retrieval_", "name"))}
    for bad, key in (("retrieval_neighbours=0", "retrieval_neighbours"),
                     ("retrieval_prompt_tokens=0", "retrieval_prompt_tokens")):
        rc, _, err = cli("train", "captions", "--config", tiny_config, "--data", synth_small, "--out",
                         tmp_path / "run", "--set", bad)
        assert rc == 2 and key in err and not (tmp_path / "run").exists()
