"""medcap export: the detector's backbone as a timm folder, the detector as ONNX (parity with PyTorch)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medcap.errors import MedcapError
from medcap.export.timm_backbone import export_timm
from medcap.models.weights import check_folder
from test_concept_model import _detector  # a tiny resnet18 detector with vocabulary and processor


def _run_folder(tmp_path, name="run", image_size=64, **kw):
    """A run folder whose model/ is a detector with weights no fresh network has (timm's tiny
    test_resnet: a ResNet with every stage, 0.4 M parameters)."""
    model = _detector(backbone="test_resnet", **kw)
    model.preprocessing = {**model.preprocessing, "image_size": image_size}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    model.save_pretrained(tmp_path / name / "model")
    return tmp_path / name, model.eval()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run folder, its detector) for the tests that need not build their own."""
    return _run_folder(tmp_path_factory.mktemp("export"))


@pytest.mark.parametrize("train_from", ["", "layer4"])  # timm's forward_features whole, or stages (some frozen)
def test_timm_loads_the_exported_backbone_with_the_same_weights(tmp_path, train_from, trained):
    import timm

    run, detector = _run_folder(tmp_path, train_from=train_from) if train_from else trained
    out = export_timm(run, tmp_path / "timm")
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "test_resnet" and config["num_classes"] == 0
    assert config["pretrained_cfg"]["input_size"] == [3, 64, 64] and "hf_hub_id" not in config["pretrained_cfg"]
    loaded = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    assert set(json.loads((out / "checksums.json").read_text())["files"]) == {"model.safetensors"}
    check_folder(out)
    # the same tensors in the same order, under timm's names instead of the detector's containers
    ours = [(k, v) for k, v in detector.state_dict().items() if k.startswith("backbone.")]
    theirs = list(loaded.state_dict().items())
    assert len(theirs) == len(ours)
    for (key, value), (our_key, our_value) in zip(theirs, ours, strict=True):
        assert torch.equal(value, our_value), (key, our_key)
    if not train_from:  # timm's whole network under the detector's undocumented prefix
        assert ours[0][0] == "backbone.trained.features.model." + theirs[0][0]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.forward_features(x), detector.forward_features(x))
        assert torch.allclose(loaded(x), detector.forward_head(detector.forward_features(x), pre_logits=True))


def test_a_backbone_cut_at_feature_stage_has_no_timm_export(tmp_path):
    run, _ = _run_folder(tmp_path, feature_stage="layer3")
    with pytest.raises(MedcapError, match="cut at feature_stage='layer3'.*use --onnx"):
        export_timm(run, tmp_path / "timm")
    assert not (tmp_path / "timm").exists()


def test_onnx_export_matches_pytorch_under_onnxruntime_with_any_batch_size(tmp_path, cli, trained):
    onnxruntime = pytest.importorskip("onnxruntime")
    run, detector = trained
    rc, out, err = cli("export", "--onnx", run, tmp_path / "onnx")
    assert rc == 0, err
    assert "match PyTorch within" in out
    folder = tmp_path / "onnx"
    assert {p.name for p in folder.iterdir()} == {"model.onnx", "concepts.json", "thresholds.json",
                                                  "preprocessor_config.json", "checksums.json"}
    check_folder(folder)  # model.onnx's sha256 and size are recorded
    assert set(json.loads((folder / "checksums.json").read_text())["files"]) == {"model.onnx"}
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    (inp,), (outp,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, outp.name) == ("pixel_values", "probabilities") and isinstance(inp.shape[0], str)
    for batch in (1, 5):
        x = torch.rand(batch, 3, 64, 64, generator=torch.Generator().manual_seed(batch))
        (got,) = session.run(None, {"pixel_values": x.numpy()})
        with torch.no_grad():
            want = detector(x).sigmoid().numpy()
        assert got.shape == (batch, 5) and np.abs(got - want).max() <= 1e-4


def test_onnx_export_of_grid_pooling_on_a_map_the_grid_does_not_divide(tmp_path):
    pytest.importorskip("onnxruntime")
    from medcap.export.onnx_detector import export_onnx, onnx_parity

    run, detector = _run_folder(tmp_path, image_size=96, global_pool="grid")  # a 3 x 3 feature map, 2 x 2 grid
    folder, diff = export_onnx(run, tmp_path / "onnx")
    assert diff <= 1e-4 and onnx_parity(detector, folder / "model.onnx", batch=4, seed=1) <= 1e-4


def test_export_takes_one_format_and_refuses_the_run_folder_as_output(tmp_path, cli, trained):
    run, _ = trained
    rc, _, err = cli("export", run, tmp_path / "x")
    assert rc == 2 and "choose one format: --timm or --onnx" in err
    rc, _, err = cli("export", "--timm", "--onnx", run, tmp_path / "x")
    assert rc == 2 and "choose one format" in err
    rc, _, err = cli("export", "--timm", run, run / "timm")
    assert rc == 2 and "outside the model's run folder" in err and err.count("\n") == 1
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    rc, _, err = cli("export", "--timm", run, tmp_path / "notes")
    assert rc == 2 and "holds something else" in err and (tmp_path / "notes" / "todo.txt").is_file()
    other, _ = _run_folder(tmp_path, "other")   # another trained model: its config.json is no timm export's
    for target in (other, other / "model"):
        rc, _, err = cli("export", "--timm", run, target)
        assert rc == 2 and "holds a medcap model or training run" in err
        assert (other / "model" / "model.safetensors").is_file()
    rc, out, err = cli("export", "--timm", run, tmp_path / "timm")
    assert rc == 0 and "local-dir:" in out
    rc, _, _ = cli("export", "--timm", run, tmp_path / "timm")  # an earlier export is replaced
    assert rc == 0


def test_a_missing_onnx_package_is_a_one_line_error(tmp_path, cli, monkeypatch, trained):
    import importlib.util

    run, _ = trained
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    rc, _, err = cli("export", "--onnx", run, tmp_path / "onnx")
    assert rc == 2 and "pip install 'medcap[onnx]'" in err and err.count("\n") == 1
    assert not (tmp_path / "onnx").exists()
