"""The report's plots: matplotlib figures saved as PNG files beside ``report.html``.

Every function takes plain data (lists, dicts) and a path, draws one figure and returns the
path, so the plots can be made and tested without models. Matplotlib is imported inside the
functions with the Agg backend: the report is written on servers without a display.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

# One palette for every plot of the report (colour-blind safe, Okabe-Ito).
BLUE, ORANGE, GREEN, RED, PURPLE, GREY = "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#7f7f7f"
PALETTE = [BLUE, ORANGE, GREEN, RED, PURPLE, "#56B4E9", "#F0E442", GREY]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "figure.dpi": 110,
        "savefig.dpi": 110,
        "font.size": 9.5,
        "axes.titlesize": 10.5,
        "axes.titleweight": "bold",
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "legend.frameon": False,
    })
    return plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _finite(values: Sequence) -> list[float]:
    out = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            f = math.nan
        out.append(f)
    return out


def plot_training_curves(rows: Sequence[Mapping[str, object]], path: Path, *, title: str,
                         x_key: str = "epoch") -> Path:
    """Losses (left panel) and validation metrics (right panel) against ``x_key``.

    ``rows`` are the engine's metrics.csv rows. A column whose name holds "loss" goes left,
    every other numeric column (F1, ROUGE, learning rate excluded) right; columns that are
    empty everywhere are left out.
    """
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    keys = [k for k in (rows[0].keys() if rows else []) if k != x_key]
    xs = _finite([r.get(x_key) for r in rows]) if rows and x_key in rows[0] else list(range(1, len(rows) + 1))
    skip = {"step", "global_step", "time", "seconds", "elapsed", "elapsed_s", "epoch_time", "wall_s", "threshold",
            "never_empty"}
    loss_keys = [k for k in keys if "loss" in k.lower()]
    metric_keys = [k for k in keys if k not in loss_keys and k.lower() not in skip
                   and not k.lower().startswith(("lr", "learning_rate"))]
    fig, axes = plt.subplots(1, 2, figsize=(9.2, 3.2))
    for ax, group, label in ((axes[0], loss_keys, "loss"), (axes[1], metric_keys, "validation metric")):
        drawn = 0
        for i, k in enumerate(group):
            ys = _finite([r.get(k) for r in rows])
            pts = [(x, y) for x, y in zip(xs, ys, strict=True) if not (math.isnan(x) or math.isnan(y))]
            if not pts:
                continue
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, linewidth=1.6,
                    color=PALETTE[i % len(PALETTE)], label=k)
            drawn += 1
        ax.set_xlabel(x_key)
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        finite_x = [x for x in xs if not math.isnan(x)]
        if finite_x and min(finite_x) == max(finite_x):  # one epoch: a readable axis around it
            ax.set_xlim(finite_x[0] - 1, finite_x[0] + 1)
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, f"no {label} logged", ha="center", va="center", transform=ax.transAxes, color=GREY)
    fig.suptitle(title, fontsize=10.5, fontweight="bold")
    return _save(fig, path)


def plot_threshold_curve(thresholds: Sequence[float], f1: Sequence[float], path: Path, *,
                         chosen: float | None = None, title: str = "Decision threshold vs validation F1") -> Path:
    """F1 of every threshold of the validation sweep, the chosen one marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.2))
    pts = sorted(zip(_finite(thresholds), _finite(f1), strict=True))
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, color=BLUE, linewidth=1.6)
    if chosen is not None:
        ax.axvline(chosen, color=RED, linestyle="--", linewidth=1.2, label=f"chosen {chosen:.2f}")
        ax.legend(loc="upper right")
    ax.set_xlabel("threshold")
    ax.set_ylabel("per-image F1 (validation)")
    ax.set_title(title)
    return _save(fig, path)


def plot_concept_f1(rows: Sequence[Mapping[str, object]], path: Path, *, n: int = 12,
                    title: str = "Per-concept F1 on the test split") -> Path:
    """Bar charts of the ``n`` best and ``n`` worst concepts (with gold support) by F1.

    ``rows`` are :meth:`ConceptScores.per_concept_rows` dicts (CUI, name, support, f1).
    """
    plt = _pyplot()
    rows = [r for r in rows if int(r.get("support", 0) or 0) > 0]
    ranked = sorted(rows, key=lambda r: (-float(r["f1"]), -int(r["support"]), str(r["CUI"])))
    best = ranked[:n]
    worst = [r for r in reversed(ranked) if r not in best][:n]
    height = 0.26 * max(len(best), len(worst), 3) + 1.0
    fig, axes = plt.subplots(1, 2, figsize=(10.5, height))
    for ax, group, colour, label in ((axes[0], best, GREEN, f"best {len(best)}"),
                                     (axes[1], worst, RED, f"worst {len(worst)}")):
        labels = [_concept_label(r) for r in group][::-1]
        values = [float(r["f1"]) for r in group][::-1]
        ax.barh(range(len(values)), values, color=colour, alpha=0.85)
        ax.set_yticks(range(len(values)), labels, fontsize=8)
        ax.set_xlim(0, 1.0)
        ax.set_xlabel("F1")
        ax.set_title(label)
        ax.grid(axis="y", visible=False)
        for i, (v, r) in enumerate(zip(values, group[::-1], strict=True)):
            ax.text(min(v + 0.02, 0.82), i, f"{v:.2f}  (n={int(r['support'])})", va="center", fontsize=7.5)
    fig.suptitle(title, fontsize=10.5, fontweight="bold")
    return _save(fig, path)


def _concept_label(row: Mapping[str, object], width: int = 28) -> str:
    name = str(row.get("name") or "")
    if len(name) > width:
        name = name[: width - 1] + "…"
    return f"{name} ({row['CUI']})" if name else str(row["CUI"])


def plot_score_bars(scores: Mapping[str, Mapping[str, float | None]], metric: str, path: Path, *,
                    title: str) -> Path:
    """One horizontal bar per method for ``metric`` (models and baselines side by side)."""
    plt = _pyplot()
    items = [(name, s.get(metric)) for name, s in scores.items() if s.get(metric) is not None]
    fig, ax = plt.subplots(figsize=(6.4, 0.42 * max(len(items), 2) + 0.9))
    names = [i[0] for i in items][::-1]
    values = [float(i[1]) for i in items][::-1]
    ax.barh(range(len(values)), values, color=[PALETTE[i % len(PALETTE)] for i in range(len(values))][::-1])
    ax.set_yticks(range(len(values)), names)
    ax.set_xlim(0, max([1.0] + values))
    ax.set_xlabel(metric)
    ax.set_title(title)
    ax.grid(axis="y", visible=False)
    for i, v in enumerate(values):
        ax.text(v + 0.01, i, f"{v:.3f}", va="center", fontsize=8)
    return _save(fig, path)
