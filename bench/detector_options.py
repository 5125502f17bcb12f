"""Detector options side by side at the demo's budget: each option set trains the demo's detector
on the same synthetic dataset, then the detector, the kNN baseline over its embeddings and the
detector + kNN ensemble are scored on the test split.

    .venv/bin/python bench/detector_options.py --out bench-out/options --seed 11 \
        --option "" --option "lateral_flip=true" --option "lateral_flip=true global_pool=grid"

Each --option is a space-separated list of ``key=value`` overrides of the `demo` concept config
on top of the demo plan's (``medcap.demo.plan.FULL``); "" is the demo plan before them. Wall-clock
budgets: run it on an idle machine and one option at a time (it does). SYNTHETIC data. Every
choice (thresholds, k, fusion) is made on the validation split; test is only scored. Writes
results.jsonl under --out, one line per option.
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path


def _overrides(text: str) -> dict:
    out = {}
    for item in text.split():
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=11, help="seed of the synthetic data and the training runs")
    ap.add_argument("--option", action="append", default=None, help='e.g. "lateral_flip=true global_pool=grid"')
    args = ap.parse_args(argv)

    from medcap import baselines as B
    from medcap.data.dataset import read_dataset
    from medcap.data.items import ImageFolderItems
    from medcap.demo.machine import free_cores
    from medcap.demo.plan import FULL
    from medcap.demo.steps import prepare_data
    from medcap.inference.concepts import load_detector, predict_concepts
    from medcap.methods.ensemble import build_ensemble
    from medcap.report.scoring import concept_scores
    from medcap.training.concepts import train_concepts

    options = args.option or ["", "lateral_flip=true global_pool=grid"]
    data = prepare_data(args.out, FULL, args.seed)
    ds = read_dataset(data)
    train, valid, test = ds.split("train"), ds.split("valid"), ds.split("test")
    test_ids = test.image_ids()

    def f1(preds):
        return concept_scores(test.concepts, preds, test.manual_concepts)["primary_f1"]

    def predicted(model):
        rows = predict_concepts(model, ImageFolderItems.from_split(test, test_ids), batch_size=64)
        return {i: [c for c, _ in row] for i, row in rows.items()}

    results = []
    for n, option in enumerate(options):
        run = args.out / f"option-{n}"
        overrides = {**FULL.concepts, "seed": args.seed, **_overrides(option)}
        start = time.monotonic()
        with free_cores():
            train_concepts("demo", data, run / "run", overrides=overrides, log=lambda _msg: None)
        seconds = time.monotonic() - start
        detector = load_detector(run / "run" / "model")
        embeddings = B.SplitEmbeddings(detector)
        knn, report = B.knn_baseline(embeddings, train, valid, test, ks=FULL.knn_ks)
        build_ensemble([run / "run" / "model"], data, run / "ensemble", dataset=ds, log=lambda _msg: None,
                       embeddings=embeddings)
        epochs = list(csv.DictReader((run / "run" / "metrics.csv").open(encoding="utf-8")))
        row = {"option": option or "(demo plan)", "train_s": round(seconds), "epochs": len(epochs),
               "valid_f1": round(max(float(e["f1"]) for e in epochs), 4), "detector": round(f1(predicted(detector)), 4),
               f"knn_k{report['k']}": round(f1(knn), 4),
               "ensemble": round(f1(predicted(load_detector(run / "ensemble"))), 4)}
        row["best_minus_knn"] = round(max(row["detector"], row["ensemble"]) - row[f"knn_k{report['k']}"], 4)
        results.append(row)
        print(json.dumps(row), flush=True)
    (args.out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
