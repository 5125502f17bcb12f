"""What checking checksums.json costs at load: the `paper` detector and a BLIP-large-size captioner.

    .venv/bin/python bench/weight_checks.py                 # both models, 3 loads each way
    .venv/bin/python bench/weight_checks.py --models paper --repeats 5

Both models have random weights (nothing can be downloaded here; hashing and loading do not depend
on the values): the ``paper`` detector config (ResNet-101 + MedCSRA head, 2,125 concepts as in the
paper's vocabulary size) and ``Captioner.from_scratch("large")`` (blip-image-captioning-large's
architecture, 470 M parameters). Each is saved once (with checksums.json); then loads with and
without the check alternate in this one process, and the script prints the median load time of
each and their ratio, measured side by side. Issue 26's goal: the check adds at most 10% to the
load (medcap hashes in a thread while the weights are read, so only what outlasts the load counts).
The page cache is warm for both (each file was just written and read), as in any repeated load.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def save_paper_detector(folder: Path) -> None:
    from medcap.data.vocab import ConceptVocabulary
    from medcap.models.concept_detector import ConceptDetector
    from medcap.training.concepts import concept_processor, detector_config, load_concept_config

    cfg = load_concept_config("paper", ["pretrained=false"])
    cuis = [f"C{i:07d}" for i in range(2125)]
    model = ConceptDetector(detector_config(cfg, len(cuis)))
    model.vocabulary, model.processor = ConceptVocabulary(cuis), concept_processor(cfg)
    model.thresholds = {"global": 0.5}
    model.save_pretrained(folder)


def save_blip_large(folder: Path) -> None:
    from medcap.models.captioner import Captioner

    Captioner.from_scratch("large", ["a chest x-ray", "an mri of the brain"], image_size=384, seed=0) \
        .save_pretrained(folder)


def loader(kind: str):
    if kind == "paper":
        from medcap.models.concept_detector import ConceptDetector

        return ConceptDetector.from_pretrained
    from medcap.models.captioner import Captioner

    return Captioner.from_pretrained


def measure(kind: str, folder: Path, repeats: int) -> dict:
    from medcap.models import weights

    load = loader(kind)
    load(folder)  # warm: imports, page cache
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(repeats):
        for verify in (False, True):  # side by side, alternating
            weights.set_verify(verify)
            t = time.perf_counter()
            load(folder)
            times[verify].append(time.perf_counter() - t)
    weights.set_verify(True)
    size = sum(p.stat().st_size for p in weights.weight_files(folder))
    t = time.perf_counter()
    for p in weights.weight_files(folder):
        weights.file_sha256(p)
    hash_alone = time.perf_counter() - t
    plain, checked = statistics.median(times[False]), statistics.median(times[True])
    return {"model": kind, "weights_mb": size / 1e6, "load_s": plain, "load_verified_s": checked,
            "ratio": checked / plain, "sha256_alone_s": hash_alone}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["paper", "blip-large"], choices=["paper", "blip-large"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch

    print(f"torch threads {torch.get_num_threads()}; {args.repeats} loads each way, alternating; medians")
    print(f"{'model':<11} {'weights MB':>10} {'load s':>8} {'verified s':>10} {'ratio':>6} {'sha256 alone s':>14}")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.models:
            folder = Path(tmp) / kind
            (save_paper_detector if kind == "paper" else save_blip_large)(folder)
            r = measure(kind, folder, args.repeats)
            print(f"{r['model']:<11} {r['weights_mb']:>10.0f} {r['load_s']:>8.2f} {r['load_verified_s']:>10.2f} "
                  f"{r['ratio']:>6.3f} {r['sha256_alone_s']:>14.2f}", flush=True)


if __name__ == "__main__":
    main()
