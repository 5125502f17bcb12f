"""``medcap report``: one self-contained ``report.html`` plus its PNG files.

The report is a function of a plain results structure (:class:`ReportInputs`): a dataset
folder, model folders, submission files and score dicts, any of which may be missing. Each
section is built from what is there; a section whose inputs are missing is left out with a
note saying what to pass, so the same function serves ``medcap report`` on any trained
models and the end of ``medcap demo``.
"""
from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.provenance import is_synthetic
from ..errors import MedcapError
from ..fileio import atomic_dir, read_json
from ..metrics.tables import TASKS, score_columns, score_rows
from . import figures
from . import html as H


@dataclass
class ReportInputs:
    """Everything the report may show; every field is optional.

    ``scores`` maps a task ("concepts", "captions") to {method name: {metric: value}},
    models and baselines together (e.g. ``{"concepts": {"MedCSRA": {"primary_f1": 0.7},
    "Most frequent": {...}}}``). Scores of the submission files are computed when the
    dataset has gold files for ``split`` and they are not given.
    """

    data: Path | None = None               # dataset root (ImageCLEF layout)
    concept_model: Path | None = None      # ConceptDetector folder
    caption_model: Path | None = None      # Captioner folder
    concept_pred: Path | dict | None = None   # concept submission CSV on ``split`` (or its {ID: CUIs})
    caption_pred: Path | dict | None = None   # caption submission CSV on ``split`` (or its {ID: caption})
    split: str = "test"
    scores: dict[str, dict[str, dict]] = field(default_factory=dict)
    score_notes: list[str] = field(default_factory=list)   # e.g. which BERTScore model was used
    title: str = "medcap report"
    gallery_size: int = 8
    concept_model_name: str = "Concept model"
    caption_model_name: str = "Caption model"
    # The models of concept_model / caption_model when they are already in memory (medcap demo):
    # used as they are instead of being loaded from their folders.
    detector: Any = None
    captioner: Any = None
    num_workers: int | str = "auto"        # data-loader workers for the images the report predicts (--workers)


class MissingPiece(Exception):
    """A section cannot be built from the given inputs (reported as a note, not an error)."""


# ---------------------------------------------------------------------------------------
# Reading the inputs
# ---------------------------------------------------------------------------------------

@dataclass
class _Context:
    inputs: ReportInputs
    out: Path
    dataset: object | None = None         # medcap.data.ImageCLEFDataset
    dataset_error: str | None = None
    concept_pred: dict[str, list[str]] | None = None
    caption_pred: dict[str, str] | None = None
    notes: list[str] = field(default_factory=list)   # shown under "Left out of this report"

    def detector(self):
        """The concept model, loaded once (or the one given in memory)."""
        if self.inputs.detector is None:
            from ..inference.concepts import load_detector

            self.inputs = dataclasses.replace(self.inputs, detector=load_detector(self.inputs.concept_model))
        return self.inputs.detector

    @property
    def names(self) -> dict[str, str]:
        """CUI -> canonical name from the dataset's cui_mapping.csv ({} without a dataset)."""
        return dict(self.dataset.cui_names) if self.dataset is not None else {}

    def split(self):
        if self.dataset is None:
            raise MissingPiece(self.dataset_error or "no dataset given (--data)")
        try:
            return self.dataset.split(self.inputs.split)
        except MedcapError as e:
            raise MissingPiece(str(e)) from None


def _load(inputs: ReportInputs, out: Path) -> _Context:
    from ..inference.pipeline import model_folder

    inputs = dataclasses.replace(inputs, concept_model=model_folder(inputs.concept_model),
                                 caption_model=model_folder(inputs.caption_model))
    ctx = _Context(inputs, out)
    if inputs.data is not None:
        try:
            from ..data.dataset import read_dataset

            ctx.dataset = read_dataset(inputs.data)
        except MedcapError as e:
            ctx.dataset_error = f"the dataset could not be read: {e}"
    # Submission files are read by the official rules: a broken file is an error, not a note.
    if isinstance(inputs.concept_pred, dict):   # predictions in memory, as written to their submission
        ctx.concept_pred = inputs.concept_pred
    elif inputs.concept_pred is not None:
        from ..submission import read_concept_submission

        ctx.concept_pred = read_concept_submission(inputs.concept_pred)
    if isinstance(inputs.caption_pred, dict):
        ctx.caption_pred = inputs.caption_pred
    elif inputs.caption_pred is not None:
        from ..submission import read_caption_submission

        ctx.caption_pred = read_caption_submission(inputs.caption_pred)
    return ctx


