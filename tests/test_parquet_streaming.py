"""Parquet written the way users write it (``DataFrame.to_parquet``: one row group per file) is read in
bounded memory: in batches within the row group, a byte-bounded cache, and in training a streaming
order (medcap.data.streaming) sharded across workers and processes."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from medcap.data.dataset import read_dataset
from medcap.data.streaming import RowGroupBatchSampler

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")


def to_parquet_dataset(src: Path, out: Path) -> Path:
    """``src`` (ImageCLEF folders) as one ``DataFrame.to_parquet`` file per split, defaults kept."""
    ds = read_dataset(src)
    (out / "data").mkdir(parents=True)
    names = {"train": "train", "valid": "validation", "test": "test"}
    for name, split in ds.splits.items():
        frame = pd.DataFrame({
            "image": [{"bytes": split.image_paths[i].read_bytes(), "path": f"{i}.jpg"} for i in split.ids],
            "image_id": split.ids,
            "caption": [(split.captions or {}).get(i, "") for i in split.ids],
            "cui": [(split.concepts or {}).get(i, []) for i in split.ids]})
        frame.to_parquet(out / "data" / f"{names[name]}-00000-of-00001.parquet")
    return out


@pytest.fixture(scope="module")
def one_group(synth_small, tmp_path_factory):
    return to_parquet_dataset(synth_small, tmp_path_factory.mktemp("pandas") / "roco")


def test_a_large_row_group_is_read_in_batches_within_the_byte_budget(one_group, synth_small, monkeypatch):
    from medcap.data.parquet import ParquetImages

    train = read_dataset(one_group).split("train")
    images = train.image_bytes
    assert images.row_group_starts == [[0]]                       # to_parquet: one row group
    budget = images.row_group_bytes[0][0] // 2                     # the row group is twice the cache
    monkeypatch.setattr(ParquetImages, "cache_bytes", budget)
    rows = images.batch_rows(0, 0)
    assert rows is not None and rows < len(train.ids)
    expected = {i: read_dataset(synth_small).split("train").image_paths[i].read_bytes() for i in train.ids}
    for n, i in enumerate(train.ids):                              # a pass in file order: one forward read
        assert images[i] == expected[i]
        assert images._cached <= budget
        if n < len(train.ids) - rows:
            assert list(images._cursors) == [(0, 0)] and images._cursors[(0, 0)][1] == n // rows + 1
    assert images._cursors == {}                                   # the finished row group's reader is freed
    assert images[train.ids[0]] == expected[train.ids[0]]          # back to the start: read again
    assert images[train.ids[-1]] == expected[train.ids[-1]]


def test_the_streaming_order_takes_every_image_once_and_shards_stretches():
    groups = [list(range(0, 40)), list(range(40, 100)), list(range(100, 110))]
    sampler = RowGroupBatchSampler(groups, batch_size=4, buffer_rows=10, seed=3, workers=2, processes=2)
    epoch1, epoch2 = list(sampler), list(sampler)
    for batches in (epoch1, epoch2):
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(110))                    # every image once an epoch
        assert len(batches) == len(sampler)
    assert epoch1 != epoch2                                        # a new order every epoch
    again = RowGroupBatchSampler(groups, batch_size=4, buffer_rows=10, seed=3, workers=2, processes=2)
    assert list(again) == epoch1                                   # every process makes the same batches
    # Batch i goes to rank i % 2 and, there, to worker (i // 2) % 2: each (rank, worker) stream
    # reads its own rows, and the images of one row group in a batch lie within two windows of 10 rows.
    owner: dict[int, tuple[int, int]] = {}
    for i, batch in enumerate(epoch1):
        for j in batch:
            owner[j] = (i % 2, (i // 2) % 2)
        for group in groups:
            inside = [j for j in batch if j in group]
            assert not inside or max(inside) - min(inside) < 20
    assert len(set(owner.values())) == 4


def test_drop_last_and_a_single_stream():
    sampler = RowGroupBatchSampler([list(range(10))], batch_size=4, buffer_rows=4, drop_last=True)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 2 and all(len(b) == 4 for b in batches)


def test_training_on_one_row_group_files_streams_the_images(one_group, tmp_path, monkeypatch, cli):
    from medcap.data.parquet import ParquetImages
    from medcap.data.streaming import RowGroupBatchSampler as Sampler

    monkeypatch.setattr(ParquetImages, "cache_bytes", 4096)           # every row group counts as large
    made = []
    monkeypatch.setattr(Sampler, "__iter__", _recording(Sampler.__iter__, made))
    out = tmp_path / "run"
    rc, _, err = cli("train", "concepts", "--config", "demo", "--data", one_group, "--out", out,
                     "--set", "image_size=32", "--set", "epochs=1", "--set", "max_minutes=0",
                     "--set", "batch_size=16", "--set", "progress=false")
    assert rc == 0, err
    assert made, "training did not use the streaming order"
    with open(out / "metrics.csv", newline="") as f:
        assert [r["step"] for r in csv.DictReader(f)] == ["3"]      # 48 images, batches of 16


def _recording(method, made: list):
    def wrapper(self):
        made.append(self)
        return method(self)
    return wrapper


@pytest.mark.parametrize("in_batches", [False, True])
def test_a_damaged_image_column_is_one_line_naming_the_file(one_group, tmp_path, monkeypatch, in_batches):
    import shutil

    from medcap.data.parquet import ParquetImages
    from medcap.errors import MedcapError

    root = shutil.copytree(one_group, tmp_path / "roco")
    path = root / "data" / "train-00000-of-00001.parquet"
    train = read_dataset(root).split("train")                      # the footer is read here, intact
    data = bytearray(path.read_bytes())
    data[4:len(data) // 2] = b"\x55" * (len(data) // 2 - 4)        # the column chunks damaged
    path.write_bytes(bytes(data))
    if in_batches:
        monkeypatch.setattr(ParquetImages, "cache_bytes", train.image_bytes.row_group_bytes[0][0] // 2)
    for _ in range(2):                                             # and again: not a dead reader's StopIteration
        with pytest.raises(MedcapError) as e:
            train.load_image(train.ids[0])
        assert e.value.file == str(path) and "cannot read the images of row group 1" in e.value.message
