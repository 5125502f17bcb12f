"""`medcap explain`: heatmap overlays of where each concept was found."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from medcap.data.vocab import ConceptVocabulary
from medcap.inference.explain import concept_heatmaps, content_region, explain_image
from medcap.models.concept_detector import ConceptDetector, DetectorConfig

CUIS = ["C0000726", "C0817096", "C0040405"]


def _model_dir(tmp_path, head="medcsra", resize="squash"):
    torch.manual_seed(0)
    m = ConceptDetector(DetectorConfig(num_classes=3, backbone="resnet18", head=head, csra_heads=2))
    m.vocabulary = ConceptVocabulary(CUIS, names={"C0817096": "Chest"})
    m.thresholds = {"global": 0.0, "never_empty": False, "per_concept": {}}  # everything passes
    m.preprocessing = {"image_size": 64, "resize": resize, "mean": None, "std": None}
    return m.save_pretrained(tmp_path / f"model-{head}")


def _image(tmp_path, size=(80, 60)):
    a = np.zeros((size[1], size[0], 3), np.uint8)
    a[10:30, 10:40] = 255
    path = tmp_path / "img.png"
    Image.fromarray(a).save(path)
    return path


@pytest.mark.parametrize("head", ["medcsra", "csra"])
def test_explain_writes_one_overlay_per_predicted_concept_and_a_summary(tmp_path, head):
    out = tmp_path / "explain"
    report = explain_image(_model_dir(tmp_path, head), _image(tmp_path), out)
    assert [c["cui"] for c in report["concepts"]] and len(report["concepts"]) == 3
    files = sorted(p.name for p in out.iterdir())
    assert "explain.json" in files and len(files) == 4
    with Image.open(out / report["concepts"][0]["file"]) as im:
        assert im.format == "PNG" and im.size[0] > 100
    assert json.loads((out / "explain.json").read_text())["head"] == head
    assert any(c["name"] == "Chest" for c in report["concepts"])


def test_heatmaps_cover_the_input_and_follow_the_score_map(tmp_path):
    model = ConceptDetector.from_pretrained(_model_dir(tmp_path))
    probs, maps = concept_heatmaps(model, Image.open(_image(tmp_path)).convert("RGB"))
    assert probs.shape == (3,) and maps.shape == (3, 64, 64)
    assert ((probs > 0) & (probs < 1)).all()


def test_letterboxed_inputs_crop_the_map_to_the_image():
    maps = np.zeros((1, 64, 64))
    assert content_region(maps, (128, 64), {"resize": "pad"}).shape == (1, 32, 64)
    assert content_region(maps, (128, 64), {"resize": "squash"}).shape == (1, 64, 64)


def test_explain_cli_top_n(cli, tmp_path):
    rc, out, err = cli("explain", "--model", _model_dir(tmp_path), "--image", _image(tmp_path),
                       "--out", tmp_path / "ex", "--top", "2")
    assert rc == 0, err
    assert len(out.strip().splitlines()) == 2 and (tmp_path / "ex" / "explain.json").is_file()