def find_metrics_csv(model_dir: Path) -> Path | None:
    """The engine's metrics.csv: in the training folder, which holds the model folder (``out/model``)."""
    for candidate in (model_dir / "metrics.csv", model_dir.parent / "metrics.csv"):
        if candidate.is_file():
            return candidate
    return None


def read_metrics_csv(path: Path) -> list[dict[str, str]]:
    """Rows of an engine ``metrics.csv`` (one per epoch)."""
    with open(path, newline="", encoding="utf-8") as f:
        return [dict(r) for r in csv.DictReader(f)]


def read_thresholds(model_dir: Path) -> dict:
    """The concept model's ``thresholds.json`` (medcap.thresholds: global, never_empty, per_concept)."""
    path = Path(model_dir) / "thresholds.json"
    if not path.is_file():
        raise MissingPiece(f"{path} not found: the model folder has no thresholds")
    return read_json(path)  # damaged -> one line naming it


def saved_sweep(thresholds: Mapping) -> tuple[list[float], list[float]] | None:
    """(thresholds, F1) of the validation sweep the trainer stored in thresholds.json (None in
    folders from before it did): ``sweep`` is select_thresholds' list of ``{"threshold",
    "never_empty", "f1"}`` entries; the curve drawn is the model's fallback setting's.
    """
    sweep = thresholds.get("sweep")
    if not sweep:
        return None
    fallback = bool(thresholds.get("never_empty", False))
    rows = [e for e in sweep if bool(e.get("never_empty", fallback)) == fallback]
    return [float(e["threshold"]) for e in rows], [float(e["f1"]) for e in rows]


def sweep_on_validation(model, split, thresholds: Mapping,
                        num_workers: int | str = "auto") -> tuple[list[float], list[float]]:
    """Re-run the trainer's global threshold sweep on ``split`` (the validation split).

    Same function and settings as training (medcap.thresholds.sweep_global, the model's grid
    and top-1 fallback), so the chosen threshold sits at the curve's maximum.
    """
    import numpy as np

    from ..data.items import ImageFolderItems
    from ..inference.concepts import load_detector, predict_probabilities
    from ..thresholds import sweep_global

    model = load_detector(model)   # a detector folder, or the detector itself

    if split.concepts is None:
        raise MissingPiece(f"the {split.name} split has no concepts file")
    ids = split.labelled_ids("concepts")
    if not ids:
        raise MissingPiece(f"no labelled images in the {split.name} split")
    _, probs = predict_probabilities(model, ImageFolderItems.from_split(split, ids), num_workers=num_workers)
    gold, _ = model.vocabulary.encode_many(split.concepts[i] for i in ids)
    # |G| counts CUIs outside the vocabulary too: they are missed, as in the official score.
    sizes = np.array([len({c.strip().upper() for c in split.concepts[i] if c.strip()}) for i in ids])
    fallback = "on" if thresholds.get("never_empty") else "off"
    grid = thresholds.get("grid", "paper")
    _, _, table = sweep_global(probs, gold > 0, sizes, grid=grid if grid in ("paper", "fine") else "paper",
                               never_empty=fallback)
    return [t for t, _, _ in table], [f for _, _, f in table]


# ---------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------

def _given_or_computed_scores(ctx: _Context) -> tuple[dict, list[str]]:
    """The given scores; for a task without them whose submission file is given, that file's
    scores with the cheap baselines beside it (given scores, e.g. from medcap demo, stay as they are)."""
    from .scoring import caption_score_notes, caption_scores, concept_scores

    scores = {task: dict(methods) for task, methods in ctx.inputs.scores.items()}
    notes = list(ctx.inputs.score_notes)
    split = None
    try:
        split = ctx.split()
    except MissingPiece:
        pass
    if split is not None and ctx.concept_pred is not None and split.concepts is not None \
            and not scores.get("concepts"):
        computed = {ctx.inputs.concept_model_name: ctx.concept_pred, **_concept_baselines(ctx, split)}
        scores["concepts"] = {name: concept_scores(split.concepts, pred, split.manual_concepts, allow_missing=True)
                              for name, pred in computed.items()}
    if split is not None and ctx.caption_pred is not None and split.captions is not None \
            and not scores.get("captions"):
        computed = {ctx.inputs.caption_model_name: ctx.caption_pred, **_caption_baselines(ctx, split)}
        scores["captions"] = {name: caption_scores(split.captions, pred, ctx.names, allow_missing=True)
                              for name, pred in computed.items()}
        notes = notes or caption_score_notes()
    return scores, notes


