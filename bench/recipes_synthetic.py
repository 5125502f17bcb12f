"""Single models, combinations (medcap.demo.steps, medcap.methods.ensemble, medcap.inference.rerank), baselines
and the ceiling on one synthetic dataset, scored on its test split.

    .venv/bin/python bench/recipes_synthetic.py --data DIR --detector DET/model --captioner CAP/model \
        --out bench-out/recipes [--rerank-beams 3]

DIR: a synthetic dataset (``medcap synth`` / bench/caption_synthetic.py / ``medcap demo``'s
OUT/data); DET and CAP: a trained concept detector and captioner on it (BENCHMARKS.md gives the
commands). Every choice (k, votes, fusion, weights, thresholds, reranking weights) is made on the
validation split; test is only scored. Writes results.json and results.md under --out.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--detector", type=Path, required=True)
    ap.add_argument("--captioner", type=Path, default=None)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rerank-beams", type=int, default=3)
    ap.add_argument("--valid-limit", type=int, default=100, help="validation images for the rerank weight")
    args = ap.parse_args(argv)

    import numpy as np

    from medcap import baselines as B
    from medcap.data.dataset import read_dataset
    from medcap.data.items import ImageFolderItems
    from medcap.inference.concepts import load_detector, predict_concepts
    from medcap.methods.consistent import consistent_retrieval_captions
    from medcap.metrics.concepts import evaluate_concepts
    from medcap.report.scoring import caption_scores
    from medcap.synth import caption_from_concepts

    args.out.mkdir(parents=True, exist_ok=True)
    ds = read_dataset(args.data)
    train, valid, test = ds.split("train"), ds.split("valid"), ds.split("test")
    tids = test.image_ids()
    vids = valid.image_ids()
    trids = train.image_ids()
    timings, concepts, captions = {}, {}, {}

    def timed(name, fn):
        t = time.monotonic()
        value = fn()
        timings[name] = round(time.monotonic() - t, 1)
        return value

    detector = load_detector(args.detector)
    emb = B.SplitEmbeddings(detector)
    timed("embeddings", lambda: [emb(split, ids) for split, ids in ((train, trids), (valid, vids), (test, tids))])

    def decided(model, split, ids):
        found = predict_concepts(model, ImageFolderItems.from_split(split, ids))
        return {i: [c for c, _ in r] for i, r in found.items()}

    concepts["MedCSRA (single model)"] = timed("detector", lambda: decided(detector, test, tids))
    frequent, _ = B.fit_most_frequent({i: train.concepts[i] for i in trids}, valid.concepts)
    concepts["Most frequent concepts (baseline)"] = {i: list(frequent) for i in tids}
    lists = [train.concepts[i] for i in trids]
    knn = B.fit_knn(emb(train, trids), lists, emb(valid, vids), vids, valid.concepts)
    concepts[f"kNN retrieval, k={knn['k']} (baseline)"] = dict(zip(tids, B.knn_concepts(
        emb(train, trids), lists, emb(test, tids), knn["k"], knn["vote"]), strict=True))
    from medcap.methods.ensemble import build_ensemble

    ens_dir = args.out / "ensemble"
    fit = timed("ensemble_fit", lambda: build_ensemble([args.detector], args.data, ens_dir, knn=True, dataset=ds,
                                                        embeddings=emb, log=print))
    ensemble = load_detector(ens_dir)
    concepts[f"MedCSRA + kNN ensemble ({fit['fusion']})"] = timed("ensemble_test", lambda: decided(ensemble, test,
                                                                                                   tids))
    concepts["ceiling: the true concepts"] = {i: list(test.concepts[i]) for i in tids}
    scores = {"concepts": {n: evaluate_concepts(test.concepts, p, test.manual_concepts) for n, p in concepts.items()}}

    detected_test = concepts[f"MedCSRA + kNN ensemble ({fit['fusion']})"]
    detected_valid = decided(ensemble, valid, vids)
    constant = B.constant_caption({i: train.captions[i] for i in trids}, sample=150)
    captions["Constant caption (baseline)"] = {i: constant for i in tids}
    captions["Nearest-neighbour caption (baseline)"] = dict(zip(tids, B.retrieval_captions(
        emb(train, trids), [train.captions[i] for i in trids], emb(test, tids)), strict=True))
    cons, chosen = timed("consistent_retrieval", lambda: consistent_retrieval_captions(
        ds, ensemble, detected_valid, detected_test, tids, print, emb))
    captions[f"Concept-consistent retrieval, k={chosen['k']}, w={chosen['weight']}"] = cons
    if args.captioner is not None:
        from medcap.inference.rerank import beam_candidates, concept_matcher, rerank_beams
        from medcap.methods.consistent import fit_rerank_weight
        from medcap.models.captioner import Captioner

        cap = Captioner.from_pretrained(args.captioner)
        prompted = cap.concept_prompt is not None
        images = [test.load_image(i) for i in tids]
        prompts = [detected_test[i] for i in tids] if prompted else None
        plain = timed("captioner", lambda: cap.generate(images, batch_size=32, concepts=prompts))
        captions[f"BLIP ({'prompted with the ensemble' if prompted else 'no prompt'})"] = dict(
            zip(tids, plain, strict=True))
        n = args.rerank_beams
        vsub = [i for i in vids if i in valid.captions][:args.valid_limit]
        w, _ = timed("rerank_fit", lambda: fit_rerank_weight(
            cap, [valid.load_image(i) for i in vsub], [detected_valid[i] for i in vsub],
            [valid.captions[i] for i in vsub], ds.cui_names, n, 16))
        matcher, nameable = concept_matcher(ds.cui_names)
        cands = timed("rerank_test", lambda: beam_candidates(
            cap, images, [detected_test[i] for i in tids] if prompted else None, n, 16))
        captions[f"BLIP + concept-reranked {n} beams, w={w}"] = dict(zip(tids, rerank_beams(
            cands, [detected_test[i] for i in tids], w, matcher, nameable), strict=True))
    rng = np.random.default_rng(0)
    captions["ceiling: re-drawn from the true concepts"] = {
        i: caption_from_concepts(test.concepts[i], rng=int(rng.integers(1 << 30))) for i in tids}
    scores["captions"] = {n: caption_scores(test.captions, p, ds.cui_names) for n, p in captions.items()}

    lines = ["| concepts | primary F1 | secondary F1 |", "|---|---|---|"]
    lines += [f"| {n} | {s['primary_f1']:.4f} | {s['secondary_f1']:.4f} |" for n, s in scores["concepts"].items()]
    lines += ["", "| captions | ROUGE-1 | UMLS F1 (approx.) |", "|---|---|---|"]
    lines += [f"| {n} | {s['rouge1']:.4f} | {s['umls_f1_approx']:.4f} |" for n, s in scores["captions"].items()]
    table = "\n".join(lines) + "\n"
    (args.out / "results.md").write_text(table)
    (args.out / "results.json").write_text(json.dumps({"scores": scores, "timings_s": timings, "ensemble": {
        k: v for k, v in fit.items() if k != "table"}, "retrieval": chosen}, indent=1, default=float))
    print(table)
    print("timings (s):", timings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
