"""The demo's combined recipes: what the winners combine, built from medcap's parts (REFERENCE §6).

- **Concept ensemble** ("MedCSRA + kNN ensemble"): the trained detector's probabilities fused
  with kNN retrieval's vote shares (medcap.ensemble); fusion, weights, k and thresholds
  chosen on the validation split.
- **Concept-consistent retrieval** captions: among the captions of the nearest training
  images (the detector's embeddings), the one that names the detected concepts and that the
  neighbourhood agrees on (medcap.concept_rerank.ConsistentRetrieval); k and the weight chosen
  on validation.

Both only read the train and validation splits to decide anything; the test split is only
predicted.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

ENSEMBLE_NAME = "MedCSRA + kNN ensemble"
RETRIEVAL_NAME = "Concept-consistent retrieval"


def split_embeddings(model, dataset, splits=("train", "valid", "test"), progress: bool = False) -> dict:
    """{split: (IDs, L2-normalised embeddings [N, C])} of every image of each split, computed once
    and shared by the kNN baselines, the ensemble and the retrieval captions."""
    from .baselines import image_embeddings
    from .data.items import ImageFolderItems

    out = {}
    for name in splits:
        split = dataset.split(name)
        ids = [i for i in split.ids if split.has_image(i)]
        out[name] = (ids, image_embeddings(model, ImageFolderItems.from_split(split, ids), progress=progress)[1])
    return out


def select_rows(embeddings: dict | None, name: str, ids):
    """The rows of ``embeddings[name]`` for ``ids`` in that order, or None when any is missing."""
    import numpy as np

    if not embeddings or name not in embeddings:
        return None
    pos = {i: n for n, i in enumerate(embeddings[name][0])}
    if any(i not in pos for i in ids):
        return None
    return np.asarray(embeddings[name][1])[[pos[i] for i in ids]]


def embeddings_of(embeddings: dict | None, name: str, model, split, ids):
    """The rows of the shared ``embeddings`` for ``ids``, else computed with ``model``."""
    from .baselines import image_embeddings
    from .data.items import ImageFolderItems

    rows = select_rows(embeddings, name, ids)
    return rows if rows is not None else image_embeddings(model, ImageFolderItems.from_split(split, ids),
                                                          progress=True)[1]


def build_concept_ensemble(detector: Path, data: Path, out: Path, dataset=None, log: Callable[[str], None] = print,
                           embeddings: dict | None = None) -> tuple[Path, dict]:
    """The detector + kNN ensemble in ``out`` -> (folder, fit report)."""
    from .ensemble import build_ensemble

    report = build_ensemble([detector], data, out, knn=True, dataset=dataset, log=log, embeddings=embeddings)
    return out, report


def _labelled(split, labels) -> list[str]:
    return [i for i in split.ids if split.has_image(i) and i in labels]


def consistent_retrieval_captions(dataset, embed_model, detected_valid: dict[str, list[str]],
                                  detected_test: dict[str, list[str]], test_ids: list[str],
                                  log: Callable[[str], None] = print,
                                  embeddings: dict | None = None) -> tuple[dict[str, str], dict]:
    """Concept-consistent retrieval captions for ``test_ids`` -> ({ID: caption}, choices on validation).

    ``embed_model``: a detector or ensemble (its backbone embeds the images); ``detected_*``:
    the concepts it predicts for the validation and test images.
    """
    from .baselines import image_embeddings
    from .concept_rerank import ConsistentRetrieval, concept_matcher
    from .data.items import ImageFolderItems
    from .errors import MedcapError

    train, valid, test = dataset.split("train"), dataset.split("valid"), dataset.split("test")
    if train.captions is None or valid.captions is None:
        raise MedcapError("concept-consistent retrieval needs training and validation captions")
    train_ids = _labelled(train, train.captions)
    valid_ids = [i for i in _labelled(valid, valid.captions) if i in detected_valid]
    emb = {}
    for name, split, ids in (("train", train, train_ids), ("valid", valid, valid_ids), ("test", test, test_ids)):
        emb[name] = select_rows(embeddings, name, ids)
        if emb[name] is None:
            emb[name] = image_embeddings(embed_model, ImageFolderItems.from_split(split, ids))[1]
    matcher, nameable = concept_matcher(dataset.cui_names, getattr(embed_model.vocabulary, "cuis", None))
    method = ConsistentRetrieval(emb["train"], [train.captions[i] for i in train_ids], matcher, nameable)
    method.fit(emb["valid"], [detected_valid[i] for i in valid_ids], [valid.captions[i] for i in valid_ids])
    chosen = {"k": method.k, "weight": method.weight, "valid_rouge1": max(r["rouge1"] for r in method.table),
              "table": [{k: v for k, v in r.items() if k != "by_weight"} for r in method.table]}
    log(f"concept-consistent retrieval: k={method.k}, weight {method.weight} "
        f"(validation ROUGE-1 {chosen['valid_rouge1']:.4f})")
    captions = method.predict(emb["test"], [detected_test[i] for i in test_ids])
    return dict(zip(test_ids, captions)), chosen


# ------------------------------------------------------------------------------------------
# In `medcap demo`
# ------------------------------------------------------------------------------------------

def demo_ensemble(models, data: Path, dataset, out: Path, log: Callable[[str], None] = print,
                  timings: dict | None = None) -> dict:
    """The demo's ensemble in ``out`` (set as ``models.ensemble``) -> the shared embeddings."""
    import time

    from .inference import load_detector

    start = time.monotonic()
    embeddings = split_embeddings(load_detector(models.concepts), dataset, progress=True)
    models.ensemble, _ = build_concept_ensemble(models.concepts, data, out, dataset, log, embeddings)
    if timings is not None:
        timings["ensemble"] = time.monotonic() - start
    return embeddings


