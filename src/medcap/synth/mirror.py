"""Write a folder dataset (e.g. a SYNTHETIC one) in the schema of ROCOv2's Hugging Face
parquet mirror, so the parquet reader can be tested and benchmarked without the real data.

    out/data/train-00000-of-00002.parquet, ..., validation-00000-of-00001.parquet, test-...

Columns as in the mirror: ``image`` (struct ``{bytes, path}``: the encoded file), ``image_id``,
``caption``, ``cui`` (list of strings). Row groups hold ``row_group_size`` rows (100, as the
``datasets`` library writes image datasets); ``cui_mapping.csv`` is copied beside ``data/``.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from ..fileio import atomic_dir

__all__ = ["MIRROR_SPLIT_NAMES", "write_parquet_mirror"]

MIRROR_SPLIT_NAMES = {"train": "train", "valid": "validation", "test": "test"}


def write_parquet_mirror(src: str | Path, out: str | Path, *, row_group_size: int = 100,
                         shard_rows: int = 5000) -> dict[str, int]:
    """Convert the dataset at ``src`` (either layout) to the mirror's parquet files in ``out``
    (written whole or not at all). Returns the number of rows written per split."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..data.dataset import locate_dataset, read_dataset

    ds = read_dataset(src)
    schema = pa.schema([("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        ("image_id", pa.string()), ("caption", pa.string()), ("cui", pa.list_(pa.string()))])
    counts: dict[str, int] = {}
    with atomic_dir(out) as tmp:
        (tmp / "data").mkdir()
        for name, split in ds.splits.items():
            ids = split.image_ids()
            n_shards = max(1, -(-len(ids) // shard_rows))
            for s in range(n_shards):
                chunk = ids[s * shard_rows:(s + 1) * shard_rows]
                images = []
                for i in chunk:
                    source = split.image_source(i)
                    data = source.read_bytes() if isinstance(source, Path) else bytes(source)
                    images.append({"bytes": data, "path": f"{i}.jpg"})
                table = pa.table({
                    "image": images,
                    "image_id": chunk,
                    "caption": [(split.captions or {}).get(i, "") for i in chunk],
                    "cui": [(split.concepts or {}).get(i, []) for i in chunk],
                }, schema=schema)
                pq.write_table(table, tmp / "data" / f"{MIRROR_SPLIT_NAMES[name]}-{s:05d}-of-{n_shards:05d}.parquet",
                               row_group_size=row_group_size, use_dictionary=["image_id", "caption", "cui"])
            counts[name] = len(ids)
        mapping = locate_dataset(src).cui_mapping
        if mapping is not None:
            shutil.copy(mapping, tmp / "cui_mapping.csv")
    return counts
