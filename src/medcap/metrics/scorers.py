"""Optional caption scorers of the official 2025 evaluation (REFERENCE §4).

Each needs a package and a model that this project does not ship (some are licensed):
BLEURT-20-D12, AlignScore, MedCAT with a UMLS model pack, MedImageInsight. A scorer runs
only when both are present; otherwise it raises :class:`ScorerUnavailable` with a message
saying how to enable it, and the report shows "not available" (JSON null), never a zero.

:class:`ConceptNameMatcher` is the offline stand-in for the MedCAT UMLS concept F1:
dictionary matching of the ``cui_mapping.csv`` names in both captions. It is an
approximation and is reported under its own key (``umls_f1_approx``).

All functions take parallel lists ``gold`` and ``pred`` (one caption pair per image) and
return one score per pair, applying each metric's official preprocessing and empty rules.

:mod:`medcap.metrics.registry` wraps each of them (and ROUGE-1, BERTScore) in a scorer object.
"""
from __future__ import annotations

import base64
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

DEFAULT_BLEURT_MODEL = "lucadiliello/BLEURT-20-D12"
DEFAULT_ALIGNSCORE_MODEL = "roberta-large"  # the organisers' setting, with the AlignScore-base checkpoint

# Semantic types whose CUIs the organisers' MedCAT scorer keeps (the MEDCON type list).
MEDCON_TYPE_IDS = frozenset(f"T{n:03d}" for n in (
    1, 2, 4, 5, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 28,
    29, 30, 31, 32, 33, 34, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52,
    53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74,
    75, 77, 78, 79, 80, 81, 82, 83, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98,
    99, 100, 101, 102, 103, 104, 109, 114, 116, 120, 121, 122, 123, 125, 126, 127, 129, 130,
    131, 167, 168, 169, 170, 171, 184, 185, 190, 191, 192, 194, 195, 196, 197, 200, 201, 203,
    204,
))


class ScorerUnavailable(Exception):
    """A scorer's package or model is missing; the message says how to enable it."""


def both_empty(gold: str, pred: str) -> bool:
    """The official rule: a pair whose two captions are both empty scores 1 (REFERENCE §4)."""
    return len(gold) == 0 and len(pred) == 0


def pick_device(device: str | None) -> str:
    """``device``, or "cuda" when a GPU is there, else "cpu" (medcap.device, the one rule)."""
    from ..device import device_name

    return device_name(device)


def resolve_model(name: str | Path, *, download: bool = False, what: str = "model") -> str:
    """A local folder for ``name``: the folder itself, or its copy in the Hugging Face cache.

    Without ``download`` nothing goes to the network (a missing model would otherwise stall
    on connection time-outs): :class:`ScorerUnavailable` says how to get it.
    """
    if Path(name).is_dir():
        return str(name)
    if download:
        return str(name)
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(str(name), "config.json")
    if isinstance(cached, str):
        return str(Path(cached).parent)
    raise ScorerUnavailable(f"{what} {str(name)!r} is not on this machine: download it once (--download, with "
                            "network access) or pass a local folder")


def set_f1(gold: set[str], pred: set[str]) -> float:
    """F1 of two concept sets as the organisers' MedCAT scorer computes it (0 if either is empty)."""
    if not gold or not pred:
        return 0.0
    correct = len(gold & pred)
    return 2.0 * correct / (len(gold) + len(pred))


# ---------------------------------------------------------------------------------------
# BLEURT
# ---------------------------------------------------------------------------------------

def bleurt_scores(gold_pre: Sequence[str], pred_pre: Sequence[str], *, model: str = DEFAULT_BLEURT_MODEL,
                  batch_size: int = 8, device: str | None = None, download: bool = False) -> np.ndarray:
    """BLEURT raw outputs for (reference, candidate) pairs of *preprocessed* captions.

    As the organisers do: batches padded to the longest pair, truncated to 512 tokens, no
    empty-caption rule.
    """
    try:
        from bleurt_pytorch import BleurtForSequenceClassification, BleurtTokenizer
    except ImportError:
        raise ScorerUnavailable(
            "needs the bleurt-pytorch package: pip install git+https://github.com/lucadiliello/bleurt-pytorch.git "
            f"and the {DEFAULT_BLEURT_MODEL} model (downloaded once, or a local folder)") from None
    import torch

    folder = resolve_model(model, download=download, what="BLEURT model")
    try:
        tokenizer = BleurtTokenizer.from_pretrained(folder)
        net = BleurtForSequenceClassification.from_pretrained(folder)
    except OSError as e:
        raise ScorerUnavailable(f"BLEURT model {model!r} could not be loaded ({e}); download it once "
                                "(--download) or pass a local folder") from None
    dev = pick_device(device)
    net.to(dev).eval()
    out: list[float] = []
    for start in range(0, len(gold_pre), batch_size):
        refs = list(gold_pre[start:start + batch_size])
        cands = list(pred_pre[start:start + batch_size])
        with torch.inference_mode():
            inputs = tokenizer(refs, cands, padding="longest", truncation=True, max_length=512, return_tensors="pt")
            logits = net(**{k: v.to(dev) for k, v in inputs.items()}).logits
        out.extend(logits.flatten().float().cpu().tolist())
    return np.asarray(out, dtype=np.float64)


