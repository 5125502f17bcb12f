"""Concept detection scores, exactly as the ImageCLEFmedical 2025 evaluator computes them.

The organisers' evaluator (REFERENCE §4) loops over images, builds the union of predicted and
gold CUIs, and calls ``sklearn.metrics.f1_score`` once per image. For sets that is
``2 |P & G| / (|P| + |G|)``, so everything here is computed at once over all images:

- CUIs are stripped and upper-cased on both sides (the evaluator strips when reading
  and upper-cases when scoring); duplicates inside a row count once (it works on sets);
- an image whose gold set is empty is left out of the mean (REFERENCE §4);
- the secondary score filters both sides to :data:`SECONDARY_CUIS` and scores against
  the manual gold file; images whose filtered gold set is empty are left out, whatever
  was predicted for them.

One quirk of the organisers' code is reproduced on request only (``empty_gold=``): it
reads a gold row ``ID,`` as the one-element set ``{""}``, not as an empty set, so such an
image is *not* left out of the primary mean: it scores 1 when the submission row is
``ID,`` too and 0 otherwise. The documented rule (left out) is the default; every result
also carries ``primary_f1_organisers_code``, the number their code prints, and
``n_empty_gold`` says whether the two can differ at all (they are equal when no gold row
is empty, as in the official 2025 data).

Two levels of API:

- :func:`per_image_f1_matrix` / :func:`mean_per_image_f1` work on [N, K] multi-hot
  matrices (dense bool or scipy.sparse) over one vocabulary: early stopping and
  threshold sweeps call them many times;
- :func:`evaluate_concepts` works on ``{ID: [CUI, ...]}`` dicts (what the CSV readers
  return) and adds the secondary score, a per-image table and a per-concept table.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain

import numpy as np

from ..data.csvio import normalize_cui  # the evaluator's: strip (reading), upper-case (scoring)
from ..errors import MedcapError

# REFERENCE §4: the 15 curated modality / body-region CUIs of the secondary score.
# REFERENCE §4: the 15 CUIs of the official secondary score, in the evaluator's order within
# each group: 7 imaging modalities and 8 body regions (a figure mostly shows one of each).
MODALITY_CUIS: tuple[str, ...] = (
    "C0002978",  # angiography
    "C0040405",  # X-ray computed tomography
    "C0024485",  # magnetic resonance imaging
    "C0032743",  # positron emission tomography
    "C0041618",  # ultrasonography
    "C1306645",  # plain X-ray
    "C0920367",  # optical coherence tomography
)
REGION_CUIS: tuple[str, ...] = (
    "C1140618",  # upper extremity
    "C0037949",  # spine
    "C0030797",  # pelvis
    "C0023216",  # lower extremity
    "C0037303",  # skull
    "C0817096",  # chest
    "C0006141",  # breast
    "C0000726",  # abdomen
)
SECONDARY_CUIS: frozenset[str] = frozenset(MODALITY_CUIS + REGION_CUIS)

EMPTY_GOLD_MODES = ("skip", "organisers-code")


# ---------------------------------------------------------------------------------------
# Matrix form: [N images, K concepts] over one vocabulary
# ---------------------------------------------------------------------------------------

def _row_counts(m) -> np.ndarray:
    """Number of True entries per row of a dense or sparse [N, K] matrix."""
    import scipy.sparse as sp

    if sp.issparse(m):
        m = sp.csr_matrix(m)
        m.eliminate_zeros()
        return np.asarray(m.getnnz(axis=1), dtype=np.int64)
    return np.count_nonzero(np.asarray(m), axis=1).astype(np.int64)


def _row_intersections(pred, gold) -> np.ndarray:
    import scipy.sparse as sp

    if sp.issparse(pred) or sp.issparse(gold):
        p = sp.csr_matrix(pred, dtype=bool)
        g = sp.csr_matrix(gold, dtype=bool)
        both = p.multiply(g)  # elementwise AND of two boolean matrices
        return _row_counts(both)
    both = np.logical_and(np.asarray(pred, dtype=bool), np.asarray(gold, dtype=bool))
    return np.count_nonzero(both, axis=1).astype(np.int64)


def per_image_f1_matrix(pred, gold, gold_sizes: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """Official per-image F1 = 2|P & G| / (|P| + |G|) for every row at once (REFERENCE §4).

    ``pred`` and ``gold`` are [N, K] bool (or 0/1) arrays or scipy.sparse matrices over the
    same vocabulary. ``gold_sizes`` optionally gives |G| per image when some gold CUIs lie
    outside the vocabulary (they can never be predicted, but they still count as missed).
    Images with an empty gold set get NaN: the official mean leaves them out.
    """
    if pred.shape != gold.shape or len(pred.shape) != 2:
        raise ValueError(f"pred and gold must be [N, K] matrices of the same shape, got {pred.shape} and {gold.shape}")
    tp = _row_intersections(pred, gold)
    n_pred = _row_counts(pred)
    if gold_sizes is None:
        n_gold = _row_counts(gold)
    else:
        n_gold = np.asarray(gold_sizes, dtype=np.int64)
        if n_gold.shape != (pred.shape[0],):
            raise ValueError(f"gold_sizes must have one entry per image ({pred.shape[0]}), got shape {n_gold.shape}")
        if np.any(n_gold < _row_counts(gold)):
            raise ValueError("gold_sizes is smaller than the number of gold concepts in the matrix for some image")
    return _f1_from_counts(tp, n_pred, n_gold)


def _f1_from_counts(tp: np.ndarray, n_pred: np.ndarray, n_gold: np.ndarray) -> np.ndarray:
    f1 = np.full(tp.shape, np.nan, dtype=np.float64)
    scored = n_gold > 0  # then |P| + |G| > 0 too: no division by zero
    f1[scored] = 2.0 * tp[scored] / (n_pred[scored] + n_gold[scored])
    return f1


def mean_per_image_f1(pred, gold, gold_sizes: Sequence[int] | np.ndarray | None = None) -> float:
    """The official primary score from matrices: mean per-image F1, empty-gold images left out.

    NaN when no image has a gold concept (the official evaluator would divide by zero).
    """
    return _nanmean(per_image_f1_matrix(pred, gold, gold_sizes))


def _nanmean(values: np.ndarray) -> float:
    kept = values[~np.isnan(values)]
    # math.fsum: the exact sum, so the result does not depend on summation order.
    return math.fsum(kept.tolist()) / kept.size if kept.size else float("nan")


# ---------------------------------------------------------------------------------------
# Dict form: {ID: [CUI, ...]} as read from the CSV files
# ---------------------------------------------------------------------------------------

@dataclass
class _Encoded:
    """Concept sets of N images as unique integer keys ``row * V + concept``."""

    keys: np.ndarray  # sorted unique int64 keys
    n_rows: int
    vocab_size: int

    def rows(self) -> np.ndarray:
        return self.keys // self.vocab_size

    def cols(self) -> np.ndarray:
        return self.keys % self.vocab_size

    def counts(self) -> np.ndarray:
        return np.bincount(self.rows(), minlength=self.n_rows).astype(np.int64)


class _Index(dict):
    """Maps raw CUI strings to column numbers, normalising each distinct string once.

    A dict from raw string to column: the lookups run at C speed; ``__missing__`` handles
    a string seen for the first time. Blank strings (from an empty CSV field) map to -1.
    """

    def __init__(self) -> None:
        super().__init__()
        self.column_of_cui: dict[str, int] = {}
        self.cuis: list[str] = []

    def __missing__(self, raw: str) -> int:
        cui = normalize_cui(raw)
        if not cui:
            col = -1
        else:
            col = self.column_of_cui.get(cui)
            if col is None:
                col = self.column_of_cui[cui] = len(self.cuis)
                self.cuis.append(cui)
        self[raw] = col
        return col

    def columns(self, ids: Sequence[str], sets: Mapping[str, Iterable[str]]) -> tuple[np.ndarray, np.ndarray]:
        """(row, column) of every CUI of every image, blanks dropped."""
        lists = [sets.get(image_id) or () for image_id in ids]
        lengths = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
        flat = list(chain.from_iterable(lists))
        cols = np.fromiter(map(self.__getitem__, flat), dtype=np.int64, count=len(flat))
        rows = np.repeat(np.arange(len(ids), dtype=np.int64), lengths)
        keep = cols >= 0
        return rows[keep], cols[keep]


def _encode(rows: np.ndarray, cols: np.ndarray, n_rows: int, vocab_size: int,
            keep: np.ndarray | None = None) -> _Encoded:
    if keep is not None:
        mask = keep[cols]
        rows, cols = rows[mask], cols[mask]
    keys = np.unique(rows * max(vocab_size, 1) + cols)  # unique: a set per image
    return _Encoded(keys, n_rows, max(vocab_size, 1))


def _check_ids(gold: Mapping, pred: Mapping, allow_missing: bool) -> None:
    extra = [i for i in pred if i not in gold]
    if extra:
        raise MedcapError(f"{len(extra)} predicted image IDs are not in the gold file, e.g. {extra[0]!r}")
    if not allow_missing:
        missing = [i for i in gold if i not in pred]
        if missing:
            raise MedcapError(f"{len(missing)} gold image IDs have no prediction, e.g. {missing[0]!r} "
                              "(the official evaluator needs every ID exactly once)")


@dataclass
class ConceptScores:
    """Everything :func:`evaluate_concepts` measured, as arrays (one entry per gold image)."""

    ids: list[str]
    cuis: list[str]              # column order of the per-concept arrays
    n_gold: np.ndarray
    n_pred: np.ndarray
    n_true_positive: np.ndarray
    f1: np.ndarray               # NaN where the gold set is empty (left out)
    secondary_f1: np.ndarray     # NaN where the filtered manual gold set is empty (left out)
    concept_gold: np.ndarray     # per CUI: images with it in gold
    concept_pred: np.ndarray     # per CUI: images with it predicted
    concept_true_positive: np.ndarray
    summary: dict
    gold_keys: np.ndarray = field(repr=False, default=None)  # encoded (image, concept) pairs
    pred_keys: np.ndarray = field(repr=False, default=None)

    def _cuis_per_image(self, keys: np.ndarray) -> list[list[str]]:
        v = max(len(self.cuis), 1)
        rows = keys // v
        bounds = np.searchsorted(rows, np.arange(len(self.ids) + 1))
        cols = (keys % v).tolist()
        return [sorted(self.cuis[c] for c in cols[bounds[i]:bounds[i + 1]]) for i in range(len(self.ids))]

    def per_image_rows(self) -> list[dict]:
        """One dict per image, for the per-image CSV (error analysis): counts, F1s, and the
        correct, missed and extra CUIs (';'-joined)."""
        correct = self._cuis_per_image(np.intersect1d(self.gold_keys, self.pred_keys, assume_unique=True))
        missed = self._cuis_per_image(np.setdiff1d(self.gold_keys, self.pred_keys, assume_unique=True))
        extra = self._cuis_per_image(np.setdiff1d(self.pred_keys, self.gold_keys, assume_unique=True))
        rows = []
        for i, image_id in enumerate(self.ids):
            rows.append({
                "ID": image_id,
                "f1": None if np.isnan(self.f1[i]) else float(self.f1[i]),
                "secondary_f1": None if np.isnan(self.secondary_f1[i]) else float(self.secondary_f1[i]),
                "n_gold": int(self.n_gold[i]),
                "n_pred": int(self.n_pred[i]),
                "n_correct": int(self.n_true_positive[i]),
                "correct": ";".join(correct[i]),
                "missed": ";".join(missed[i]),
                "extra": ";".join(extra[i]),
            })
        return rows

    def per_concept_rows(self, names: Mapping[str, str] | None = None) -> list[dict]:
        """Precision / recall / F1 of every CUI over the whole set, most frequent in gold first."""
        names = names or {}
        tp, g, p = self.concept_true_positive, self.concept_gold, self.concept_pred
        order = np.lexsort((np.asarray(self.cuis, dtype=object).astype(str), -g))
        rows = []
        for j in order:
            precision = tp[j] / p[j] if p[j] else 0.0
            recall = tp[j] / g[j] if g[j] else 0.0
            f1 = 2.0 * tp[j] / (p[j] + g[j]) if (p[j] + g[j]) else 0.0
            rows.append({
                "CUI": self.cuis[j],
                "name": names.get(self.cuis[j], ""),
                "support": int(g[j]),
                "predicted": int(p[j]),
                "correct": int(tp[j]),
                "precision": float(precision),
                "recall": float(recall),
                "f1": float(f1),
            })
        return rows


def _manual_gold(gold: Mapping, gold_manual: Mapping | None) -> tuple[Mapping, str]:
    """The gold of the secondary score and where it comes from; the same IDs as ``gold`` are required."""
    if gold_manual is None:
        return gold, "primary gold (no manual gold file given)"
    missing = [i for i in gold if i not in gold_manual]
    extra = [i for i in gold_manual if i not in gold]
    if missing or extra:
        example = (missing or extra)[0]
        raise MedcapError(
            f"the manual gold file and the gold file list different images ({len(missing)} missing, "
            f"{len(extra)} extra, e.g. {example!r}); the official evaluator needs the same IDs in both")
    return gold_manual, "manual"


def _secondary_f1(index: _Index, manual: tuple, pred: tuple, n: int) -> np.ndarray:
    """Per-image F1 with both sides filtered to the 15 CUIs, against the manual gold (REFERENCE §4)."""
    vocab = len(index.cuis)
    allowed = np.fromiter((c in SECONDARY_CUIS for c in index.cuis), dtype=bool, count=vocab)
    g2 = _encode(*manual, n, vocab, keep=allowed)
    p2 = _encode(*pred, n, vocab, keep=allowed)
    tp2 = np.bincount(np.intersect1d(g2.keys, p2.keys, assume_unique=True) // g2.vocab_size, minlength=n)
    return _f1_from_counts(tp2.astype(np.int64), p2.counts(), g2.counts())


def _organisers_code_f1(f1: np.ndarray, n_gold: np.ndarray, n_pred: np.ndarray) -> np.ndarray:
    """What the organisers' code scores when gold rows are empty: such an image counts,
    {""} vs {""} -> 1 when the prediction is empty too, else 0."""
    empty = n_gold == 0
    f1_code = f1.copy()
    f1_code[empty] = (n_pred[empty] == 0).astype(np.float64)
    return f1_code


def _nan_to_none(x: float) -> float | None:
    return None if math.isnan(x) else x


def score_concepts(
    gold: Mapping[str, Sequence[str]],
    pred: Mapping[str, Sequence[str]],
    gold_manual: Mapping[str, Sequence[str]] | None = None,
    *,
    allow_missing: bool = False,
    empty_gold: str = "skip",
) -> ConceptScores:
    """Score ``pred`` against ``gold`` (and ``gold_manual``) with every detail kept.

    ``allow_missing=True`` treats an image without a prediction as an empty prediction
    (the official evaluator refuses such a submission). ``empty_gold`` is ``"skip"`` (the
    documented rule, REFERENCE §4) or ``"organisers-code"`` (what their code does with ``ID,``
    gold rows: such an image counts, 1 if predicted empty, else 0); see the module notes.
    """
    if empty_gold not in EMPTY_GOLD_MODES:
        raise MedcapError(f"empty_gold must be one of {', '.join(EMPTY_GOLD_MODES)}, got {empty_gold!r}")
    _check_ids(gold, pred, allow_missing)
    ids = list(gold)
    n = len(ids)
    if n == 0:
        raise MedcapError("the gold file has no images")
    gold_manual, secondary_source = _manual_gold(gold, gold_manual)

    index = _Index()
    g_cols, p_cols, m_cols = (index.columns(ids, table) for table in (gold, pred, gold_manual))
    vocab = len(index.cuis)
    g, p = _encode(*g_cols, n, vocab), _encode(*p_cols, n, vocab)
    both = np.intersect1d(g.keys, p.keys, assume_unique=True)
    tp = np.bincount(both // g.vocab_size, minlength=n).astype(np.int64)
    n_gold, n_pred = g.counts(), p.counts()
    f1 = _f1_from_counts(tp, n_pred, n_gold)
    f1_secondary = _secondary_f1(index, m_cols, p_cols, n)
    f1_code = _organisers_code_f1(f1, n_gold, n_pred)
    primary_skip, primary_code = _nanmean(f1), _nanmean(f1_code)
    f1_reported = f1 if empty_gold == "skip" else f1_code

    concept_gold = np.bincount(g.cols(), minlength=vocab)
    concept_pred = np.bincount(p.cols(), minlength=vocab)
    concept_tp = np.bincount(both % g.vocab_size, minlength=vocab)
    summary = {
        "primary_f1": _nan_to_none(primary_skip if empty_gold == "skip" else primary_code),
        "secondary_f1": _nan_to_none(_nanmean(f1_secondary)),
        "n_images": n,
        "n_scored": int(np.count_nonzero(~np.isnan(f1_reported))),
        "n_scored_secondary": int(np.count_nonzero(~np.isnan(f1_secondary))),
        "n_empty_gold": int(np.count_nonzero(n_gold == 0)),
        "n_empty_pred": int(np.count_nonzero(n_pred == 0)),
        "empty_gold": empty_gold,
        "primary_f1_organisers_code": _nan_to_none(primary_code),
        "secondary_gold": secondary_source,
        "mean_gold_concepts": float(n_gold.mean()),
        "mean_pred_concepts": float(n_pred.mean()),
        "n_concepts_gold": int(np.count_nonzero(concept_gold)),
        "n_concepts_pred": int(np.count_nonzero(concept_pred)),
    }
    return ConceptScores(ids, index.cuis, n_gold, n_pred, tp, f1_reported, f1_secondary,
                         concept_gold, concept_pred, concept_tp, summary, g.keys, p.keys)


def evaluate_concepts(
    gold: Mapping[str, Sequence[str]],
    pred: Mapping[str, Sequence[str]],
    gold_manual: Mapping[str, Sequence[str]] | None = None,
    *,
    allow_missing: bool = False,
    empty_gold: str = "skip",
) -> dict:
    """Official primary and secondary F1 of ``pred`` against ``gold`` (REFERENCE §4).

    Returns a dict with ``primary_f1``, ``secondary_f1`` (against ``gold_manual``, or
    against ``gold`` itself when no manual file is given: ``secondary_gold`` says which),
    ``n_images`` (gold images), ``n_scored`` (images in the primary mean) and a few counts.
    Scores are ``None`` when no image could be scored. Use :func:`score_concepts` for the
    per-image and per-concept tables.
    """
    return score_concepts(gold, pred, gold_manual, allow_missing=allow_missing, empty_gold=empty_gold).summary
