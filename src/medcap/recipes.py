"""The demo's combined recipes: what the winners combine, built from medcap's parts (REFERENCE §6).

- **Concept ensemble** ("MedCSRA + kNN ensemble"): the trained detector's probabilities fused
  with kNN retrieval's vote shares (medcap.ensemble); fusion, weights, k and thresholds
  chosen on the validation split.
- **Concept-consistent retrieval** captions: among the captions of the nearest training
  images (the detector's embeddings) and their leading sentences, the one that names the
  detected concepts and that the neighbourhood agrees on
  (medcap.concept_rerank.ConsistentRetrieval); k and the weight chosen on validation.

Both only read the train and validation splits to decide anything; the test split is only
predicted.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

CONCEPT_MODEL_NAME = "MedCSRA (demo config)"
ENSEMBLE_NAME = "MedCSRA + kNN ensemble"
RETRIEVAL_NAME = "Concept-consistent retrieval"


def slug(name: str) -> str:
    """A method's name as a file-name part ("kNN retrieval, k=5 (baseline)" -> "knn-retrieval-k-5")."""
    return "-".join("".join(ch if ch.isalnum() else " " for ch in name.lower().replace("(baseline)", "")).split())


def build_concept_ensemble(detector: Path, data: Path, out: Path, dataset=None, log: Callable[[str], None] = print,
                           embeddings=None) -> tuple[Path, dict]:
    """The detector + kNN ensemble in ``out`` -> (folder, fit report)."""
    from .ensemble import build_ensemble

    report = build_ensemble([detector], data, out, knn=True, dataset=dataset, log=log, embeddings=embeddings)
    return out, report


def _labelled(split, labels) -> list[str]:
    return [i for i in split.ids if split.has_image(i) and i in labels]


def consistent_retrieval_captions(dataset, embed_model, detected_valid: dict[str, list[str]],
                                  detected_test: dict[str, list[str]], test_ids: list[str],
                                  log: Callable[[str], None] = print,
                                  embeddings=None, **options) -> tuple[dict[str, str], dict]:
    """Concept-consistent retrieval captions for ``test_ids`` -> ({ID: caption}, choices on validation).

    ``embed_model``: a detector or ensemble (its backbone embeds the images); ``detected_*``:
    the concepts it predicts for the validation and test images; ``embeddings``: a shared
    :class:`medcap.baselines.SplitEmbeddings` of the same backbone, if one exists; ``options``:
    fields of :class:`medcap.concept_rerank.ConsistentRetrieval` (``prefixes``, ``guard_weight``).
    """
    from .baselines import SplitEmbeddings
    from .concept_rerank import ConsistentRetrieval, caption_name_matcher, concept_matcher
    from .errors import MedcapError

    train, valid, test = dataset.split("train"), dataset.split("valid"), dataset.split("test")
    if train.captions is None or valid.captions is None:
        raise MedcapError("concept-consistent retrieval needs training and validation captions")
    train_ids = _labelled(train, train.captions)
    valid_ids = [i for i in _labelled(valid, valid.captions) if i in detected_valid]
    embed = embeddings or SplitEmbeddings(embed_model)
    emb = {name: embed(split, ids) for name, split, ids in
           (("train", train, train_ids), ("valid", valid, valid_ids), ("test", test, test_ids))}
    vocabulary, train_captions = getattr(embed_model.vocabulary, "cuis", None), [train.captions[i] for i in train_ids]
    # Agreement counts concepts with the fact-checker's dictionary, or with the concept names the
    # caption evaluation finds (medcap.concept_rerank.caption_name_matcher): whichever scores
    # better on validation. With concept names, the approximate UMLS F1 guards every choice
    # (not below the nearest-neighbour caption's on validation) and the score is ROUGE-1 + it
    # (ConsistentRetrieval.fit); without them, ROUGE-1 alone.
    matchers = {"fact-checker": concept_matcher(dataset.cui_names, vocabulary)}
    guard = None
    if dataset.cui_names:
        matchers["concept names"] = caption_name_matcher(dataset.cui_names, train_captions, vocabulary)
        guard = matchers["concept names"][0].scores
    fitted = {}
    for name, (matcher, nameable) in matchers.items():
        method = ConsistentRetrieval(emb["train"], train_captions, matcher, nameable, **options)
        method.fit(emb["valid"], [detected_valid[i] for i in valid_ids], [valid.captions[i] for i in valid_ids],
                   guard=guard)
        fitted[name] = (method, next(r for r in method.table if r["k"] == method.k))
    name = max(fitted, key=lambda n: fitted[n][0].valid_score)
    method, row = fitted[name]
    chosen = {"k": method.k, "weight": method.weight, "matcher": name, "valid_rouge1": row["rouge1"],
              "valid_umls_f1_approx": row.get("guard"), "nearest_neighbour_umls_f1_approx": row.get("guard_floor"),
              "table": [{"matcher": n, **{k: v for k, v in r.items() if k != "by_weight"}}
                        for n, (m, _) in fitted.items() for r in m.table]}
    guarded = "" if guard is None else (f", UMLS F1 approx. {row['guard']:.4f} against the nearest neighbour's "
                                        f"{row['guard_floor']:.4f}")
    log(f"concept-consistent retrieval: k={method.k}, weight {method.weight}, {name} "
        f"(validation ROUGE-1 {chosen['valid_rouge1']:.4f}{guarded})")
    captions = method.predict(emb["test"], [detected_test[i] for i in test_ids])
    return dict(zip(test_ids, captions, strict=True)), chosen


# ------------------------------------------------------------------------------------------
# In `medcap demo`
# ------------------------------------------------------------------------------------------

def demo_ensemble(models, data: Path, dataset, out: Path, log: Callable[[str], None] = print,
                  timings: dict | None = None):
    """The demo's ensemble in ``out`` (set as ``models.ensemble``) -> the shared
    :class:`medcap.baselines.SplitEmbeddings` of the detector."""
    import time

    from .baselines import SplitEmbeddings
    from .inference import load_detector

    start = time.monotonic()
    embeddings = SplitEmbeddings(load_detector(models.concepts), progress=True)
    models.ensemble, _ = build_concept_ensemble(models.concepts, data, out, dataset, log, embeddings)
    if timings is not None:
        timings["ensemble"] = time.monotonic() - start
    return embeddings


def demo_recipes(dataset, models, ensemble_test: dict, out: Path, log: Callable[[str], None] = print,
                 embeddings=None, edition: int | None = None) -> tuple[dict, dict]:
    """The single detector beside the ensemble (whose test predictions are ``ensemble_test``), and
    the concept-consistent retrieval captions -> (concept methods, caption methods); their
    submission files go to ``out``."""
    from .data.items import ImageFolderItems
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
    write_concept_submission(out / f"concepts_{slug(ENSEMBLE_NAME)}.csv", detected_test, gold_ids=test_ids,
                             edition=edition)
    write_caption_submission(out / f"captions_{slug(RETRIEVAL_NAME)}.csv", captions, gold_ids=test_ids,
                             edition=edition)
    return concepts, {f"{RETRIEVAL_NAME}, k={chosen['k']}": captions}