# ---------------------------------------------------------------------------------------
# AlignScore
# ---------------------------------------------------------------------------------------

def alignscore_scores(gold: Sequence[str], pred: Sequence[str], *, checkpoint: str | Path | None,
                      model: str = DEFAULT_ALIGNSCORE_MODEL, batch_size: int = 32,
                      device: str | None = None) -> np.ndarray:
    """AlignScore with context = gold caption, claim = prediction (raw captions, "nli_sp")."""
    try:
        from alignscore import AlignScore
    except ImportError:
        raise ScorerUnavailable("needs the alignscore package (pip install from https://github.com/yuh-zha/AlignScore) "
                                "and the AlignScore-base.ckpt checkpoint (--alignscore-ckpt)") from None
    if checkpoint is None or not Path(checkpoint).is_file():
        raise ScorerUnavailable("needs the AlignScore-base.ckpt checkpoint: pass its path (--alignscore-ckpt)")
    scorer = AlignScore(model=model, batch_size=batch_size, device=pick_device(device), ckpt_path=str(checkpoint),
                        evaluation_mode="nli_sp", verbose=False)
    scores = np.ones(len(gold), dtype=np.float64)  # both empty -> 1
    todo = [i for i in range(len(gold)) if not both_empty(gold[i], pred[i])]
    if todo:
        values = scorer.score(contexts=[gold[i] for i in todo], claims=[pred[i] for i in todo])
        scores[todo] = np.asarray(values, dtype=np.float64)
    return scores


# ---------------------------------------------------------------------------------------
# UMLS concept F1 with MedCAT (licensed model pack)
# ---------------------------------------------------------------------------------------

def medcat_scores(gold: Sequence[str], pred: Sequence[str], *, model_pack: str | Path | None,
                  type_ids: frozenset[str] = MEDCON_TYPE_IDS) -> np.ndarray:
    """UMLS concept F1: MedCAT entities of both raw captions, restricted to ``type_ids``."""
    try:
        from medcat.cat import CAT
    except ImportError:
        raise ScorerUnavailable("needs the medcat package (pip install medcat) and a UMLS model pack "
                                "(licensed, from https://uts.nlm.nih.gov; pass it with --medcat-model)") from None
    if model_pack is None or not Path(model_pack).exists():
        raise ScorerUnavailable("needs a MedCAT UMLS model pack (licensed; pass the .zip with --medcat-model)")
    cat = CAT.load_model_pack(str(model_pack))
    keep: set[str] = set()
    type_to_cuis = cat.cdb.addl_info["type_id2cuis"]
    for t in type_ids:
        keep.update(type_to_cuis.get(t, ()))
    cat.cdb.config.linking["filters"]["cuis"] = keep

    cache: dict[str, set[str]] = {}

    def cuis(text: str) -> set[str]:
        if text not in cache:
            cache[text] = {ent["cui"] for ent in cat.get_entities(text)["entities"].values()}
        return cache[text]

    return np.asarray([1.0 if both_empty(g, p) else set_f1(cuis(g), cuis(p)) for g, p in zip(gold, pred, strict=True)])


# ---------------------------------------------------------------------------------------
# Image-text similarity with MedImageInsight
# ---------------------------------------------------------------------------------------

def _image_file(images_dir: Path, image_id: str) -> Path:
    path = images_dir / f"{image_id}.jpg"  # the official layout
    if path.is_file():
        return path
    for candidate in sorted(images_dir.glob(f"{image_id}.*")):
        return candidate
    from ..errors import MedcapError

    raise MedcapError(f"no image for {image_id}", file=images_dir)


def load_medimageinsight(model_dir: str | Path | None, what: str = ""):
    """The MedImageInsight model of a checkout of its repository (``medimageinsightmodel.py``
    beside the ``2024.09.27`` model folder, ``--medimageinsight DIR``); ScorerUnavailable without one."""
    if model_dir is None or not (Path(model_dir) / "medimageinsightmodel.py").is_file():
        raise ScorerUnavailable(f"needs MedImageInsight{what}: a checkout of "
                                "https://huggingface.co/lion-ai/MedImageInsights with its 2024.09.27 model folder "
                                "(pass it with --medimageinsight DIR)")
    model_dir = Path(model_dir)
    sys.path.insert(0, str(model_dir))
    try:
        from medimageinsightmodel import MedImageInsight
    finally:
        sys.path.remove(str(model_dir))
    model = MedImageInsight(model_dir=str(model_dir / "2024.09.27"), vision_model_name="medimageinsigt-v1.0.0.pt",
                            language_model_name="language_model.pth")
    model.load_model()
    return model


SIMILARITY_EMPTY_MODES = ("organisers-code", "rules")