def _scores_section(ctx: _Context) -> str:
    scores, notes = _given_or_computed_scores(ctx)
    if not any(scores.values()):
        raise MissingPiece("no scores: give submission files (--concept-pred/--caption-pred) for a split "
                           "with gold files, or scores from `medcap demo`")
    parts = []
    for task, (known, title, main) in TASKS.items():
        methods = scores.get(task) or {}
        if not methods:
            parts.append(H.note(f"{title}: no scores."))
            continue
        keys = score_columns(task, methods)
        headers, rows = score_rows(task, methods)
        best_key = main if main in keys else (keys[0] if keys else None)
        best = []
        if best_key is not None:
            values = [m.get(best_key) for m in methods.values()]
            top = max((v for v in values if v is not None), default=None)
            best = [i for i, v in enumerate(values) if v is not None and v == top]
        block = H.table(headers, rows, highlight=best, cls="scores")
        if best_key is not None and len(methods) > 1:
            png = figures.plot_score_bars(methods, best_key, ctx.out / f"scores_{task}.png",
                                          title=f"{known[best_key]} ({ctx.inputs.split} split)")
            block = f'<div class="grid2"><div>{block}</div>' \
                    f'{H.figure(png, f"{title}: {known[best_key]}, models and baselines")}</div>'
        parts.append(f"<h3>{H.esc(title)}</h3>{block}")
    intro = (f"Official ImageCLEFmedical measures (2025 and 2026 alike) on the <b>{H.esc(ctx.inputs.split)}</b> split "
             "(per-image F1 for concepts; official text preprocessing for captions). "
             "The best method per table is in bold; baselines are there so that the numbers mean something.")
    return H.section("scores", "Scores", "".join(parts) + "".join(H.note(n) for n in notes), intro)


def _training_split(ctx: _Context, scored, labels: str):
    """The train split when it has ``labels`` ("concepts"/"captions") and is not the scored split."""
    if ctx.dataset is None or "train" not in ctx.dataset:
        return None
    train = ctx.dataset.split("train")
    return train if train is not scored and getattr(train, labels) else None


def _concept_baselines(ctx: _Context, split) -> dict[str, dict[str, list[str]]]:
    """The most-frequent-concepts baseline (k chosen on validation, else the median count)."""
    from ..methods.baselines import most_frequent_baseline

    train = _training_split(ctx, split, "concepts")
    if train is None:
        return {}
    valid = ctx.dataset.split("valid") if "valid" in ctx.dataset else None
    cuis, _ = most_frequent_baseline(train, valid if valid is not split else None)
    return {"Most frequent concepts (baseline)": {i: list(cuis) for i in split.concepts}}


def _caption_baselines(ctx: _Context, split) -> dict[str, dict[str, str]]:
    """The constant-caption baseline: the training caption closest to all others (ROUGE-1)."""
    from ..methods.baselines import constant_caption_baseline

    train = _training_split(ctx, split, "captions")
    if train is None:
        return {}
    return {"Constant caption (baseline)": constant_caption_baseline(train, list(split.captions))[0]}


def _dataset_section(ctx: _Context) -> str:
    if ctx.dataset is None:
        raise MissingPiece(ctx.dataset_error or "no dataset given (--data)")
    from ..data.stats import dataset_stats

    stats_dir = ctx.out / "dataset"
    summary = dataset_stats(ctx.dataset, stats_dir)
    titles = {
        "caption_lengths": "Caption length distribution (the paper's Figure 2)",
        "concepts_per_image": "Concepts per image (the paper's Figure 3)",
        "concept_frequency": "Concept frequency: the long tail",
    }
    files = summary.get("figures") or {p.stem: p.name for p in sorted(stats_dir.glob("*.png"))}
    figs = [H.figure(stats_dir / name, titles.get(key, key.replace("_", " "))) for key, name in files.items()]
    if not figs:
        raise MissingPiece("the dataset has no labels to describe")
    split_name = summary.get("figure_split") or "train"
    intro = (f"Dataset <code>{H.esc(ctx.inputs.data)}</code> (ImageCLEFmedical edition: "
             f"{H.esc(summary.get('edition', 'unknown'))}); figures from the {H.esc(split_name)} split "
             f"(<code>dataset/stats.json</code> has every number).")
    return H.section("dataset", "Dataset", _stats_table(summary) + f'<div class="grid2">{"".join(figs)}</div>', intro)


