"""Multi-label losses on logits [B, K] and 0/1 targets [B, K], all averaged over B*K entries.

- ``bce``: binary cross-entropy per class (paper eq. 1), the paper's loss;
- ``focal``: sigmoid focal loss (Lin et al. 2017; the paper's "future work"), torchvision's
  implementation;
- ``asl``: asymmetric loss (Ridnik et al. 2021), the usual choice for long-tailed multi-label
  data, timm's implementation (``timm.loss.AsymmetricLossMultiLabel``).

The paper's eq. 1 sums over classes; we average (as ``nn.BCEWithLogitsLoss`` does by
default), which only rescales the gradient by 1/K for every loss alike.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import MedcapError

LOSSES = ("bce", "focal", "asl")


@dataclass
class LossConfig:
    loss: str = "bce"                 # bce | focal | asl (asymmetric loss)
    focal_gamma: float = 2.0          # focal loss: focusing parameter
    focal_alpha: float = -1.0         # focal loss: weight of positives in (0, 1); -1 = no weighting
    asl_gamma_neg: float = 4.0        # ASL: focusing on negatives (Ridnik et al. default)
    asl_gamma_pos: float = 0.0        # ASL: focusing on positives (Ridnik et al. default)
    asl_clip: float = 0.05            # ASL: probability margin that discards easy negatives


class FocalLoss(nn.Module):
    def __init__(self, gamma: float = 2.0, alpha: float = -1.0):
        super().__init__()
        self.gamma, self.alpha = gamma, alpha

    def forward(self, logits, targets):
        from torchvision.ops import sigmoid_focal_loss

        return sigmoid_focal_loss(logits, targets.to(logits.dtype), alpha=self.alpha, gamma=self.gamma,
                                  reduction="mean")


class BCELoss(nn.Module):
    def forward(self, logits, targets):
        return nn.functional.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))


def _asl(gamma_neg: float, gamma_pos: float, clip: float) -> nn.Module:
    from timm.loss import AsymmetricLossMultiLabel

    return AsymmetricLossMultiLabel(gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip or None,
                                    reduction="mean")


def build_loss(cfg) -> nn.Module:
    """``cfg`` is any object with the LossConfig fields (the concept config has them)."""
    name = cfg.loss
    if name == "bce":
        return BCELoss()
    if name == "focal":
        return FocalLoss(cfg.focal_gamma, cfg.focal_alpha)
    if name == "asl":
        return _asl(cfg.asl_gamma_neg, cfg.asl_gamma_pos, cfg.asl_clip)
    raise MedcapError(f"loss: expected one of {', '.join(LOSSES)}, got {name!r}")


def loss_value(loss: nn.Module, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Losses are computed in float32 even under bf16/fp16 autocast (log/exp need the range)."""
    return loss(logits.float(), targets.float())
