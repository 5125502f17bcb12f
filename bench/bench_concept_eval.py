"""Concept evaluation speed: medcap's vectorised scores vs the official per-image loop.

    .venv/bin/python bench/bench_concept_eval.py                 # 20,000 images x 2,479 CUIs
    .venv/bin/python bench/bench_concept_eval.py --images 2000   # quicker

Generates a gold file, a manual gold file and a submission of that size (long-tailed
concept frequencies, 1-10 gold CUIs per image, noisy predictions of 0-15 CUIs), then times

- medcap: reading the gold files and the submission (with every validation rule), scoring
  (primary + secondary F1 with the per-image and per-concept arrays), and the matrix form
  used by threshold sweeps (``mean_per_image_f1`` on a dense [N, K] bool matrix);
- the organisers' approach on the same files: their per-image loop with
  ``sklearn.metrics.f1_score`` over the union of CUIs (primary and secondary),

checks that both give the same scores (to 1e-12) and prints the ratio.
"""
from __future__ import annotations

import argparse
import csv
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def _best_of(n: int, fn):
    best, result = float("inf"), None
    for _ in range(n):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def make_files(folder: Path, n_images: int, n_concepts: int, seed: int) -> tuple[Path, Path, Path]:
    from medcap.metrics.concepts import SECONDARY_CUIS
    from medcap.submission import write_concept_submission

    rng = np.random.default_rng(seed)
    secondary = sorted(SECONDARY_CUIS)
    others = [f"C{c:07d}" for c in rng.choice(9_000_000, n_concepts - len(secondary), replace=False)]
    cuis = np.array(secondary + others)
    popularity = 1.0 / np.arange(1, n_concepts + 1) ** 1.1  # long tail, the 15 curated CUIs at the head
    popularity /= popularity.sum()
    ids = [f"ImageCLEFmedical_Caption_2025_valid_{i}" for i in range(n_images)]
    gold, pred = {}, {}
    for image_id in ids:
        k = min(1 + rng.geometric(0.45) - 1, 10) or 1
        g = list(dict.fromkeys(rng.choice(n_concepts, k, p=popularity)))
        kept = [c for c in g if rng.random() < 0.7]
        extra = list(rng.choice(n_concepts, rng.integers(0, 6), p=popularity))
        gold[image_id] = [cuis[c] for c in g]
        pred[image_id] = list(dict.fromkeys(cuis[c] for c in kept + extra))[:15]
    secondary_set = set(secondary)
    gold_path, manual_path, sub_path = folder / "gold.csv", folder / "gold_manual.csv", folder / "submission.csv"
    with open(gold_path, "w", encoding="utf-8", newline="") as f:
        f.write("ID,CUIs\n" + "".join(f"{i},{';'.join(c)}\n" for i, c in gold.items()))
    with open(manual_path, "w", encoding="utf-8", newline="") as f:
        f.write("ID,CUIs\n" + "".join(f"{i},{';'.join(x for x in c if x in secondary_set)}\n" for i, c in gold.items()))
    write_concept_submission(sub_path, pred)
    return gold_path, manual_path, sub_path


