"""The concept vocabulary: which CUIs a model predicts, in a fixed order.

Built from the *training* concepts, so every training CUI can be predicted (the authors'
code built classes from concept names and silently lost CUIs without a name, REFERENCE §2).
Saved as ``concepts.json`` in every concept model folder, so prediction uses exactly the
training order. :meth:`ConceptVocabulary.encode` returns the CUIs it does not know
instead of dropping them, so callers can report them.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping

from ..errors import MedcapError
from ..fileio import write_text_atomic
from .csvio import CUI_PATTERN, normalize_cui

__all__ = ["ConceptVocabulary", "VOCAB_FILE"]

VOCAB_FILE = "concepts.json"
_FORMAT = "medcap-concept-vocabulary"


class ConceptVocabulary:
    """CUIs in a fixed order (sorted), with canonical names and training counts.

    ``cuis``: the predictable CUIs; ``names``: CUI -> canonical name (where known);
    ``counts``: CUI -> number of training images carrying it.
    """

    def __init__(self, cuis: Iterable[str], names: Mapping[str, str] | None = None,
                 counts: Mapping[str, int] | None = None, min_count: int = 1):
        self.cuis: list[str] = [normalize_cui(c) for c in cuis]
        self.index: dict[str, int] = {}
        for i, c in enumerate(self.cuis):
            if c in self.index:
                raise MedcapError(f"CUI {c} appears twice in the vocabulary")
            self.index[c] = i
        names = names or {}
        self.names: dict[str, str] = {c: names[c] for c in self.cuis if c in names}
        self.counts: dict[str, int] = {c: int(counts[c]) for c in self.cuis if counts and c in counts}
        self.min_count = int(min_count)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_concepts(cls, concepts: Mapping[str, Iterable[str]], names: Mapping[str, str] | None = None,
                      min_count: int = 1) -> "ConceptVocabulary":
        """Every CUI occurring in at least ``min_count`` training images (default: all)."""
        if min_count < 1:
            raise MedcapError(f"min_count must be at least 1, got {min_count}")
        counts: Counter[str] = Counter()
        for cuis in concepts.values():
            counts.update({normalize_cui(c) for c in cuis})
        kept = sorted(c for c, n in counts.items() if n >= min_count)
        if not kept:
            raise MedcapError(f"no concept occurs in at least {min_count} training image(s); "
                              "the vocabulary would be empty")
        return cls(kept, names, counts, min_count)

    # ------------------------------------------------------------------ use
    def __len__(self) -> int:
        return len(self.cuis)

    def __contains__(self, cui: object) -> bool:
        return isinstance(cui, str) and normalize_cui(cui) in self.index

    def __iter__(self):
        return iter(self.cuis)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ConceptVocabulary) and self.cuis == other.cuis and self.names == other.names

    def __repr__(self) -> str:
        return f"ConceptVocabulary({len(self)} CUIs)"

    def name(self, cui: str) -> str:
        """The canonical name, or the CUI itself when no name is known."""
        c = normalize_cui(cui)
        return self.names.get(c, c)

    def encode(self, cuis: Iterable[str]):
        """CUIs -> (multi-hot float32 vector of length ``len(self)``, unknown CUIs in order)."""
        import numpy as np

        vec = np.zeros(len(self.cuis), dtype=np.float32)
        unknown: list[str] = []
        for c in cuis:
            c = normalize_cui(c)
            i = self.index.get(c)
            if i is None:
                if c and c not in unknown:
                    unknown.append(c)
            else:
                vec[i] = 1.0
        return vec, unknown

    def encode_many(self, lists: Iterable[Iterable[str]]):
        """Several CUI lists -> (matrix [N, K] float32, sorted unknown CUIs over all lists)."""
        import numpy as np

        rows, unknown = [], set()
        for cuis in lists:
            v, u = self.encode(cuis)
            rows.append(v)
            unknown.update(u)
        matrix = np.stack(rows) if rows else np.zeros((0, len(self.cuis)), dtype=np.float32)
        return matrix, sorted(unknown)

    def decode(self, indices) -> list[str]:
        """Indices (or a boolean mask of length ``len(self)``) -> CUIs, in that order."""
        import numpy as np

        arr = np.asarray(indices)
        if arr.dtype == bool:
            if arr.shape != (len(self.cuis),):
                raise ValueError(f"boolean mask of shape {arr.shape}; expected ({len(self.cuis)},)")
            arr = np.flatnonzero(arr)
        out = []
        for i in arr.reshape(-1).tolist():
            if not 0 <= int(i) < len(self.cuis):
                raise IndexError(f"concept index {i} out of range for {len(self.cuis)} concepts")
            out.append(self.cuis[int(i)])
        return out

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict:
        return {"format": _FORMAT, "version": 1, "min_count": self.min_count, "cuis": self.cuis,
                "names": self.names, "counts": self.counts}

    def save(self, folder: str | Path) -> Path:
        """Write ``concepts.json`` into ``folder`` (atomically); returns the file path."""
        path = Path(folder) / VOCAB_FILE
        write_text_atomic(path, json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n")
        return path

    @classmethod
    def load(cls, folder_or_file: str | Path) -> "ConceptVocabulary":
        """Read ``concepts.json`` from a model folder (or the file itself)."""
        p = Path(folder_or_file)
        path = p / VOCAB_FILE if p.is_dir() else p
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise MedcapError(f"no concept vocabulary ({VOCAB_FILE}); is this a concept model folder?",
                              file=path) from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            line = getattr(e, "lineno", None)
            raise MedcapError(f"not a valid JSON concept vocabulary: {getattr(e, 'msg', e)}", file=path,
                              line=line) from None
        if not isinstance(data, dict) or data.get("format") != _FORMAT or not isinstance(data.get("cuis"), list):
            raise MedcapError(f"not a concept vocabulary (expected format {_FORMAT!r} with a 'cuis' list)", file=path)
        bad = [c for c in data["cuis"] if not isinstance(c, str) or not CUI_PATTERN.fullmatch(normalize_cui(c))]
        if bad:
            raise MedcapError(f"malformed CUI {bad[0]!r} in the vocabulary", file=path)
        return cls(data["cuis"], data.get("names") or {}, data.get("counts") or {}, data.get("min_count", 1))
