"""``medcap data stats``: the paper's dataset figures and a JSON summary.

* Figure 2 of the paper: caption length distribution, in words, of the training split;
* Figure 3 of the paper: number of concepts per image, training split;
* the concept-frequency long tail: images per concept against the concept's rank (log
  scale); REFERENCE §5 gives the real 2025 numbers for comparison (2,479 CUIs, captions of
  about 21 words on average, 1-4 concepts for most images).

The figure functions take plain numbers and return a ``matplotlib.figure.Figure`` (no
pyplot, no global state) so the report can reuse them; :func:`dataset_stats` writes the
three PNGs and ``stats.json`` into a folder that appears complete or not at all.
"""
from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..errors import MedcapError
from ..fileio import atomic_dir
from .dataset import ImageCLEFDataset, Split, read_dataset

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["FIGURE_FILES", "STATS_FILE", "caption_length_figure", "caption_word_counts", "compute_stats",
           "concept_frequency_figure", "concepts_per_image_figure", "dataset_stats"]

STATS_FILE = "stats.json"
FIGURE_FILES = {
    "caption_lengths": "caption_lengths.png",        # paper Figure 2
    "concepts_per_image": "concepts_per_image.png",  # paper Figure 3
    "concept_frequency": "concept_frequency.png",    # long tail
}
_DPI = 120


def caption_word_counts(captions: dict[str, str]) -> list[int]:
    """Words per caption (whitespace-separated tokens), in dictionary order."""
    return [len(c.split()) for c in captions.values()]


def _summary(values: Sequence[int]) -> dict:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {
        "n": len(values),
        "mean": round(statistics.fmean(values), 3),
        "median": statistics.median(values),
        "std": round(statistics.pstdev(values), 3),
        "min": ordered[0],
        "max": ordered[-1],
        "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
    }


def _figure_split(dataset: ImageCLEFDataset) -> Split | None:
    """The training split when it has labels (the paper's figures use it), else the
    first split with labels."""
    order = ["train"] + [n for n in dataset.splits if n != "train"]
    for name in order:
        s = dataset.splits.get(name)
        if s is not None and s.has_labels:
            return s
    return None


def compute_stats(dataset: ImageCLEFDataset, top_n: int = 20) -> dict:
    """Counts and distributions of every split, plus the concept ranking of the figure split."""
    out: dict = {"dataset": str(dataset.root), "layout": dataset.layout, "edition": dataset.edition, "splits": {},
                 "cui_mapping_entries": len(dataset.cui_names) or None}
    all_cuis: set[str] = set()
    for name, s in dataset.splits.items():
        info: dict = {"images": len(s.ids)}
        if s.concepts is not None:
            per_image = [len(v) for v in s.concepts.values()]
            cuis = {c for v in s.concepts.values() for c in v}
            all_cuis |= cuis
            info["concepts"] = {
                "images_with_row": len(s.concepts),
                "distinct_cuis": len(cuis),
                "per_image": _summary(per_image),
                "per_image_histogram": {str(k): v for k, v in sorted(Counter(per_image).items())},
            }
        if s.captions is not None:
            info["captions"] = {"images_with_row": len(s.captions), "words": _summary(caption_word_counts(s.captions))}
        if s.manual_concepts is not None:
            info["manual_concepts"] = {"images_with_row": len(s.manual_concepts),
                                       "distinct_cuis": len({c for v in s.manual_concepts.values() for c in v})}
        out["splits"][name] = info
    out["distinct_cuis_all_splits"] = len(all_cuis)

    fs = _figure_split(dataset)
    out["figure_split"] = fs.name if fs else None
    if fs is not None and fs.concepts:
        freq = Counter(c for v in fs.concepts.values() for c in v)
        n_images = len(fs.concepts)
        ranked = freq.most_common()
        out["top_concepts"] = [
            {"cui": c, "name": dataset.cui_names.get(c), "images": n, "fraction": round(n / n_images, 4)}
            for c, n in ranked[:top_n]
        ]
        counts = [n for _, n in ranked]
        out["concept_frequency"] = {
            "concepts": len(counts),
            "seen_once": sum(1 for n in counts if n == 1),
            "seen_under_10_times": sum(1 for n in counts if n < 10),
            "top_10_share_of_labels": round(sum(counts[:10]) / max(1, sum(counts)), 4),
        }
    return out


