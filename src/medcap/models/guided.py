"""Concept-guided caption training: BLIP plus an auxiliary concept probe on its image encoder.

The ImageCLEFmedical caption data comes with the concepts of every training image. The
paper's future work asks for knowledge-guided captions; the cheapest form of that is
multi-task training: a linear probe on the mean of BLIP's image embeddings (the tokens the
text decoder cross-attends to) predicts the image's CUIs, and its binary cross-entropy is
added to the caption loss::

    loss = caption cross-entropy + concept_loss x BCE(probe(mean(image_embeds)), concepts)

In the caption loss the modality and the body region are one or two tokens out of about 25,
so a randomly initialised image encoder learns them slowly; the probe tells it directly
(BENCHMARKS.md, captioning section, measures the effect). The probe exists only while
training: the saved model folder is the plain BLIP, and generation never uses it.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ConceptGuidedBlip(nn.Module):
    """``blip`` (BlipForConditionalGeneration) and a linear probe over ``n_concepts`` CUIs.

    ``forward`` takes a caption batch with a ``concepts`` multi-hot tensor [B, K] and returns
    ``(total loss, caption loss)``.
    """

    def __init__(self, blip: nn.Module, n_concepts: int, weight: float = 1.0):
        super().__init__()
        if n_concepts < 1 or weight <= 0:
            raise ValueError("a concept probe needs at least one concept and a positive weight")
        self.blip = blip
        self.probe = nn.Linear(blip.config.vision_config.hidden_size, n_concepts)
        self.weight = float(weight)

    def forward(self, pixel_values, input_ids, attention_mask, labels, concepts,
                interpolate_pos_encoding: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.blip(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask,
                        labels=labels, interpolate_pos_encoding=interpolate_pos_encoding)
        logits = self.probe(out.image_embeds.mean(dim=1))
        probe_loss = F.binary_cross_entropy_with_logits(logits.float(), concepts.float())
        return out.loss + self.weight * probe_loss, out.loss


def captioning_model(model: nn.Module) -> nn.Module:
    """The BLIP inside a (possibly DDP-wrapped) :class:`ConceptGuidedBlip`, or ``model`` itself."""
    model = getattr(model, "module", model)
    return model.blip if isinstance(model, ConceptGuidedBlip) else model
