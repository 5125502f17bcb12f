"""Concept-consistent retrieval's options side by side, replayed on finished `medcap demo` folders.

    .venv/bin/python bench/caption_candidates.py DEMO_OUT [DEMO_OUT ...]

For each folder (the ``--out`` of a ``medcap demo`` run), its concept ensemble (``runs/ensemble``)
embeds and labels the images of its SYNTHETIC dataset, then four variants of
``medcap.methods.consistent.consistent_retrieval_captions`` choose their options on the validation split
and caption the test split:

- candidates: the neighbours' full captions, or those and their leading sentences (``prefixes``);
- choice among the guarded options: by validation ROUGE-1 alone (``guard_weight`` 0), or by
  ROUGE-1 + approximate UMLS F1 (``guard_weight`` 1).

It prints each variant's test ROUGE-1 and approximate UMLS F1, and their margins over the
nearest-neighbour caption baseline (the same embeddings), measured in one run. No training;
seconds per folder.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

VARIANTS = {
    "full captions, ROUGE-1": {"prefixes": False, "guard_weight": 0.0},
    "full captions, ROUGE-1 + UMLS": {"prefixes": False, "guard_weight": 1.0},
    "+ leading sentences, ROUGE-1": {"prefixes": True, "guard_weight": 0.0},
    "+ leading sentences, ROUGE-1 + UMLS": {"prefixes": True, "guard_weight": 1.0},
}


def replay(folder: Path) -> dict:
    import numpy as np

    from medcap.data.dataset import read_dataset
    from medcap.data.items import ImageFolderItems
    from medcap.inference.concepts import load_detector, predict_concepts
    from medcap.methods.baselines import SplitEmbeddings, retrieval_caption_baseline
    from medcap.methods.consistent import consistent_retrieval_captions
    from medcap.metrics.scorers import ConceptNameMatcher
    from medcap.metrics.textscores import rouge1_scores

    ds = read_dataset(folder / "data")
    model = load_detector(folder / "runs" / "ensemble")
    emb = SplitEmbeddings(model, batch_size=64)
    valid, test = ds.split("valid"), ds.split("test")
    test_ids = test.image_ids()

    def detect(split, ids):
        rows = predict_concepts(model, ImageFolderItems.from_split(split, ids), batch_size=64)
        return {i: [c for c, _ in rows[i]] for i in ids}

    detected_valid, detected_test = detect(valid, valid.image_ids()), detect(test, test_ids)
    umls = ConceptNameMatcher(ds.cui_names)
    gold = [test.captions[i] for i in test_ids]

    def score(captions: dict) -> tuple[float, float]:
        pred = [captions[i] for i in test_ids]
        return float(np.mean(rouge1_scores(gold, pred))), float(np.mean(umls.scores(gold, pred)))

    nn = score(retrieval_caption_baseline(emb, ds.split("train"), test))
    rows = {"nearest-neighbour caption (baseline)": {"rouge1": nn[0], "umls_f1_approx": nn[1]}}
    for name, options in VARIANTS.items():
        captions, chosen = consistent_retrieval_captions(ds, model, detected_valid, detected_test, test_ids,
                                                         log=lambda m: None, embeddings=emb, **options)
        r, u = score(captions)
        rows[name] = {"rouge1": r, "umls_f1_approx": u, "rouge1_margin": r - nn[0], "umls_margin": u - nn[1],
                      "k": chosen["k"], "weight": chosen["weight"], "matcher": chosen["matcher"]}
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path, help="output folders of `medcap demo --out`")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    from medcap.errors import MedcapError

    results = {}
    for folder in args.folders:
        try:
            results[str(folder)] = rows = replay(folder)
        except MedcapError as e:   # not a finished `medcap demo --out` folder: one line, exit 2
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"\n{folder} (SYNTHETIC)")
        print(f"{'method':40s} {'ROUGE-1':>8s} {'UMLS':>7s} {'dR-1':>7s} {'dUMLS':>7s}  choice")
        for name, r in rows.items():
            extra = (f"{r['rouge1_margin']:+7.4f} {r['umls_margin']:+7.4f}  k={r['k']} w={r['weight']} {r['matcher']}"
                     if "k" in r else "")
            print(f"{name:40s} {r['rouge1']:8.4f} {r['umls_f1_approx']:7.4f} {extra}")
    print("\nBoth caption bars of issue 13 held (ROUGE-1 margin >= 0.02, UMLS not below the nearest neighbour):")
    for name in VARIANTS:
        held = sum(r[name]["rouge1_margin"] >= 0.02 and r[name]["umls_margin"] >= 0 for r in results.values())
        mean_r = sum(r[name]["rouge1_margin"] for r in results.values()) / len(results)
        mean_u = sum(r[name]["umls_margin"] for r in results.values()) / len(results)
        print(f"  {name:40s} {held}/{len(results)} folders; mean margins {mean_r:+.4f} ROUGE-1, {mean_u:+.4f} UMLS")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
