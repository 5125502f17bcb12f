"""Captions for the SYNTHETIC images, written from the concepts with varied templates.

Every caption names the modality and (when the image has one) the body region, and each
finding with its size and location, in ROCOv2-like phrasing: synonyms ("CT" / "computed
tomography" / "axial CT scan"), sizes ("2.3 cm", "12 mm"), punctuation (commas,
parentheses, hyphens as in "x-ray" or "contrast-enhanced"). Lengths are right-skewed like
the paper's Figure 2: most captions are one sentence, some get a clinical context or a
follow-up sentence, and a few per cent carry a long case narrative.

:func:`caption_from_concepts` writes a caption from a CUI list alone (the "ceiling"
captions of the captioning evaluation); :func:`mentioned_concepts` finds which
modality / region / finding CUIs a caption names (to measure whether a captioner names
the modality and region correctly).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from . import catalog as cat
from .anatomy import FOV_MM
from .findings import FINDING_SIZE


@dataclass
class CaptionFacts:
    """What a caption says: keys of the catalogue plus finding sizes and locations."""

    modality: str | None
    region: str | None
    variant: str | None = None  # "hand" / "arm" / "knee" / "leg" for frontal limb views
    contrast: bool = False
    # (finding key, side "right"/"left"/None, level "upper"/"lower"/None, size in mm)
    findings: list[tuple[str, str | None, str | None, float]] = field(default_factory=list)
    organs: list[str] = field(default_factory=list)  # "other" concept keys named in passing
    bilateral: bool = False


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


# ---- modality and region phrases ---------------------------------------------------------
_PLANE = {"ct": ("axial",), "mri": ("axial", "coronal"), "us": ("transverse", "longitudinal"),
          "xray": ("frontal", "anteroposterior (AP)"), "angio": ("selective",), "pet": ("coronal",),
          "oct": ("horizontal",)}

_MODALITY = {
    "ct": ("CT", "computed tomography (CT)", "{plane} CT scan", "{plane} CT image", "CT scan",
           "{plane} computed tomography"),
    "mri": ("MRI", "magnetic resonance imaging (MRI)", "{plane} T2-weighted MRI", "{plane} T1-weighted MR image",
            "MR image", "{plane} MRI", "T2-weighted MR image"),
    "xray": ("X-ray", "plain radiograph", "radiograph", "plain x-ray", "{plane} radiograph", "{plane} X-ray"),
    "us": ("ultrasound", "ultrasonography", "sonogram", "ultrasound image", "B-mode ultrasound",
           "{plane} sonographic image", "grey-scale ultrasonography"),
    "angio": ("angiogram", "angiography", "digital subtraction angiography (DSA)", "catheter angiogram",
              "{plane} angiogram"),
    "pet": ("PET", "positron emission tomography (PET)", "FDG-PET", "18F-FDG PET image", "PET scan",
            "maximum intensity projection (MIP) PET image"),
    "oct": ("OCT", "optical coherence tomography (OCT)", "OCT B-scan", "spectral-domain OCT",
            "optical coherence tomography"),
}
_MODALITY_CONTRAST = {
    "ct": ("contrast-enhanced CT", "{plane} contrast-enhanced CT scan", "CT with intravenous contrast",
           "contrast-enhanced computed tomography"),
    "mri": ("contrast-enhanced MRI", "post-contrast T1-weighted MR image", "gadolinium contrast-enhanced MRI"),
}
_MAMMOGRAM = ("mammogram", "mammography image", "mediolateral oblique mammogram")

_REGION_NOUN = {
    "chest": ("chest", "thorax"), "abdomen": ("abdomen",), "skull": ("head", "brain", "skull"),
    "spine": ("lumbar spine", "spine", "cervical spine", "thoracolumbar spine"), "pelvis": ("pelvis",),
    "upper_limb": ("forearm", "upper limb", "arm"), "lower_limb": ("thigh", "lower limb", "leg"),
    "breast": ("breast",),
}
_VARIANT_NOUN = {"hand": ("hand", "wrist and hand"), "arm": ("elbow", "forearm", "upper limb"),
                 "knee": ("knee",), "leg": ("lower leg", "leg", "ankle", "lower limb")}
_REGION_ADJ = {"chest": ("Chest", "Thoracic"), "abdomen": ("Abdominal",), "skull": ("Brain", "Head", "Cranial"),
               "spine": ("Spine", "Spinal"), "pelvis": ("Pelvic",), "breast": ("Breast",)}
_VARIANT_ADJ = {"hand": ("Hand",), "knee": ("Knee",)}
_ZONE = {"chest": ("zone", "lobe", "hemithorax"), "abdomen": ("quadrant",), "none": ("aspect", "part")}

_ORGAN_WORDS = {"lung": "lungs", "heart": "heart", "liver": "liver", "kidney": "kidneys",
                "brain": "brain parenchyma", "aorta": "aorta", "spleen": "spleen", "pancreas": "pancreas",
                "retina": "retinal layers", "knee": "knee joint", "hand": "hand"}

# ---- findings ------------------------------------------------------------------------------
_FINDING = {
    "nodule": ("a {size} nodule", "a small nodule", "a {size} solid nodule", "a nodular opacity measuring {size}",
               "a well-circumscribed nodule ({size})"),
    "mass": ("a {size2} mass", "a large heterogeneous mass", "a lobulated mass measuring {size2}",
             "a soft-tissue mass ({size})"),
    "cyst": ("a {size} cyst", "a simple cyst", "a well-defined cystic lesion measuring {size}", "a thin-walled cyst"),
    "fracture": ("a fracture", "a displaced fracture", "a transverse fracture", "a comminuted fracture",
                 "an oblique fracture with slight displacement"),
    "calcification": ("a calcification", "a dense calcification", "a {size} calcified focus", "coarse calcification"),
    "stent": ("a stent", "a metallic stent", "a {size}-long stent", "an endovascular stent in situ"),
    "effusion": ("a pleural effusion", "a small pleural effusion", "a layering pleural effusion",
                 "a moderate pleural effusion"),
    "abscess": ("an abscess", "a rim-enhancing abscess measuring {size}", "a {size} abscess"),
    "hemorrhage": ("a hemorrhage", "an acute haemorrhage", "a {size} hemorrhage"),
    "aneurysm": ("an aneurysm", "a {size} saccular aneurysm", "a fusiform aneurysm"),
    "pneumothorax": ("a pneumothorax", "a small pneumothorax", "an apical pneumothorax"),
    "kidney_calculi": ("a renal calculus", "a {size} kidney stone", "a {size} renal calculus"),
    "metastasis": ("multiple metastases", "metastatic lesions", "several metastatic deposits"),
    "cholelithiasis": ("gallstones", "multiple gallstones (cholelithiasis)", "cholelithiasis"),
    "ascites": ("ascites", "a small amount of ascites", "moderate ascites"),
}
_MARK = (" (arrow)", " (arrows)", " (arrowhead)", " (asterisk)", " (*)", " (white arrow)")
_VERB = ("showing", "demonstrating", "revealing")
_VERB3 = ("shows", "demonstrates", "reveals")
_NORMAL = ("showing normal anatomy", "with no abnormality", "showing no acute abnormality",
           "within normal limits", "showing normal findings", "with unremarkable appearances")
_PERSON = ("man", "woman", "patient", "male patient", "female patient", "boy", "girl")
_COMPLAINT = {
    "chest": ("cough", "dyspnea", "chest pain", "fever and cough", "shortness of breath"),
    "abdomen": ("abdominal pain", "jaundice", "weight loss", "right-sided abdominal pain"),
    "skull": ("headache", "seizures", "head trauma", "sudden confusion"),
    "spine": ("back pain", "neck pain", "radiculopathy", "gait disturbance"),
    "pelvis": ("pelvic pain", "hip pain after a fall", "haematuria"),
    "upper_limb": ("wrist pain after a fall", "swelling of the forearm", "elbow pain"),
    "lower_limb": ("knee pain", "leg swelling", "pain after a fall", "ankle pain"),
    "breast": ("a palpable lump", "breast pain", "an abnormal screening result"),
    "none": ("fever", "a follow-up visit", "weight loss", "malaise"),
    "oct": ("blurred vision", "reduced visual acuity", "metamorphopsia"),
}
_EXTRA = (
    "The lesion was confirmed at surgery.", "Follow-up imaging after {n} months showed no change.",
    "Findings were consistent with the clinical diagnosis.", "Compare with the preoperative image in Figure {n}.",
    "The patient was treated conservatively and recovered well.", "Histopathology confirmed the diagnosis.",
    "Arrowheads indicate the margins of the lesion.", "Image obtained {n} days after admission.",
    "No other abnormality was noted.", "The remaining structures appear normal.",
    "The findings resolved on follow-up {n} weeks later.", "Image courtesy of the radiology department.",
)
_NARRATIVE = (
    "The patient presented to the emergency department with a {n}-day history of symptoms.",
    "Laboratory tests showed a white cell count of {f} x 10^9/L and a C-reactive protein of {n} mg/L.",
    "There was a history of hypertension and type 2 diabetes mellitus.",
    "Treatment was started with intravenous antibiotics for {n} days.",
    "At {n}-month follow-up, the patient was asymptomatic.",
    "Physical examination revealed tenderness and mild swelling.",
    "The differential diagnosis included infection, inflammation and a neoplastic process.",
    "A biopsy was performed under local anaesthesia without complications.",
    "The multidisciplinary team recommended close surveillance.",
    "Vital signs were stable (blood pressure {bp}/80 mmHg, heart rate {hr} beats/min).",
    "The postoperative course was uneventful, and the patient was discharged on day {n}.",
    "Informed consent was obtained for publication of this case.",
    "Previous imaging from {n} years earlier had been reported as normal.",
    "The patient's symptoms improved markedly within {n} days of starting therapy.",
)


def _fill(rng, text: str) -> str:
    while "{n}" in text:
        text = text.replace("{n}", str(int(rng.integers(2, 30))), 1)
    for slot, lo, hi in (("{bp}", 100, 170), ("{hr}", 55, 115)):
        text = text.replace(slot, str(int(rng.integers(lo, hi))))
    if "{f}" in text:
        text = text.replace("{f}", f"{rng.uniform(3, 20):.1f}")
    return text


def _size(rng, mm: float) -> str:
    if mm < 10 or rng.random() < 0.4:
        return f"{max(int(round(mm)), 1)} mm"
    return f"{mm / 10:.1f} cm"


def _size2(rng, mm: float) -> str:
    if rng.random() < 0.5:
        return _size(rng, mm)
    return f"{mm / 10:.1f} x {mm * rng.uniform(0.6, 0.9) / 10:.1f} cm"


def _location(rng, side, level, region) -> str:
    zone = _pick(rng, _ZONE.get(region or "none", _ZONE["none"]))
    if side and level:
        return _pick(rng, (f" in the {side} {level} {zone}", f" at the {side} {level} {zone}"))
    if side:
        return _pick(rng, (f" on the {side}", f" in the {side} {zone}", f" on the {side} side"))
    if level:
        return _pick(rng, (f" in the {level} {zone}", f" in the {level} part of the image"))
    return _pick(rng, ("", "", " centrally", " in the midline"))


def _finding_phrase(rng, key, side, level, mm, region) -> str:
    text = _pick(rng, _FINDING[key])
    text = text.replace("{size2}", _size2(rng, mm)).replace("{size}", _size(rng, mm))
    if side and "-sided" not in text and rng.random() < 0.2 and text.startswith("a "):
        text = f"a {side}-sided {text[2:]}"  # "a right-sided pleural effusion"
        side = None
    text += _location(rng, side, level, region)
    if rng.random() < 0.3:
        text += _pick(rng, _MARK)
    return text


def _join(parts: list[str], rng) -> str:
    if len(parts) == 1:
        return parts[0]
    comma = "," if rng.random() < 0.4 and len(parts) > 2 else ""
    return ", ".join(parts[:-1]) + f"{comma} and " + parts[-1]


def _modality_phrase(rng, facts: CaptionFacts) -> str:
    m = facts.modality
    if m is None:
        return _pick(rng, ("image", "medical image", "scan"))
    if m == "xray" and facts.region == "breast":
        return _pick(rng, _MAMMOGRAM)
    options = _MODALITY_CONTRAST[m] if facts.contrast and m in _MODALITY_CONTRAST else _MODALITY[m]
    plane = "sagittal" if facts.region == "spine" and m in ("ct", "mri") else _pick(rng, _PLANE[m])
    return _pick(rng, options).replace("{plane}", plane)


def _region_noun(rng, facts: CaptionFacts) -> str | None:
    if facts.region is None:
        return "macula" if facts.modality == "oct" else None
    if facts.variant in _VARIANT_NOUN and facts.region in ("upper_limb", "lower_limb"):
        return _pick(rng, _VARIANT_NOUN[facts.variant])
    if facts.modality == "xray" and facts.region == "skull":
        return "skull"
    noun = _pick(rng, _REGION_NOUN[facts.region])
    if facts.region == "breast" and facts.modality == "mri":
        noun = "breasts"
    return noun


def compose_caption(facts: CaptionFacts, rng: np.random.Generator) -> str:
    """One caption for ``facts`` (deterministic for a generator state)."""
    mod = _modality_phrase(rng, facts)
    noun = _region_noun(rng, facts)
    region_key = facts.region or ("oct" if facts.modality == "oct" else "none")
    parts = [_finding_phrase(rng, k, s, lv, mm, facts.region) for k, s, lv, mm in facts.findings]
    if facts.bilateral and len(parts) >= 2 and rng.random() < 0.5:
        parts[-1] += ", bilaterally"
    organs = [_ORGAN_WORDS[o] for o in facts.organs if o in _ORGAN_WORDS]
    body = _join(parts, rng) if parts else None

    adj_options = _VARIANT_ADJ.get(facts.variant or "") or _REGION_ADJ.get(facts.region or "")
    templates = ["of"]
    if adj_options and facts.modality is not None:
        templates.append("adj")
    if body:
        templates.append("on")
    form = _pick(rng, templates)
    of_region = f" of the {noun}" if noun else ""
    if form == "adj":
        head = f"{_pick(rng, adj_options)} {mod}"
    else:
        head = mod[0].upper() + mod[1:] if mod[:2] not in ("T1", "T2") else mod
        head += of_region
    context = ""
    if rng.random() < 0.3:
        age = int(rng.integers(18, 86))
        person = _pick(rng, _PERSON)
        if person in ("boy", "girl"):
            age = int(rng.integers(4, 16))
        context = f" in a {age}-year-old {person} with {_pick(rng, _COMPLAINT.get(region_key, _COMPLAINT['none']))}"

    if form == "on" and body:
        sentence = f"{body[0].upper()}{body[1:]} on {mod}{of_region}{context}."
    else:
        if body:
            verbs = _VERB if context or rng.random() < 0.7 else _VERB3
            tail = f"{_pick(rng, verbs)} {body}"
        else:
            tail = _pick(rng, _NORMAL)
        sentence = f"{head}{context}{', ' if context else ' '}{tail}."
    sentences = [sentence]
    if organs:
        if rng.random() < 0.5:
            sentences.append(f"Note the {_join(organs, rng)}.")
        else:
            verb = "are" if len(organs) > 1 or organs[0].endswith("s") else "is"
            sentences.append(f"The {_join(organs, rng)} {verb} unremarkable.")
    n_extra = 0
    while n_extra < len(_EXTRA) and rng.random() < (0.3 if n_extra == 0 else 0.35):
        n_extra += 1
    sentences.extend(_fill(rng, _EXTRA[i]) for i in rng.permutation(len(_EXTRA))[:n_extra])
    if rng.random() < 0.04:  # the long tail of Figure 2: a whole case narrative
        n = int(rng.integers(4, 14))
        order = rng.permutation(len(_NARRATIVE))[:n]
        sentences.extend(_fill(rng, _NARRATIVE[i]) for i in order)
    return " ".join(sentences)


# ---- captions from concepts ------------------------------------------------------------------
def facts_from_concepts(cuis, rng: np.random.Generator) -> CaptionFacts:
    """Caption facts from a CUI list: locations are shared out over the findings."""
    keys = [cat.CATALOG[c.strip().upper()].key for c in cuis if c.strip().upper() in cat.CATALOG]
    kinds = {k: cat.BY_KEY[k].kind for k in keys}
    modality = next((k for k in keys if kinds[k] == "modality"), None)
    region = next((k for k in keys if kinds[k] == "region"), None)
    finding_keys = [k for k in keys if kinds[k] == "finding"]
    sides = [k for k in ("right", "left") if k in keys]
    levels = [k for k in ("upper", "lower") if k in keys]
    variant = ("knee" if "knee" in keys and region == "lower_limb"
               else "hand" if "hand" in keys and region == "upper_limb" else None)
    fov = FOV_MM[region or "none"] if modality != "oct" else 6.0
    findings = []
    for i, k in enumerate(finding_keys):
        lo, hi = FINDING_SIZE[k]
        mm = float(rng.uniform(lo, hi)) * fov
        side = sides[i % len(sides)] if sides else None
        level = levels[i % len(levels)] if levels else None
        findings.append((k, side, level, mm))
    organs = [k for k in keys if kinds[k] == "other" and k not in ("contrast",) and k != variant]
    return CaptionFacts(modality, region, variant, "contrast" in keys, findings, organs, "bilateral" in keys)


def caption_from_concepts(cuis, rng: np.random.Generator | int | None = None) -> str:
    """A synthetic-style caption written from a list of CUIs alone.

    Used for the "ceiling" captions of the captioning evaluation (captions re-drawn from
    the true concepts). Unknown CUIs are ignored.
    """
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    return compose_caption(facts_from_concepts(list(cuis), rng), rng)


def caption_for_scene(scene, rng: np.random.Generator) -> str:
    """The caption of a drawn scene (true concepts, true finding sizes and sides)."""
    fov = scene.fov_mm()
    facts = CaptionFacts(
        modality=scene.modality, region=scene.region, variant=scene.variant, contrast=scene.contrast,
        findings=[(f.key, f.side, f.level, f.size * fov) for f in scene.findings],
        organs=[o for o in scene.others if o not in ("knee", "hand")],
        bilateral="bilateral" in scene.location_keys(),
    )
    return compose_caption(facts, rng)


# ---- which concepts does a caption name? ------------------------------------------------------
def _pattern(words) -> re.Pattern:
    alts = sorted({re.escape(w) for w in words}, key=len, reverse=True)
    return re.compile(r"(?<![A-Za-z0-9])(?:" + "|".join(alts) + r")(?:s|es)?(?![A-Za-z0-9])", re.IGNORECASE)


_EXTRA_WORDS = {"C0024485": ("MR",), "C0006660": ("calcified",), "C0028259": ("nodular",)}
_MENTION = [
    (c.cui, _pattern(c.words + _EXTRA_WORDS.get(c.cui, ())))
    for c in cat.CATALOG.values() if c.kind in ("modality", "region", "finding")
]


def mentioned_concepts(caption: str) -> set[str]:
    """The modality, body-region and finding CUIs a caption names (by the catalogue's words).

    ``mentioned_concepts("Axial CT of the chest showing a nodule")`` ->
    ``{"C0040405", "C0817096", "C0028259"}``. Negation is not handled (the synthetic
    captions never name a finding to deny it).
    """
    return {cui for cui, pat in _MENTION if pat.search(caption)}
