"""The SYNTHETIC dataset generator: layout, determinism, statistics, labels, CLI, atomicity."""
from __future__ import annotations

import collections
import csv
import hashlib
import re
import statistics
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medcap.errors import MedcapError
from medcap.factcheck.lexicon import KINDS
from medcap.synth import (
    CATALOG,
    SECONDARY_CUIS,
    SynthConfig,
    add_label_noise,
    caption_from_concepts,
    generate_dataset,
    make_image,
    mentioned_concepts,
)
from medcap.synth import catalog as cat

SPLITS = ("train", "valid", "test")
CUI_RE = re.compile(r"C\d{7}")

# REFERENCE §4: the official secondary-score CUIs and their canonical names.
OFFICIAL_SECONDARY_NAMES = {
    "C0040405": "X-Ray Computed Tomography", "C0024485": "Magnetic Resonance Imaging",
    "C1306645": "Plain x-ray", "C0041618": "Ultrasonography", "C0002978": "angiogram",
    "C0032743": "Positron-Emission Tomography", "C0817096": "Chest", "C0000726": "Abdomen",
    "C0037303": "Bone structure of cranium", "C0037949": "Vertebral column", "C0030797": "Pelvis",
    "C1140618": "Upper Extremity", "C0023216": "Lower Extremity", "C0006141": "Breast",
}


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sample() -> list:
    """600 training images drawn in memory (64 px): enough for frequency statistics."""
    cfg = SynthConfig(n_train=600, n_valid=0, n_test=0, size=64, seed=0)
    return [make_image(cfg, "train", i) for i in range(600)]


# ---- layout -------------------------------------------------------------------------------
def test_dataset_has_exactly_the_imageclef_layout(synth_small):
    root = synth_small
    expected = {"README.txt", "cui_mapping.csv"} | set(SPLITS)
    expected |= {f"{s}_{kind}.csv" for s in SPLITS for kind in ("concepts", "concepts_manual", "captions")}
    assert {p.name for p in root.iterdir()} == expected
    counts = {"train": 48, "valid": 16, "test": 16}
    for split in SPLITS:
        header, rows = _read_csv(root / f"{split}_concepts.csv")
        assert header == ["ID", "CUIs"]
        ids = [r[0] for r in rows]
        assert len(ids) == len(set(ids)) == counts[split]
        assert all(re.fullmatch(rf"SYNTH_2025_{split}_\d{{6}}", i) for i in ids)
        assert sorted(p.stem for p in (root / split).glob("*.jpg")) == sorted(ids)
        assert all(len(r) == 2 and r[1] and all(CUI_RE.fullmatch(c) for c in r[1].split(";")) for r in rows)

        m_header, m_rows = _read_csv(root / f"{split}_concepts_manual.csv")
        assert m_header == ["ID", "CUIs"]
        assert [r[0] for r in m_rows] == ids
        for full, manual in zip(rows, m_rows, strict=True):
            assert manual[1].split(";") == [c for c in full[1].split(";") if c in SECONDARY_CUIS]

        c_header, c_rows = _read_csv(root / f"{split}_captions.csv")
        assert c_header == ["ID", "Caption"]
        assert [r[0] for r in c_rows] == ids and all(r[1].strip() for r in c_rows)
    # captions are quoted CSV fields
    second_line = (root / "train_captions.csv").read_text(encoding="utf-8").splitlines()[1]
    assert re.fullmatch(r'SYNTH_2025_train_000001,".+"', second_line)


def test_images_are_grayscale_jpegs_of_the_requested_size(synth_small):
    for path in sorted((synth_small / "train").glob("*.jpg"))[:5]:
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.mode == "L" and im.size == (64, 64)


def test_cui_mapping_names_every_catalogue_cui_with_facts_names(synth_small):
    header, rows = _read_csv(synth_small / "cui_mapping.csv")
    assert header == ["CUI", "Canonical name"]
    names = dict(rows)
    assert set(names) == set(CATALOG)
    for cui, name in OFFICIAL_SECONDARY_NAMES.items():
        assert names[cui] == name
    assert "C0920367" in names  # OCT, the 15th secondary CUI


def test_readme_says_synthetic_with_seed_and_settings(synth_small):
    text = (synth_small / "README.txt").read_text(encoding="utf-8")
    first_paragraph = text.split("\n\n")[0]
    assert "SYNTHETIC" in first_paragraph and "NOT real medical images" in first_paragraph
    assert "seed 0" in first_paragraph
    assert '"size": 64' in text and "--n-train 48" in text


