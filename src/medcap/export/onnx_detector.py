"""The concept detector as an ONNX model, for serving outside Python and PyTorch (onnxruntime).

``OUT/model.onnx`` maps ``pixel_values`` [batch, 3, S, S] (float32, resized and normalised as
``preprocessor_config.json`` says) to ``probabilities`` [batch, K] (the sigmoid of the logits,
one column per CUI of ``concepts.json``); the batch axis is dynamic. The folder also holds the
model folder's ``concepts.json``, ``thresholds.json`` and ``preprocessor_config.json``, so a
server decides exactly as ``medcap predict concepts`` does (REFERENCE §9: a model folder carries
everything needed to predict).

The export uses torch's TorchScript-based exporter (``dynamo=False``): the torch.export-based
one needs onnxscript, which medcap does not depend on. :func:`onnx_parity` runs the written file
under onnxruntime beside PyTorch on the same batch.
"""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import torch

from ..errors import MedcapError
from ..fileio import atomic_dir
from .common import check_output, load_detector_folder, require

ONNX_FILE = "model.onnx"
OPSET = 17
INPUT, OUTPUT = "pixel_values", "probabilities"
TOLERANCE = 1e-4  # max |onnxruntime - PyTorch| accepted on a probability


class Probabilities(torch.nn.Module):
    """The detector with the sigmoid inside: what a server wants out."""

    def __init__(self, detector):
        super().__init__()
        self.detector = detector

    def forward(self, pixel_values):
        return self.detector(pixel_values).sigmoid()                            # [B, K]


def probability_module(detector) -> Probabilities:
    # eval() on the wrapper too: the exporter puts the whole model back in the wrapper's mode
    return Probabilities(detector).eval()


def write_onnx(detector, path: Path, opset: int = OPSET) -> None:
    """Export ``detector`` (probabilities out, dynamic batch) to the file ``path``."""
    size = detector.processor.image_size
    example = torch.zeros(2, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(probability_module(detector), (example,), str(path), dynamo=False,
                          input_names=[INPUT], output_names=[OUTPUT], opset_version=opset,
                          dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})


def onnx_parity(detector, path: str | Path, batch: int = 3, seed: int = 0) -> float:
    """Max |onnxruntime - PyTorch| over the probabilities of a random batch of ``batch`` images."""
    import numpy as np
    import onnxruntime

    size = detector.processor.image_size
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run([OUTPUT], {INPUT: x.numpy()})
    with torch.no_grad():
        want = probability_module(detector)(x).numpy()
    return float(np.abs(got - want).max())


def export_onnx(run: str | Path, out: str | Path, opset: int = OPSET) -> tuple[Path, float]:
    """Write ``out/model.onnx`` and the decision files for the detector in ``run`` -> (out, max
    difference from PyTorch on a random batch). MedcapError when the difference exceeds TOLERANCE."""
    from ..models.location import resolve_model_folder

    require("onnx", "onnxruntime", extra="onnx")
    out = check_output(out, run, ONNX_FILE)
    detector = load_detector_folder(run, "--onnx").eval()
    folder = resolve_model_folder(run, "concepts")
    with atomic_dir(out) as tmp:
        write_onnx(detector, tmp / ONNX_FILE, opset)
        diff = onnx_parity(detector, tmp / ONNX_FILE)
        if not diff <= TOLERANCE:
            raise MedcapError(f"the ONNX model differs from PyTorch by {diff:.2e} (> {TOLERANCE:g}); "
                              "nothing was written", file=out)
        for name in ("concepts.json", "thresholds.json", "preprocessor_config.json", "preprocessing.json"):
            if (folder / name).is_file():
                shutil.copy2(folder / name, tmp / name)
    return out, diff
