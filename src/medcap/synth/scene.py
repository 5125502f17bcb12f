"""What one SYNTHETIC image shows: modality, region, findings with their positions, and
the concept labels that follow from them.

The labels are a pure function of what is drawn (apart from the "other" organ concepts,
which are a random tail on purpose, and the optional label noise added in generate.py):
a finding's side and level labels come from where its centre is in the image, using the
radiological convention (the patient's right is on the image's left).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import catalog as cat
from .anatomy import FOV_MM, Geometry, oct_surface, sample_geometry
from .findings import FINDING_SIZE, FINDING_ZONE, FindingSpec

# Side / level bands (image fractions of the finding centre). Centres are never placed in
# the gaps between bands, so a label never hangs on a pixel.
RIGHT_MAX, LEFT_MIN = 0.42, 0.58  # x < 0.42: patient's right; x > 0.58: patient's left
MID_LO, MID_HI = 0.46, 0.54  # between these: no side (or level) label
UPPER_MAX, LOWER_MIN = 0.42, 0.58
# Upper / Lower labels only where radiologists use them routinely (lung zones, abdominal
# quadrants); elsewhere a finding gets a side label only. Keeps most images at 1-4 concepts.
LEVEL_REGIONS = ("chest", "abdomen")


def _band(v: float, lo_max: float, hi_min: float) -> str | None | bool:
    """'lo', 'hi', None (middle) or False (in a gap: not allowed)."""
    if v < lo_max:
        return "lo"
    if v > hi_min:
        return "hi"
    if MID_LO <= v <= MID_HI:
        return None
    return False


@dataclass
class Scene:
    """Everything needed to draw one image and to write its labels and caption."""

    modality: str
    region: str | None  # None: no body-region concept
    geometry: Geometry
    contrast: bool = False
    findings: list[FindingSpec] = field(default_factory=list)
    others: list[str] = field(default_factory=list)  # keys of "other" concepts besides contrast

    @property
    def variant(self) -> str | None:
        return self.geometry.variant

    def location_keys(self) -> list[str]:
        sides = {f.side for f in self.findings if f.side}
        levels = {f.level for f in self.findings if f.level}
        keys = [k for k in ("right", "left") if k in sides] + [k for k in ("upper", "lower") if k in levels]
        if {"right", "left"} <= sides:
            keys.append("bilateral")
        return keys

    def concept_keys(self) -> list[str]:
        """Concept keys in CSV order: modality, region, findings, locations, contrast, others."""
        keys = [self.modality]
        if self.region:
            keys.append(self.region)
        keys += [f.key for f in self.findings]
        keys += self.location_keys()
        if self.contrast:
            keys.append("contrast")
        keys += self.others
        return keys

    def concepts(self) -> list[str]:
        """The true CUIs of this image (before any label noise)."""
        return [cat.cui(k) for k in self.concept_keys()]

    def fov_mm(self) -> float:
        """Image width in millimetres (for finding sizes in captions)."""
        if self.modality == "oct":
            return 6.0
        return FOV_MM[self.region or "none"] / self.geometry.transform[0]


def _weighted_choice(rng: np.random.Generator, weights: dict[str, float]) -> str:
    total = sum(weights.values())
    u = float(rng.random()) * total
    for key, w in weights.items():
        u -= w
        if u < 0:
            return key
    return key


def _compatibility_mass() -> dict[str, float]:
    """For each finding, the share of images whose (modality, region) allows it."""
    mw = cat.MODALITY_WEIGHTS
    total_m = sum(mw.values())
    out = {}
    for f, (_, regions, modalities) in cat.FINDING_RATE.items():
        mass = 0.0
        for m, wm in mw.items():
            if m not in modalities:
                continue
            rw = cat.REGION_WEIGHTS[m]
            tot = sum(rw.values())
            mass += wm / total_m * sum(w for r, w in rw.items() if r in regions) / tot
        out[f] = mass
    return out


_COMPAT = _compatibility_mass()


def finding_probability(finding: str, modality: str, region: str | None) -> float:
    """P(finding | modality, region), chosen so the finding's share of all images is its rate."""
    rate, regions, modalities = cat.FINDING_RATE[finding]
    if modality not in modalities or (region or "none") not in regions or _COMPAT[finding] == 0:
        return 0.0
    return min(rate / _COMPAT[finding], 0.6)


