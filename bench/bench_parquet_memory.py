"""Peak resident memory of `medcap data check`, `medcap train concepts` and `medcap predict concepts
--data --split test` on a small and a large SYNTHETIC parquet dataset in the ROCOv2 mirror schema.

    .venv/bin/python bench/bench_parquet_memory.py [--small-gb 0.1] [--large-gb 0.6] [--size 512]
        [--layout mirror|to_parquet]

Goal (issues 11 and 22): going from the small to the large dataset adds at most a quarter of the
extra bytes on disk to the peak resident set of each command.

Layouts: ``mirror`` writes row groups of 100 rows, as the Hugging Face `datasets` library does;
``to_parquet`` writes each shard with ``pandas.DataFrame.to_parquet`` and its defaults (one row
group per file, as most people write parquet).

How the datasets are made: `medcap synth` draws a few hundred images at --size px once;
they are then written as parquet shards ``data/{train,validation,test}-0000K-of-0000N.parquet``
(columns ``image`` {bytes, path}, ``image_id``, ``caption``, ``cui`` list; 100 rows per row
group, as the Hugging Face `datasets` library writes image datasets; no dictionary
encoding), repeating the drawn images under new IDs until the files reach the target size
(70 / 15 / 15 % train / validation / test). Each copy gets a distinct trailer after the
JPEG end marker (decoders ignore it), so no two rows hold the same bytes. Drawing
thousands of distinct images would take far longer and changes nothing about memory.

Each command runs in its own child process; its peak resident set is the child's
``ru_maxrss`` (the largest of the process and its own children, e.g. data-loader workers).
Training is cut short with ``--set epochs=1 --set max_minutes=...`` (the time budget
ends training mid-epoch; validation still covers the whole validation split).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROW_GROUP = 100     # rows per row group, as `datasets` writes image datasets
SHARD_BYTES = 100e6  # bytes of image data per shard (the real mirror: ~500 MB)


def synth_base(out: Path, n: int, size: int) -> None:
    n_valid = n_test = max(1, n // 8)
    subprocess.run([sys.executable, "-m", "medcap", "synth", str(out), "--n-train", str(n - 2 * n_valid),
                    "--n-valid", str(n_valid), "--n-test", str(n_test), "--size", str(size)],
                   check=True, stdout=subprocess.DEVNULL)


def write_parquet_dataset(base: Path, out: Path, target_bytes: float, layout: str = "mirror") -> dict:
    """Parquet shards of about ``target_bytes`` of images, from the folder dataset ``base``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from medcap.data.dataset import read_dataset

    ds = read_dataset(base)
    source = []  # (bytes, caption, cuis) of every drawn image, all splits
    for split in ds.splits.values():
        for i in split.ids:
            source.append((split.image_paths[i].read_bytes(), split.captions[i], split.concepts[i]))
    (out / "data").mkdir(parents=True)
    schema = pa.schema([("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        ("image_id", pa.string()), ("caption", pa.string()), ("cui", pa.list_(pa.string()))])
    k, stats = 0, {}
    for name, share in (("train", 0.70), ("validation", 0.15), ("test", 0.15)):
        budget = target_bytes * share
        n_shards = max(1, round(budget / SHARD_BYTES))
        rows, written = [], 0
        while written < budget:
            data, caption, cuis = source[k % len(source)]
            data = data + f"medcap-bench-{k}".encode()  # a distinct trailer after the JPEG end marker
            image_id = f"ROCOv2_2023_{name}_{k:06d}"
            rows.append(({"bytes": data, "path": f"{image_id}.jpg"}, image_id, caption, cuis))
            written += len(data)
            k += 1
        per = -(-len(rows) // n_shards)
        for s in range(n_shards):
            chunk = rows[s * per:(s + 1) * per]
            path = out / "data" / f"{name}-{s:05d}-of-{n_shards:05d}.parquet"
            if layout == "to_parquet":  # pandas' defaults: one row group per file
                import pandas as pd

                pd.DataFrame(chunk, columns=["image", "image_id", "caption", "cui"]).to_parquet(path)
                continue
            table = pa.table([list(c) for c in zip(*chunk, strict=True)], schema=schema)
            pq.write_table(table, path, row_group_size=ROW_GROUP, use_dictionary=["image_id", "caption", "cui"])
        stats[name] = len(rows)
    stats["bytes_on_disk"] = sum(p.stat().st_size for p in (out / "data").iterdir())
    return stats


_PEAK = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
         "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode; "
         "print(rc, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def peak_rss(argv: list[str]) -> tuple[float, float]:
    """(peak resident MB, seconds) of ``argv`` run in a fresh child process."""
    out = subprocess.run([sys.executable, "-c", _PEAK, *argv], capture_output=True, text=True, check=True)
    rc, seconds, kb = out.stdout.split()
    if rc != "0":
        raise SystemExit(f"command failed ({rc}): {' '.join(argv)}\n{out.stderr[-2000:]}")
    return int(kb) / 1024, float(seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small-gb", type=float, default=0.1)
    ap.add_argument("--large-gb", type=float, default=0.6)
    ap.add_argument("--size", type=int, default=512, help="image size in pixels (default 512)")
    ap.add_argument("--base-images", type=int, default=300, help="distinct images drawn (default 300)")
    ap.add_argument("--train-minutes", type=float, default=0.5, help="training time budget (default 0.5)")
    ap.add_argument("--tmp", default=None, help="working folder (default: a new temporary folder)")
    ap.add_argument("--layout", choices=("mirror", "to_parquet"), default="mirror",
                    help="row groups of 100 rows (mirror) or DataFrame.to_parquet's one per file")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="medcap-parquet-mem-", dir=args.tmp))
    print(f"working in {work}", file=sys.stderr)
    synth_base(work / "base", args.base_images, args.size)
    medcap = [sys.executable, "-m", "medcap"]
    results = {}
    for label, gb in (("small", args.small_gb), ("large", args.large_gb)):
        root = work / f"parquet-{label}"
        stats = write_parquet_dataset(work / "base", root, gb * 1e9, args.layout)
        check_mb, check_s = peak_rss([*medcap, "data", "check", str(root)])
        train_mb, train_s = peak_rss([*medcap, "train", "concepts", "--config", "demo", "--data", str(root),
                                      "--out", str(work / f"run-{label}"), "--set", "epochs=1",
                                      "--set", f"max_minutes={args.train_minutes}"])
        model = work / f"run-{label}" / "model"
        predict_mb, predict_s = peak_rss([*medcap, "predict", "concepts", "--model", str(model),
                                          "--data", str(root), "--split", "test",
                                          "--out", str(work / f"test-{label}.csv")])
        results[label] = dict(stats, check_peak_mb=check_mb, check_s=check_s, train_peak_mb=train_mb,
                              train_s=train_s, predict_peak_mb=predict_mb, predict_s=predict_s)
        print(f"{label}: {stats['bytes_on_disk'] / 1e6:.0f} MB on disk ({stats['train']} train images): "
              f"data check peak {check_mb:.0f} MB ({check_s:.0f} s), train peak {train_mb:.0f} MB "
              f"({train_s:.0f} s), predict peak {predict_mb:.0f} MB ({predict_s:.0f} s)", file=sys.stderr)

    s, g = results["small"], results["large"]
    extra = (g["bytes_on_disk"] - s["bytes_on_disk"]) / 2**20
    print(f"{'':24}{'small':>10}{'large':>10}{'growth':>10}{'growth / extra size':>22}")
    print(f"{'dataset on disk (MiB)':24}{s['bytes_on_disk'] / 2**20:>10.0f}{g['bytes_on_disk'] / 2**20:>10.0f}"
          f"{extra:>10.0f}")
    for key, what in (("check_peak_mb", "data check peak RSS"), ("train_peak_mb", "train concepts peak RSS"),
                      ("predict_peak_mb", "predict --data peak RSS")):
        grow = g[key] - s[key]
        print(f"{what + ' (MiB)':24}{s[key]:>10.0f}{g[key]:>10.0f}{grow:>10.0f}{grow / extra:>22.2f}")
    print(json.dumps(results), file=sys.stderr)
    print(f"goal: growth / extra size <= 0.25 (synthetic data, layout {args.layout}; {time.strftime('%Y-%m-%d')})")


if __name__ == "__main__":
    main()
