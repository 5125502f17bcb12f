"""The concept catalogue of the SYNTHETIC dataset: real UMLS CUIs, their canonical names,
what kind of concept each is, and the words the synthetic captions use for it.

The 15 modality / body-region CUIs are exactly the secondary-score list of the official
ImageCLEFmedical 2025 evaluator (REFERENCE §4). The other CUIs are real UMLS concepts
chosen because they are common in ROCOv2-style captions; the two whose CUI could not be
checked against a public source here are marked below.

Target frequencies are "fraction of images" and make a long tail (REFERENCE §5: most images
carry 1-4 concepts, a few carry 10): the modality and region concepts are the head, seven
core findings sit at 5-14 % (learnable: each at least a few % of images, see
REFERENCE §8 "Measured on throwaway prototypes"), then a tail of rarer
findings and "other" concepts below 3 %.
"""
from __future__ import annotations

from dataclasses import dataclass

KINDS = ("modality", "region", "finding", "location", "other")


@dataclass(frozen=True)
class Concept:
    """One concept of the synthetic data.

    ``key`` is the short internal name the generator uses (``"ct"``, ``"nodule"``);
    ``words`` are the phrases captions use for it (the first is the plain one), which is
    also what :func:`medcap.synth.mentioned_concepts` looks for.
    """

    cui: str
    name: str  # canonical name, written to cui_mapping.csv
    kind: str  # one of KINDS
    key: str
    words: tuple[str, ...]


def _c(cui: str, name: str, kind: str, key: str, *words: str) -> Concept:
    return Concept(cui, name, kind, key, tuple(words))


# Order matters only for cui_mapping.csv (written in this order) and for readability.
_CONCEPTS: tuple[Concept, ...] = (
    # --- modalities (REFERENCE §4 secondary list) ---
    _c("C0040405", "X-Ray Computed Tomography", "modality", "ct",
       "CT", "computed tomography", "CT scan", "CT image"),
    _c("C0024485", "Magnetic Resonance Imaging", "modality", "mri",
       "MRI", "magnetic resonance imaging", "MR image", "MR imaging", "T1-weighted", "T2-weighted"),
    _c("C1306645", "Plain x-ray", "modality", "xray",
       "X-ray", "x-ray", "radiograph", "plain radiograph", "radiography", "mammogram", "mammography"),
    _c("C0041618", "Ultrasonography", "modality", "us",
       "ultrasound", "ultrasonography", "sonogram", "sonography", "sonographic"),
    _c("C0002978", "angiogram", "modality", "angio",
       "angiogram", "angiography", "angiographic", "DSA"),
    _c("C0032743", "Positron-Emission Tomography", "modality", "pet",
       "PET", "positron emission tomography", "PET scan"),
    _c("C0920367", "Optical Coherence Tomography", "modality", "oct",
       "OCT", "optical coherence tomography"),
    # --- body regions (REFERENCE §4 secondary list) ---
    _c("C0817096", "Chest", "region", "chest", "chest", "thorax", "thoracic"),
    _c("C0000726", "Abdomen", "region", "abdomen", "abdomen", "abdominal"),
    _c("C0037303", "Bone structure of cranium", "region", "skull",
       "head", "skull", "brain", "cranial", "cranium"),
    _c("C0037949", "Vertebral column", "region", "spine",
       "spine", "spinal", "vertebral column", "lumbar spine", "cervical spine", "thoracolumbar spine"),
    _c("C0030797", "Pelvis", "region", "pelvis", "pelvis", "pelvic"),
    _c("C1140618", "Upper Extremity", "region", "upper_limb",
       "upper extremity", "upper limb", "arm", "forearm", "elbow", "shoulder", "hand", "wrist"),
    _c("C0023216", "Lower Extremity", "region", "lower_limb",
       "lower extremity", "lower limb", "leg", "thigh", "femur", "knee", "ankle"),
    _c("C0006141", "Breast", "region", "breast", "breast", "mammary"),
    # --- findings: the learnable core (each 5-14 % of images) ---
    _c("C0028259", "Nodule", "finding", "nodule", "nodule", "nodular opacity"),
    _c("C0577559", "Mass of body structure", "finding", "mass", "mass"),
    _c("C0010709", "Cyst", "finding", "cyst", "cyst", "cystic lesion"),
    _c("C0016658", "Fracture", "finding", "fracture", "fracture"),
    _c("C0006660", "Calcinosis", "finding", "calcification",
       "calcification", "calcified focus", "calcinosis"),
    _c("C0038257", "Stents", "finding", "stent", "stent"),
    _c("C0032227", "Pleural effusion disorder", "finding", "effusion", "pleural effusion", "effusion"),
    # --- findings: the rare tail (< 3 % of images) ---
    _c("C0000833", "Abscess", "finding", "abscess", "abscess"),
    _c("C0019080", "Hemorrhage", "finding", "hemorrhage", "hemorrhage", "haemorrhage"),
    _c("C0002940", "Aneurysm", "finding", "aneurysm", "aneurysm"),
    _c("C0032326", "Pneumothorax", "finding", "pneumothorax", "pneumothorax"),
    _c("C0022650", "Kidney Calculi", "finding", "kidney_calculi",
       "renal calculus", "renal calculi", "kidney stone", "nephrolithiasis"),
    _c("C0027627", "Neoplasm Metastasis", "finding", "metastasis",
       "metastases", "metastasis", "metastatic lesions", "metastatic deposits"),
    _c("C0008350", "Cholelithiasis", "finding", "cholelithiasis", "gallstones", "cholelithiasis"),
    _c("C0003962", "Ascites", "finding", "ascites", "ascites"),
    # --- locations: derived from where the findings are drawn (image-determined) ---
    # Radiological convention: the patient's right is on the image's left.
    _c("C0205090", "Right", "location", "right", "right"),
    _c("C0205091", "Left", "location", "left", "left"),
    # C1282910 for "Upper" could not be checked against a public source here (believed
    # correct); C0441994 "Lower" was seen in one public UMLS list.
    _c("C1282910", "Upper", "location", "upper", "upper"),
    _c("C0441994", "Lower", "location", "lower", "lower"),
    _c("C0238767", "Bilateral", "location", "bilateral", "bilateral", "both sides"),
    # --- other concepts: contrast is visible; the organs are mostly a random tail ---
    _c("C0009924", "Contrast Media", "other", "contrast",
       "contrast-enhanced", "contrast medium", "intravenous contrast"),
    _c("C0024109", "Lung", "other", "lung", "lung", "lungs"),
    _c("C0018787", "Heart", "other", "heart", "heart"),
    _c("C0023884", "Liver", "other", "liver", "liver"),
    _c("C0022646", "Kidney", "other", "kidney", "kidney", "kidneys"),
    _c("C0006104", "Brain", "other", "brain", "brain parenchyma"),
    _c("C0003483", "Aorta", "other", "aorta", "aorta"),
    _c("C0022742", "Knee", "other", "knee", "knee joint"),
    _c("C0018563", "Hand", "other", "hand", "hand"),
    _c("C0037993", "Spleen", "other", "spleen", "spleen"),
    _c("C0030274", "Pancreas", "other", "pancreas", "pancreas"),
    _c("C0035298", "Retina", "other", "retina", "retina", "retinal layers"),
)