def _sample_point(rng, geo: Geometry, key: str, d: float, placed: list[FindingSpec]):
    """A centre for a finding of size d, inside its zone and the field of view, in a band."""
    r = d / 2
    if geo.view == "oct":
        zones = None
    elif "fan" in geo.extra:
        zones = None
    else:
        zones = geo.zone(FINDING_ZONE.get(key, "lung" if key in ("nodule", "metastasis") else "body"))
    for _ in range(40):
        if geo.view == "oct":
            x = float(rng.uniform(0.15, 0.85))
            y = float(oct_surface(geo, x)) + float(rng.uniform(0.09, 0.14))
        elif zones is None:  # ultrasound: anywhere inside the fan
            half, r0, r1 = geo.extra["fan"]
            rad = float(rng.uniform(r0 + 0.15, r1 - 0.1))
            th = float(rng.uniform(-half, half))
            x, y = 0.5 + rad * math.sin(th), -0.02 + rad * math.cos(th)
        else:
            cx, cy, a, b = zones[int(rng.integers(len(zones)))]
            rho, phi = math.sqrt(float(rng.random())), float(rng.uniform(0, 2 * math.pi))
            x, y = geo.to_image(cx + a * rho * math.cos(phi), cy + b * rho * math.sin(phi))
            if geo.extra.get("mirror_breast"):
                x = 1.0 - x
        if not geo.inside(x, y, r if key not in ("fracture", "stent") else 0.06):
            continue
        side = _band(x, RIGHT_MAX, LEFT_MIN)
        level = _band(y, UPPER_MAX, LOWER_MIN) if geo.region in LEVEL_REGIONS else None
        if side is False or level is False:
            continue
        if any(math.hypot(x - p.x, y - p.y) < 0.55 * (d + p.size) for p in placed):
            continue
        return x, y, {"lo": "right", "hi": "left", None: None}[side], {"lo": "upper", "hi": "lower", None: None}[level]
    return None


def sample_scene(rng: np.random.Generator) -> Scene:
    """Draw one random scene: modality, region, view variant, contrast, findings, organ labels."""
    modality = _weighted_choice(rng, cat.MODALITY_WEIGHTS)
    region = _weighted_choice(rng, cat.REGION_WEIGHTS[modality])
    region = None if region == "none" else region
    variant = None
    if modality in ("xray", "angio") and region == "upper_limb":
        variant = "hand" if rng.random() < 0.45 else "arm"
    elif modality in ("xray", "angio") and region == "lower_limb":
        variant = "knee" if rng.random() < 0.5 else "leg"
    geo = sample_geometry(rng, modality, region, variant)
    contrast = bool(rng.random() < cat.CONTRAST_RATE.get(modality, 0.0))

    keys = [f for f in cat.FINDINGS if rng.random() < finding_probability(f, modality, region)]
    if len(keys) > cat.MAX_FINDINGS:
        keep = sorted(rng.choice(len(keys), cat.MAX_FINDINGS, replace=False))
        keys = [keys[i] for i in keep]
    findings: list[FindingSpec] = []
    for k in keys:
        lo, hi = FINDING_SIZE[k]
        d = float(rng.uniform(lo, hi))
        pos = _sample_point(rng, geo, k, d, findings)
        if pos is None:  # no room left: the finding is simply not there (and not labelled)
            continue
        x, y, side, level = pos
        findings.append(FindingSpec(k, x, y, d, float(rng.uniform(0, math.pi)), side, level))

    others = []
    if variant == "knee":
        others.append("knee")
    elif variant == "hand":
        others.append("hand")
    for key, rates in cat.OTHER_RATES.items():
        p = rates.get(region or "none", rates.get(modality, 0.0))
        if p and rng.random() < p:
            others.append(key)
    scene = Scene(modality, region, geo, contrast, findings, others)
    # REFERENCE §5 / Figure 3: at most 10 concepts per image. Drop organ labels first (they
    # are not drawn), then findings (undrawn findings would be wrong labels).
    while len(scene.concept_keys()) > cat.MAX_CONCEPTS:
        if scene.others:
            scene.others.pop()
        else:
            scene.findings.pop()
    return scene
