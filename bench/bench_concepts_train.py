"""Training throughput of the concept detector: images/s and peak memory.

Grid: batch 16 and 64 x {fp32, bf16 autocast + channels_last}, `paper` config (ResNet-101,
layer4 trained, MedCSRA head, 224 px, Adam) with random weights and random images, so
only the compute is measured (no data loading). Runs on the GPU when there is one; on a
CPU it prints what it can (use --steps 2 --batches 16, it is slow there).

    python bench/bench_concepts_train.py                       # GPU: full grid
    python bench/bench_concepts_train.py --config demo          # the CPU demo model
    python bench/bench_concepts_train.py --steps 2 --batches 16 --image-size 224   # CPU

Peak memory: torch.cuda.max_memory_allocated on a GPU; the process's peak resident set
(ru_maxrss, includes everything loaded before) on a CPU.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time


def bench(cfg_name: str, batch: int, precision: str, image_size: int, steps: int, warmup: int,
          num_classes: int, device) -> dict:
    import torch

    from medcap.data.transforms import normalize_batch
    from medcap.models.concept_detector import ConceptDetector
    from medcap.training.concepts import detector_config, load_concept_config, preprocessing_of
    from medcap.training.losses import build_loss

    cfg = load_concept_config(cfg_name, {"pretrained": False, "image_size": image_size})
    torch.manual_seed(0)
    model = ConceptDetector(detector_config(cfg, num_classes)).to(device).train()
    fast = precision == "bf16+channels_last"
    if fast:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    loss_fn = build_loss(cfg)
    prep = preprocessing_of(cfg)
    x = torch.randint(0, 256, (batch, 3, image_size, image_size), dtype=torch.uint8, device=device)
    y = (torch.rand(batch, num_classes, device=device) < 0.02).float()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step():
        inp = normalize_batch(x, prep)
        if fast:
            inp = inp.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast):
            logits = model(inp)
        loss = loss_fn(logits.float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    peak = (torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    return {"config": cfg_name, "batch": batch, "precision": precision, "image_size": image_size,
            "images_per_s": round(batch * steps / dt, 1), "peak_memory_gib": round(peak, 2),
            "memory": "cuda max allocated" if device.type == "cuda" else "process max RSS"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="paper")
    ap.add_argument("--batches", nargs="+", type=int, default=[16, 64])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16+channels_last"],
                    choices=["fp32", "bf16+channels_last"])
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--num-classes", type=int, default=2479, help="REFERENCE §5: 2,479 CUIs in 2025")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args(argv)

    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    where = (torch.cuda.get_device_name() if device.type == "cuda"
             else f"CPU {platform.processor() or platform.machine()}")
    print(f"device: {where}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    if device.type == "cpu":
        print("no GPU: CPU numbers only (bf16 autocast on a CPU is usually slower than fp32)")
    rows = []
    print("| config | batch | precision | images/s | peak memory (GiB) |\n|---|---|---|---|---|")
    for batch in args.batches:
        for precision in args.precisions:
            r = bench(args.config, batch, precision, args.image_size, args.steps, args.warmup, args.num_classes,
                      device)
            rows.append(r)
            print(f"| {r['config']} | {batch} | {precision} | {r['images_per_s']} | {r['peak_memory_gib']} "
                  f"({r['memory']}) |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": where, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
