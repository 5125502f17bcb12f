"""The sizes of a ``medcap demo`` run (:class:`DemoPlan`: FULL and FAST), what it trains and
what it returns, and the names its methods get in the scores and the report."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..metrics.tables import score_table

CONCEPT_MODEL_NAME = "MedCSRA (demo config)"
ENSEMBLE_NAME = "MedCSRA + kNN ensemble"
RETRIEVAL_NAME = "Concept-consistent retrieval"


def slug(name: str) -> str:
    """A method's name as a file-name part ("kNN retrieval, k=5 (baseline)" -> "knn-retrieval-k-5")."""
    return "-".join("".join(ch if ch.isalnum() else " " for ch in name.lower().replace("(baseline)", "")).split())



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
    recipes: bool = True              # medcap.demo.steps: the ensemble gives the test concepts and prompts


# Sized for a 2-core machine: 2.2 + 1.2 minutes of training leave about 1 minute (idle machine)
# for data, the ensemble, predictions, baselines, BERTScore and the report. How each size was
# chosen, with the runs behind it: BENCHMARKS.md, "`medcap demo` end to end" (the demo plan's diary).
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
    """The demo's trained models, each loaded once and handed to every step, and their folders."""

    detector: Any                     # ConceptDetector, from detector_dir (runs/concepts/model)
    captioner: Any                    # Captioner, from captioner_dir (runs/captions/model)
    detector_dir: Path
    captioner_dir: Path
    ensemble: Any = None              # ConceptEnsemble (detector + kNN), saved in ensemble_dir, when built
    ensemble_dir: Path | None = None

    @property
    def concept_model(self):
        """What predicts the test split's concepts: the ensemble when there is one."""
        return self.ensemble if self.ensemble is not None else self.detector

    @property
    def concept_dir(self) -> Path:
        return self.ensemble_dir if self.ensemble is not None else self.detector_dir


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
            f"  report:      {shown(self.report)}",
            f"  submissions: {shown(self.concept_submission)}",
            f"               {shown(self.caption_submission)}",
            f"  scores:      {shown(self.scores_file)}",
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


def shown(path: Path) -> str:
    """``path`` relative to the working folder when it is inside it (shorter to read and copy)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