def test_same_data_layer_reads_it(synth_small):
    data = pytest.importorskip("medcap.data")
    ds = data.read_dataset(synth_small)
    assert set(ds.splits) == set(SPLITS)
    train = ds.split("train")
    assert len(train.ids) == 48 and len(train.image_paths) == 48
    assert train.concepts is not None and train.captions is not None and train.manual_concepts is not None
    assert set(ds.cui_names) == set(CATALOG)
    check = pytest.importorskip("medcap.data.check")
    assert check.check_dataset(synth_small) == []


# ---- determinism ------------------------------------------------------------------------------
def test_same_seed_gives_byte_identical_files_and_another_seed_differs(tmp_path):
    cfg = SynthConfig(n_train=6, n_valid=2, n_test=2, size=48, seed=3)
    generate_dataset(tmp_path / "a", cfg)
    generate_dataset(tmp_path / "b", cfg)
    generate_dataset(tmp_path / "c", SynthConfig(n_train=6, n_valid=2, n_test=2, size=48, seed=4))
    a, b, c = (_digest(tmp_path / n) for n in "abc")
    assert a == b
    assert set(a) == set(c)
    differing = [k for k in a if a[k] != c[k]]
    assert any(k.endswith(".jpg") for k in differing) and "train_concepts.csv" in differing


def test_a_larger_dataset_starts_with_the_same_images(tmp_path):
    generate_dataset(tmp_path / "small", SynthConfig(n_train=3, n_valid=1, n_test=1, size=40))
    generate_dataset(tmp_path / "big", SynthConfig(n_train=7, n_valid=1, n_test=1, size=40))
    small, big = _digest(tmp_path / "small"), _digest(tmp_path / "big")
    for name in ("train/SYNTH_2025_train_000001.jpg", "train/SYNTH_2025_train_000003.jpg"):
        assert small[name] == big[name]


def test_worker_processes_write_the_same_bytes(tmp_path):
    cfg = SynthConfig(n_train=70, n_valid=2, n_test=2, size=32)
    generate_dataset(tmp_path / "one", cfg)
    generate_dataset(tmp_path / "two", cfg, workers=2)
    assert _digest(tmp_path / "one") == _digest(tmp_path / "two")


# ---- statistics -------------------------------------------------------------------------------
def test_concepts_per_image_are_1_to_10_mostly_1_to_4(sample):
    counts = collections.Counter(len(im.concepts) for im in sample)
    assert min(counts) >= 1 and max(counts) <= cat.MAX_CONCEPTS
    assert counts.most_common(1)[0][0] in (1, 2, 3, 4)
    assert sum(counts[k] for k in (1, 2, 3, 4)) / len(sample) >= 0.6
    assert counts[1] > 0 and sum(counts[k] for k in range(7, 11)) > 0  # both ends occur


def test_concept_frequencies_have_a_long_tail_and_a_learnable_core(sample):
    n = len(sample)
    freq = collections.Counter(c for im in sample for c in set(im.concepts))
    shares = sorted((v / n for v in freq.values()), reverse=True)
    assert shares[0] > 0.25 and shares[0] / shares[-1] > 20
    assert sum(s < 0.02 for s in shares) >= 5  # a tail of rare concepts
    for key in cat.CORE_FINDINGS:  # learnable: each in at least about 3-5 % of images
        assert freq[cat.cui(key)] / n >= 0.03, key
    for kind in ("modality", "region"):
        for concept in cat.concepts_of_kind(kind):
            assert freq[concept.cui] > 0, f"{concept.name} never appears"
    assert all(not any(im.concepts.count(c) > 1 for c in im.concepts) for im in sample)


def test_every_image_has_one_modality_and_at_most_one_region(sample):
    for im in sample:
        kinds = collections.Counter(CATALOG[c].kind for c in im.concepts)
        assert kinds["modality"] == 1 and kinds["region"] <= 1


def test_findings_are_small(sample):
    areas = [a for im in sample for a in im.finding_areas]
    assert areas and max(areas) <= 0.05


def test_captions_are_right_skewed_with_numbers_and_punctuation(sample):
    captions = [im.caption for im in sample]
    lengths = [len(c.split()) for c in captions]
    median = statistics.median(lengths)
    assert 12 <= median <= 25
    assert statistics.mean(lengths) > median  # right skew (paper's Figure 2)
    assert max(lengths) >= 3 * median
    text = " ".join(captions)
    assert re.search(r"\d+(\.\d)? (mm|cm)", text) and "(" in text and "," in text and "-" in text
    assert len(set(captions)) > 0.9 * len(captions)


