"""read_dataset: the ImageCLEF folder layout, its variants, and the Hugging Face parquet layout.

``write_dataset`` below builds small datasets by hand; the other data tests import it.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import pytest
from PIL import Image

from medcap.data import read_dataset
from medcap.errors import MedcapError

CUI_NAMES = {
    "C0040405": "X-Ray Computed Tomography",
    "C0024485": "Magnetic Resonance Imaging",
    "C0817096": "Chest",
    "C0000726": "Abdomen",
    "C0034069": "Pulmonary Fibrosis, with comma",
}


def jpeg_bytes(seed: int = 0, size=(32, 24), fmt="JPEG") -> bytes:
    im = Image.new("RGB", size, ((seed * 40) % 256, 80, 160))
    im.putpixel((seed % size[0], 0), (255, 255, 255))
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def write_csv(path: Path, text: str, encoding="utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def write_dataset(root: Path, *, n_train=4, n_valid=2, n_test=2, test_labels=True, mapping=True,
                  prefix="", image_dirs=None) -> Path:
    """A tiny dataset in the REFERENCE §5 layout; IDs are ``<split>_<i>``; every CUI is named."""
    root.mkdir(parents=True, exist_ok=True)
    image_dirs = image_dirs or {}
    cuis = list(CUI_NAMES)
    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        folder = root / image_dirs.get(split, split)
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (folder / f"{split}_{i}.jpg").write_bytes(jpeg_bytes(i))
        if split == "test" and not test_labels:
            continue
        concepts = ["ID,CUIs"] + [f"{split}_{i},{cuis[i % 2]};{cuis[2 + i % 2]}" for i in range(n)]
        captions = ["ID,Caption"] + [f'{split}_{i},"CT of the chest, {i} mm ""nodule"".\nSecond line."'
                                     for i in range(n)]
        manual = ["ID,CUIs"] + [f"{split}_{i},{cuis[i % 2]}" for i in range(n)]
        write_csv(root / f"{prefix}{split}_concepts.csv", "\n".join(concepts) + "\n")
        write_csv(root / f"{prefix}{split}_captions.csv", "\n".join(captions) + "\n")
        write_csv(root / f"{prefix}{split}_concepts_manual.csv", "\n".join(manual) + "\n")
    if mapping:
        rows = ["CUI,Canonical name"] + [f'{c},"{n}"' for c, n in CUI_NAMES.items()]
        write_csv(root / f"{prefix}cui_mapping.csv", "\n".join(rows) + "\n")
    return root


# --------------------------------------------------------------------------- folder layout
def test_reads_every_split_file_and_image_of_the_imageclef_layout(tmp_path):
    ds = read_dataset(write_dataset(tmp_path / "d"))
    assert ds.layout == "folders"
    assert list(ds.splits) == ["train", "valid", "test"]
    train = ds.split("train")
    assert train.ids == ["train_0", "train_1", "train_2", "train_3"]
    assert train.concepts["train_1"] == ["C0024485", "C0000726"]
    assert train.captions["train_0"] == 'CT of the chest, 0 mm "nodule".\nSecond line.'
    assert train.manual_concepts["train_0"] == ["C0040405"]
    assert train.image_paths["train_2"] == tmp_path / "d" / "train" / "train_2.jpg"
    assert ds.cui_names["C0034069"] == "Pulmonary Fibrosis, with comma"
    im = train.load_image("train_1")
    assert im.mode == "RGB" and im.size == (32, 24)


def test_test_split_without_gold_files_lists_its_images_sorted(tmp_path):
    root = write_dataset(tmp_path / "d", n_test=3, test_labels=False)
    (root / "test" / "test_10.png").write_bytes(jpeg_bytes(3, fmt="PNG"))
    test = read_dataset(root).split("test")
    assert test.concepts is None and test.captions is None and test.manual_concepts is None
    assert not test.has_labels
    assert test.ids == ["test_0", "test_1", "test_10", "test_2"]
    assert test.load_image("test_10").size == (32, 24)


def test_accepts_prefixed_file_names_and_prefixed_image_folders(tmp_path):
    p = "ImageCLEFmedical_Caption_2025_"
    root = write_dataset(tmp_path / "d", prefix=p,
                         image_dirs={"train": f"{p}train_images", "valid": f"{p}valid_images", "test": "test"})
    ds = read_dataset(root)
    assert len(ds.split("train")) == 4 and len(ds.split("valid")) == 2
    assert ds.cui_names["C0817096"] == "Chest"


@pytest.mark.parametrize("dirs", [
    {"train": "train_images", "valid": "valid_images", "test": "test_images"},
    {"train": "images/train", "valid": "images/valid", "test": "images/test"},
    {"train": "train_images/train", "valid": "validation", "test": "test"},
])
def test_accepts_common_image_folder_variants(tmp_path, dirs):
    ds = read_dataset(write_dataset(tmp_path / "d", image_dirs=dirs))
    for name, n in (("train", 4), ("valid", 2), ("test", 2)):
        split = ds.split(name)
        assert len(split.ids) == n and not split.missing_images, name
        assert split.image_dir == tmp_path / "d" / dirs[name]


def test_validation_spelling_and_split_aliases(tmp_path):
    root = write_dataset(tmp_path / "d")
    for f in root.glob("valid_*.csv"):
        f.rename(root / f.name.replace("valid_", "validation_"))
    (root / "valid").rename(root / "validation")
    ds = read_dataset(root)
    assert ds.split("validation") is ds.split("valid") is ds.split("val")
    assert len(ds.split("valid").concepts) == 2


def test_missing_and_unlabelled_images_are_set_aside_not_silently_dropped(tmp_path):
    root = write_dataset(tmp_path / "d")
    (root / "train" / "train_1.jpg").unlink()
    (root / "train" / "extra.jpg").write_bytes(jpeg_bytes(9))
    train = read_dataset(root).split("train")
    assert train.ids == ["train_0", "train_2", "train_3"]
    assert train.missing_images == ["train_1"]
    assert train.unlabelled_images == {"extra": root / "train" / "extra.jpg"}
    assert "train_1" in train.concepts  # the labels are still there for evaluation


def test_ids_written_with_an_image_extension_find_their_file(tmp_path):
    root = write_dataset(tmp_path / "d", n_valid=0, n_test=0)
    write_csv(root / "train_concepts.csv", "ID,CUIs\ntrain_0.jpg,C0040405\n")
    write_csv(root / "train_captions.csv", "ID,Caption\ntrain_0.jpg,a caption\n")
    (root / "train_concepts_manual.csv").unlink()
    train = read_dataset(root).split("train")
    assert train.ids == ["train_0.jpg"]
    assert train.load_image("train_0.jpg").mode == "RGB"


def test_labels_only_split_keeps_its_ids_and_refuses_images_clearly(tmp_path):
    root = tmp_path / "d"
    write_csv(root / "train_concepts.csv", "ID,CUIs\na1,C0040405\n")
    train = read_dataset(root).split("train")
    assert train.ids == ["a1"] and train.image_dir is None
    with pytest.raises(MedcapError, match="no image for ID 'a1'"):
        train.load_image("a1")


def test_malformed_row_in_a_dataset_stops_reading_with_file_and_line(tmp_path):
    root = write_dataset(tmp_path / "d")
    write_csv(root / "valid_concepts.csv", "ID,CUIs\nvalid_0,C0040405\nvalid_1,C0040405,C0817096\n")
    with pytest.raises(MedcapError) as e:
        read_dataset(root)
    assert str(e.value).startswith(f"{root / 'valid_concepts.csv'}:3: expected 2 fields")


def test_unknown_split_name_error_lists_the_splits(tmp_path):
    ds = read_dataset(write_dataset(tmp_path / "d", n_test=0, test_labels=False))
    with pytest.raises(MedcapError, match=r"no 'dev2' split \(it has: train, valid"):
        ds.split("dev2")


def test_not_a_dataset_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MedcapError, match="no ImageCLEF dataset found"):
        read_dataset(tmp_path / "empty")
    with pytest.raises(MedcapError, match="dataset folder not found"):
        read_dataset(tmp_path / "nope")
    (tmp_path / "file.csv").write_text("x")
    with pytest.raises(MedcapError, match="found a file"):
        read_dataset(tmp_path / "file.csv")


def test_two_candidate_files_for_one_role_is_an_error_naming_both(tmp_path):
    root = write_dataset(tmp_path / "d")
    write_csv(root / "ImageCLEF_train_concepts.csv", "ID,CUIs\ntrain_0,C0040405\n")
    with pytest.raises(MedcapError, match="ImageCLEF_train_concepts.csv, train_concepts.csv"):
        read_dataset(root)


def test_reads_the_synthetic_dataset_when_the_generator_exists(request):
    pytest.importorskip("medcap.synth")
    try:
        root = request.getfixturevalue("synth_small")
    except Exception as e:  # the generator is written by another session
        pytest.skip(f"synthetic generator not usable yet: {e}")
    ds = read_dataset(root)
    for name in ("train", "valid", "test"):
        split = ds.split(name)
        assert split.ids and not split.missing_images
        assert split.load_image(split.ids[0]).mode == "RGB"
    assert ds.cui_names


# --------------------------------------------------------------------------- parquet layout
def _write_parquet(path: Path, rows: list[dict], cui_as_list=True):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({
        "image": pa.array([{"bytes": r["bytes"], "path": f"{r['id']}.jpg"} for r in rows],
                          type=pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        "image_id": [r["id"] for r in rows],
        "caption": [r["caption"] for r in rows],
        "cui": [r["cui"] if cui_as_list else ";".join(r["cui"]) for r in rows],
    })
    pq.write_table(table, path, row_group_size=2)


def _rows(split, n, start=0):
    return [{"id": f"ROCOv2_2023_{split}_{i:06d}", "bytes": jpeg_bytes(i), "caption": f"caption {i}",
             "cui": ["c0040405 ", "C0817096"] if i % 2 else ["C0024485"]} for i in range(start, start + n)]


def test_reads_the_hugging_face_parquet_layout_with_images_as_bytes(tmp_path):
    root = tmp_path / "roco"
    _write_parquet(root / "data" / "train-00000-of-00002.parquet", _rows("train", 3))
    _write_parquet(root / "data" / "train-00001-of-00002.parquet", _rows("train", 2, start=3))
    _write_parquet(root / "data" / "validation-00000-of-00001.parquet", _rows("valid", 2))
    _write_parquet(root / "data" / "test-00000-of-00001.parquet", _rows("test", 1), cui_as_list=False)
    ds = read_dataset(root)
    assert ds.layout == "parquet" and set(ds.splits) == {"train", "valid", "test"}
    train = ds.split("train")
    assert train.ids == [f"ROCOv2_2023_train_{i:06d}" for i in range(5)]
    assert train.image_paths == {}
    assert train.concepts["ROCOv2_2023_train_000001"] == ["C0040405", "C0817096"]
    assert train.captions["ROCOv2_2023_train_000004"] == "caption 4"
    assert isinstance(train.image_source("ROCOv2_2023_train_000004"), bytes)
    im = train.load_image("ROCOv2_2023_train_000004")
    assert im.mode == "RGB" and im.size == (32, 24)
    assert ds.split("test").concepts["ROCOv2_2023_test_000000"] == ["C0024485"]
    # Data-loader workers get the index, not open files or cached row groups, and still load images.
    images = train.image_bytes
    assert images.row_group_starts == [[0, 2], [0]]  # row_group_size=2: 3 rows -> 2 groups, 2 rows -> 1
    clone = pickle.loads(pickle.dumps(images))
    assert clone._groups == {} and clone._handles == {}
    assert clone["ROCOv2_2023_train_000000"] == images["ROCOv2_2023_train_000000"]


def test_parquet_images_stay_in_the_files_and_memory_holds_a_few_row_groups(tmp_path, monkeypatch):
    import os

    from medcap.data.parquet import ParquetImages

    root = tmp_path / "roco"
    _write_parquet(root / "data" / "train-00000-of-00001.parquet", _rows("train", 24))  # 12 row groups
    train = read_dataset(root).split("train")
    images = train.image_bytes
    assert images._groups == {}  # reading the split read no image bytes
    # A budget of four row groups' images (bytes, whatever their count): the last ones are kept.
    monkeypatch.setattr(ParquetImages, "cache_bytes", 4 * max(images.row_group_bytes[0]))
    for i in train.ids:  # a pass in file order reads each row group once
        assert train.load_image(i).mode == "RGB"
    assert (0, 11) in images._groups and (0, 0) not in images._groups
    assert images._cached <= ParquetImages.cache_bytes
    assert images[train.ids[11]] == jpeg_bytes(11)
    # A forked worker (same object, new process ID) opens its own file and cache.
    images._pid = os.getpid() + 1
    assert images[train.ids[0]] == jpeg_bytes(0)
    assert set(images._groups) == {(0, 0)} and images._pid == os.getpid()


def test_parquet_split_folders_of_the_converted_layout(tmp_path):
    root = tmp_path / "roco"
    _write_parquet(root / "default" / "train" / "0000.parquet", _rows("train", 2))
    _write_parquet(root / "default" / "validation" / "0000.parquet", _rows("valid", 1))
    ds = read_dataset(root)
    assert set(ds.splits) == {"train", "valid"}


def test_parquet_duplicate_id_is_an_error_naming_file_and_row(tmp_path):
    root = tmp_path / "roco"
    rows = _rows("train", 2)
    rows[1]["id"] = rows[0]["id"]
    _write_parquet(root / "train-00000-of-00001.parquet", rows)
    with pytest.raises(MedcapError, match=r"train-00000-of-00001.parquet: row 2: duplicate ID"):
        read_dataset(root)


def test_parquet_without_an_id_column_is_an_error_listing_the_columns(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    root = tmp_path / "roco"
    root.mkdir()
    pq.write_table(pa.table({"image": [b"x"], "name": ["a"]}), root / "train-0.parquet")
    with pytest.raises(MedcapError, match="no image ID column.*found image, name"):
        read_dataset(root)