def _stats_table(summary: Mapping) -> str:
    """Images, concepts and caption lengths per split, from the dataset_stats summary."""
    rows = []
    for name, info in (summary.get("splits") or {}).items():
        concepts = info.get("concepts") or {}
        per_image = concepts.get("per_image") or {}
        words = (info.get("captions") or {}).get("words") or {}
        rows.append([name, info.get("images"), concepts.get("distinct_cuis"), per_image.get("mean"),
                     per_image.get("max"), words.get("mean"), words.get("max")])
    if not rows:
        return ""
    return H.table(["Split", "Images", "Distinct CUIs", "Concepts / image", "max", "Caption words", "max"], rows,
                   digits=2)


def _training_section(ctx: _Context) -> str:
    parts, missing = [], []
    for label, folder in (("Concept detector", ctx.inputs.concept_model), ("Captioner", ctx.inputs.caption_model)):
        if folder is None:
            missing.append(f"{label}: no model folder given")
            continue
        path = find_metrics_csv(Path(folder))
        if path is None:
            missing.append(f"{label}: no metrics.csv in {folder} or the training folder above it")
            continue
        rows = read_metrics_csv(path)
        if not rows:
            missing.append(f"{label}: {path} is empty")
            continue
        png = figures.plot_training_curves(rows, ctx.out / f"training_{label.split()[0].lower()}.png",
                                           title=f"{label}: training curves")
        parts.append(H.figure(png, f"{label}: losses and validation metrics per epoch ({path.name})"))
    if not parts:
        raise MissingPiece("; ".join(missing))
    return H.section("training", "Training curves", "".join(parts) + "".join(H.note(m) for m in missing))


def _threshold_section(ctx: _Context) -> str:
    if ctx.inputs.concept_model is None:
        raise MissingPiece("no concept model given (--concepts)")
    model_dir = Path(ctx.inputs.concept_model)
    thresholds = read_thresholds(model_dir)
    sweep = saved_sweep(thresholds)
    where = "the sweep saved with the model"
    if sweep is None:
        if ctx.dataset is None or "valid" not in ctx.dataset:
            raise MissingPiece("thresholds.json holds no sweep; give the dataset (--data) with its validation "
                               "split to recompute it")
        sweep = sweep_on_validation(ctx.detector(), ctx.dataset.split("valid"), thresholds, ctx.inputs.num_workers)
        where = "recomputed on the validation split with the saved model"
    chosen = thresholds.get("global")
    png = figures.plot_threshold_curve(*sweep, ctx.out / "threshold_f1.png",
                                       chosen=None if chosen is None else float(chosen))
    intro = ("The decision threshold is picked on the validation split by the official per-image F1 "
             f"(the paper swept 0.05 to 0.55 in steps of 0.05 and kept 0.35). Curve: {where}.")
    if chosen is not None:
        intro += f" This model uses <b>{float(chosen):.2f}</b>"
        per_concept = thresholds.get("per_concept") or {}
        if per_concept:
            intro += f", with its own threshold for {len(per_concept)} concepts"
        if thresholds.get("never_empty"):
            intro += ", and predicts the most probable concept when none passes"
        intro += "."
    return H.section("thresholds", "Decision threshold", H.figure(png, "Threshold vs validation F1"), intro)


def _per_concept_section(ctx: _Context) -> str:
    split = ctx.split()
    if ctx.concept_pred is None:
        raise MissingPiece("no concept submission (--concept-pred)")
    if split.concepts is None:
        raise MissingPiece(f"the {ctx.inputs.split} split has no gold concepts")
    from ..metrics.concepts import score_concepts

    scored = score_concepts(split.concepts, ctx.concept_pred, split.manual_concepts, allow_missing=True)
    rows = scored.per_concept_rows(ctx.names)
    png = figures.plot_concept_f1(rows, ctx.out / "per_concept_f1.png",
                                  title=f"Per-concept F1 on the {ctx.inputs.split} split")
    top = [r for r in rows if r["support"] > 0][:15]
    table = H.table(["CUI", "Concept", "Support", "Predicted", "Precision", "Recall", "F1"],
                    [[r["CUI"], r["name"], r["support"], r["predicted"], r["precision"], r["recall"], r["f1"]]
                     for r in top], numeric_from=2)
    intro = ("F1 of each concept over all test images (not the official per-image measure, but the one that "
             "shows which concepts the model has learnt). Concepts with no gold image are left out.")
    return H.section("per-concept", "Per-concept F1",
                     H.figure(png, "Best and worst concepts by F1") + "<h3>Most frequent concepts</h3>" + table,
                     intro)


