"""A concept ensemble as a model: member detectors (+ kNN retrieval) fused into one detector.

The fitting (fusion, weights and thresholds chosen on validation) is in ``medcap.methods.ensemble``;
this module is what prediction loads. The fused probabilities follow the fusion rules written
there in numpy (mean, weighted mean, union and intersection of decisions).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import MedcapError
from ..fileio import atomic_dir, read_json, write_text_atomic
from .card import load_provenance, write_model_files
from .processing import ConceptProcessor
from .weights import check_folder, fit_report, read_safetensors, verified, write_checksums

MODEL_TYPE = "medcap-concept-ensemble"
FUSIONS = ("mean", "weighted", "union", "intersection")
ENSEMBLE_FILES = ("config.json", "concepts.json", "thresholds.json")   # + the processor (below)


def member_threshold_vector(thresholds: dict, cuis: list[str]) -> np.ndarray:
    from ..thresholds import Thresholds

    return Thresholds.from_json(thresholds, cuis).vector(len(cuis))


# ------------------------------------------------------------------------------------------
# The ensemble as a model
# ------------------------------------------------------------------------------------------

@dataclass
class EnsembleConfig:
    members: list[str]                  # member folders, relative to the ensemble folder
    fusion: str = "mean"
    weights: list[float] = field(default_factory=list)   # one per source: members, then kNN
    knn: dict | None = None             # {"k", "temperature", "embed_member", "thresholds"}
    head: str = "ensemble"              # shown where a detector shows its head
    model_type: str = MODEL_TYPE


def _to_member_input(x, prep: dict, member_prep: dict):
    """The ensemble's normalised batch -> the batch member ``member_prep`` expects."""
    import torch.nn.functional as F

    if prep.get("mean") is not None:                                              # back to [0, 1]
        x = x * torch.tensor(prep["std"], device=x.device).view(1, -1, 1, 1) \
            + torch.tensor(prep["mean"], device=x.device).view(1, -1, 1, 1)
    size = int(member_prep.get("image_size", x.shape[-1]))
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    if member_prep.get("mean") is not None:
        x = (x - torch.tensor(member_prep["mean"], device=x.device).view(1, -1, 1, 1)) \
            / torch.tensor(member_prep["std"], device=x.device).view(1, -1, 1, 1)
    return x