# --------------------------------------------------------------------------- figures
def _new_figure(title: str, xlabel: str, ylabel: str):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def caption_length_figure(word_counts: Sequence[int], split: str = "train") -> "Figure":
    """Paper Figure 2: histogram of caption lengths in words (1-word bins, up to the 99th
    percentile; the longer tail is counted in the legend)."""
    if not word_counts:
        raise MedcapError("no captions to plot")
    ordered = sorted(word_counts)
    cap = max(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 10)
    shown = [w for w in word_counts if w <= cap]
    hidden = len(word_counts) - len(shown)
    fig, ax = _new_figure(f"Caption length ({split}, {len(word_counts):,} captions)", "words per caption",
                          "captions")
    ax.hist(shown, bins=range(0, cap + 2), color="#4C72B0", edgecolor="white", linewidth=0.3)
    mean, median = statistics.fmean(word_counts), statistics.median(word_counts)
    ax.axvline(mean, color="#C44E52", linestyle="--", label=f"mean {mean:.1f}")
    ax.axvline(median, color="#55A868", linestyle=":", label=f"median {median:g}")
    if hidden:
        ax.plot([], [], " ", label=f"{hidden:,} longer than {cap} (max {ordered[-1]}) not shown")
    ax.legend()
    return fig


def concepts_per_image_figure(per_image: Sequence[int], split: str = "train") -> "Figure":
    """Paper Figure 3: number of images with 0, 1, 2, ... concepts."""
    if not per_image:
        raise MedcapError("no concept rows to plot")
    hist = Counter(per_image)
    ks = list(range(0, max(hist) + 1))
    fig, ax = _new_figure(f"Concepts per image ({split}, {len(per_image):,} images)", "concepts per image", "images")
    ax.bar(ks, [hist.get(k, 0) for k in ks], color="#4C72B0")
    ax.set_xticks(ks if len(ks) <= 25 else ks[:: max(1, len(ks) // 20)])
    return fig


def concept_frequency_figure(counts: Sequence[int], split: str = "train") -> "Figure":
    """The long tail: images per concept against rank (most frequent first), log y-axis."""
    if not counts:
        raise MedcapError("no concepts to plot")
    ordered = sorted(counts, reverse=True)
    fig, ax = _new_figure(f"Concept frequency ({split}, {len(ordered):,} concepts)", "concept rank",
                          "images with the concept (log)")
    ax.plot(range(1, len(ordered) + 1), ordered, color="#4C72B0", marker="." if len(ordered) < 60 else None)
    ax.set_yscale("log")
    ax.set_xlim(0.5, len(ordered) + 0.5)
    return fig


def _save(fig: "Figure", path: Path) -> None:
    fig.savefig(path, dpi=_DPI)


# --------------------------------------------------------------------------- entry point
def dataset_stats(root_or_dataset: str | Path | ImageCLEFDataset, out: str | Path) -> dict:
    """Write ``stats.json`` and the three figures into ``out``; return the JSON summary.

    ``out`` appears complete or not at all. An existing ``out`` is replaced only when it is
    empty or a previous stats folder (it holds ``stats.json``): a wrong ``--out`` never
    deletes unrelated files.
    """
    dataset = root_or_dataset if isinstance(root_or_dataset, ImageCLEFDataset) else read_dataset(root_or_dataset)
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise MedcapError("output exists and is a file; expected a folder for the statistics", file=out)
        if any(out.iterdir()) and not (out / STATS_FILE).is_file():
            raise MedcapError(f"output folder exists and is not a previous stats folder (no {STATS_FILE}); "
                              "choose a new or empty folder", file=out)
    stats = compute_stats(dataset)
    fs = _figure_split(dataset)
    figures: dict[str, str] = {}
    with atomic_dir(out) as tmp:
        if fs is not None and fs.captions:
            _save(caption_length_figure(caption_word_counts(fs.captions), fs.name),
                  tmp / FIGURE_FILES["caption_lengths"])
            figures["caption_lengths"] = FIGURE_FILES["caption_lengths"]
        if fs is not None and fs.concepts:
            _save(concepts_per_image_figure([len(v) for v in fs.concepts.values()], fs.name),
                  tmp / FIGURE_FILES["concepts_per_image"])
            figures["concepts_per_image"] = FIGURE_FILES["concepts_per_image"]
            freq = Counter(c for v in fs.concepts.values() for c in v)
            if freq:
                _save(concept_frequency_figure(list(freq.values()), fs.name), tmp / FIGURE_FILES["concept_frequency"])
                figures["concept_frequency"] = FIGURE_FILES["concept_frequency"]
        stats["figures"] = figures
        (tmp / STATS_FILE).write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return stats
