"""One API shape for both tasks (issue 24): train functions take (config name or object, data, out,
overrides); predict functions take paths, folders, PIL images or numpy arrays; short reprs; a clean
dir(medcap)."""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from PIL import Image

import medcap
from medcap.data.items import ImageFolderItems
from medcap.errors import MedcapError
from medcap.training.captions import CaptionConfig, load_caption_config, train_captioner, train_captions
from medcap.training.concepts import train_concepts


def test_both_train_functions_take_config_data_out_overrides():
    for fn in (train_concepts, train_captioner):
        assert list(inspect.signature(fn).parameters)[:4] in (["config", "data_dir", "out_dir", "overrides"],
                                                              ["config", "data", "out", "overrides"])
    assert medcap.train_captions is train_captions is train_captioner


@pytest.mark.parametrize("train", [train_concepts, train_captioner])
def test_a_config_name_and_overrides_are_resolved_before_anything_runs(train, synth_small, tmp_path):
    # a name (the AttributeError of issue 24), then the overrides: an unknown key is named
    with pytest.raises(MedcapError, match="unknown config key 'epochz'; did you mean 'epochs'"):
        train("demo", synth_small, tmp_path / "run", {"epochz": 1})
    # resolved: the run-folder check comes next, and creates nothing
    with pytest.raises(MedcapError, match="nothing to resume"):
        train("demo", synth_small, tmp_path / "run", ["epochs=1"], resume=True)
    assert not (tmp_path / "run").exists()


def test_overrides_apply_to_a_config_object_too():
    from medcap.config import resolve_config

    cfg = load_caption_config("demo")
    out = resolve_config(CaptionConfig, cfg, "captions", {"epochs": 1, "lr": "1e-3"})
    assert (out.epochs, out.lr, out.model) == (1, 1e-3, cfg.model) and cfg.epochs != 1
    assert resolve_config(CaptionConfig, cfg, "captions", None) is cfg
    with pytest.raises(MedcapError, match="lrr"):
        resolve_config(CaptionConfig, cfg, "captions", ["lrr=1"])


def _images():
    rgb = np.zeros((40, 30, 3), np.uint8)
    rgb[5:20, 5:15] = 200
    return Image.fromarray(rgb), rgb, np.linspace(0, 1, 900, dtype=np.float32).reshape(30, 30)


def test_predict_inputs_may_be_pil_images_arrays_files_and_folders(tmp_path):
    pil, rgb, gray = _images()
    folder = tmp_path / "imgs"
    folder.mkdir()
    pil.save(folder / "a.png")
    items = ImageFolderItems.from_images([pil, rgb, gray, folder])
    assert items.ids == ["image-1", "image-2", "image-3", "a"]
    loaded = [items.load(i) for i in items.ids]
    assert all(im.mode == "RGB" for im in loaded)
    assert np.array_equal(np.asarray(loaded[1]), rgb) and np.asarray(loaded[2])[-1, -1, 0] == 255
    assert ImageFolderItems.from_images(pil).ids == ["image-1"]
    assert ImageFolderItems.from_images(np.moveaxis(rgb, -1, 0)).load("image-1").size == (30, 40)  # 3 x H x W
    assert ImageFolderItems.from_images(folder).ids == ["a"]
    with pytest.raises(MedcapError, match="expected an image array"):
        ImageFolderItems.from_images(np.zeros((2, 3, 4, 5))).load("image-1")
    pil.save(folder / "a.jpg")  # one stem twice in one folder, beside an in-memory image
    with pytest.raises(MedcapError, match=r"two images share the ID 'a': .*a\.jpg and .*a\.png"):
        ImageFolderItems.from_images([pil, folder])


def _detector():
    from medcap.data.vocab import ConceptVocabulary
    from medcap.models.concept_detector import ConceptDetector, DetectorConfig

    torch.manual_seed(0)
    m = ConceptDetector(DetectorConfig(num_classes=2, backbone="test_resnet"))
    m.vocabulary = ConceptVocabulary(["C0000726", "C0817096"])
    m.thresholds = {"global": 0.0, "never_empty": False, "per_concept": {}}  # everything passes
    m.preprocessing = {"image_size": 32, "resize": "squash", "mean": None, "std": None}
    return m


def test_predict_concepts_takes_pil_images_and_arrays():
    pil, rgb, _ = _images()
    preds = medcap.predict_concepts(_detector(), [pil, rgb], device="cpu")
    assert list(preds) == ["image-1", "image-2"]
    a, b = preds["image-1"], preds["image-2"]  # the same picture twice: the same concepts and scores
    assert [c for c, _ in a] == [c for c, _ in b] and [p for _, p in a] == pytest.approx([p for _, p in b])


def test_predict_captions_takes_pil_images_and_arrays_and_writes_no_bar_into_a_log(capsys):
    from medcap.models.captioner import Captioner

    pil, rgb, _ = _images()
    captioner = Captioner.from_scratch("tiny", ["a chest x-ray", "a ct of the head"], vocab_size=100, seed=0,
                                       image_size=32)
    captions = medcap.predict_captions(captioner, [pil, rgb], device="cpu", max_new_tokens=4, progress=True)
    assert list(captions) == ["image-1", "image-2"] and captions["image-1"] == captions["image-2"]
    assert "captioning" not in capsys.readouterr().err  # progress=True: a bar on a terminal only


def test_dataset_and_split_reprs_are_one_short_line(synth_small):
    ds = medcap.read_dataset(synth_small)
    for r in (repr(ds), repr(ds.split("train")), str(ds.split("test"))):
        assert "\n" not in r and len(r) < 300, r
    assert "train 48" in repr(ds) and "48 images" in repr(ds.split("train"))


def test_dir_of_medcap_is_the_public_api():
    names = dir(medcap)
    assert "Any" not in names and "importlib" not in names and "_EXPORTS" not in names
    assert set(names) == set(medcap.__all__) | {"__version__"}
    for name in medcap.__all__:
        assert getattr(medcap, name) is not None


def test_a_training_result_repr_leaves_out_the_history(tmp_path):
    from medcap.training.engine import TrainResult

    result = TrainResult(tmp_path, tmp_path / "model", 0.5, 3, 30, "time_budget",
                         history=[{"epoch": e, "train_loss": 0.1, "f1": 0.5} for e in range(100)])
    assert len(repr(result)) < 300 and "time_budget" in repr(result) and len(result.history) == 100
