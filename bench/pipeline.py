"""The image pipeline of the concept detector: how fast images are decoded, how fast the model runs,
how fast the two run together with and without data-loader workers, and how close that is to what
the machine can do. For prediction and for training, in one run.

    .venv/bin/python bench/pipeline.py [--images 1000] [--size 512] [--config demo] [--batch-size 32]

Prints, per task (predict, train):
  * decode images/s per core: reading, decoding and resizing to the model's input, one process;
  * forward images/s: the model alone on already-decoded batches (training: forward, backward and
    the optimizer step), with all of torch's threads;
  * end-to-end images/s with ``--workers 0`` and with the default (``auto``), and their ratio;
  * the fraction of the machine's limit reached. On a CPU the model and the decoders share the
    cores: with C cores, forward rate F (all cores) and decode rate D per core, one image costs
    C/F + 1/D core-seconds, so at best C / (C/F + 1/D) images/s. On a GPU the limit is F (the
    decoders run on the CPU beside it).
Prediction output must not depend on the workers: the probabilities of the two runs are compared.

The detector is the config's, randomly initialised (speed does not depend on the weights); the
images are a synthetic dataset drawn by ``medcap synth`` at --size px. With no GPU, the GPU part
prints "not measured".
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rate(n: int, seconds: float) -> float:
    return n / max(seconds, 1e-9)


def build_detector(config: str, cuis: list[str]):
    from medcap.data.vocab import ConceptVocabulary
    from medcap.models.concept_detector import ConceptDetector
    from medcap.training.concepts import concept_processor, detector_config, load_concept_config

    cfg = load_concept_config(config, {"pretrained": False})
    model = ConceptDetector(detector_config(cfg, len(cuis)), pretrained=False)
    model.vocabulary, model.processor = ConceptVocabulary(cuis), concept_processor(cfg)
    return cfg, model


def decode_rate(items, prep: dict, n: int) -> float:
    from medcap.data.items import ConceptImageDataset

    ds = ConceptImageDataset(items, prep)
    t = time.perf_counter()
    for i in range(n):
        ds[i]
    return _rate(n, time.perf_counter() - t)


def predict_part(model, items, prep, device, batch_size: int) -> dict:
    import numpy as np
    import torch

    from medcap.data.items import ConceptImageDataset
    from medcap.data.loading import resolve_workers
    from medcap.data.transforms import normalize_batch
    from medcap.inference.concepts import map_images, probability_fn

    n = len(items.ids)
    fn = probability_fn(model)
    x = torch.stack([ConceptImageDataset(items, prep)[i][0] for i in range(min(n, batch_size))]).to(device)
    with torch.inference_mode():
        fn(normalize_batch(x, prep))  # warm up
        reps = max(1, n // len(x))
        t = time.perf_counter()
        for _ in range(reps):
            fn(normalize_batch(x, prep))
        _sync(device)
        forward = _rate(reps * len(x), time.perf_counter() - t)
    out = {"forward": forward}
    probs = {}
    for label, workers in (("workers 0", 0), ("default", "auto")):
        t = time.perf_counter()
        _, p = map_images(fn, items, prep, batch_size, device, workers)
        out[label] = _rate(n, time.perf_counter() - t)
        probs[label] = p
    out["workers"] = resolve_workers("auto", n)
    out["identical"] = bool(np.array_equal(probs["workers 0"], probs["default"]))
    return out


def train_part(model, items, prep, cfg, device, batch_size: int) -> dict:
    import torch

    from medcap.data.items import ConceptImageDataset
    from medcap.data.loading import loader_options, resolve_workers
    from medcap.data.transforms import normalize_batch
    from medcap.training.concepts import train_augmentation

    n = len(items.ids)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    k = len(model.vocabulary)

    def step(x):
        logits = model(normalize_batch(x.to(device, non_blocking=True), prep))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))
        opt.zero_grad()
        loss.backward()
        opt.step()

    targets = torch.zeros(n, k).numpy()
    ds = ConceptImageDataset(items, prep, targets, train_augmentation(cfg))
    x = torch.stack([ds[i][0] for i in range(min(n, batch_size))])
    step(x)  # warm up
    reps = max(1, n // len(x))
    t = time.perf_counter()
    for _ in range(reps):
        step(x)
    _sync(device)
    out = {"forward": _rate(reps * len(x), time.perf_counter() - t)}
    for label, workers in (("workers 0", 0), ("default", "auto")):
        w = resolve_workers(workers, n)
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True,
                                             **loader_options(w, device, train=True))
        t = time.perf_counter()
        for x, _, _ in loader:
            step(x)
        _sync(device)
        out[label] = _rate(n, time.perf_counter() - t)
        del loader
    out["workers"] = resolve_workers("auto", n)
    model.eval()
    return out


def _sync(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def limit(forward: float, decode_per_core: float, cores: int, gpu: bool) -> float:
    if gpu:
        return forward
    return cores / (cores / forward + 1 / decode_per_core)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--size", type=int, default=512, help="image size on disk, px (default 512)")
    ap.add_argument("--config", default="demo", help="concept config of the detector (default demo)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--data", default=None, help="an existing image folder instead of a synthetic one")
    ap.add_argument("--device", default=None)
    ap.add_argument("--tasks", default="predict,train")
    args = ap.parse_args()

    import torch

    from medcap.data.loading import available_cores
    from medcap.device import resolve_device
    from medcap.inference.concepts import image_items

    if args.data is None:
        work = Path(tempfile.mkdtemp(prefix="medcap-pipeline-"))
        subprocess.run([sys.executable, "-m", "medcap", "synth", str(work / "data"), "--n-train", "8",
                        "--n-valid", "4", "--n-test", str(args.images), "--size", str(args.size)],
                       check=True, stdout=subprocess.DEVNULL)
        folder = work / "data" / "test"
    else:
        folder = Path(args.data)
    items = image_items([folder])
    items.ids = items.ids[:args.images]
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    cfg, model = build_detector(args.config, [f"C{i:07d}" for i in range(100)])
    model = model.to(device).eval()
    prep = model.preprocessing
    cores = available_cores()
    n = len(items.ids)
    print(f"{n} images of {args.size} px -> {prep['image_size']} px, config {args.config}, batch {args.batch_size}, "
          f"{cores} cores, torch threads {torch.get_num_threads()}, device {device}")
    decode = decode_rate(items, prep, min(n, 300))
    print(f"decode: {decode:.0f} images/s per core")
    for task in args.tasks.split(","):
        r = (predict_part(model, items, prep, device, args.batch_size) if task == "predict"
             else train_part(model, items, prep, cfg, device, args.batch_size))
        lim = limit(r["forward"], decode, cores, gpu)
        print(f"{task}: forward {r['forward']:.0f} images/s; end-to-end workers 0 {r['workers 0']:.0f}, "
              f"default ({r['workers']} workers) {r['default']:.0f} images/s = {r['default'] / r['workers 0']:.2f}x; "
              f"machine limit {lim:.0f} images/s: {r['workers 0'] / lim:.2f} (workers 0), "
              f"{r['default'] / lim:.2f} (default)"
              + (f"; identical output: {r['identical']}" if "identical" in r else ""))
    if not gpu:
        print("GPU: not measured (no GPU on this machine)")
    print(f"machine: {os.uname().machine}, {cores} cores; {time.strftime('%Y-%m-%d %H:%M')}")


if __name__ == "__main__":
    main()