def similarity_empty_rule(gold: Sequence[str], pred: Sequence[str], *, edition: int,
                          mode: str = "organisers-code") -> dict[int, float]:
    """``{pair index: score}`` of the pairs whose similarity an empty-caption rule fixes; the
    other pairs are encoded (REFERENCE §10).

    ``organisers-code``: what each edition's code does. 2025: a pair of two empty captions
    scores 1, and an empty prediction beside a non-empty gold caption is encoded like any
    other; 2026: an empty prediction scores 0, even beside an empty gold caption.
    ``rules``: the written rules of both editions: two empty captions score 1, an empty
    prediction otherwise 0.
    """
    if mode not in SIMILARITY_EMPTY_MODES:
        from ..errors import MedcapError

        raise MedcapError(f"the similarity's empty-caption rule must be one of {', '.join(SIMILARITY_EMPTY_MODES)}, "
                          f"got {mode!r}")
    fixed: dict[int, float] = {}
    for i, (g, p) in enumerate(zip(gold, pred, strict=True)):
        if mode == "organisers-code" and edition <= 2025:
            if both_empty(g, p):
                fixed[i] = 1.0
        elif len(p) == 0:
            fixed[i] = 1.0 if mode == "rules" and len(g) == 0 else 0.0
    return fixed


def similarity_scores(ids: Sequence[str], pred: Sequence[str], *, images_dir: str | Path | None,
                      model_dir: str | Path | None, batch_size: int = 8,
                      fixed: Mapping[int, float] | None = None) -> np.ndarray:
    """2.5 * max(cos(image, caption), 0) with MedImageInsight.

    ``fixed``: ``{pair index: score}`` for the pairs an empty-caption rule scores without the
    model (:func:`similarity_empty_rule`); default: an empty caption scores 0.
    ``model_dir`` is a checkout of the MedImageInsights repository (its
    ``medimageinsightmodel.py`` beside the ``2024.09.27`` model folder).
    """
    if images_dir is None:
        raise ScorerUnavailable("needs the test images: pass --images DIR")
    if fixed is None:
        fixed = {i: 0.0 for i in range(len(ids)) if len(pred[i]) == 0}
    model = load_medimageinsight(model_dir)
    images_dir = Path(images_dir)
    scores = np.zeros(len(ids), dtype=np.float64)
    for i, value in fixed.items():
        scores[i] = value
    todo = [i for i in range(len(ids)) if i not in fixed]
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        images = [base64.encodebytes(_image_file(images_dir, ids[i]).read_bytes()).decode("utf-8") for i in chunk]
        emb = model.encode(images=images, texts=[pred[i] for i in chunk])
        v = np.asarray(emb["image_embeddings"], dtype=np.float64)
        c = np.asarray(emb["text_embeddings"], dtype=np.float64)
        cos = (v * c).sum(1) / (np.linalg.norm(v, axis=1) * np.linalg.norm(c, axis=1))
        scores[chunk] = 2.5 * np.maximum(cos, 0.0)
    return scores


# ---------------------------------------------------------------------------------------
# Offline approximation of the UMLS concept F1
# ---------------------------------------------------------------------------------------

_NON_WORD = re.compile(r"[^0-9a-z]+")


def _words(text: str) -> list[str]:
    return _NON_WORD.sub(" ", text.lower()).split()


class ConceptNameMatcher:
    """Finds ``cui_mapping.csv`` concept names in free text (longest match first).

    An approximation of MedCAT's UMLS extraction: exact word-sequence matches of the
    canonical names only (no synonyms, no disambiguation, no semantic-type filter).
    """

    def __init__(self, names: Mapping[str, str]):
        self.phrases: dict[tuple[str, ...], set[str]] = {}
        for cui, name in names.items():
            words = tuple(_words(name))
            if words:
                self.phrases.setdefault(words, set()).add(cui.strip().upper())
        self.max_words = max((len(p) for p in self.phrases), default=0)

    def longest_matches(self, words: Sequence[str]) -> Iterator[tuple[int, int, set[str]]]:
        """(first word, number of words, CUIs) of each known phrase in ``words``: left to right,
        the longest phrase first at each position, no overlaps."""
        i = 0
        while i < len(words):
            for n in range(min(self.max_words, len(words) - i), 0, -1):
                hit = self.phrases.get(tuple(words[i:i + n]))
                if hit:
                    yield i, n, hit
                    i += n
                    break
            else:
                i += 1

    def cuis(self, text: str) -> set[str]:
        return set().union(*(hit for _, _, hit in self.longest_matches(_words(text))))

    def scores(self, gold: Sequence[str], pred: Sequence[str]) -> np.ndarray:
        """Per pair: F1 of the matched CUI sets, with the official empty rules of the UMLS F1."""
        found: dict[str, set[str]] = {}   # each distinct text matched once (a gold caption recurs per candidate)

        def cuis(text: str) -> set[str]:
            if text not in found:
                found[text] = self.cuis(text)
            return found[text]

        return np.asarray([1.0 if both_empty(g, p) else set_f1(cuis(g), cuis(p))
                           for g, p in zip(gold, pred, strict=True)])
