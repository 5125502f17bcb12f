"""Decision thresholds chosen on validation by the OFFICIAL per-image F1 (REFERENCE §4).

The paper sweeps one global threshold from 0.05 to 0.55 in steps of 0.05 and picks the best
on validation (0.35 won, REFERENCE §1); the authors' code scored that sweep with micro-F1 and
made users pass the threshold by hand (REFERENCE §2). Here every choice is scored with
``medcap.metrics.concepts.mean_per_image_f1`` and saved in the model folder
(``thresholds.json``), so prediction applies it by itself.

Options, all decided on validation:
- ``grid``: "paper" (0.05..0.55 step 0.05) or "fine" (0.01..0.95 step 0.01);
- ``never_empty``: predict the top-1 concept when nothing passes (an empty prediction scores
  0 on every image with gold concepts); "auto" keeps it only if it scores higher;
- ``per_concept``: a threshold per concept by coordinate ascent on the per-image F1,
  guarded against overfitting rare concepts: only concepts with at least ``min_positives``
  validation positives get one, each is shrunk toward the global threshold by
  n / (n + shrinkage), and the whole per-concept set is kept only if it beats the global
  threshold on held-out halves of the validation set (2-fold).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import MedcapError
from .metrics.concepts import mean_per_image_f1

GRIDS = {
    "paper": np.round(np.arange(0.05, 0.55 + 1e-9, 0.05), 2),
    "fine": np.round(np.arange(0.01, 0.95 + 1e-9, 0.01), 2),
}
NEVER_EMPTY = {"auto": (False, True), "on": (True,), "off": (False,)}  # top-1 fallback options tried


@dataclass
class Thresholds:
    """Global threshold, optional per-concept overrides (column -> threshold), top-1 fallback."""
    global_threshold: float = 0.5
    per_concept: dict[int, float] = field(default_factory=dict)
    never_empty: bool = False

    def vector(self, num_classes: int) -> np.ndarray:
        t = np.full(num_classes, self.global_threshold, dtype=np.float64)
        for k, v in self.per_concept.items():
            t[k] = v
        return t

    def apply(self, probs: np.ndarray) -> np.ndarray:
        """[N, K] probabilities -> [N, K] bool predictions."""
        probs = np.asarray(probs)
        pred = probs >= self.vector(probs.shape[1])[None, :]
        if self.never_empty and probs.shape[1]:
            empty = ~pred.any(axis=1)
            pred[empty, probs[empty].argmax(axis=1)] = True
        return pred

    def to_json(self, cuis: list[str]) -> dict:
        return {"global": self.global_threshold, "never_empty": self.never_empty,
                "per_concept": {cuis[k]: v for k, v in sorted(self.per_concept.items())}}

    @classmethod
    def from_json(cls, data: dict, cuis: list[str]) -> "Thresholds":
        col = {c: i for i, c in enumerate(cuis)}
        per_concept = data.get("per_concept", {})
        if not isinstance(per_concept, dict):
            raise MedcapError("thresholds.json: per_concept must map CUIs to thresholds")
        unknown = [c for c in per_concept if c not in col]
        if unknown:
            raise MedcapError(f"thresholds.json names concepts the model does not have: {', '.join(unknown[:5])}")
        never_empty = data.get("never_empty", False)
        if not isinstance(never_empty, bool):
            raise MedcapError(f"thresholds.json: never_empty must be true or false, got {never_empty!r}")
        return cls(_probability("global", data.get("global", 0.5)),
                   {col[c]: _probability(c, v) for c, v in per_concept.items()}, never_empty)


def _probability(key: str, value) -> float:
    """A threshold is a probability: a finite number in [0, 1] (NaN, 7 or -1 would predict silently)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= float(value) <= 1.0
    if not ok:  # NaN fails the comparison too
        raise MedcapError(f"thresholds.json: threshold {key} must be a number in [0, 1], got {value!r}")
    return float(value)


def _gold_sizes(gold: np.ndarray, gold_sizes) -> np.ndarray:
    return gold.sum(axis=1).astype(np.int64) if gold_sizes is None else np.asarray(gold_sizes, dtype=np.int64)


def sweep_global(probs, gold, gold_sizes=None, grid="paper", never_empty="auto") -> tuple[Thresholds, float, list]:
    """Best global threshold (and top-1 fallback) -> (Thresholds, F1, [(t, never_empty, F1), ...])."""
    grid_values = GRIDS[grid] if isinstance(grid, str) else np.asarray(grid)
    fallback = NEVER_EMPTY[never_empty]
    table = []
    for t in grid_values:
        for ne in fallback:
            th = Thresholds(float(t), {}, ne)
            table.append((float(t), ne, mean_per_image_f1(th.apply(probs), gold, gold_sizes)))
    # Ties go to the earliest entry: the lower threshold, then no fallback.
    t, ne, f1 = max(table, key=lambda r: (np.nan_to_num(r[2], nan=-1.0)))
    return Thresholds(t, {}, ne), f1, table


