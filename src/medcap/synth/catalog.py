"""The concept catalogue of the SYNTHETIC dataset: the concepts of the built-in lexicon
(:mod:`medcap.factcheck.lexicon`: real UMLS CUIs, canonical names, kinds and the words
captions use; the 15 modality / body-region CUIs are the official secondary-score list,
REFERENCE §4) and how often each occurs in the synthetic data.

Target frequencies are "fraction of images" and make a long tail (REFERENCE §5: most images
carry 1-4 concepts, a few carry 10): the modality and region concepts are the head, seven
core findings sit at 5-14 % (learnable: each at least a few % of images, see
REFERENCE §8 "Measured on throwaway prototypes"), then a tail of rarer
findings and "other" concepts below 3 %.
"""
from __future__ import annotations

from ..factcheck.lexicon import CONCEPTS, KINDS, Concept

# The concepts themselves (CUI, name, kind, caption words) are the fact-checker's lexicon;
# this module adds how often each occurs in the synthetic data.
_CONCEPTS = CONCEPTS

CATALOG: dict[str, Concept] = {c.cui: c for c in _CONCEPTS}
"""CUI -> :class:`Concept`, for every concept the synthetic data can contain."""

BY_KEY: dict[str, Concept] = {c.key: c for c in _CONCEPTS}
"""Internal key (``"ct"``, ``"nodule"``, ...) -> :class:`Concept`."""
assert len(CATALOG) == len(BY_KEY) == len(_CONCEPTS), "CUIs and keys must be unique"

MODALITIES = tuple(c.key for c in _CONCEPTS if c.kind == "modality")
REGIONS = tuple(c.key for c in _CONCEPTS if c.kind == "region")
FINDINGS = tuple(c.key for c in _CONCEPTS if c.kind == "finding")
CORE_FINDINGS = ("nodule", "mass", "cyst", "fracture", "calcification", "stent", "effusion")


def cui(key: str) -> str:
    """The CUI of an internal key (``cui("ct") == "C0040405"``)."""
    return BY_KEY[key].cui


def concepts_of_kind(kind: str) -> list[Concept]:
    if kind not in KINDS:
        raise ValueError(f"unknown concept kind {kind!r}; expected one of {KINDS}")
    return [c for c in _CONCEPTS if c.kind == kind]


# ---------------------------------------------------------------------------------
# How often things occur. Modality first (ROCOv2 is dominated by CT and X-ray), then
# the region given the modality (weights; "none" = no body-region concept, e.g. OCT or
# a close-up), then each finding independently with a probability chosen so that its
# share of ALL images is FINDING_RATE (see scene.finding_probability).
MODALITY_WEIGHTS = {"ct": 30, "xray": 22, "mri": 17, "us": 11, "angio": 8, "pet": 7, "oct": 5}

REGION_WEIGHTS = {
    "ct": {"chest": 30, "abdomen": 28, "skull": 14, "spine": 7, "pelvis": 9, "upper_limb": 3, "lower_limb": 4,
           "breast": 1, "none": 4},
    "mri": {"skull": 35, "spine": 18, "abdomen": 10, "pelvis": 10, "lower_limb": 10, "upper_limb": 5, "breast": 8,
            "chest": 2, "none": 2},
    "xray": {"chest": 40, "lower_limb": 14, "upper_limb": 12, "spine": 9, "pelvis": 8, "skull": 5, "abdomen": 6,
             "breast": 5, "none": 1},
    "us": {"abdomen": 35, "breast": 15, "pelvis": 18, "chest": 8, "lower_limb": 8, "upper_limb": 4, "skull": 2,
           "none": 10},
    "angio": {"skull": 28, "chest": 25, "abdomen": 18, "pelvis": 8, "lower_limb": 15, "upper_limb": 6},
    "pet": {"skull": 20, "chest": 30, "abdomen": 20, "pelvis": 10, "none": 20},
    "oct": {"none": 1},
}

_ALL_REGIONS = REGIONS + ("none",)
_ALL_BUT_OCT = tuple(m for m in MODALITIES if m != "oct")

# finding -> (share of all images, allowed regions, allowed modalities)
FINDING_RATE: dict[str, tuple[float, tuple[str, ...], tuple[str, ...]]] = {
    "nodule": (0.14, ("chest", "breast", "abdomen", "pelvis", "none"), ("ct", "mri", "xray", "us", "pet")),
    "mass": (0.11, _ALL_REGIONS, _ALL_BUT_OCT),
    "cyst": (0.09, ("abdomen", "pelvis", "skull", "breast", "spine", "none"), ("ct", "mri", "us", "oct")),
    "fracture": (0.08, ("upper_limb", "lower_limb", "spine", "pelvis", "skull", "chest"), ("xray", "ct", "mri")),
    "calcification": (0.07, ("breast", "chest", "abdomen", "skull", "pelvis", "lower_limb", "upper_limb"),
                      ("xray", "ct", "us", "mri")),
    "stent": (0.06, ("chest", "abdomen", "pelvis", "lower_limb", "upper_limb", "skull"), ("angio", "xray", "ct")),
    "effusion": (0.05, ("chest",), ("xray", "ct", "us", "mri")),
    "abscess": (0.025, ("abdomen", "pelvis", "skull", "chest"), ("ct", "mri", "us")),
    "hemorrhage": (0.02, ("skull", "abdomen"), ("ct", "mri")),
    "aneurysm": (0.016, ("skull", "abdomen", "chest", "pelvis", "lower_limb"), ("angio", "ct", "mri")),
    "pneumothorax": (0.012, ("chest",), ("xray", "ct")),
    "kidney_calculi": (0.01, ("abdomen",), ("ct", "xray", "us")),
    "metastasis": (0.008, ("chest", "abdomen", "skull", "spine", "none"), ("ct", "mri", "pet")),
    "cholelithiasis": (0.006, ("abdomen",), ("us", "ct")),
    "ascites": (0.005, ("abdomen", "pelvis"), ("ct", "us", "mri")),
}

# other concept -> {region or modality: probability of the label given it}. These labels
# are not drawn (the organ is always part of the anatomy), like the many ROCOv2 concepts
# that a caption mentions but an image cannot prove; Knee and Hand are the exceptions
# (set when the knee / hand view is drawn, see scene.py), as is Contrast Media (drawn).
OTHER_RATES: dict[str, dict[str, float]] = {
    "lung": {"chest": 0.20},
    "heart": {"chest": 0.12},
    "liver": {"abdomen": 0.15},
    "kidney": {"abdomen": 0.10},
    "brain": {"skull": 0.20},
    "aorta": {"chest": 0.06, "abdomen": 0.06},
    "spleen": {"abdomen": 0.03},
    "pancreas": {"abdomen": 0.03},
    "retina": {"oct": 0.30},
}
CONTRAST_RATE = {"ct": 0.30, "mri": 0.25}  # Contrast Media: brighter vessels and organs

MAX_FINDINGS = 4
MAX_CONCEPTS = 10  # REFERENCE §5 / the paper's Figure 3: 1 to about 10 concepts per image
