"""What checking checksums.json costs at load: the `paper` detector and a BLIP-large-size captioner.

    .venv/bin/python bench/weight_checks.py                 # both models, 3 loads each way
    .venv/bin/python bench/weight_checks.py --models paper --repeats 5

Both models have random weights (nothing can be downloaded here; hashing and loading do not depend
on the values): the ``paper`` detector config (ResNet-101 + MedCSRA head, 2,125 concepts as in the
paper's vocabulary size) and ``Captioner.from_scratch("large")`` (blip-image-captioning-large's
architecture, 470 M parameters). Each is saved once (with checksums.json); then loads with and
without the check alternate in this one process, and the script prints the median load time of
each way and the ratios, measured side by side: no check, a folder's first verified load (every
block hashed, MEDCAP_VERIFY=full) and a later load of the unchanged folder (its files remembered
as verified by their identity: only sizes and stat() are checked). Issue 26's goal: the check adds
at most 10% to the load. The page cache is warm for all (each file was just written and read).
"""
from __future__ import annotations

import argparse
import os
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
    time.sleep(2.1)  # past the "racily clean" window after the save (models/weights.py): as a folder saved earlier
    load(folder)  # warm: imports, page cache; and the file is remembered as verified
    ways = {"plain": (False, ""), "first": (True, "full"), "repeat": (True, "")}
    times: dict[str, list[float]] = {way: [] for way in ways}
    for _ in range(repeats):
        for way, (verify, mode) in ways.items():  # side by side, alternating
            weights.set_verify(verify)
            os.environ["MEDCAP_VERIFY"] = mode  # "full": hash every file, as the first load of a folder does
            t = time.perf_counter()
            load(folder)
            times[way].append(time.perf_counter() - t)
    weights.set_verify(True)
    os.environ.pop("MEDCAP_VERIFY", None)
    size = sum(p.stat().st_size for p in weights.weight_files(folder))
    t = time.perf_counter()
    for p in weights.weight_files(folder):
        weights.file_sha256(p)
    hash_alone = time.perf_counter() - t
    med = {way: statistics.median(v) for way, v in times.items()}
    return {"model": kind, "weights_mb": size / 1e6, **med, "sha256_alone_s": hash_alone}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["paper", "blip-large"], choices=["paper", "blip-large"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch

    print(f"torch threads {torch.get_num_threads()}, {os.cpu_count()} cores; {args.repeats} loads each way, "
          "alternating; medians. first = a folder's first verified load (every file hashed); "
          "repeat = a later load of the unchanged folder (remembered files are not hashed again)")
    print(f"{'model':<11} {'weights MB':>10} {'load s':>7} {'first s':>8} {'ratio':>6} {'repeat s':>8} {'ratio':>6} "
          f"{'hash+blocks at save s':>21}")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MEDCAP_CACHE_DIR"] = str(Path(tmp) / "cache")  # not the user's verification cache
        for kind in args.models:
            folder = Path(tmp) / kind
            (save_paper_detector if kind == "paper" else save_blip_large)(folder)
            r = measure(kind, folder, args.repeats)
            print(f"{r['model']:<11} {r['weights_mb']:>10.0f} {r['plain']:>7.2f} {r['first']:>8.2f} "
                  f"{r['first'] / r['plain']:>6.3f} {r['repeat']:>8.2f} {r['repeat'] / r['plain']:>6.3f} "
                  f"{r['sha256_alone_s']:>21.2f}", flush=True)


if __name__ == "__main__":
    main()
