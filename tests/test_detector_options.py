"""Detector options for findings and side labels: lateral flips (medcap.data.items.LateralMirror),
2 x 2 grid pooling in the global branch, and shifts (medcap.training.concepts)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medcap.data.items import ConceptImageDataset, ImageFolderItems, LateralMirror
from medcap.errors import MedcapError
from medcap.models.concept_detector import ConceptDetector, DetectorConfig, GridPool
from medcap.training.concepts import (
    ConceptConfig,
    lateral_mirror,
    load_concept_config,
    side_pairs,
    train_augmentation,
)

RIGHT, LEFT, CT = "C0205090", "C0205091", "C0040405"


def _image():
    x = torch.zeros(3, 4, 6, dtype=torch.uint8)
    x[:, :, 0] = 200                                 # a bright column on the image's left edge
    return x


def test_lateral_mirror_flips_the_image_and_swaps_the_side_labels():
    x, y = _image(), torch.tensor([1.0, 0.0, 1.0])   # columns: Right, Left, CT
    fx, fy = LateralMirror([(0, 1)], p=1.0)(x, y)
    assert torch.equal(fx, x.flip(-1)) and fx[0, 0, -1] == 200
    assert fy.tolist() == [0.0, 1.0, 1.0]            # Right -> Left; CT stays
    assert y.tolist() == [1.0, 0.0, 1.0]             # the stored target is not changed in place
    same_x, same_y = LateralMirror([(0, 1)], p=0.0)(x, y)
    assert same_x is x and same_y is y
    # a side the vocabulary lacks counts as an all-zero column: the present one is cleared
    _, gone = LateralMirror([(0, None)], p=1.0)(x, y)
    assert gone.tolist() == [0.0, 0.0, 1.0]
    _, other_side = LateralMirror([(None, 1)], p=1.0)(x, torch.tensor([0.0, 1.0, 1.0]))
    assert other_side.tolist() == [0.0, 0.0, 1.0]


def test_lateral_mirror_flips_about_half_the_items():
    torch.manual_seed(0)
    mirror = LateralMirror([(0, 1)])
    flipped = sum(mirror(_image(), torch.tensor([1.0, 0.0]))[1][1].item() for _ in range(400))
    assert 150 < flipped < 250


def test_lateral_flip_config_maps_side_pairs_to_the_vocabulary_columns():
    from medcap.data.vocab import ConceptVocabulary

    vocab = ConceptVocabulary([CT, LEFT, RIGHT])
    assert lateral_mirror(ConceptConfig(), vocab) is None
    mirror = lateral_mirror(ConceptConfig(lateral_flip=True), vocab)
    column = {c: i for i, c in enumerate(vocab.cuis)}
    assert mirror.pairs == [(column[RIGHT], column[LEFT])]
    assert side_pairs(" c0205090:C0205091 , C0000001:C0000002") == [(RIGHT, LEFT), ("C0000001", "C0000002")]
    for bad in ("C0205090", "C0205090:C0205090", "C1:C2:C3", "C0205090:"):
        with pytest.raises(MedcapError, match="lateral_pairs"):
            side_pairs(bad)
    with pytest.raises(MedcapError, match="lateral_pairs"):
        ConceptConfig(lateral_pairs="C0205090")
    with pytest.raises(MedcapError, match="choose one"):
        ConceptConfig(hflip=True, lateral_flip=True)
    assert load_concept_config("demo").lateral_flip                  # the demo's detector uses it


def test_training_dataset_applies_the_mirror_to_image_and_target():
    x = _image()
    items = ImageFolderItems(["a"], lambda _id, **kw: None)
    ds = ConceptImageDataset(items, {"image_size": 4}, np.array([[1.0, 0.0]], dtype=np.float32),
                             mirror=LateralMirror([(0, 1)], p=1.0))
    ds.image = lambda i: x                            # the decoded image (decoding is tested elsewhere)
    fx, fy, i = ds[0]
    assert torch.equal(fx, x.flip(-1)) and fy.tolist() == [0.0, 1.0] and i == 0


def test_grid_pool_keeps_where_a_finding_is():
    f = torch.zeros(1, 2, 4, 4)
    f[0, 0, 1, 0] = 4.0                                             # a finding in the left half
    g = f.flip(-1)                                                   # ... and mirrored
    assert torch.equal(f.mean(dim=(2, 3)), g.mean(dim=(2, 3)))       # one average cannot tell them apart
    pf, pg = GridPool(2)(f), GridPool(2)(g)
    assert pf.shape == (1, 8) and not torch.equal(pf, pg)
    cells = pf.view(1, 2, 2, 2)
    torch.testing.assert_close(cells.mean(dim=(2, 3)), f.mean(dim=(2, 3)))   # the cells hold the average


def test_grid_head_score_map_adds_up_to_the_logits_and_reloads(tmp_path):
    from medcap.data.vocab import ConceptVocabulary
    from medcap.models.processing import ConceptProcessor

    torch.manual_seed(0)
    model = ConceptDetector(DetectorConfig(num_classes=3, backbone="test_resnet", head="global",
                                           global_pool="grid")).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        logits, maps = model(x), model.score_maps(x)
    torch.testing.assert_close(maps.sum(dim=(2, 3)) + model.head.global_branch.fc.bias, logits,
                               rtol=1e-4, atol=1e-5)
    model.vocabulary = ConceptVocabulary([CT, LEFT, RIGHT])
    model.processor = ConceptProcessor.from_settings(64, "squash", "none")
    again = ConceptDetector.from_pretrained(model.save_pretrained(tmp_path / "grid")).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x), logits)
    medcsra = ConceptDetector(DetectorConfig(num_classes=3, backbone="test_resnet", global_pool="grid"))
    medcsra(x).sum().backward()                                       # the paper's head with a grid global branch
    assert medcsra.head.global_branch.fc.weight.shape[1] == 4 * medcsra.num_features


def test_translate_is_an_augmentation_with_a_checked_range():
    from torchvision.transforms import v2

    steps = train_augmentation(ConceptConfig(translate=0.06, image_size=32)).transforms
    assert any(isinstance(s, v2.RandomAffine) for s in steps)
    assert train_augmentation(ConceptConfig(image_size=32)) is None
    with pytest.raises(MedcapError, match="translate"):
        load_concept_config("demo", ["translate=0.9"])