def demo_recipes(dataset, models, ensemble_test: dict, out: Path, log: Callable[[str], None] = print,
                 embeddings: dict | None = None, edition: int | None = None) -> tuple[dict, dict]:
    """The single detector beside the ensemble (whose test predictions are ``ensemble_test``), and
    the concept-consistent retrieval captions -> (concept methods, caption methods); their
    submission files go to ``out``."""
    from .data.items import ImageFolderItems
    from .demo import CONCEPT_MODEL_NAME, _slug
    from .inference import load_detector, predict_concepts
    from .submission import write_caption_submission, write_concept_submission

    valid, test = dataset.split("valid"), dataset.split("test")
    test_ids = [i for i in test.ids if test.has_image(i)]
    valid_ids = [i for i in valid.ids if valid.has_image(i)]
    ensemble = load_detector(models.ensemble)
    single = predict_concepts(models.concepts, ImageFolderItems.from_split(test, test_ids), batch_size=64)
    detected_valid = {i: [c for c, _ in row] for i, row in
                      predict_concepts(ensemble, ImageFolderItems.from_split(valid, valid_ids), batch_size=64).items()}
    detected_test = {i: list(ensemble_test[i]) for i in test_ids}
    captions, chosen = consistent_retrieval_captions(dataset, ensemble, detected_valid, detected_test, test_ids, log,
                                                     embeddings)
    concepts = {CONCEPT_MODEL_NAME: {i: [c for c, _ in single[i]] for i in test_ids}, ENSEMBLE_NAME: detected_test}
    out.mkdir(parents=True, exist_ok=True)
    write_concept_submission(out / f"concepts_{_slug(ENSEMBLE_NAME)}.csv", detected_test, gold_ids=test_ids,
                             edition=edition)
    write_caption_submission(out / f"captions_{_slug(RETRIEVAL_NAME)}.csv", captions, gold_ids=test_ids,
                             edition=edition)
    return concepts, {f"{RETRIEVAL_NAME}, k={chosen['k']}": captions}