def test_captions_name_the_true_modality_region_and_findings(sample):
    for im in sample[:300]:
        truth = {c for c in im.concepts if CATALOG[c].kind in ("modality", "region", "finding")}
        assert mentioned_concepts(im.caption) == truth, im.caption


def test_side_labels_follow_the_radiological_convention(sample):
    seen = set()
    for im in sample:
        for f in im.scene.findings:
            if f.side == "right":
                assert f.x < 0.5  # the patient's right is on the image's left
            elif f.side == "left":
                assert f.x > 0.5
            seen.add(f.side)
        keys = im.scene.concept_keys()
        assert ("right" in keys) == any(f.side == "right" for f in im.scene.findings)
    assert {"right", "left"} <= seen


@pytest.mark.parametrize("finding", sorted(cat.FINDING_RATE))
def test_each_finding_is_visible_and_at_least_8_px_across_at_128_px(finding):
    from medcap.synth.canvas import Canvas
    from medcap.synth.draw import lut_for
    from medcap.synth.findings import FINDING_SIZE, FindingSpec, draw_finding

    rng = np.random.default_rng(0)
    for modality in cat.FINDING_RATE[finding][2]:
        cv = Canvas(128, fill=0.5)
        spec = FindingSpec(finding, 0.5, 0.5, FINDING_SIZE[finding][0], 0.0)
        area = draw_finding(cv, spec, modality, lut_for(modality, False, rng), rng)
        changed = np.abs(cv.img - 0.5) > 0.2
        rows, cols = np.nonzero(changed)
        assert changed.sum() >= 40, (finding, modality)
        assert np.ptp(rows) + 1 >= 8 and np.ptp(cols) + 1 >= 8, (finding, modality)
        assert area <= 0.05 and changed.mean() <= 0.05


# ---- label noise ------------------------------------------------------------------------------
def test_label_noise_changes_train_labels_only(tmp_path):
    clean, noisy = tmp_path / "clean", tmp_path / "noisy"
    generate_dataset(clean, SynthConfig(n_train=40, n_valid=10, n_test=10, size=32, seed=1))
    summary = generate_dataset(noisy, SynthConfig(n_train=40, n_valid=10, n_test=10, size=32, seed=1, label_noise=0.3))
    a, b = _digest(clean), _digest(noisy)
    assert {k: v for k, v in a.items() if k.endswith(".jpg")} == {k: v for k, v in b.items() if k.endswith(".jpg")}
    for name in ("train_captions.csv", "test_concepts.csv", "test_captions.csv"):
        assert a[name] == b[name]  # captions follow the true concepts; the test split stays clean
    assert a["train_concepts.csv"] != b["train_concepts.csv"]
    assert 0 < summary["labels_changed"]["train"] <= 40 and summary["labels_changed"]["test"] == 0
    _, rows = _read_csv(noisy / "train_concepts.csv")
    assert all(r[1] for r in rows)


def test_add_label_noise_drops_and_adds_with_probability_p():
    rng = np.random.default_rng(0)
    truth = ["C0040405", "C0817096", "C0028259"]
    assert add_label_noise(truth, 0.0, rng) == truth
    assert add_label_noise(truth, 1.0, rng)  # never empty
    changed = sum(add_label_noise(truth, 0.2, rng) != truth for _ in range(400))
    assert 0.3 * 400 < changed < 0.8 * 400  # 1 - 0.8**3 * 0.8 = 0.59


# ---- catalogue and caption helpers --------------------------------------------------------------
def test_catalogue_uses_the_15_secondary_cuis_for_modality_and_region():
    assert len(SECONDARY_CUIS) == 15 and len(set(SECONDARY_CUIS)) == 15
    assert {c.cui for c in CATALOG.values() if c.kind in ("modality", "region")} == set(SECONDARY_CUIS)
    for c in CATALOG.values():
        assert CUI_RE.fullmatch(c.cui) and c.kind in KINDS and c.name and c.words


def test_caption_from_concepts_names_them_and_is_reproducible():
    cuis = ["C0040405", "C0817096", "C0028259", "C0205090", "C1282910", "C0009924"]
    a = caption_from_concepts(cuis, 7)
    assert a == caption_from_concepts(cuis, 7)
    assert mentioned_concepts(a) == {"C0040405", "C0817096", "C0028259"}
    assert "right" in a and "contrast" in a.lower()
    assert caption_from_concepts(["C9999999"], 0)  # unknown CUIs are ignored, still a caption


