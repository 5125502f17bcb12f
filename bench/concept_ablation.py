"""Concept detection on synthetic data: MedCSRA vs its ablations vs CSRA vs the baselines.

Every head trains with the `demo` config and the same wall-clock budget, then predicts the
test split with its saved thresholds; scores are the official primary / secondary F1
(medcap.metrics.concepts.evaluate_concepts). Baselines: most frequent concepts and kNN
retrieval on the fused model's embeddings.

    medcap synth bench-data --n-train 2000 --n-valid 400 --n-test 400 --size 128 --seed 0
    python bench/concept_ablation.py --data bench-data --out runs/ablation            # all heads
    python bench/concept_ablation.py --data bench-data --out runs/demo --heads medcsra # headline

Run it on an otherwise idle machine: the budget is wall-clock time, so a busy CPU means
fewer epochs and lower scores. Results: OUT/results.json and a Markdown table on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

HEADS = {"global": "global-only", "attention": "attention-only", "medcsra": "MedCSRA (fused)",
         "csra": "CSRA, 4 heads (Fang et al.)"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--heads", nargs="+", default=list(HEADS), choices=list(HEADS))
    ap.add_argument("--set", nargs="*", default=[], help="extra demo-config overrides KEY=VALUE for every head")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from medcap.config import parse_overrides
    from medcap.data.dataset import read_dataset
    from medcap.data.items import ImageFolderItems
    from medcap.inference.concepts import image_embeddings, predict_concepts
    from medcap.methods.baselines import fit_knn, fit_most_frequent, knn_concepts
    from medcap.metrics.concepts import evaluate_concepts
    from medcap.training.concepts import train_concepts

    ds = read_dataset(args.data)
    train, valid, test = ds.split("train"), ds.split("valid"), ds.split("test")
    gold = {i: test.concepts[i] for i in test.ids}
    manual = test.manual_concepts
    test_items = ImageFolderItems.from_split(test)
    results: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                                f"torch {torch.__version__}, {torch.get_num_threads()} threads",
                     "data": str(args.data), "n_train": len(train.ids), "overrides": args.set, "rows": {}}

    def score(pred):
        s = evaluate_concepts(gold, pred, manual)
        return {k: None if s[k] is None else round(s[k], 4) for k in ("primary_f1", "secondary_f1")}

    cuis, mf = fit_most_frequent(train.concepts, {i: valid.concepts[i] for i in valid.ids})
    results["rows"]["most-frequent"] = {**score({i: cuis for i in test.ids}), "k": mf["k"]}
    print(f"most-frequent (k={mf['k']}): {results['rows']['most-frequent']}", flush=True)

    for head in args.heads:
        t = time.monotonic()
        overrides = {"head": head, **parse_overrides(args.set)}
        run = train_concepts("demo", args.data, args.out / head, overrides=overrides,
                             log=lambda m: print(m, file=sys.stderr, flush=True))
        train_s = time.monotonic() - t
        preds = predict_concepts(run.best_dir, test_items)
        row = {**score({i: [c for c, _ in preds[i]] for i in test.ids}), "valid_f1": round(run.best_score, 4),
               "epochs": run.epochs_run, "best_epoch": run.best_epoch, "stop": run.stop_reason,
               "train_minutes": round(train_s / 60, 2)}
        results["rows"][HEADS[head]] = row
        print(f"{HEADS[head]}: {row}", flush=True)

    embed_from = args.out / ("medcsra" if "medcsra" in args.heads else args.heads[0]) / "model"
    emb = {s.name: image_embeddings(embed_from, ImageFolderItems.from_split(s), batch_size=64)
           for s in (train, valid, test)}
    train_lists = [train.concepts[i] for i in emb["train"][0]]
    knn = fit_knn(emb["train"][1], train_lists, emb["valid"][1], emb["valid"][0], valid.concepts)
    test_lists = knn_concepts(emb["train"][1], train_lists, emb["test"][1], knn["k"], knn["vote"])
    pred = dict(zip(emb["test"][0], test_lists, strict=True))
    results["rows"][f"kNN retrieval ({embed_from.parent.name} embeddings)"] = {**score(pred), "k": knn["k"],
                                                                               "vote": knn["vote"]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")

    print(f"\n{results['machine']}\n")
    print("| method | test primary F1 | test secondary F1 | valid F1 | epochs (best) | train min |")
    print("|---|---|---|---|---|---|")
    for name, r in results["rows"].items():
        ep = f"{r['epochs']} ({r['best_epoch']})" if "epochs" in r else ""
        print(f"| {name} | {r['primary_f1']} | {r['secondary_f1']} | {r.get('valid_f1', '')} | {ep} "
              f"| {r.get('train_minutes', '')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
