"""Concept ensembles: several detectors and kNN retrieval fused into one detector (REFERENCE §6).

The teams that won concept detection combined CNN classifiers with kNN tag propagation from
image retrieval, with union / intersection ensembles and per-label thresholds (REFERENCE §6).
Here every member is a probability source over the same concepts:

- a trained detector (``medcap train concepts``): its sigmoid probabilities;
- kNN retrieval: the share of the ``k`` nearest training images (cosine on L2-normalised
  embeddings of one member's backbone, as ``medcap.methods.baselines``) that carry each concept.

Fusions of the members' probabilities ``p_m`` [N, K]:

- ``mean``:          mean_m p_m
- ``weighted``:      sum_m w_m p_m with sum_m w_m = 1, weights chosen on validation (grid)
- ``union``:         0.5 + max_m (p_m - t_m)   >= 0.5  <=>  some member predicts the concept
- ``intersection``:  0.5 + min_m (p_m - t_m)   >= 0.5  <=>  every member predicts it

where ``t_m`` are member m's own thresholds (a detector's thresholds.json; kNN's chosen on
validation). Union and intersection are thus margins: thresholding them at 0.5 is exactly the
OR / AND of the members' decisions, and the threshold search may still move that cut.
Everything (fusion, weights, k, thresholds: global or per-concept with the guards of
``medcap.thresholds``) is chosen on the validation split by the official per-image F1
(REFERENCE §4); the test split is never read.

An ensemble is a folder that loads like a detector (``medcap.inference.concepts.load_detector``)::

    config.json        {"model_type": "medcap-concept-ensemble", "members": ["members/m0", ...],
                        "fusion", "weights", "knn": {"k", "embed_member", "thresholds"} or null}
    members/m0/ ...    copies of the member detector folders
    knn.safetensors    train_embeddings [N, C] (L2-normalised), train_labels [N, K]
    concepts.json      the shared concept vocabulary
    thresholds.json    the ensemble's thresholds (medcap.thresholds)
    preprocessor_config.json  the input the ensemble takes (a ConceptProcessor, as a detector's;
                       members get theirs from it; older ensembles: preprocessing.json)
    fit.json           the validation table every choice was made from
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import MedcapError
from ..models.ensemble import FUSIONS, ConceptEnsemble, EnsembleConfig, member_threshold_vector

KNN_KS = (1, 3, 5, 10, 20, 50)
KNN_TEMPERATURES = (0.0, 0.01, 0.03, 0.1)   # 0: plain vote shares


# ------------------------------------------------------------------------------------------
# Fusion math (numpy; the module below repeats it in torch for prediction)
# ------------------------------------------------------------------------------------------

def neighbour_weights(sims, temperature: float):
    """Votes of the k neighbours: equal (temperature 0), or softmax(similarity / temperature)."""
    if temperature <= 0:
        return np.full(sims.shape, 1.0 / sims.shape[1])
    z = (sims - sims.max(axis=1, keepdims=True)) / temperature
    w = np.exp(z)
    return w / w.sum(axis=1, keepdims=True)


def knn_probabilities(train_embeddings: np.ndarray, train_labels: np.ndarray, query_embeddings: np.ndarray,
                      k: int, exclude_self: bool = False, temperature: float = 0.0) -> np.ndarray:
    """Per query, the (similarity-weighted) share of its ``k`` nearest training images carrying
    each concept -> [Q, K]."""
    from .baselines import nearest_neighbours

    idx, sims = nearest_neighbours(train_embeddings, query_embeddings, k, exclude_self=exclude_self)
    w = neighbour_weights(sims, temperature)                                      # [Q, k]
    return np.einsum("qj,qjk->qk", w, np.asarray(train_labels, dtype=np.float64)[idx])


def fuse(probs: list[np.ndarray], fusion: str, weights=None, member_thresholds=None) -> np.ndarray:
    """Members' probabilities [N, K] each -> fused scores [N, K] in [0, 1] (module docstring)."""
    if fusion not in FUSIONS:
        raise MedcapError(f"fusion: expected one of {', '.join(FUSIONS)}, got {fusion!r}")
    p = np.stack([np.asarray(q, dtype=np.float64) for q in probs])                # [M, N, K]
    if fusion == "mean":
        return p.mean(axis=0)
    if fusion == "weighted":
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (len(probs),) or w.min() < 0 or not w.sum() > 0:
            raise MedcapError(f"weighted fusion needs one non-negative weight per member, got {weights!r}")
        return np.tensordot(w / w.sum(), p, axes=1)
    t = np.stack([np.broadcast_to(np.asarray(v, dtype=np.float64), p.shape[2:]) for v in member_thresholds])
    margin = p - t[:, None, :]                                                    # [M, N, K]
    margin = margin.max(axis=0) if fusion == "union" else margin.min(axis=0)
    return np.clip(0.5 + margin, 0.0, 1.0)


