"""The built-in concept lexicon: real UMLS CUIs, their canonical names, what kind of concept
each is, and the phrases ROCOv2-style captions use for it ("CT", "computed tomography",
"thoracic", ...).

The fact-checker matches captions with these phrases (:func:`medcap.factcheck.knowledge_base`)
and the synthetic dataset writes its captions with them (:mod:`medcap.synth.catalog` adds how
often each concept occurs). The 15 modality / body-region CUIs are exactly the secondary-score
list of the official evaluator (REFERENCE §4, :data:`medcap.metrics.concepts.SECONDARY_CUIS`).
The other CUIs are real UMLS concepts chosen because they are common in ROCOv2-style captions;
the two whose CUI could not be checked against a public source here are marked below.
"""
from __future__ import annotations

from dataclasses import dataclass

KINDS = ("modality", "region", "finding", "location", "other")


@dataclass(frozen=True)
class Concept:
    """One concept of the lexicon.

    ``key`` is a short internal name (``"ct"``, ``"nodule"``; the synthetic generator's);
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


# Order matters only for the synthetic cui_mapping.csv (written in this order) and for readability.
CONCEPTS: tuple[Concept, ...] = (
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

LEXICON: dict[str, Concept] = {c.cui: c for c in CONCEPTS}
"""CUI -> :class:`Concept`."""
