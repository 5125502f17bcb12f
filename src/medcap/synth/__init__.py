"""SYNTHETIC ImageCLEFmedical-style data: the project's built-in default dataset.

Nothing here is real medical data. :func:`generate_dataset` draws images procedurally
(modality sets the global look, body region the anatomy, findings are small local
objects at a labelled location), labels them with real UMLS CUIs, writes captions from
the concepts and saves everything in exactly the ImageCLEFmedical Caption layout, so the
demo, the tests and the benchmarks run end to end without the licensed data::

    from medcap.synth import SynthConfig, generate_dataset
    generate_dataset("synth-data", SynthConfig(n_train=500, n_valid=100, n_test=100, seed=0))

Also here, for benchmarks and the captioning evaluation:

- :data:`CATALOG`: CUI -> :class:`Concept` (canonical name, kind, caption words);
- :func:`caption_from_concepts`: a caption written from a CUI list alone;
- :func:`mentioned_concepts`: which modality / region / finding CUIs a caption names.

Modules: ``catalog`` (concepts and their frequencies), ``scene`` (what one image shows
and its labels), ``draw`` (the drawing), ``captions`` and ``generate`` (files on disk).
"""
from ..factcheck.lexicon import Concept
from ..metrics.concepts import SECONDARY_CUIS
from .captions import caption_from_concepts, mentioned_concepts
from .catalog import CATALOG
from .generate import GENERATOR_VERSION, SynthConfig, SynthImage, add_label_noise, generate_dataset, make_image

__all__ = [
    "CATALOG",
    "GENERATOR_VERSION",
    "SECONDARY_CUIS",
    "Concept",
    "SynthConfig",
    "SynthImage",
    "add_label_noise",
    "caption_from_concepts",
    "generate_dataset",
    "make_image",
    "mentioned_concepts",
]
