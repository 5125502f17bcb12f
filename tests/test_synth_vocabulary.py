"""`medcap synth --n-concepts N` (a long tail of rare concepts) and `--sizes MIN-MAX`."""
from __future__ import annotations

import csv
from collections import Counter

import pytest
from PIL import Image

from medcap.errors import MedcapError
from medcap.synth import CATALOG, SynthConfig, generate_dataset, make_image
from medcap.synth.tail import rare_concepts, sample_rare


def _concepts(root, split="train"):
    with open(root / f"{split}_concepts.csv", newline="") as f:
        return {r["ID"]: r["CUIs"].split(";") for r in csv.DictReader(f)}


def test_5000_images_carry_at_least_800_distinct_cuis_with_a_long_tail():
    import numpy as np

    # The labels alone (sample_rare is what make_image adds), 5,000 images as for 2,479 CUIs.
    rng = np.random.default_rng(0)
    counts = Counter(c for _ in range(5000) for c in sample_rare(rng, 2479, 6))
    assert len(counts) >= 800
    freq = sorted(counts.values(), reverse=True)
    assert freq[0] > 50 * freq[len(freq) // 2]  # the head is far more frequent than the median concept
    assert sum(1 for v in freq if v <= 3) > len(freq) / 3  # many concepts occur in a handful of images


def test_n_concepts_adds_named_rare_concepts_and_keeps_the_drawn_images(tmp_path):
    plain, big = tmp_path / "plain", tmp_path / "big"
    generate_dataset(plain, SynthConfig(n_train=40, n_valid=4, n_test=4, size=32, seed=1))
    summary = generate_dataset(big, SynthConfig(n_train=40, n_valid=4, n_test=4, size=32, seed=1, n_concepts=500))
    a, b = _concepts(plain), _concepts(big)
    for i in a:  # the catalogue labels and the pixels are unchanged; rare labels come after them
        assert b[i][:len(a[i])] == a[i] and 1 <= len(b[i]) <= 10
        assert (plain / "train" / f"{i}.jpg").read_bytes() == (big / "train" / f"{i}.jpg").read_bytes()
    rare = {c for cs in b.values() for c in cs if c not in CATALOG}
    assert rare and all(c.startswith("C9") and len(c) == 8 for c in rare)
    with open(big / "cui_mapping.csv", newline="") as f:
        names = {r["CUI"]: r["Canonical name"] for r in csv.DictReader(f)}
    assert len(names) == 500 and rare <= set(names)
    assert names["C9000001"] == "Synthetic rare concept 1"
    assert summary["n_concepts"] == len({c for cs in b.values() for c in cs} | {c for s in ("valid", "test")
                                                                                 for cs in _concepts(big, s).values()
                                                                                 for c in cs})
    assert "--n-concepts 500" in (big / "README.txt").read_text()
    from medcap.data.check import check_dataset

    assert check_dataset(big) == []  # every rare CUI is in cui_mapping.csv


def test_sizes_gives_each_image_its_own_non_square_size(tmp_path):
    root = tmp_path / "d"
    generate_dataset(root, SynthConfig(n_train=12, n_valid=2, n_test=2, seed=0, sizes=(40, 90)))
    sizes = {Image.open(p).size for p in (root / "train").iterdir()}
    assert len(sizes) > 6 and all(40 <= w <= 90 and 40 <= h <= 90 for w, h in sizes)
    assert any(w != h for w, h in sizes)
    im = make_image(SynthConfig(seed=0, sizes=(40, 90)), "train", 0)
    assert im.pixels.shape == Image.open(root / "train" / f"{im.image_id}.jpg").size[::-1]


@pytest.mark.parametrize("kw, msg", [({"n_concepts": 10}, "n-concepts must be"), ({"n_concepts": 10**6}, "n-concepts"),
                                     ({"sizes": (90, 40)}, "sizes must be MIN-MAX"), ({"sizes": (8, 40)}, "sizes")])
def test_bad_vocabulary_or_size_settings_are_refused(kw, msg):
    with pytest.raises(MedcapError, match=msg):
        SynthConfig(**kw)


def test_cli_options(cli, tmp_path):
    rc, out, err = cli("synth", tmp_path / "d", "--n-train", "20", "--n-valid", "2", "--n-test", "2",
                       "--n-concepts", "300", "--sizes", "32-48")
    assert rc == 0, err
    assert "of 32-48 px" in out
    rc, _, err = cli("synth", tmp_path / "e", "--sizes", "big")
    assert rc != 0 and "--sizes must be MIN-MAX" in err and not (tmp_path / "e").exists()
    assert len(rare_concepts(300)) == 253
