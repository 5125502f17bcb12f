"""Benchmark the SYNTHETIC dataset generator: images per second on one core.

    .venv/bin/python bench/bench_synth.py [--n 1000] [--size 224]

Prints images/s for drawing alone, for drawing plus JPEG encoding in memory (what the
generator itself costs), and for the whole `generate_dataset` writing to --tmp (adds the
file system: slow temp folders show up here), by wall clock and by this process's CPU
time (the CPU figure is what one core does when other jobs share the machine). Threads
are pinned to 1 (numpy/BLAS and torch) before anything is imported.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="images to draw (default 1000)")
    ap.add_argument("--size", type=int, default=224, help="image size in pixels (default 224)")
    ap.add_argument("--tmp", default=None, help="folder for the generate_dataset run (default: the system temp folder)")
    args = ap.parse_args()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    from medcap.synth import SynthConfig, generate_dataset, make_image
    from medcap.synth.generate import encode_jpeg

    cfg = SynthConfig(n_train=args.n, n_valid=0, n_test=0, size=args.size, seed=0)
    for i in range(20):  # warm-up: noise banks and coordinate grids are built once per size
        make_image(cfg, "valid", i)

    w0, c0 = time.perf_counter(), time.process_time()
    for i in range(args.n):
        make_image(cfg, "train", i)
    w1, c1 = time.perf_counter(), time.process_time()
    print(f"draw only        : {args.n / (w1 - w0):7.1f} images/s wall, {args.n / (c1 - c0):7.1f} images/s CPU "
          f"({args.n} images, {args.size} px)")

    w0, c0 = time.perf_counter(), time.process_time()
    for i in range(args.n):
        encode_jpeg(make_image(cfg, "train", i).pixels, cfg.jpeg_quality)
    w1, c1 = time.perf_counter(), time.process_time()
    print(f"draw + JPEG      : {args.n / (w1 - w0):7.1f} images/s wall, {args.n / (c1 - c0):7.1f} images/s CPU "
          f"(quality {cfg.jpeg_quality}, in memory)")

    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        w0, c0 = time.perf_counter(), time.process_time()
        generate_dataset(Path(tmp) / "data", cfg)
        w1, c1 = time.perf_counter(), time.process_time()
    print(f"generate_dataset : {args.n / (w1 - w0):7.1f} images/s wall, {args.n / (c1 - c0):7.1f} images/s CPU "
          f"(JPEG files and CSVs in {args.tmp or tempfile.gettempdir()})")


if __name__ == "__main__":
    main()