class ConceptEnsemble(nn.Module):
    """Member detectors (+ kNN over their embeddings) -> fused probabilities [B, K].

    Looks like a ConceptDetector to prediction: ``vocabulary``, ``thresholds``,
    ``preprocessing``, ``probabilities(x)``, ``forward(x)`` (logits of the fused scores),
    ``forward_features(x)`` (the kNN member's feature map: the embedding kNN uses).
    """

    is_ensemble = True

    def __init__(self, cfg: EnsembleConfig, members: list, train_embeddings=None, train_labels=None):
        super().__init__()
        self.config = cfg
        self.members = nn.ModuleList(members)
        self.provenance: dict | None = None   # provenance.json (models.card)
        first = members[0]
        self.vocabulary = first.vocabulary
        for m in members[1:]:
            if list(m.vocabulary.cuis) != list(self.vocabulary.cuis):
                raise MedcapError("ensemble members must predict the same concepts (train them on the same data)")
        # The largest member input; smaller members get theirs by resizing it.
        self.preprocessing = dict(max((m.preprocessing for m in members), key=lambda p: p.get("image_size", 0)))
        self.thresholds: dict = {}
        k = len(self.vocabulary.cuis)
        member_t = [member_threshold_vector(m.thresholds, self.vocabulary.cuis) for m in members]
        if cfg.knn is not None:
            member_t.append(member_threshold_vector(cfg.knn["thresholds"], self.vocabulary.cuis))
            self.register_buffer("train_embeddings", torch.as_tensor(np.asarray(train_embeddings), dtype=torch.float32))
            self.register_buffer("train_labels", torch.as_tensor(np.asarray(train_labels), dtype=torch.float32))
            if self.train_labels.shape[1] != k or len(self.train_labels) != len(self.train_embeddings):
                raise MedcapError("the kNN index does not fit the ensemble (labels must be [N, K] for N embeddings)")
        self.register_buffer("member_thresholds", torch.as_tensor(np.stack(member_t), dtype=torch.float32))

    @property
    def num_sources(self) -> int:
        return len(self.members) + int(self.config.knn is not None)

    def forward_features(self, x):
        m = self.members[(self.config.knn or {}).get("embed_member", 0)]
        return m.forward_features(_to_member_input(x, self.preprocessing, m.preprocessing))

    def source_probabilities(self, x) -> list:
        """Each source's probabilities [B, K]: members in order, then kNN."""
        out = [m(_to_member_input(x, self.preprocessing, m.preprocessing)).float().sigmoid() for m in self.members]
        if self.config.knn is not None:
            q = nn.functional.normalize(self.forward_features(x).float().mean(dim=(2, 3)), dim=1)   # [B, C]
            k = min(int(self.config.knn["k"]), len(self.train_embeddings))
            sims, idx = (q @ self.train_embeddings.T).topk(k, dim=1)                            # [B, k]
            t = float(self.config.knn.get("temperature", 0.0))
            w = torch.softmax(sims / t, dim=1) if t > 0 else torch.full_like(sims, 1.0 / k)
            out.append(torch.einsum("bj,bjk->bk", w, self.train_labels[idx]))                    # [B, K]
        return out

    def probabilities(self, x):
        p = torch.stack(self.source_probabilities(x))                                          # [M, B, K]
        fusion = self.config.fusion
        if fusion == "mean":
            return p.mean(dim=0)
        if fusion == "weighted":
            w = torch.tensor(self.config.weights, dtype=p.dtype, device=p.device)
            return torch.einsum("m,mbk->bk", w / w.sum(), p)
        margin = p - self.member_thresholds[:, None, :]
        margin = margin.amax(dim=0) if fusion == "union" else margin.amin(dim=0)
        return (0.5 + margin).clamp(0.0, 1.0)

    def forward(self, x):
        return torch.logit(self.probabilities(x), eps=1e-6)

    def probabilities_and_maps(self, x):
        """(fused probabilities [B, K], the first member's score maps [B, K, h, w]) for heatmaps."""
        m = self.members[0]
        return self.probabilities(x), m.score_maps(_to_member_input(x, self.preprocessing, m.preprocessing))

    # -- folders --------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path, member_dirs: list[Path], fit: dict | None = None) -> Path:
        """Write the folder atomically; members are copied from ``member_dirs`` (same order)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        with atomic_dir(folder) as tmp:
            for src, rel in zip(member_dirs, self.config.members, strict=True):
                shutil.copytree(src, tmp / rel)
            write_text_atomic(tmp / "config.json", json.dumps(asdict(self.config), indent=2))
            if self.config.knn is not None:
                save_file({"train_embeddings": self.train_embeddings.contiguous(),
                           "train_labels": self.train_labels.contiguous()}, str(tmp / "knn.safetensors"))
            self.vocabulary.save(tmp)
            write_text_atomic(tmp / "thresholds.json", json.dumps(self.thresholds, indent=2))
            ConceptProcessor.from_dict(self.preprocessing).save_pretrained(tmp)   # preprocessor_config.json
            write_text_atomic(tmp / "fit.json", json.dumps(fit or {}, indent=1, default=float))
            write_model_files(tmp, self.provenance, "concept-ensemble")
            write_checksums(tmp)
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> ConceptEnsemble:
        from .concept_detector import ConceptDetector, _read_json

        folder = Path(folder)
        for name in ENSEMBLE_FILES:
            if not (folder / name).is_file():
                raise MedcapError(f"ensemble folder is missing {name} (expected {', '.join(ENSEMBLE_FILES)})",
                                  file=folder)
        try:
            cfg = EnsembleConfig(**_read_json(folder / "config.json"))
        except TypeError as e:
            raise MedcapError(f"config.json does not describe a concept ensemble ({e})",
                              file=folder / "config.json") from None
        members = []
        for rel in cfg.members:
            path = (folder / rel).resolve()
            if folder.resolve() not in path.parents:
                raise MedcapError(f"member {rel!r} is outside the ensemble folder", file=folder / "config.json")
            members.append(ConceptDetector.from_pretrained(path, notice=False))  # the ensemble says it once
        emb = labels = None
        if cfg.knn is not None:
            knn = folder / "knn.safetensors"
            with verified(folder):  # sha256 + size of checksums.json, hashed while the file is read
                index = read_safetensors(knn)
            fit_report(sorted({"train_embeddings", "train_labels"} - set(index)),
                       sorted(set(index) - {"train_embeddings", "train_labels"}), [], knn, "kNN index")
            emb, labels = index["train_embeddings"], index["train_labels"]
            k = len(members[0].vocabulary.cuis)
            if emb.ndim != 2 or labels.ndim != 2 or len(emb) != len(labels) or labels.shape[1] != k:
                raise MedcapError(f"the kNN index does not fit this ensemble: train_embeddings {tuple(emb.shape)} and "
                                  f"train_labels {tuple(labels.shape)}, expected [N, C] and [N, {k}]", file=knn)
            emb, labels = emb.numpy(), labels.numpy()
        else:
            check_folder(folder)
        if (folder / "fit.json").is_file():
            read_json(folder / "fit.json")  # what the fit chose: a truncated copy is one line, not ignored
        model = cls(cfg, members, emb, labels)
        model.thresholds = _read_json(folder / "thresholds.json")
        # preprocessor_config.json, as a detector's; ensembles saved before 2026-11-30: preprocessing.json
        model.preprocessing = ConceptProcessor.from_pretrained(folder).to_dict()
        model.provenance = load_provenance(folder)
        return model.eval()


def is_ensemble_folder(folder: str | Path) -> bool:
    path = Path(folder) / "config.json"
    try:
        return path.is_file() and json.loads(path.read_text(encoding="utf-8")).get("model_type") == MODEL_TYPE
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False  # from_pretrained of the detector reports the broken file