CATALOG: dict[str, Concept] = {c.cui: c for c in _CONCEPTS}
"""CUI -> :class:`Concept`, for every concept the synthetic data can contain."""

BY_KEY: dict[str, Concept] = {c.key: c for c in _CONCEPTS}
"""Internal key (``"ct"``, ``"nodule"``, ...) -> :class:`Concept`."""
assert len(CATALOG) == len(BY_KEY) == len(_CONCEPTS), "CUIs and keys must be unique"

# REFERENCE §4: the 15 CUIs of the official secondary score, in the evaluator's order.
SECONDARY_CUIS: tuple[str, ...] = (
    "C0002978", "C0040405", "C0024485", "C0032743", "C0041618", "C1306645", "C1140618",
    "C0037949", "C0030797", "C0023216", "C0037303", "C0817096", "C0006141", "C0000726",
    "C0920367",
)

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
    "ct": {"chest": 30, "abdomen": 28, "skull": 14, "spine": 7, "pelvis": 9, "upper_limb": 3, "lower_limb": 4, "breast": 1, "none": 4},
    "mri": {"skull": 35, "spine": 18, "abdomen": 10, "pelvis": 10, "lower_limb": 10, "upper_limb": 5, "breast": 8, "chest": 2, "none": 2},
    "xray": {"chest": 40, "lower_limb": 14, "upper_limb": 12, "spine": 9, "pelvis": 8, "skull": 5, "abdomen": 6, "breast": 5, "none": 1},
    "us": {"abdomen": 35, "breast": 15, "pelvis": 18, "chest": 8, "lower_limb": 8, "upper_limb": 4, "skull": 2, "none": 10},
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
    "calcification": (0.07, ("breast", "chest", "abdomen", "skull", "pelvis", "lower_limb", "upper_limb"), ("xray", "ct", "us", "mri")),
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
