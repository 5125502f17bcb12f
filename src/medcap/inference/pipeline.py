"""The analysis behind ``medcap serve`` and the report's gallery: both models loaded once,
:class:`Pipeline` ``.analyze(path) -> Analysis`` (concept probabilities and the thresholds'
decision, the caption, a heatmap of the top concept). No Gradio here, so the web app
(:mod:`medcap.webapp.server`) and the offline report (:mod:`medcap.report`) share it and it is tested
without a browser. Research software, not for clinical use.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import MedcapError

DEFAULT_MAX_FILE_MB = 50.0
DEFAULT_MAX_PIXELS = 40_000_000   # an upload's width x height; training data allows 89.5 M (MAX_PIXELS)
DEFAULT_MAX_SIDE = 1024           # longer side of the image once loaded (the models need 224-384)
DEFAULT_CONCURRENCY = 1           # images analysed at the same time (each holds one decoded upload)
DEFAULT_QUEUE_SIZE = 32           # requests waiting; further ones are refused ("queue is full")
KEEP_OUTPUTS = 64                 # per-request output folders kept (served from Gradio's cache by then)


@dataclass
class ConceptScore:
    cui: str
    name: str
    probability: float
    predicted: bool          # above the model's (global or per-concept) threshold

    @property
    def label(self) -> str:
        return f"{self.name} ({self.cui})" if self.name and self.name != self.cui else self.cui


@dataclass
class Analysis:
    """Everything the app shows for one image."""

    image: object                                   # PIL RGB image as the models saw it
    concepts: list[ConceptScore] = field(default_factory=list)   # by probability, highest first
    caption: str | None = None
    heatmap: object | None = None                   # PIL overlay for ``heatmap_concept``
    heatmap_concept: str | None = None
    notes: list[str] = field(default_factory=list)  # e.g. "no caption model loaded"

    @property
    def predicted(self) -> list[ConceptScore]:
        return [c for c in self.concepts if c.predicted]


def model_folder(path: str | Path | None, kind: str | None = None) -> Path | None:
    """A model folder, also when given the training folder that holds it (``out`` for ``out/model``):
    :func:`medcap.models.location.resolve_model_folder`."""
    if path is None:
        return None
    from ..models.location import resolve_model_folder

    return Path(resolve_model_folder(Path(path), kind))


class Pipeline:
    """Both models, loaded once; :meth:`analyze` runs them on one image file.

    Either model folder may be None: that part of the analysis is then skipped with a note.
    ``max_file_mb`` refuses larger files and ``max_pixels`` larger images before they are
    decoded; ``max_side`` is the longer side an image is reduced to as soon as it is decoded.
    """

    def __init__(self, concepts: str | Path | None = None, captions: str | Path | None = None, *,
                 max_file_mb: float = DEFAULT_MAX_FILE_MB, device: str | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int = DEFAULT_MAX_SIDE):
        from ..device import device_name

        self.concepts_dir = model_folder(concepts, "concepts")
        self.captions_dir = model_folder(captions, "captions")
        self.max_file_mb = float(max_file_mb)
        self.max_pixels, self.max_side = int(max_pixels), int(max_side)
        if self.max_pixels < 1 or self.max_side < 32:
            raise MedcapError(f"max_pixels must be at least 1 and max_side at least 32, "
                              f"got {max_pixels} and {max_side}")
        self.device = device_name(device)
        self.concept_model = None
        self.caption_model = None
        if self.concepts_dir is not None:
            from .concepts import load_detector

            self.concept_model = load_detector(self.concepts_dir).to(self.device).eval()
        if self.captions_dir is not None:
            from .captions import load_captioner

            self.caption_model = load_captioner(self.captions_dir)  # BLIP or a vision-language model
            self.caption_model.model.to(self.device).eval()

    @classmethod
    def from_models(cls, concept_model=None, caption_model=None, *, concepts_dir: str | Path | None = None,
                    captions_dir: str | Path | None = None, **options) -> Pipeline:
        """A pipeline over models already in memory (a ConceptDetector or ConceptEnsemble, a
        Captioner), loaded from ``concepts_dir`` / ``captions_dir``: nothing is loaded again."""
        self = cls(None, None, **options)
        self.concepts_dir = None if concepts_dir is None else Path(concepts_dir)
        self.captions_dir = None if captions_dir is None else Path(captions_dir)
        if concept_model is not None:
            self.concept_model = concept_model.to(self.device).eval()
        if caption_model is not None:
            self.caption_model = caption_model
            self.caption_model.model.to(self.device).eval()
        return self

    def synthetic_banner(self) -> str:
        """Markdown saying that a loaded model learnt from synthetic data, with its validation scores
        ("" when none did; the models' provenance.json tells)."""
        from ..models.card import synthetic_banner

        return synthetic_banner({label: getattr(model, "provenance", None) for label, model in
                                 (("concept detector", self.concept_model), ("captioner", self.caption_model))
                                 if model is not None})

    # -- checks -------------------------------------------------------------------------------
    def check_file(self, path: str | Path) -> Path:
        """The path, or a MedcapError a user can act on (missing, empty, too large)."""
        path = Path(path)
        if not path.is_file():
            raise MedcapError("no such file", file=path)
        size = path.stat().st_size
        if size == 0:
            raise MedcapError("the file is empty", file=path.name)
        if size > self.max_file_mb * 1024 * 1024:
            raise MedcapError(f"the file is {size / 1024 / 1024:.1f} MB, larger than the {self.max_file_mb:g} MB "
                              "limit (medcap serve --max-file-mb)", file=path.name)
        return path

    def load(self, path: str | Path):
        """The image as an RGB PIL image of at most ``max_side`` px a side; MedcapError for anything
        that is not an image or is over ``max_pixels``."""
        from ..data.images import load_image

        path = self.check_file(path)
        try:
            image = load_image(path, max_pixels=self.max_pixels, draft_size=self.max_side, max_side=self.max_side)
        except MedcapError as e:  # name the upload, not the server's temporary path
            message = e.message.replace("raise medcap.data.images.MAX_PIXELS", "raise medcap serve --max-pixels")
            raise MedcapError(message, file=path.name) from None
        # Reduced as soon as decoded: the preview, heatmap overlay and model inputs are made from it.
        return image

    # -- analysis -----------------------------------------------------------------------------
    def analyze(self, path: str | Path) -> Analysis:
        """Check, load and analyse an image file (JPEG, PNG, DICOM, ...)."""
        return self.analyze_image(self.load(path))

    def analyze_image(self, image) -> Analysis:
        """Analyse an RGB PIL image with whichever models are loaded."""
        import torch

        result = Analysis(image=image)
        with torch.inference_mode():
            if self.concept_model is None:
                result.notes.append("no concept model loaded (medcap serve --concepts DIR)")
            else:
                self._concepts(image, result)
            if self.caption_model is None:
                result.notes.append("no caption model loaded (medcap serve --captions DIR)")
            elif self.caption_model.concept_prompt is not None and self.concept_model is None:
                result.notes.append("this caption model starts from the detected concepts: load a concept model "
                                    "too (medcap serve --concepts DIR)")
            else:  # a concept-prompted captioner starts from the concepts just detected
                detected = [[c.cui for c in result.predicted]]
                result.caption = self.caption_model.generate([image], batch_size=1, concepts=detected)[0]
        return result

    def _concepts(self, image, result: Analysis) -> None:
        """Probabilities of every concept, the saved thresholds' decision, the top concept's heatmap."""
        from .concepts import decide
        from .explain import concept_heatmaps, content_region

        model = self.concept_model
        probs, maps = concept_heatmaps(model, image)            # [K], [K, S, S]
        predicted = {cui for cui, _ in decide(model, probs[None])[0]}
        vocab = model.vocabulary
        order = np.argsort(-probs, kind="stable")
        result.concepts = [ConceptScore(vocab.cuis[k], vocab.name(vocab.cuis[k]), float(probs[k]),
                                        vocab.cuis[k] in predicted) for k in order]
        if len(order):
            # The most probable predicted concept (per-concept thresholds may skip the top one).
            top = next((int(k) for k in order if vocab.cuis[k] in predicted), int(order[0]))
            maps = content_region(maps, image.size, model.preprocessing)
            result.heatmap = overlay_heatmap(image, maps[top])
            result.heatmap_concept = vocab.cuis[top]


def overlay_heatmap(image, heat, alpha: float = 0.55):
    """``image`` with ``heat`` (a 2-D score map, any size) drawn over it in colour.

    Only the positive part counts (evidence for the concept), scaled from its minimum to its
    maximum (where the evidence is strongest relative to the rest of the image); the colour's
    opacity follows it, so the image shows through where there is least.
    """
    from matplotlib import colormaps
    from PIL import Image

    heat = np.clip(np.asarray(heat, dtype=np.float32), 0, None)
    span = float(heat.max() - heat.min())
    heat = (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)
    heat = np.asarray(Image.fromarray(heat).resize(image.size, Image.Resampling.BILINEAR))
    colour = colormaps["jet"](heat)[..., :3] * 255.0                       # [H, W, 3]
    weight = (alpha * heat)[..., None]
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    return Image.fromarray((base * (1 - weight) + colour * weight).clip(0, 255).astype(np.uint8))
