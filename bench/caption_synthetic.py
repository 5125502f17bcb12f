"""Captioning on the synthetic dataset: a small BLIP from scratch vs. the baselines and the ceiling.

    .venv/bin/python bench/caption_synthetic.py --out bench-out/captions            # ~15 min on 2 CPU cores

1. makes the synthetic dataset (2000 train / 200 valid / 500 test images, 128 px);
2. trains the ``demo`` caption config (a BLIP with hidden 192, 3 layers, 96 px, from scratch)
   through the shared engine for at most ``--minutes`` minutes of wall-clock time;
3. captions the test split (the config's beam search) and scores it: ROUGE-1 with the
   official preprocessing, and whether each caption names the image's modality, body region
   and findings (``medcap.synth.mentioned_concepts`` against the true concepts);
4. scores the same way: the constant caption (the training caption with the best ROUGE-1
   against the others), nearest-neighbour retrieval (the caption of the most similar training
   image, by the trained captioner's image encoder and by a random-weight ResNet-18), the
   ceiling (captions re-drawn from each test image's true concepts with
   ``medcap.synth.caption_from_concepts``) and the test split's own captions (a check of the
   concept-naming measurement).

Writes ``results.json`` and ``results.md`` (the table for BENCHMARKS.md) under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np


def concept_naming(captions: dict[str, str], gold: dict[str, list[str]]) -> dict[str, float]:
    """Share of captions naming exactly the true modality / region; finding precision, recall, F1."""
    from medcap.synth import CATALOG, mentioned_concepts

    kinds = {kind: {c for c, v in CATALOG.items() if v.kind == kind} for kind in ("modality", "region", "finding")}
    mod_ok = reg_ok = both = 0
    tp = fp = fn = 0
    for image_id, caption in captions.items():
        said, true = mentioned_concepts(caption), set(gold[image_id])
        m = (said & kinds["modality"]) == (true & kinds["modality"])
        r = (said & kinds["region"]) == (true & kinds["region"])
        mod_ok, reg_ok, both = mod_ok + m, reg_ok + r, both + (m and r)
        f_said, f_true = said & kinds["finding"], true & kinds["finding"]
        tp, fp, fn = tp + len(f_said & f_true), fp + len(f_said - f_true), fn + len(f_true - f_said)
    n = max(1, len(captions))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"modality": mod_ok / n, "region": reg_ok / n, "modality_and_region": both / n,
            "finding_precision": precision, "finding_recall": recall, "finding_f1": f1}


def score(name: str, captions: dict[str, str], gold_captions: dict[str, str], gold_concepts: dict[str, list[str]],
          **extra) -> dict:
    from medcap.metrics.textscores import rouge1_scores

    ids = list(gold_captions)
    rouge = float(rouge1_scores([gold_captions[i] for i in ids], [captions[i] for i in ids]).mean())
    row = {"name": name, "rouge1": rouge, **concept_naming({i: captions[i] for i in ids}, gold_concepts),
           "words": float(np.mean([len(captions[i].split()) for i in ids])), **extra}
    print(f"{name}: ROUGE-1 {rouge:.4f}, modality {row['modality']:.3f}, region {row['region']:.3f}, "
          f"finding F1 {row['finding_f1']:.3f}", flush=True)
    return row


def markdown(rows: list[dict], meta: dict) -> str:
    lines = ["| captions | ROUGE-1 | modality named | region named | both | finding P / R / F1 | words |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['rouge1']:.4f} | {r['modality']:.1%} | {r['region']:.1%} | "
                     f"{r['modality_and_region']:.1%} | {r['finding_precision']:.2f} / {r['finding_recall']:.2f} / "
                     f"{r['finding_f1']:.2f} | {r['words']:.1f} |")
    return "\n".join(lines) + "\n\n" + json.dumps(meta, indent=1) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("bench-out/captions"))
    p.add_argument("--minutes", type=float, default=10.0, help="training budget (wall clock)")
    p.add_argument("--config", default="demo")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="config override KEY=VALUE")
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-valid", type=int, default=200)
    p.add_argument("--n-test", type=int, default=500)
    p.add_argument("--size", type=int, default=128, help="synthetic image size (the model resizes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--no-resnet", action="store_true", help="skip the random ResNet-18 retrieval baseline")
    p.add_argument("--resume", action="store_true", help="continue an interrupted training run in OUT/run")
    p.add_argument("--concepts", type=Path, default=None,
                   help="a concept submission for the test split (`medcap predict concepts` of a detector): the "
                        "prompts of a concept_prompt model; it is also scored with the gold concepts (oracle)")
    args = p.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    from medcap.data import read_dataset
    from medcap.data.items import ImageFolderItems
    from medcap.inference.captions import predict_captions
    from medcap.methods.baselines import caption_baseline, constant_caption
    from medcap.models.captioner import Captioner
    from medcap.models.retrieval import plain_backbone
    from medcap.synth import SynthConfig, caption_from_concepts, generate_dataset
    from medcap.training.captions import load_caption_config, train_captioner

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    synth = SynthConfig(n_train=args.n_train, n_valid=args.n_valid, n_test=args.n_test, size=args.size, seed=args.seed)
    marker = data / "synth-config.json"
    if not marker.is_file() or json.loads(marker.read_text()) != repr(synth):
        t = time.monotonic()
        generate_dataset(data, synth)
        marker.write_text(json.dumps(repr(synth)))
        print(f"dataset: {time.monotonic() - t:.0f} s", flush=True)
    test = read_dataset(data).split("test")
    gold_captions = {i: test.captions[i] for i in test.ids}
    gold_concepts = {i: test.concepts[i] for i in test.ids}

    cfg = load_caption_config(args.config, [f"max_minutes={args.minutes}", "progress=false", *args.overrides])
    run = out / "run"
    if run.exists() and not args.resume:
        shutil.rmtree(run)  # this script's own output: a fresh run every time
    t = time.monotonic()
    result = train_captioner(cfg, data, run, resume=args.resume)
    train_s = time.monotonic() - t
    captioner = Captioner.from_pretrained(run / "model")

    def decoding(beams: int) -> str:
        return "greedy" if beams == 1 else f"{beams} beams"

    rows = []
    prompts, detector = None, {}
    if captioner.concept_prompt is not None:
        from medcap.metrics.concepts import evaluate_concepts
        from medcap.submission import read_concept_submission

        if args.concepts is None:
            raise SystemExit("this config uses concept prompts: pass --concepts (the test split's predicted concepts)")
        prompts = read_concept_submission(args.concepts)
        manual = {i: test.manual_concepts.get(i, []) for i in test.ids} if test.manual_concepts else None
        detector = {k: v for k, v in evaluate_concepts(gold_concepts, prompts, manual).items()
                    if k in ("primary_f1", "secondary_f1")}
        print(f"detector's test concepts ({args.concepts}): {detector}", flush=True)
    t = time.monotonic()
    model_caps = predict_captions(captioner, ImageFolderItems.from_split(test), out / "model.csv", batch_size=32,
                                  concepts=prompts)
    predict_s = time.monotonic() - t
    beams = captioner.generation.num_beams
    given = ", prompted with the detector's concepts" if prompts else ""
    rows.append(score(f"BLIP {cfg.model} from scratch ({args.minutes:g} min, {result.epochs_run} epochs, "
                      f"{decoding(beams)}{given})", model_caps, gold_captions, gold_concepts,
                      predict_s=round(predict_s, 1)))
    other_beams = 3 if beams == 1 else 1
    other = predict_captions(captioner, ImageFolderItems.from_split(test), None, batch_size=32, num_beams=other_beams,
                             concepts=prompts)
    rows.append(score(f"  same model, {decoding(other_beams)}", other, gold_captions, gold_concepts))
    if prompts:
        oracle = predict_captions(captioner, ImageFolderItems.from_split(test), None, batch_size=32,
                                  concepts=gold_concepts)
        rows.append(score(f"  same model, {decoding(beams)}, prompted with the true concepts (oracle)", oracle,
                          gold_captions, gold_concepts))

    train = read_dataset(data).split("train")
    const = constant_caption(train.captions)
    rows.append(score("constant caption", {i: const for i in test.ids}, gold_captions, gold_concepts, caption=const))
    ret = caption_baseline("retrieval", data, out / "retrieval.csv", embedder=captioner.image_embedder())
    rows.append(score("retrieval, captioner's image encoder", ret, gold_captions, gold_concepts))
    if not args.no_resnet:
        ret2 = caption_baseline("retrieval", data, out / "retrieval-resnet18.csv",
                                embedder=plain_backbone("resnet18", cfg.image_size, pretrained=False))
        rows.append(score("retrieval, random-weight ResNet-18", ret2, gold_captions, gold_concepts))
    ceiling = {i: caption_from_concepts(gold_concepts[i], rng=args.seed * 100_000 + k) for k, i in enumerate(test.ids)}
    rows.append(score("ceiling: re-drawn from the true concepts", ceiling, gold_captions, gold_concepts))
    rows.append(score("check: the test captions themselves", gold_captions, gold_captions, gold_concepts))

    meta = {"command": " ".join([sys.executable.split("/")[-1], *sys.argv]), "train_s": round(train_s, 1),
            "predict_s": round(predict_s, 1), "epochs": result.epochs_run, "stop": result.stop_reason,
            "best_valid_rouge1_greedy": result.best_score, "parameters_M": round(captioner.num_parameters() / 1e6, 2),
            "threads": args.threads, "config": cfg.name, "synth": repr(synth), "torch": torch.__version__,
            "detector_concepts": str(args.concepts) if args.concepts else None, "detector_test_f1": detector or None,
            "history": result.history}
    (out / "results.json").write_text(json.dumps({"rows": rows, "meta": meta}, indent=1))
    (out / "results.md").write_text(markdown(rows, {k: v for k, v in meta.items() if k != "history"}))
    print(markdown(rows, {k: v for k, v in meta.items() if k != "history"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