@pytest.mark.parametrize("caption, expected", [
    ("Axial CT scan of the chest showing a 12 mm nodule (arrow).", {"C0040405", "C0817096", "C0028259"}),
    ("FDG-PET of the brain.", {"C0032743", "C0037303"}),
    ("Plain x-ray of the wrist and hand: displaced fracture.", {"C1306645", "C1140618", "C0016658"}),
    ("T2-weighted image of the knee with gallstones.", {"C0024485", "C0023216", "C0008350"}),
    ("A patient with headache and a forearm scan.", {"C1140618"}),
    ("Nothing named here, beforehand.", set()),
])
def test_mentioned_concepts_finds_catalogue_words(caption, expected):
    assert mentioned_concepts(caption) == expected


# ---- CLI ------------------------------------------------------------------------------------------
def test_cli_help_explains_the_command(cli):
    rc, out, _ = cli("synth", "--help")
    assert rc == 0
    for word in ("SYNTHETIC", "--n-train", "--n-valid", "--n-test", "--size", "--seed", "--label-noise", "--overwrite"):
        assert word in out


def test_cli_writes_a_dataset(cli, tmp_path):
    rc, out, err = cli("synth", tmp_path / "d", "--n-train", "4", "--n-valid", "2", "--n-test", "2", "--size", "32",
                       "--seed", "5")
    assert rc == 0, err
    assert "SYNTHETIC" in out
    assert len(list((tmp_path / "d" / "train").glob("*.jpg"))) == 4
    assert "seed 5" in (tmp_path / "d" / "README.txt").read_text(encoding="utf-8")


@pytest.mark.parametrize("args, word", [
    (("--n-train", "-1"), "n-train"),
    (("--size", "8"), "size"),
    (("--label-noise", "1.5"), "label-noise"),
    (("--seed", "-2"), "seed"),
])
def test_cli_bad_values_give_a_one_line_error(cli, tmp_path, args, word):
    rc, out, err = cli("synth", tmp_path / "d", *args)
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("error:") and word in err
    assert not (tmp_path / "d").exists()


def test_cli_refuses_a_non_empty_output_unless_overwrite(cli, tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    rc, _, err = cli("synth", out, "--n-train", "2", "--n-valid", "1", "--n-test", "1", "--size", "32")
    assert rc == 2 and "not empty" in err and len(err.strip().splitlines()) == 1
    assert (out / "keep.txt").read_text() == "mine"
    rc, _, err = cli("synth", out, "--n-train", "2", "--n-valid", "1", "--n-test", "1", "--size", "32", "--overwrite")
    assert rc == 0, err
    assert not (out / "keep.txt").exists() and (out / "train_concepts.csv").is_file()


# ---- atomicity ------------------------------------------------------------------------------------
def _fail_after(monkeypatch, n_ok: int):
    import medcap.synth.generate as gen

    real = gen.make_image
    calls = {"n": 0}

    def flaky(cfg, split, index):
        calls["n"] += 1
        if calls["n"] > n_ok:
            raise RuntimeError("disk on fire")
        return real(cfg, split, index)

    monkeypatch.setattr(gen, "make_image", flaky)


def test_a_failure_midway_leaves_no_folder(tmp_path, monkeypatch):
    _fail_after(monkeypatch, 5)
    with pytest.raises(RuntimeError, match="disk on fire"):
        generate_dataset(tmp_path / "d", SynthConfig(n_train=8, n_valid=2, n_test=2, size=32))
    assert list(tmp_path.iterdir()) == []


def test_a_failed_overwrite_keeps_the_old_dataset(tmp_path, monkeypatch):
    out = tmp_path / "d"
    generate_dataset(out, SynthConfig(n_train=3, n_valid=1, n_test=1, size=32))
    before = _digest(out)
    _fail_after(monkeypatch, 2)
    with pytest.raises(RuntimeError):
        generate_dataset(out, SynthConfig(n_train=3, n_valid=1, n_test=1, size=32, seed=9), overwrite=True)
    assert _digest(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_config_rejects_bad_values():
    for kwargs in ({"n_train": -1}, {"size": 16}, {"size": 5000}, {"label_noise": -0.1}, {"seed": -1},
                   {"noisy_splits": ("train", "dev")}, {"id_prefix": "a b"}):
        with pytest.raises(MedcapError):
            SynthConfig(**kwargs)


def test_every_reachable_view_has_a_drawing_and_every_modality_a_full_lookup_table():
    from medcap.synth.anatomy import TEMPLATES, VIEW
    from medcap.synth.draw import LUTS, TISSUES

    for modality, regions in cat.REGION_WEIGHTS.items():
        if modality == "oct":
            continue
        for region in regions:
            assert (VIEW[modality], region) in TEMPLATES, (modality, region)
        assert set(LUTS[modality]) == set(TISSUES), modality
