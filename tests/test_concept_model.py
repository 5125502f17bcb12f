"""ConceptDetector: heads (MedCSRA, CSRA, ablations), backbones, frozen stages, model folders, configs."""
from __future__ import annotations

import json
import math

import pytest
import torch

from medcap.config import available_configs
from medcap.data.vocab import ConceptVocabulary
from medcap.errors import MedcapError, MissingWeightsError
from medcap.models.backbones import create_backbone
from medcap.models.concept_detector import (
    CSRA_TEMPERATURES,
    ConceptDetector,
    CSRAHead,
    DetectorConfig,
    MedCSRAHead,
    MultiHeadCSRA,
)
from medcap.training.concepts import ConceptConfig, detector_config, load_concept_config

CUIS = ["C0000726", "C0006141", "C0817096", "C0040405", "C0024485"]


def _detector(head="medcsra", backbone="resnet18", **kw):
    torch.manual_seed(0)
    m = ConceptDetector(DetectorConfig(num_classes=len(CUIS), backbone=backbone, head=head, **kw))
    m.vocabulary = ConceptVocabulary(CUIS)
    m.thresholds = {"global": 0.4, "never_empty": True, "per_concept": {}}
    m.preprocessing = {"image_size": 64, "resize": "squash", "mean": None, "std": None}
    return m


@pytest.mark.parametrize("head", ["medcsra", "global", "attention", "csra"])
def test_every_head_gives_logits_score_maps_and_gradients(head):
    m = _detector(head, csra_heads=2)
    x = torch.randn(2, 3, 64, 64)
    f = m.forward_features(x)
    assert f.shape == (2, 512, 2, 2)
    logits = m.forward_head(f)
    assert logits.shape == (2, 5) and m.forward_head(f, pre_logits=True).shape == (2, 512)
    assert m.score_maps(x).shape == (2, 5, 2, 2)
    logits.sum().backward()
    assert all(p.grad is not None for p in m.head.parameters())


def test_medcsra_fuses_global_and_attention_logits_with_lambda():
    torch.manual_seed(0)
    head = MedCSRAHead(8, 3, lam=0.1)
    f = torch.randn(2, 8, 3, 3)
    g = head.global_branch.fc(f.mean(dim=(2, 3)))
    x = f.flatten(2)                                                      # [B, C, N]
    a = torch.sigmoid(torch.einsum("dc,bcn->bdn", head.attention_branch.att.weight, x)
                      + head.attention_branch.att.bias[None, :, None])
    z = torch.einsum("bcn,bcn->bc", a, x)
    att = head.attention_branch.fc(z)
    torch.testing.assert_close(head(f), 0.9 * g + 0.1 * att)


def test_ablation_heads_have_only_their_branch():
    assert MedCSRAHead(8, 3, branches="global").attention_branch is None
    assert MedCSRAHead(8, 3, branches="attention").global_branch is None
    f = torch.randn(1, 8, 2, 2)
    h = MedCSRAHead(8, 3, branches="attention")
    torch.testing.assert_close(h(f), h.attention_branch(f))


def test_medcsra_score_map_sums_to_the_logit_minus_bias():
    torch.manual_seed(0)
    head = MedCSRAHead(8, 3, lam=0.3)
    f = torch.randn(2, 8, 4, 4)
    bias = 0.7 * head.global_branch.fc.bias + 0.3 * head.attention_branch.fc.bias
    torch.testing.assert_close(head.score_map(f).sum(dim=(2, 3)) + bias, head(f))


def test_csra_head_follows_fang_et_al():
    torch.manual_seed(0)
    f = torch.randn(2, 8, 3, 3)
    for t in (1.0, 4.0, math.inf):
        h = CSRAHead(8, 5, temperature=t, lam=0.2)
        s = (h.conv(f) / h.conv.weight.flatten(1).norm(dim=1).view(1, -1, 1, 1)).flatten(2)
        att = s.max(dim=2).values if math.isinf(t) else (s * torch.softmax(t * s, dim=2)).sum(dim=2)
        torch.testing.assert_close(h(f), s.mean(dim=2) + 0.2 * att)
    assert h.conv.bias is None
    multi = MultiHeadCSRA(8, 5, num_heads=4)
    assert [h.temperature for h in multi.heads] == [1.0, 2.0, 4.0, math.inf]
    torch.testing.assert_close(multi(f), sum(h(f) for h in multi.heads))
    assert sorted(CSRA_TEMPERATURES) == [1, 2, 4, 6, 8]
    with pytest.raises(MedcapError, match="csra_heads"):
        MultiHeadCSRA(8, 5, num_heads=3)


