"""The long tail of rare concepts of the SYNTHETIC data (``medcap synth --n-concepts N``).

The 47 catalogue concepts are drawn into the images. Real ImageCLEF vocabularies are far
larger (2,479 CUIs in 2025, 2,646 in 2026; REFERENCE §5) and long-tailed: a few hundred
concepts are common, most occur in a handful of images. With ``n_concepts`` above the
catalogue size the generator adds ``n_concepts - 47`` rare concepts as extra labels, with
Zipf frequencies (the k-th rare concept is about k times rarer than the first), so that a
detector head, per-concept thresholds and the metrics meet a realistic vocabulary.

Like the organ labels of the catalogue, rare concepts are labels only: nothing is drawn and
the captions do not name them (a caption in ROCOv2 names far fewer concepts than it
carries). Their CUIs are ``C9000001``, ``C9000002``, ...: well-formed, but above the
highest UMLS CUI, so they never collide with a real concept; their names say they are
synthetic.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from . import catalog as cat

__all__ = ["MAX_N_CONCEPTS", "RARE_PER_IMAGE", "ZIPF_EXPONENT", "rare_concepts", "sample_rare"]

MAX_N_CONCEPTS = 20_000
ZIPF_EXPONENT = 1.0    # frequency of the k-th rare concept ~ 1 / k
RARE_PER_IMAGE = 1.2   # mean number of rare labels per image (Poisson), before the cap of 10 labels
_FIRST_RARE = 9_000_001


def rare_concepts(n_concepts: int) -> list[tuple[str, str]]:
    """(CUI, name) of the rare concepts added to the catalogue for ``n_concepts`` in all."""
    n = max(0, n_concepts - len(cat.CATALOG))
    return [(f"C{_FIRST_RARE + k}", f"Synthetic rare concept {k + 1}") for k in range(n)]


@lru_cache(maxsize=4)
def _cumulative(n_rare: int) -> np.ndarray:
    w = 1.0 / np.arange(1, n_rare + 1) ** ZIPF_EXPONENT
    return np.cumsum(w) / w.sum()


def sample_rare(rng: np.random.Generator, n_concepts: int, room: int) -> list[str]:
    """Rare CUIs for one image: a Poisson number (at most ``room``), distinct, Zipf-distributed."""
    n_rare = n_concepts - len(cat.CATALOG)
    if n_rare <= 0 or room <= 0:
        return []
    m = min(int(rng.poisson(RARE_PER_IMAGE)), room, n_rare)
    ranks: list[int] = []
    cum = _cumulative(n_rare)
    while len(ranks) < m:
        r = int(np.searchsorted(cum, rng.random(), side="right"))
        r = min(r, n_rare - 1)
        if r not in ranks:
            ranks.append(r)
    return [f"C{_FIRST_RARE + r}" for r in ranks]
