"""Training-step time and peak memory of a BLIP with blip-image-captioning-large's sizes.

    .venv/bin/python bench/bench_blip_step.py                    # GPU if present, else CPU
    .venv/bin/python bench/bench_blip_step.py --device cpu --batch-sizes 1 2 --steps 1

The model is ``Captioner.from_scratch("large")``: ViT-L/16 image encoder + BERT-base decoder,
446 M parameters, random weights (the numbers do not depend on the weights). Each step is
the paper's (REFERENCE §1): 224 px images (position embeddings interpolated from 384), captions
padded to 200 tokens, AdamW over every parameter. Modes:

- ``fp32``: plain float32;
- ``bf16-ckpt``: bfloat16 autocast (what ``mixed_precision: bf16`` does through Accelerate:
  float32 weights and optimiser state) + gradient checkpointing;
- ``fp32-ckpt`` / ``bf16``: one of the two alone (on a CPU without bfloat16 instructions
  bf16 is emulated and very slow, so the CPU default is ``fp32`` and ``fp32-ckpt``).

Every configuration runs in its own process, so its peak memory is its own: on a GPU
``torch.cuda.max_memory_allocated``; on the CPU the process's peak resident memory
(``ru_maxrss``), which includes Python, torch and the model. Without a GPU the script also
prints an *estimate* of the GPU memory at batch 4 and 16 from the CPU measurements (the
per-image slope between two batch sizes) and the parameter + optimiser arithmetic.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

CAPTIONS = ["axial ct of the chest shows a 2.3 cm nodule in the right upper lobe.",
            "plain x-ray of the knee (ap view) with a transverse fracture of the tibia.",
            "t2-weighted mri of the brain showing a cystic lesion.", "ultrasound of the liver, no abnormality."]


def one(batch: int, mode: str, device: str, image_size: int, max_length: int, steps: int, warmup: int,
        threads: int) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    from medcap.models.captioner import Captioner

    torch.set_num_threads(threads)
    t = time.monotonic()
    captioner = Captioner.from_scratch("large", CAPTIONS * 10, image_size=image_size, max_length=max_length, seed=0)
    if "ckpt" in mode:
        captioner.enable_gradient_checkpointing()
    model = captioner.model.to(device).train()
    build_s = time.monotonic() - t
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)) for _ in range(batch)]
    text = [" ".join(rng.choice(CAPTIONS, 20)) for _ in range(batch)]          # > 200 tokens: truncated
    batch_data = dict(captioner.encode_captions(text, padding="max_length"),
                      pixel_values=captioner.pixel_values(images))
    batch_data = {k: v.to(device) for k, v in batch_data.items()}
    dtype = torch.bfloat16 if mode.startswith("bf16") else None
    rss_before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(warmup + steps):
        t = time.monotonic()
        with torch.autocast(device_type=device, dtype=dtype, enabled=dtype is not None):
            loss = captioner.loss(model, batch_data)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.monotonic() - t)
    out = {"batch": batch, "mode": mode, "device": device, "image_size": image_size, "tokens": max_length,
           "step_s": float(np.median(times)), "images_per_s": batch / float(np.median(times)),
           "loss": float(loss), "build_s": round(build_s, 1),
           "parameters_M": round(captioner.num_parameters() / 1e6, 1),
           "threads": threads}
    if device == "cuda":
        out["peak_allocated_GB"] = torch.cuda.max_memory_allocated() / 1e9
        out["peak_reserved_GB"] = torch.cuda.max_memory_reserved() / 1e9
        out["gpu"] = torch.cuda.get_device_name()
    else:
        out["peak_rss_GB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1e3
        out["rss_after_build_GB"] = rss_before_mb / 1e3
    return out


def estimate(rows: list[dict]) -> list[str]:
    """GPU memory estimate from CPU peaks: fixed part + per-image slope (labelled as an estimate)."""
    params = rows[0]["parameters_M"] * 1e6
    state = params * 16 / 1e9   # fp32 weights 4 + gradients 4 + AdamW moments 8 bytes per parameter
    lines = [(f"parameter arithmetic: {params / 1e6:.0f} M parameters x 16 bytes (fp32 weights, gradients, "
              f"AdamW moments) = {state:.1f} GB before activations")]
    for mode in sorted({r["mode"] for r in rows}):
        pts = sorted((r["batch"], r["peak_rss_GB"]) for r in rows if r["mode"] == mode)
        if len(pts) < 2:
            continue
        (b0, m0), (b1, m1) = pts[0], pts[-1]
        slope = (m1 - m0) / (b1 - b0)
        for b in (4, 16):
            act = max(0.0, slope) * b
            lines.append(f"ESTIMATE {mode}, batch {b}: ~{state + act:.1f} GB on a GPU "
                         f"({state:.1f} GB state + {slope:.2f} GB per image x {b} measured on the CPU); "
                         f"{'fits' if state + act < 15 else 'does not fit'} in 16 GB")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="default: 4 16 on GPU, 1 2 on CPU")
    p.add_argument("--modes", nargs="+", default=None, choices=["fp32", "bf16", "fp32-ckpt", "bf16-ckpt"],
                   help="default: fp32 bf16-ckpt on GPU; fp32 fp32-ckpt on CPU (bf16 without CPU support for it "
                        "is emulated: one step took over 10 minutes here)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--max-length", type=int, default=200)
    p.add_argument("--steps", type=int, default=None, help="measured steps (default: 5 GPU, 1 CPU)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--one", nargs=2, metavar=("BATCH", "MODE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    steps = args.steps or (5 if device == "cuda" else 1)
    if args.one:
        row = one(int(args.one[0]), args.one[1], device, args.image_size, args.max_length, steps, args.warmup,
                  args.threads)
        print("RESULT " + json.dumps(row), flush=True)
        return 0
    batches = args.batch_sizes or ([4, 16] if device == "cuda" else [1, 2])
    modes = args.modes or (["fp32", "bf16-ckpt"] if device == "cuda" else ["fp32", "fp32-ckpt"])
    if device == "cpu":
        print("no GPU here: measuring on the CPU (step times are CPU times; memory is the process's peak RSS)")
    rows = []
    for mode in modes:
        for b in batches:
            cmd = [sys.executable, __file__, "--one", str(b), mode, "--device", device, "--image-size",
                   str(args.image_size), "--max-length", str(args.max_length), "--steps", str(steps),
                   "--warmup", str(args.warmup), "--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                oom = "out of memory" in proc.stderr.lower()
                print(f"{mode} batch {b}: {'out of memory' if oom else 'failed'}: "
                      f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
                rows.append({"batch": b, "mode": mode, "device": device, "error": "oom" if oom else "failed"})
                continue
            row = json.loads(line[len("RESULT "):])
            rows.append(row)
            mem = (f"peak {row['peak_allocated_GB']:.2f} GB allocated ({row['peak_reserved_GB']:.2f} reserved)"
                   if device == "cuda" else f"peak RSS {row['peak_rss_GB']:.2f} GB "
                                            f"({row['rss_after_build_GB']:.2f} after building the model)")
            print(f"{mode:9s} batch {b:2d}: {row['step_s']:.2f} s/step ({row['images_per_s']:.2f} img/s), {mem}",
                  flush=True)
    notes = estimate([r for r in rows if "peak_rss_GB" in r]) if device == "cpu" else []
    for line in notes:
        print(line)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"rows": rows, "notes": notes, "torch": torch.__version__}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