def test_frozen_stages_get_no_gradient_run_without_autograd_and_keep_bn_statistics():
    m = _detector(train_from="layer4")
    frozen = m.backbone.frozen
    assert len(frozen) > 0 and not any(p.requires_grad for p in frozen.parameters())
    assert all(p.requires_grad for p in m.backbone.trained.parameters())
    seen = {}
    frozen.register_forward_hook(lambda mod, i, out: seen.update(grad=out.requires_grad))
    bn = frozen.bn1
    before = bn.running_mean.clone()
    m.train()
    assert not frozen.training and not bn.training and m.backbone.trained.training
    m(torch.randn(2, 3, 64, 64)).sum().backward()
    assert seen["grad"] is False  # no graph was built through the frozen stages
    assert torch.equal(bn.running_mean, before)
    assert all(p.grad is None for p in frozen.parameters())


def test_feature_stage_layer3_versus_layer4_channels():
    assert create_backbone("resnet101").num_features == 2048
    assert create_backbone("resnet101", feature_stage="layer3").num_features == 1024
    assert create_backbone("resnet18", feature_stage="layer3").num_features == 256


def test_torchvision_backbones_cut_and_freeze_like_timm_ones():
    b = create_backbone("tv/resnet18", train_from="layer4")
    assert b.num_features == 512 and b(torch.randn(1, 3, 64, 64)).shape == (1, 512, 2, 2)
    assert not any(p.requires_grad for p in b.frozen.parameters())


def test_bad_backbone_settings_are_one_line_errors():
    with pytest.raises(MedcapError, match="unknown backbone"):
        create_backbone("resnet9000")
    with pytest.raises(MedcapError, match="layer4"):  # the message lists the stages there are
        create_backbone("resnet18", train_from="block7")
    with pytest.raises(MedcapError, match="feature_stage"):
        create_backbone("resnet18", feature_stage="layer9")
    with pytest.raises(MedcapError, match="head"):
        DetectorConfig(num_classes=2, head="transformer")


def test_pretrained_weights_missing_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(MissingWeightsError, match="timm/resnet18.*pretrained_path"):
        create_backbone("resnet18", pretrained=True)
    with pytest.raises(MissingWeightsError, match=r"checkpoints.*resnet18-.*\.pth"):
        create_backbone("tv/resnet18", pretrained=True)


