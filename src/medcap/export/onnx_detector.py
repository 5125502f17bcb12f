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
from ..models.weights import write_checksums
from .common import check_output, load_detector_folder, require

ONNX_FILE = "model.onnx"
OPSET = 17
INPUT, OUTPUT = "pixel_values", "probabilities"
TOLERANCE = 1e-4  # max |onnxruntime - PyTorch| accepted on a probability


class CellMeans(torch.nn.Module):
    """GridPool as the exporter can write it: the TorchScript exporter has adaptive average pooling
    only when the grid divides the feature map (not for a 3 x 3 map at 96 px). The cells are
    adaptive pooling's own (rows floor(i H / g) to ceil((i + 1) H / g), columns alike), each
    averaged, in adaptive_avg_pool2d(f, g).flatten(1)'s order."""

    def __init__(self, grid: int):
        super().__init__()
        self.grid = grid

    def forward(self, f):                                                       # [B, C, H, W]
        g, h, w = self.grid, int(f.shape[-2]), int(f.shape[-1])  # the input size is fixed: constants
        rows = [((i * h) // g, -(-(i + 1) * h // g)) for i in range(g)]          # (floor, ceil)
        cols = [((j * w) // g, -(-(j + 1) * w // g)) for j in range(g)]
        cells = [f[..., r0:r1, c0:c1].mean(dim=(-2, -1)) for r0, r1 in rows for c0, c1 in cols]   # g*g x [B, C]
        return torch.stack(cells, dim=-1).flatten(1)                             # [B, C * g * g]


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


def exportable(detector):
    """A copy of ``detector`` whose grid pooling the exporter can write (CellMeans)."""
    import copy

    from ..models.concept_detector import GridPool

    detector = copy.deepcopy(detector)
    for parent in list(detector.modules()):
        for name, child in parent.named_children():
            if isinstance(child, GridPool):
                setattr(parent, name, CellMeans(child.grid))
    return detector


def write_onnx(detector, path: Path, opset: int = OPSET) -> None:
    """Export ``detector`` (probabilities out, dynamic batch) to the file ``path``."""
    size = detector.processor.image_size
    example = torch.zeros(2, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(probability_module(exportable(detector)), (example,), str(path), dynamo=False,
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
    require("onnx", "onnxruntime", extra="onnx")
    out = check_output(out, run, ONNX_FILE)
    folder, detector = load_detector_folder(run, "--onnx")
    with atomic_dir(out) as tmp:
        write_onnx(detector, tmp / ONNX_FILE, opset)
        diff = onnx_parity(detector, tmp / ONNX_FILE)
        if not diff <= TOLERANCE:
            raise MedcapError(f"the ONNX model differs from PyTorch by {diff:.2e} (> {TOLERANCE:g}); "
                              "nothing was written", file=out)
        for name in ("concepts.json", "thresholds.json", "preprocessor_config.json", "preprocessing.json"):
            if (folder / name).is_file():
                shutil.copy2(folder / name, tmp / name)
        write_checksums(tmp)  # sha256 + size of model.onnx, as every medcap save (`medcap push` checks them)
    return out, diff
