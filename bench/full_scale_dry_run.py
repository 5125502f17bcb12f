"""Full-scale dry run on the CPU: a SYNTHETIC dataset the size of ImageCLEF's, in both layouts.

    .venv/bin/python bench/full_scale_dry_run.py --out /tmp/dry-run            # 20,000 images, 2,479 CUIs
    .venv/bin/python bench/full_scale_dry_run.py --out /tmp/dry --n-images 300 --n-concepts 500 --size 128 \\
        --train-minutes 0.2                                                      # a quick check of the script

Steps, each a `medcap` command in its own process (wall time and peak resident memory of
the process and its children are recorded):

1. `medcap synth` draws the folder dataset (70 / 15 / 15 % train / valid / test, ``--size`` px,
   ``--n-concepts`` CUIs with the long tail of ``medcap.synth.tail``), with ``--workers``
   processes; `medcap.synth.mirror.write_parquet_mirror` writes the same data as the ROCOv2
   parquet mirror (100 rows per row group).
2. For each layout (folders, parquet):
   - `medcap data check`: seconds, images/s, peak memory;
   - `medcap train concepts --config demo --set epochs=1 --set max_minutes=T`: training
     images/s = steps x batch size / elapsed seconds (``metrics.csv``; the elapsed time
     includes one pass over the validation split, so this is a lower bound), peak memory,
     the size of the detector head (the number of CUIs in the training vocabulary);
   - `medcap predict concepts --data DIR --split test`: images/s (model loading included), peak memory.

Prints a Markdown table for BENCHMARKS.md and writes every number to OUT/dry_run.json.
Slow at full size (drawing 20,000 512 px images is the longest part): run it on an idle
machine. Numbers are synthetic-data numbers.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

_PEAK = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
         "p = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True); "
         "sys.stderr.write(p.stderr[-3000:] if p.returncode else ''); "
         "print(p.returncode, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def timed(argv: list[str]) -> dict:
    """Run ``argv`` in a child process: {"seconds", "peak_mb"}; exits on failure."""
    p = subprocess.run([sys.executable, "-c", _PEAK, *argv], capture_output=True, text=True, check=False)
    try:
        rc, seconds, kb = p.stdout.split()
    except ValueError:
        raise SystemExit(f"could not run {' '.join(argv)}:\n{p.stderr[-3000:]}") from None
    if rc != "0":
        raise SystemExit(f"command failed ({rc}): {' '.join(argv)}\n{p.stderr[-3000:]}")
    return {"seconds": round(float(seconds), 2), "peak_mb": round(int(kb) / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="working folder (datasets, runs, dry_run.json)")
    ap.add_argument("--n-images", type=int, default=20_000)
    ap.add_argument("--n-concepts", type=int, default=2_479)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes drawing images")
    ap.add_argument("--train-minutes", type=float, default=5.0, help="training time budget per layout")
    ap.add_argument("--keep", action="store_true", help="reuse datasets already in --out")
    args = ap.parse_args()

    medcap = [sys.executable, "-m", "medcap"]
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    folders, parquet = out / "data-folders", out / "data-parquet"
    n_valid = n_test = round(args.n_images * 0.15)
    n_train = args.n_images - n_valid - n_test
    results: dict = {"settings": vars(args) | {"out": str(out)}, "machine": {
        "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}}

    if not (args.keep and folders.is_dir()):
        results["synth"] = timed([*medcap, "synth", str(folders), "--n-train", str(n_train), "--n-valid",
                                  str(n_valid), "--n-test", str(n_test), "--size", str(args.size), "--n-concepts",
                                  str(args.n_concepts), "--workers", str(args.workers), "--overwrite"])
    if not (args.keep and parquet.is_dir()):
        t = time.perf_counter()
        from medcap.synth.mirror import write_parquet_mirror

        write_parquet_mirror(folders, parquet)
        results["to_parquet_s"] = round(time.perf_counter() - t, 1)
    with open(folders / "train_concepts.csv", newline="") as f:
        results["distinct_train_cuis"] = len({c for r in csv.DictReader(f) for c in r["CUIs"].split(";") if c})

    for layout, data in (("folders", folders), ("parquet", parquet)):
        r = results[layout] = {}
        r["data_check"] = timed([*medcap, "data", "check", str(data)])
        r["data_check"]["images_per_s"] = round(args.n_images / r["data_check"]["seconds"], 1)
        run = out / f"run-{layout}"
        r["train"] = timed([*medcap, "train", "concepts", "--config", "demo", "--data", str(data), "--out", str(run),
                            "--set", "epochs=1", "--set", f"max_minutes={args.train_minutes}", "--set", "progress=false"])
        with open(run / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        batch = 32  # the demo config's batch size
        r["train"]["steps"] = int(rows[-1]["step"])
        r["train"]["images_per_s"] = round(int(rows[-1]["step"]) * batch / float(rows[-1]["elapsed_s"]), 1)
        r["train"]["head_outputs"] = len(json.loads((run / "model" / "concepts.json").read_text())["cuis"])
        r["predict"] = timed([*medcap, "predict", "concepts", "--model", str(run / "model"), "--data", str(data),
                              "--split", "test", "--out", str(out / f"test-{layout}.csv")])
        r["predict"]["images_per_s"] = round(n_test / r["predict"]["seconds"], 1)

    (out / "dry_run.json").write_text(json.dumps(results, indent=2))
    print(f"SYNTHETIC dry run: {args.n_images} images ({n_train}/{n_valid}/{n_test}) at {args.size} px, "
          f"{args.n_concepts} CUIs ({results['distinct_train_cuis']} in train), {os.cpu_count()} CPUs")
    print("| layout | data check s (images/s, peak MB) | train images/s (steps, head, peak MB) "
          "| predict test images/s (peak MB) |")
    print("| --- | --- | --- | --- |")
    for layout in ("folders", "parquet"):
        r = results[layout]
        c, t, p = r["data_check"], r["train"], r["predict"]
        print(f"| {layout} | {c['seconds']:.0f} ({c['images_per_s']:.0f}, {c['peak_mb']:.0f}) "
              f"| {t['images_per_s']:.1f} ({t['steps']}, {t['head_outputs']}, {t['peak_mb']:.0f}) "
              f"| {p['images_per_s']:.1f} ({p['peak_mb']:.0f}) |")


if __name__ == "__main__":
    main()
