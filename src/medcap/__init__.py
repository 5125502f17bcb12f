"""medcap: medical image concept detection and captioning for ImageCLEFmedical Caption.

The Python API behind the ``medcap`` command. Names are imported lazily, so
``import medcap`` stays fast and torch/transformers load only when a model is used::

    import medcap
    ds = medcap.read_dataset("synth-data")                      # ImageCLEF folder layout
    # both tasks: (config name or object, data, out, overrides)
    medcap.train_concepts("demo", "synth-data", "runs/concepts", {"max_minutes": 1})  # MedCSRA
    medcap.train_captions("demo", "synth-data", "runs/captions", {"max_minutes": 1})  # BLIP
    det = medcap.ConceptDetector.from_pretrained("runs/concepts")
    preds = medcap.predict_concepts(det, "synth-data/test")       # thresholds come with the model
    preds = medcap.predict_concepts(det, [pil_image, array])      # in memory: IDs image-1, image-2
    scores = medcap.evaluate_concepts(gold, {i: [c for c, _ in p] for i, p in preds.items()})

The README's "Python API" block is the runnable version (tests/test_readme.py runs it).
"""
from __future__ import annotations

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    # data
    "read_dataset": "medcap.data",
    "read_concepts_csv": "medcap.data",
    "read_captions_csv": "medcap.data",
    "read_cui_mapping": "medcap.data",
    "load_image": "medcap.data",
    "list_images": "medcap.data",
    "ConceptVocabulary": "medcap.data",
    "check_dataset": "medcap.data",
    "dataset_stats": "medcap.data",
    "SynthConfig": "medcap.synth",
    "generate_dataset": "medcap.synth",
    # models
    "ConceptDetector": "medcap.models.concept_detector",
    "create_backbone": "medcap.models.backbones",
    "Captioner": "medcap.models.captioner",
    "VLMCaptioner": "medcap.models.vlm",
    # training and prediction
    "Trainer": "medcap.training.engine",
    "train_concepts": "medcap.training.concepts",
    "predict_concepts": "medcap.inference.concepts",
    "load_concept_config": "medcap.training.concepts",
    "train_captioner": "medcap.training.captions",
    "train_captions": "medcap.training.captions",
    "predict_captions": "medcap.inference.captions",
    "load_captioner": "medcap.inference.captions",
    "train_vlm_captioner": "medcap.training.vlm",
    "load_caption_config": "medcap.training.captions",
    # submissions and metrics
    "write_concept_submission": "medcap.submission",
    "write_caption_submission": "medcap.submission",
    "validate_concept_submission": "medcap.submission",
    "validate_caption_submission": "medcap.submission",
    "read_id_order": "medcap.submission",
    "edition_rules": "medcap.editions",
    "score_captions_preset": "medcap.metrics.editions",
    "evaluate_concepts": "medcap.metrics.concepts",
    "evaluate_captions": "medcap.metrics.captions",
    # beyond the paper
    "fact_check": "medcap.factcheck",
    "MedcapError": "medcap.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'medcap' has no attribute {name!r}")
    from importlib import import_module  # (inside: `import medcap` leaves no helper names behind)

    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public API only (what tab completion shows): no helper or dunder names."""
    return sorted([*__all__, "__version__"])