def test_pretrained_weights_load_from_a_given_file(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    src = timm.create_model("resnet18")
    path = tmp_path / "w.safetensors"
    save_file(src.state_dict(), str(path))
    b = create_backbone("resnet18", pretrained_path=str(path))
    torch.testing.assert_close(b.trained.features.model.conv1.weight, src.conv1.weight)
    with pytest.raises(MedcapError, match="not found"):
        create_backbone("resnet18", pretrained_path=str(tmp_path / "nope.pth"))


def test_save_and_load_round_trip_gives_the_same_outputs(tmp_path):
    m = _detector("csra", csra_heads=2).eval()
    m.save_pretrained(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [
        "README.md", "checksums.json", "concepts.json", "config.json", "model.safetensors",
        "preprocessor_config.json", "provenance.json", "thresholds.json"]
    back = ConceptDetector.from_pretrained(tmp_path / "model")
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(back(x), m(x))
    assert back.vocabulary.cuis == CUIS and back.thresholds["global"] == 0.4
    assert back.preprocessing["image_size"] == 64 and back.config.csra_heads == 2


@pytest.mark.parametrize("missing", ["config.json", "model.safetensors", "concepts.json", "thresholds.json",
                                     "preprocessor_config.json"])
def test_a_model_folder_missing_a_file_names_it(tmp_path, missing):
    _detector().save_pretrained(tmp_path / "model")
    (tmp_path / "model" / missing).unlink()
    with pytest.raises(MedcapError, match=f"missing {missing}"):
        ConceptDetector.from_pretrained(tmp_path / "model")


def test_concept_processor_round_trips_and_matches_the_training_preprocessing(tmp_path):
    import numpy as np
    from PIL import Image

    from medcap.data.transforms import normalize_batch, resize_image
    from medcap.models.processing import ConceptProcessor

    proc = ConceptProcessor.from_settings(48, "pad", "imagenet")
    proc.save_pretrained(tmp_path)
    back = ConceptProcessor.from_pretrained(tmp_path)
    assert back == proc and back.to_dict() == proc.to_dict()
    image = Image.fromarray((np.arange(30 * 50 * 3) % 256).astype(np.uint8).reshape(30, 50, 3))
    expected = normalize_batch(resize_image(image, proc.to_dict())[None], proc.to_dict())
    torch.testing.assert_close(back([image]), expected)
    assert back([image]).shape == (1, 3, 48, 48)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_size": 48, "resise": "pad"}))
    with pytest.raises(MedcapError, match="unknown preprocessing key 'resise'; did you mean 'resize'"):
        ConceptProcessor.from_pretrained(tmp_path)


def test_a_folder_written_before_the_processor_still_loads(tmp_path):
    m = _detector().eval()
    m.save_pretrained(tmp_path / "model")
    (tmp_path / "model" / "preprocessor_config.json").unlink()
    (tmp_path / "model" / "preprocessing.json").write_text(json.dumps(m.preprocessing))  # the old file
    back = ConceptDetector.from_pretrained(tmp_path / "model")
    assert back.preprocessing == m.preprocessing and back.processor == m.processor


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path):
    _detector().save_pretrained(tmp_path / "model")
    cfg = json.loads((tmp_path / "model" / "config.json").read_text())
    cfg["head"] = "csra"
    (tmp_path / "model" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(MedcapError, match="weights do not fit"):
        ConceptDetector.from_pretrained(tmp_path / "model")


def test_paper_config_follows_the_paper():
    cfg = load_concept_config("paper")
    m = cfg.model   # the network's config, nested (its keys are flat in the YAML file)
    assert (m.backbone, m.train_from, m.feature_stage, m.head, m.lam) == ("resnet101", "layer4", "last", "medcsra", 0.1)
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.schedule, cfg.epochs) == ("adam", 1e-4, 1e-5, "cosine", 100)
    assert (cfg.batch_size, cfg.seed, cfg.patience, cfg.image_size, cfg.normalize) == (16, 42, 5, 224, "imagenet")
    assert cfg.pretrained and cfg.loss == "bce" and cfg.threshold_grid == "paper"
    authors = load_concept_config("authors-code")
    assert (authors.model.train_from, authors.normalize, authors.grad_clip, authors.crop_scale_min, authors.hflip,
            authors.rotation, authors.color_jitter) == ("", "none", 1.0, 0.8, True, 15, 0.2)
    assert load_concept_config("demo").hflip is False  # sides are labels in the synthetic data


def test_config_names_and_unknown_keys(tmp_path):
    assert load_concept_config("csra").name == "csra"
    bad = tmp_path / "mine.yaml"
    bad.write_text("base: paper\nlearning_rate: 0.1\n")
    with pytest.raises(MedcapError, match="learning_rate"):
        load_concept_config(bad)
    with pytest.raises(MedcapError, match="normalize"):
        load_concept_config("paper", {"normalize": "zscore"})


@pytest.mark.parametrize("name", available_configs("concepts"))
def test_every_named_config_builds_and_trains_a_step(name):
    cfg = load_concept_config(name, {"pretrained": False})
    assert isinstance(cfg, ConceptConfig)
    m = ConceptDetector(detector_config(cfg, num_classes=4))
    m.train()
    logits = m(torch.rand(2, 3, 32, 32))
    assert logits.shape == (2, 4)
    logits.sum().backward()
    trained = [p for p in m.parameters() if p.requires_grad]
    assert trained and all(p.grad is not None for p in trained)


def test_reset_classifier_changes_the_number_of_outputs_like_timm():
    m = _detector("csra")
    m.reset_classifier(7)
    assert m(torch.randn(2, 3, 64, 64)).shape == (2, 7) and m.config.num_classes == 7


def test_an_unknown_key_in_the_folder_config_suggests_the_known_one(tmp_path):
    _detector().save_pretrained(tmp_path / "model")
    cfg = json.loads((tmp_path / "model" / "config.json").read_text())
    cfg["backbon"] = cfg.pop("backbone")
    (tmp_path / "model" / "config.json").write_text(json.dumps(cfg))
    expected = "config.json: unknown detector config key 'backbon'; did you mean 'backbone'"
    with pytest.raises(MedcapError, match=expected):
        ConceptDetector.from_pretrained(tmp_path / "model")


def test_the_concept_config_nests_the_detector_config_and_takes_its_keys_flat_or_dotted(tmp_path):
    """ConceptConfig holds a DetectorConfig (one place for the network's options) and reads its
    keys as the shipped YAML files write them (flat), nested (model:) and from --set (flat or
    model.KEY); a run's saved config.yaml loads back; a misspelt key still gets its did-you-mean."""
    import dataclasses

    import yaml

    from medcap.config import config_keys
    from medcap.models.concept_detector import DetectorConfig

    cfg = load_concept_config("demo", ["backbone=resnet18", "model.head=csra", "lam=0.3", "lr=0.01"])
    assert isinstance(cfg.model, DetectorConfig)
    assert (cfg.model.backbone, cfg.model.head, cfg.model.lam, cfg.lr) == ("resnet18", "csra", 0.3, 0.01)
    assert cfg.model.global_pool == load_concept_config("demo").model.global_pool   # the file's other keys kept
    nested = tmp_path / "nested.yaml"
    nested.write_text("base: paper\nmodel:\n  backbone: densenet121\n  head: global\n")
    c = load_concept_config(nested)
    assert (c.model.backbone, c.model.head, c.model.train_from, c.lr) == ("densenet121", "global", "layer4", 1e-4)
    saved = tmp_path / "config.yaml"
    saved.write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    assert load_concept_config(saved).model == cfg.model
    keys = dict(config_keys(ConceptConfig))
    assert keys["backbone"] == "resnet101" and keys["head"] == "medcsra" and "model" not in keys
    with pytest.raises(MedcapError, match="did you mean 'backbone'"):
        load_concept_config("demo", ["backbon=resnet18"])
    with pytest.raises(MedcapError, match="head: expected one of"):
        load_concept_config("demo", ["head=transformer"])