def _fit_per_concept(probs, gold, n_gold, global_threshold, grid_values, min_positives, shrinkage) -> dict[int, float]:
    """Coordinate ascent, one pass over the concepts with enough positives (most frequent first).

    Only column k changes while concept k is tuned, so the per-image counts (true positives,
    predicted) are updated in place and only the rows whose prediction can change are rescored.
    The top-1 fallback is left out here and decided afterwards on the fitted thresholds.
    """
    pred = probs >= global_threshold
    tp = (pred & gold).sum(axis=1).astype(np.float64)
    n_pred = pred.sum(axis=1).astype(np.float64)
    scored = n_gold > 0
    positives = gold[scored].sum(axis=0)
    out: dict[int, float] = {}
    for k in np.argsort(-positives, kind="stable"):
        n_pos = int(positives[k])
        if n_pos < min_positives:
            break
        rows = np.flatnonzero(scored & ((probs[:, k] >= grid_values.min()) | pred[:, k]))
        if rows.size == 0:
            continue
        p, g, old = probs[rows, k], gold[rows, k], pred[rows, k]
        d = (p[None, :] >= grid_values[:, None]) - old[None, :].astype(np.float64)  # [G, R] change of column k
        f1_rows = 2 * (tp[rows] + d * g) / (n_pred[rows] + d + n_gold[rows])
        best = grid_values[int(np.argmax(f1_rows.sum(axis=1)))]
        # Shrink toward the global threshold: a concept seen n times moves n/(n+shrinkage) of the way.
        t = float(global_threshold + (best - global_threshold) * n_pos / (n_pos + shrinkage))
        dk = (p >= t) - old.astype(np.float64)
        tp[rows] += dk * g
        n_pred[rows] += dk
        pred[rows, k] = p >= t
        if abs(t - global_threshold) > 1e-9:
            out[int(k)] = round(t, 4)
    return out


def select_thresholds(probs, gold, gold_sizes=None, grid: str = "paper", never_empty: str = "auto",
                      per_concept: bool = False, min_positives: int = 10, shrinkage: float = 10.0,
                      seed: int = 0) -> tuple[Thresholds, dict]:
    """Choose thresholds on validation -> (Thresholds, report with the F1 of each stage)."""
    probs = np.asarray(probs, dtype=np.float64)
    gold = np.asarray(gold, dtype=bool)
    if grid not in GRIDS:
        raise MedcapError(f"threshold_grid: expected one of {', '.join(GRIDS)}, got {grid!r}")
    if never_empty not in NEVER_EMPTY:
        raise MedcapError(f"never_empty: expected auto, on or off, got {never_empty!r}")
    n_gold = _gold_sizes(gold, gold_sizes)
    base, f1, table = sweep_global(probs, gold, n_gold, grid, never_empty)
    report = {"global_threshold": base.global_threshold, "never_empty": base.never_empty,
              "f1_global": f1, "sweep": [{"threshold": t, "never_empty": ne, "f1": s} for t, ne, s in table]}
    if not per_concept:
        report["f1"] = f1
        return base, report
    grid_values = GRIDS[grid]

    # Guard: per-concept thresholds must beat the global one on data they were not fitted on.
    rng = np.random.default_rng(seed)
    fold = rng.permutation(len(probs)) % 2 == 0
    held_out_gain = 0.0
    for fit, test in ((fold, ~fold), (~fold, fold)):
        th = _per_concept(probs[fit], gold[fit], n_gold[fit], base.global_threshold, grid_values,
                          min_positives, shrinkage, never_empty)
        held_out_gain += (mean_per_image_f1(th.apply(probs[test]), gold[test], n_gold[test])
                          - mean_per_image_f1(base.apply(probs[test]), gold[test], n_gold[test]))
    report["per_concept_held_out_gain"] = held_out_gain / 2
    if not held_out_gain > 0:
        report.update(f1=f1, per_concept_used=False)
        return base, report
    th = _per_concept(probs, gold, n_gold, base.global_threshold, grid_values, min_positives, shrinkage, never_empty)
    report.update(f1=mean_per_image_f1(th.apply(probs), gold, n_gold), per_concept_used=True,
                  n_per_concept=len(th.per_concept), never_empty=th.never_empty)
    return th, report


def _per_concept(probs, gold, n_gold, global_threshold, grid_values, min_positives, shrinkage, never_empty):
    fitted = _fit_per_concept(probs, gold, n_gold, global_threshold, grid_values, min_positives, shrinkage)
    candidates = [Thresholds(global_threshold, fitted, ne) for ne in NEVER_EMPTY[never_empty]]
    return max(candidates, key=lambda th: np.nan_to_num(mean_per_image_f1(th.apply(probs), gold, n_gold), nan=-1))