def _gallery_section(ctx: _Context) -> str:
    from . import gallery

    split = ctx.split()
    cards = gallery.build_cards(ctx, split, ctx.inputs.gallery_size)
    if not cards:
        raise MissingPiece(f"no images in the {ctx.inputs.split} split")
    legend = ('<div class="legend">Concepts: ' + H.chips([("correct", "hit"), ("missed", "miss"),
                                                         ("false positive", "extra")])
              + " Heatmap: where the model found the highest-scoring predicted concept.</div>")
    return H.section("gallery", f"Gallery ({ctx.inputs.split} images)",
                     legend + f'<div class="gallery">{"".join(cards)}</div>')


SECTIONS: list[tuple[str, str, Callable[[_Context], str]]] = [
    ("scores", "Scores", _scores_section),
    ("dataset", "Dataset", _dataset_section),
    ("training", "Training", _training_section),
    ("thresholds", "Threshold", _threshold_section),
    ("per-concept", "Per-concept F1", _per_concept_section),
    ("gallery", "Gallery", _gallery_section),
]


# ---------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------

def build_report(inputs: ReportInputs, out: str | Path, *, progress: bool = False) -> Path:
    """Write ``out/report.html`` and its PNG files; return the HTML path.

    ``out`` is replaced as a whole, atomically: a failure leaves the previous report.
    """
    out = Path(out)
    with atomic_dir(out) as tmp:
        ctx = _load(inputs, tmp)
        bodies, nav, left_out = [], [], []
        steps = SECTIONS
        if progress:
            from ..progress import bar

            steps = bar(SECTIONS, desc="report", unit="section")  # on a terminal only
        for section_id, label, build in steps:
            try:
                bodies.append(build(ctx))
                nav.append((section_id, label))
            except MissingPiece as e:
                left_out.append(f"{label}: {e}")
            except MedcapError as e:
                left_out.append(f"{label}: could not be built: {e}")
        left_out += ctx.notes
        if left_out:
            items = "".join(f"<li>{H.esc(t)}</li>" for t in left_out)
            bodies.append(H.section("left-out", "Left out of this report", f'<ul class="notes">{items}</ul>'))
            nav.append(("left-out", "Left out"))
        page = H.render_page(
            title=inputs.title,
            subtitle=_subtitle(inputs),
            banner=_banner(inputs),
            nav=nav,
            body="".join(bodies),
            footer=("Made by medcap. Research software: not for clinical use. All images are embedded; "
                    "the PNG files beside this page are the same figures."),
        )
        (tmp / "report.html").write_text(page, encoding="utf-8")
    return out / "report.html"


def _subtitle(inputs: ReportInputs) -> str:
    from .. import __version__

    bits = [f"generated {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}", f"medcap {__version__}"]
    if inputs.data is not None:
        bits.append(f"data <code>{H.esc(Path(inputs.data).name)}</code>, {H.esc(inputs.split)} split")
    for label, p in (("concepts", inputs.concept_model), ("captions", inputs.caption_model)):
        if p is not None:  # the last two parts: "runs/concepts/model" -> "concepts/model"
            bits.append(f"{label} <code>{H.esc('/'.join(Path(p).parts[-2:]))}</code>")
    return " · ".join(bits)


def _banner(inputs: ReportInputs) -> str:
    """One banner when the data or a model's training data (its provenance.json) is synthetic."""
    from ..models.card import learnt_from_synthetic, read_provenance

    text = is_synthetic(inputs.data)
    trained = [label for label, folder in (("concept detector", inputs.concept_model),
                                           ("captioner", inputs.caption_model))
               if folder is not None and learnt_from_synthetic(read_provenance(folder))]
    if text is None and not trained:
        return ""
    models = f"The {' and '.join(trained)} learnt from synthetic data. " if trained else ""
    return (f'<div class="banner"><strong>Synthetic data.</strong> {H.esc(text or "")} {models}'
            "Scores on it say that the pipeline works, not how it does on real ImageCLEFmedical images.</div>")