def weight_grid(n: int, steps: int | None = None) -> list[tuple[float, ...]]:
    """Weights on the simplex with ``steps`` divisions (10 for two members, fewer for more)."""
    steps = steps or {1: 1, 2: 10, 3: 6}.get(n, 4)
    return [tuple(c / steps for c in combo) for combo in itertools.product(range(steps + 1), repeat=n)
            if sum(combo) == steps]


@dataclass
class FusionChoice:
    fusion: str
    weights: list[float]
    thresholds: dict                    # Thresholds.to_json
    valid_f1: float
    table: list[dict] = field(default_factory=list)


def fit_fusion(probs: list[np.ndarray], gold: np.ndarray, gold_sizes, cuis: list[str], member_thresholds,
               fusions=FUSIONS, per_concept: bool = True, grid: str = "fine", seed: int = 0) -> FusionChoice:
    """Choose the fusion (and weights) by validation F1 at its best global threshold, then its
    thresholds (per-concept only where the held-out guard of medcap.thresholds keeps them)."""
    from ..thresholds import select_thresholds

    gold = np.asarray(gold, dtype=bool)
    table = []
    for fusion in fusions:
        options = weight_grid(len(probs)) if fusion == "weighted" else [(1.0 / len(probs),) * len(probs)]
        for w in options:
            fused = fuse(probs, fusion, w, member_thresholds)
            _, rep = select_thresholds(fused, gold, gold_sizes, grid=grid, per_concept=False)
            table.append({"fusion": fusion, "weights": [round(x, 4) for x in w], "f1_global": rep["f1"]})
    best = max(table, key=lambda r: np.nan_to_num(r["f1_global"], nan=-1.0))     # ties: the first (simplest)
    fused = fuse(probs, best["fusion"], best["weights"], member_thresholds)
    th, rep = select_thresholds(fused, gold, gold_sizes, grid=grid, per_concept=per_concept, seed=seed)
    return FusionChoice(best["fusion"], best["weights"], th.to_json(cuis), float(rep["f1"]),
                        [*table, {"chosen": best, "thresholds_report": {k: v for k, v in rep.items() if k != "sweep"}}])


# ------------------------------------------------------------------------------------------
# Building an ensemble on the validation split
# ------------------------------------------------------------------------------------------

def ensemble_provenance(dataset, members, n_train: int, n_valid: int, cfg, valid_f1: float) -> dict:
    """provenance.json of an ensemble: its fitting data; synthetic when that data or a member's was."""
    from ..data.provenance import dataset_provenance
    from ..models.card import learnt_from_synthetic, make_provenance

    data = dataset_provenance(dataset.root, train_images=n_train, valid_images=n_valid)
    member_data = [(getattr(m, "provenance", None) or {}).get("data") for m in members]
    if any(learnt_from_synthetic(getattr(m, "provenance", None)) for m in members):
        data["synthetic"] = True
    return make_provenance("concept-ensemble", data, {"f1": valid_f1},
                           {"fusion": cfg.fusion, "weights": cfg.weights, "knn": (cfg.knn or {}).get("k")},
                           members=member_data)


def build_ensemble(member_dirs, data, out, **options) -> dict:
    """Fit an ensemble of the detector folders ``member_dirs`` (+ kNN) on ``data``'s validation
    split and write it to ``out`` -> the fit report (validation F1 of every option).
    ``options``: those of :func:`fit_ensemble`."""
    target = Path(out).resolve()
    for d in member_dirs:
        if target == Path(d).resolve() or target in Path(d).resolve().parents:
            raise MedcapError("--out would replace a member's folder: write the ensemble elsewhere", file=out)
    ensemble, report = fit_ensemble(member_dirs, data, **options)
    from ..data.loading import is_main_process

    if is_main_process():  # under accelerate launch every process fits the same ensemble; one writes it
        ensemble.save_pretrained(out, [Path(d) for d in member_dirs], fit=report)
    return report