def official_loop(gold_path: Path, manual_path: Path, sub_path: Path, limit: int = 0) -> tuple[float, float]:
    """The organisers' evaluator, restated: csv reading, then one sklearn f1_score per image
    (on the first ``limit`` images only when ``limit`` > 0)."""
    from sklearn.metrics import f1_score

    from medcap.metrics.concepts import SECONDARY_CUIS

    def load(path):
        out = {}
        with open(path, encoding="utf-8") as f:
            for row in csv.reader(f):
                if "ID" not in row[0]:
                    out[row[0]] = tuple(c.strip() for c in row[1].split(";")) if len(row) > 1 else ()
        return out

    gold, manual, pred = load(gold_path), load(manual_path), load(sub_path)
    if limit:
        keep = list(pred)[:limit]
        gold, manual, pred = ({i: d[i] for i in keep} for d in (gold, manual, pred))

    def score(truth, allowed=None):
        total, count = 0.0, len(truth)
        for image_id, p in pred.items():
            p = tuple(c.upper() for c in p)
            g = tuple(c.upper() for c in truth[image_id])
            if allowed is not None:
                p = tuple(c for c in p if c in allowed)
                g = tuple(c for c in g if c in allowed)
            if len(g) == 0:
                count -= 1
                continue
            union = sorted(set(g + p))
            total += f1_score([int(c in g) for c in union], [int(c in p) for c in union], average="binary")
        return total / count

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return score(gold), score(manual, SECONDARY_CUIS)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20_000)
    ap.add_argument("--concepts", type=int, default=2_479)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="medcap timings: best of this many runs")
    ap.add_argument("--official-images", type=int, default=0, help="time the official loop on the first N images "
                    "only and extrapolate linearly (it takes minutes on the full set); 0 = all images")
    args = ap.parse_args(argv)

    from medcap.data.csvio import read_concepts_csv
    from medcap.metrics.concepts import mean_per_image_f1, score_concepts
    from medcap.submission import check_concept_submission

    print(f"machine: {platform.machine()}, {platform.processor() or platform.platform()}, "
          f"Python {sys.version.split()[0]}, numpy {np.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        gold_path, manual_path, sub_path = make_files(Path(tmp), args.images, args.concepts, args.seed)
        print(f"generated {args.images} images x {args.concepts} concepts in {time.perf_counter() - t:.1f} s")

        t_gold, (gold, manual) = _best_of(args.repeats, lambda: (read_concepts_csv(gold_path),
                                                                 read_concepts_csv(manual_path)))
        t_sub, (pred, violations) = _best_of(args.repeats, lambda: check_concept_submission(sub_path, set(gold)))
        assert not violations, violations[:3]
        t_score, scores = _best_of(args.repeats, lambda: score_concepts(gold, pred, manual))
        s = scores.summary

        # the matrix form (threshold sweeps): dense [N, K] bool over one vocabulary
        col = {c: j for j, c in enumerate(sorted({c for v in gold.values() for c in v} |
                                                 {c for v in pred.values() for c in v}))}
        G = np.zeros((len(gold), len(col)), dtype=bool)
        P = np.zeros_like(G)
        for i, image_id in enumerate(gold):
            G[i, [col[c] for c in gold[image_id]]] = True
            P[i, [col[c] for c in pred[image_id]]] = True
        t_matrix, matrix_f1 = _best_of(args.repeats, lambda: mean_per_image_f1(P, G))

        n_ref = args.official_images if 0 < args.official_images < len(gold) else len(gold)
        t = time.perf_counter()
        ref_primary, ref_secondary = official_loop(gold_path, manual_path, sub_path, limit=n_ref)
        t_ref = (time.perf_counter() - t) * len(gold) / n_ref
        if n_ref < len(gold):  # compare with medcap on the same images
            keep = list(gold)[:n_ref]
            s = score_concepts(*({i: d[i] for i in keep} for d in (gold, pred, manual))).summary

    medcap_total = t_gold + t_sub + t_score
    print(f"\nprimary F1   medcap {s['primary_f1']:.12f}  official loop {ref_primary:.12f}  "
          f"|diff| {abs(s['primary_f1'] - ref_primary):.1e}")
    print(f"secondary F1 medcap {s['secondary_f1']:.12f}  official loop {ref_secondary:.12f}  "
          f"|diff| {abs(s['secondary_f1'] - ref_secondary):.1e}")
    if n_ref == len(gold):
        print(f"matrix form  {matrix_f1:.12f}  |diff| {abs(matrix_f1 - ref_primary):.1e}")
    else:
        print(f"(scores compared on the first {n_ref} images; the official loop's time is extrapolated)")
    print(f"\nmedcap, best of {args.repeats}:")
    print(f"  read gold + manual gold      {t_gold:8.3f} s")
    print(f"  read + validate submission   {t_sub:8.3f} s")
    print(f"  score (primary + secondary)  {t_score:8.3f} s")
    print(f"  total                        {medcap_total:8.3f} s")
    print(f"  matrix mean_per_image_f1     {t_matrix:8.3f} s  ({len(gold)} x {len(col)} dense bool)")
    extrapolated = f", extrapolated from {n_ref} images" if n_ref < len(gold) else ""
    print(f"official per-image sklearn loop (reading included{extrapolated}): {t_ref:.3f} s")
    print(f"ratio: official loop / medcap scoring = {t_ref / t_score:.0f}x; "
          f"/ medcap total = {t_ref / medcap_total:.0f}x")
    ok = abs(s["primary_f1"] - ref_primary) <= 1e-12 and abs(s["secondary_f1"] - ref_secondary) <= 1e-12
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
