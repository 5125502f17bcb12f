"""The steps of ``medcap demo`` (:func:`medcap.demo.run.run_demo` runs them in order).

Each trained model is loaded once (:class:`medcap.demo.plan.DemoModels`) and handed to every
step; every method's test predictions are written once as an official submission
(:func:`write_submissions`) and scored from memory, as written.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from ..errors import MedcapError
from ..fileio import write_text_atomic
from .plan import (
    CONCEPT_MODEL_NAME,
    ENSEMBLE_NAME,
    RETRIEVAL_NAME,
    DemoModels,
    DemoPlan,
    caption_model_name,
    slug,
)


def _synth_config(plan: DemoPlan, seed: int):
    from ..synth import SynthConfig

    return SynthConfig(n_train=plan.n_train, n_valid=plan.n_valid, n_test=plan.n_test, size=plan.image_px,
                       seed=seed)


def prepare_data(out: Path, plan: DemoPlan, seed: int, log: Callable[[str], None] = print) -> Path:
    """The synthetic dataset in ``out/data``, regenerated only when its settings changed."""
    from ..synth import generate_dataset
    from ..synth.generate import GENERATOR_VERSION

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
    with tqdm(total=total, desc="synthetic images", unit="img", disable=None) as bar:  # None: on a terminal only
        generate_dataset(root, cfg, overwrite=True, progress=lambda done, _total: bar.update(done - bar.n))
    write_text_atomic(marker, settings)
    return root


def train_models(data: Path, runs: Path, plan: DemoPlan, seed: int = 0, log: Callable[[str], None] = print,
                 timings: dict | None = None, between: Callable[[], object] | None = None) -> DemoModels:
    """Train both models with the `demo` configs and ``plan``'s overrides (previous runs are
    replaced) and load each best model once.

    ``between`` is called after the concept detector and before the captioner (a step header).
    """
    from ..models.captioner import Captioner
    from ..models.concept_detector import ConceptDetector
    from ..training.captions import load_caption_config, train_captioner
    from ..training.concepts import train_concepts

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
    detector_dir, captioner_dir = concept_run / "model", caption_run / "model"
    return DemoModels(ConceptDetector.from_pretrained(detector_dir), Captioner.from_pretrained(captioner_dir),
                      detector_dir, captioner_dir)


def write_submissions(out: Path, concepts: dict[str, dict], captions: dict[str, dict], ids: list[str],
                      edition: int | None = None) -> tuple[dict, dict]:
    """Each method's test predictions as an official submission in ``out``
    (``concepts_<method>.csv``, ``captions_<method>.csv``, rows in ``ids``' order) -> the
    predictions as written (captions through :func:`medcap.submission.clean_caption`), to score."""
    from ..submission import clean_caption, write_caption_submission, write_concept_submission

    out.mkdir(parents=True, exist_ok=True)
    for name, preds in concepts.items():
        write_concept_submission(out / f"concepts_{slug(name)}.csv", preds, gold_ids=ids, edition=edition)
    for name, preds in captions.items():
        write_caption_submission(out / f"captions_{slug(name)}.csv", preds, gold_ids=ids, edition=edition)
    written = {name: {i: clean_caption(c) for i, c in preds.items()} for name, preds in captions.items()}
    return {name: {i: list(preds[i]) for i in ids} for name, preds in concepts.items()}, written


def predict_test(dataset, models: DemoModels, out: Path, log: Callable[[str], None] = print,
                 edition: int | None = None) -> tuple[Path, Path, dict, dict]:
    """Both official submission files for the test split, checked against every rule of
    ``edition`` -> (their paths, the concepts and the captions as written)."""
    from ..data.items import ImageFolderItems
    from ..inference.captions import predict_captions
    from ..inference.concepts import predict_concepts
    from ..submission import (
        clean_caption,
        validate_caption_submission,
        validate_concept_submission,
        write_concept_submission,
    )

    test = dataset.split("test")
    ids = test.image_ids()
    concepts_csv, captions_csv = out / "concepts.csv", out / "captions.csv"
    preds = predict_concepts(models.concept_model, ImageFolderItems.from_split(test, ids), batch_size=64,
                             progress=True)
    detected = {i: [c for c, _ in preds[i]] for i in ids}
    write_concept_submission(concepts_csv, detected, gold_ids=ids, edition=edition)
    captions = predict_captions(models.captioner, [test.image_paths[i] for i in ids], captions_csv, batch_size=32,
                                progress=True, concepts=detected,  # a demo-prompted captioner starts from them
                                order=ids, edition=edition)
    if list(captions) != ids:
        raise MedcapError("caption IDs differ from the test split's image IDs", file=captions_csv)
    for path, check in ((concepts_csv, validate_concept_submission), (captions_csv, validate_caption_submission)):
        problems = check(path, ids, edition=edition)
        if problems:
            raise MedcapError(f"the submission breaks {problems.total} official rules, first: "
                              f"{problems[0].format(path)}", file=path)
    log(f"submissions: {concepts_csv} and {captions_csv} ({len(ids)} test images, official rules checked)")
    return concepts_csv, captions_csv, detected, {i: clean_caption(captions[i]) for i in ids}


def baselines(dataset, models: DemoModels, plan: DemoPlan, out: Path, edition: int | None = None,
              embeddings=None) -> tuple[dict, dict]:
    """Baseline predictions on the test split, written to ``out`` -> ({name: concepts}, {name: captions}).

    Retrieval baselines use the trained concept detector's backbone as the image embedding
    (the usual kNN of ImageCLEF); k and the vote share are chosen on validation.
    """
    from ..methods import baselines as B

    train, valid, test = dataset.split("train"), dataset.split("valid"), dataset.split("test")
    test_ids = test.image_ids()
    embed = embeddings or B.SplitEmbeddings(models.detector, progress=True)
    concepts: dict[str, dict[str, list[str]]] = {}
    frequent, _ = B.most_frequent_baseline(train, valid)
    concepts["Most frequent concepts (baseline)"] = {i: list(frequent) for i in test_ids}
    knn, report = B.knn_baseline(embed, train, valid, test, ks=plan.knn_ks)
    concepts[f"kNN retrieval, k={report['k']} (baseline)"] = knn
    captions: dict[str, dict[str, str]] = {
        "Constant caption (baseline)": B.constant_caption_baseline(train, test_ids)[0],
        "Nearest-neighbour caption (baseline)": B.retrieval_caption_baseline(embed, train, test),
    }
    return write_submissions(out, concepts, captions, test_ids, edition)


def score_all(dataset, concept_preds: dict[str, dict], caption_preds: dict[str, dict]) -> tuple[dict, list[str]]:
    """Official scores of every method on the test split -> (scores, notes on how they were computed)."""
    from ..report.scoring import caption_score_notes, caption_scores, concept_scores

    test = dataset.split("test")
    scores = {
        "concepts": {name: concept_scores(test.concepts, preds, test.manual_concepts)
                     for name, preds in concept_preds.items()},
        "captions": {name: caption_scores(test.captions, preds, dataset.cui_names)
                     for name, preds in caption_preds.items()},
    }
    return scores, caption_score_notes()


def score_methods(dataset, models: DemoModels, plan: DemoPlan, submissions: Path, detected: dict, captions: dict,
                  edition: int | None = None, embeddings=None,
                  log: Callable[[str], None] = print) -> tuple[dict, list[str]]:
    """The models' test predictions (``detected``, ``captions``: as written to their submissions),
    the recipes and the baselines (written by ``edition``'s rules), scored -> (scores, notes).
    ``embeddings``: the run's shared baselines.SplitEmbeddings."""
    concept_preds = {CONCEPT_MODEL_NAME: detected}
    caption_preds = {caption_model_name(plan): captions}
    if models.ensemble is not None:  # the single detector beside the ensemble, and the retrieval recipe
        concept_preds, more = demo_recipes(dataset, models, detected, submissions / "recipes", log, embeddings,
                                           edition)
        caption_preds.update(more)
    base_concepts, base_captions = baselines(dataset, models, plan, submissions / "baselines", edition, embeddings)
    concept_preds.update(base_concepts)
    caption_preds.update(base_captions)
    return score_all(dataset, concept_preds, caption_preds)


def write_report(data: Path, models: DemoModels, plan: DemoPlan, detected: dict, captions: dict,
                 scores: dict, notes: list[str], out: Path) -> Path:
    """The HTML report of the demo's test split, with the scores computed here and the models in memory."""
    from ..report import ReportInputs, build_report

    return build_report(ReportInputs(
        data=data, concept_model=models.concept_dir, caption_model=models.captioner_dir,
        detector=models.concept_model, captioner=models.captioner,
        concept_pred=detected, caption_pred=captions, split="test", scores=scores, score_notes=notes,
        title="medcap demo report", gallery_size=plan.gallery,
        concept_model_name=CONCEPT_MODEL_NAME if models.ensemble is None else ENSEMBLE_NAME,
        caption_model_name=caption_model_name(plan)), out, progress=True)


def demo_ensemble(models: DemoModels, data: Path, dataset, out: Path, log: Callable[[str], None] = print,
                  timings: dict | None = None):
    """The detector + kNN ensemble, fitted on validation, saved in ``out`` and set as
    ``models.ensemble`` -> the shared :class:`medcap.methods.baselines.SplitEmbeddings` of the detector."""
    from ..methods.baselines import SplitEmbeddings
    from ..methods.ensemble import fit_ensemble

    start = time.monotonic()
    embeddings = SplitEmbeddings(models.detector, progress=True)
    ensemble, report = fit_ensemble([models.detector_dir], data, knn=True, dataset=dataset, log=log,
                                    embeddings=embeddings, members=[models.detector])
    ensemble.save_pretrained(out, [models.detector_dir], fit=report)
    models.ensemble, models.ensemble_dir = ensemble, out
    if timings is not None:
        timings["ensemble"] = time.monotonic() - start
    return embeddings


def demo_recipes(dataset, models: DemoModels, ensemble_test: dict, out: Path, log: Callable[[str], None] = print,
                 embeddings=None, edition: int | None = None) -> tuple[dict, dict]:
    """The single detector beside the ensemble (whose test predictions are ``ensemble_test``), and
    the concept-consistent retrieval captions -> (concept methods, caption methods); their
    submission files go to ``out``."""
    from ..data.items import ImageFolderItems
    from ..inference.concepts import predict_concepts
    from ..methods.consistent import consistent_retrieval_captions

    valid, test = dataset.split("valid"), dataset.split("test")
    test_ids, valid_ids = test.image_ids(), valid.image_ids()
    single = predict_concepts(models.detector, ImageFolderItems.from_split(test, test_ids), batch_size=64)
    detected_valid = {i: [c for c, _ in row] for i, row in predict_concepts(
        models.ensemble, ImageFolderItems.from_split(valid, valid_ids), batch_size=64).items()}
    detected_test = {i: list(ensemble_test[i]) for i in test_ids}
    captions, chosen = consistent_retrieval_captions(dataset, models.ensemble, detected_valid, detected_test,
                                                     test_ids, log, embeddings)
    concepts, written = write_submissions(out, {ENSEMBLE_NAME: detected_test},
                                          {f"{RETRIEVAL_NAME}, k={chosen['k']}": captions}, test_ids, edition)
    return {CONCEPT_MODEL_NAME: {i: [c for c, _ in single[i]] for i in test_ids}, **concepts}, written