def fit_ensemble(member_dirs, data, *, knn: bool = True, fusions=FUSIONS, ks=KNN_KS,
                 temperatures=KNN_TEMPERATURES, per_concept: bool = True, grid: str = "fine",
                 embed_member: int = 0, batch_size: int = 64, device: str | None = None, progress: bool = False,
                 log=print, dataset=None, embeddings=None, members=None,
                 num_workers: int | str = "auto") -> tuple[ConceptEnsemble, dict]:
    """Fit an ensemble of the detector folders ``member_dirs`` (+ kNN) on ``data``'s validation
    split -> (the ensemble, in memory, the fit report: validation F1 of every option).

    ``members``: the detectors of ``member_dirs`` when they are already loaded (else loaded here).
    ``embeddings``: a :class:`medcap.methods.baselines.SplitEmbeddings` of the ``embed_member`` detector
    (the same embedding), shared with other methods of one run to save computing them again.
    """
    from ..data.items import ImageFolderItems
    from ..inference.concepts import load_detector, map_images, resolve_device
    from ..thresholds import select_thresholds

    member_dirs = [Path(d) for d in member_dirs]
    if not member_dirs:
        raise MedcapError("an ensemble needs at least one member detector (--member DIR)")
    if len(member_dirs) == 1 and not knn:
        raise MedcapError("one member and no kNN is not an ensemble: add --member DIR or --knn")
    if not 0 <= embed_member < len(member_dirs):
        raise MedcapError(f"--embed-member: expected 0..{len(member_dirs) - 1}, got {embed_member}")
    if dataset is None:
        from ..data.dataset import read_dataset

        dataset = read_dataset(data)
    train, valid = dataset.split("train"), dataset.split("valid")
    train_ids, valid_ids = train.labelled_ids("concepts"), valid.labelled_ids("concepts")
    if not valid_ids:
        raise MedcapError("the ensemble is chosen on validation: no labelled validation images", file=data)
    members = [load_detector(d) for d in (member_dirs if members is None else members)]
    names = [f"members/m{i}" for i in range(len(members))]
    cfg = EnsembleConfig(members=names, knn=None)
    ens = ConceptEnsemble(cfg, members)                     # without kNN: the members' sources
    dev = resolve_device(device)
    ens = ens.to(dev).eval()
    cuis = list(ens.vocabulary.cuis)
    prep = ens.preprocessing

    # Validation probabilities through the ensemble's own input path (what prediction will see).
    _, stacked = map_images(lambda x: torch.stack(ens.source_probabilities(x), dim=1), ImageFolderItems.from_split(
        valid, valid_ids), prep, batch_size, dev, num_workers, progress=progress, desc="members on valid")
    probs = [stacked[:, m] for m in range(len(members))]
    gold, _ = ens.vocabulary.encode_many(valid.concepts[i] for i in valid_ids)
    gold = gold > 0
    # |G| counts CUIs outside the vocabulary too: they are missed, as in the official score.
    sizes = np.array([len({c.strip().upper() for c in valid.concepts[i] if c.strip()}) for i in valid_ids])
    member_t = [member_threshold_vector(m.thresholds, cuis) for m in members]
    report: dict = {"members": [str(d) for d in member_dirs], "n_valid": len(valid_ids), "sources": {}}
    for d, p in zip(member_dirs, probs, strict=True):
        _, rep = select_thresholds(p, gold, sizes, grid=grid)
        report["sources"][str(d)] = {"valid_f1_global": rep["f1"]}

    emb = labels = None
    if knn:
        if not train_ids:
            raise MedcapError("kNN needs labelled training images", file=data)

        def embed(x):
            return nn.functional.normalize(ens.forward_features(x).float().mean(dim=(2, 3)), dim=1)

        cfg.knn = {"k": 1, "temperature": 0.0, "embed_member": embed_member, "thresholds": {"global": 0.5}}

        def rows(name, split, ids):
            if embeddings is not None:
                return embeddings(split, ids)
            return map_images(embed, ImageFolderItems.from_split(split, ids), prep, batch_size, dev, num_workers,
                              progress=progress, desc=f"embed {name}")[1]

        emb, valid_emb = rows("train", train, train_ids), rows("valid", valid, valid_ids)
        labels, _ = ens.vocabulary.encode_many(train.concepts[i] for i in train_ids)
        knn_table = []
        for k in sorted({min(k, len(train_ids)) for k in ks}):
            for t in (temperatures if k > 1 else (0.0,)):
                p = knn_probabilities(emb, labels, valid_emb, k, temperature=t)
                th, rep = select_thresholds(p, gold, sizes, grid=grid)
                knn_table.append({"k": k, "temperature": t, "f1": rep["f1"], "thresholds": th.to_json(cuis),
                                  "probs": p})
        best = max(knn_table, key=lambda r: np.nan_to_num(r["f1"], nan=-1.0))
        cfg.knn.update(k=best["k"], temperature=best["temperature"], thresholds=best["thresholds"])
        probs.append(best["probs"])
        member_t.append(member_threshold_vector(best["thresholds"], cuis))
        report["sources"]["knn"] = {"k": best["k"], "temperature": best["temperature"], "valid_f1_global": best["f1"],
                                    "table": [{"k": r["k"], "temperature": r["temperature"], "f1": r["f1"]}
                                              for r in knn_table]}
        log(f"kNN: k={best['k']}, temperature {best['temperature']} (validation F1 {best['f1']:.4f} alone)")

    choice = fit_fusion(probs, gold, sizes, cuis, member_t, fusions=fusions, per_concept=per_concept, grid=grid)
    cfg.fusion, cfg.weights = choice.fusion, choice.weights
    final = ConceptEnsemble(cfg, members, emb, labels)
    final.thresholds = {**choice.thresholds, "grid": grid}
    report.update(fusion=choice.fusion, weights=choice.weights, valid_f1=choice.valid_f1, table=choice.table)
    final.provenance = ensemble_provenance(dataset, members, len(train_ids), len(valid_ids), cfg, choice.valid_f1)
    log(f"ensemble: {choice.fusion} {choice.weights}, validation F1 {choice.valid_f1:.4f}")
    return final, report
