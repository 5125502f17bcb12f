"""Findings of the SYNTHETIC images: small local objects, clearly brighter or darker than
the tissue around them, each at most 5 % of the image and about 8 px or more across at
128 px (what made findings learnable on the prototypes, REFERENCE §8).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .canvas import Canvas

FINDING_SIZE = {  # diameter (or length) range as a fraction of the image width
    "nodule": (0.075, 0.11), "mass": (0.13, 0.18), "cyst": (0.085, 0.14), "fracture": (0.2, 0.26),
    "calcification": (0.07, 0.09), "stent": (0.2, 0.26), "effusion": (0.2, 0.27),
    "abscess": (0.11, 0.15), "hemorrhage": (0.14, 0.2), "aneurysm": (0.08, 0.11),
    "pneumothorax": (0.14, 0.2), "kidney_calculi": (0.07, 0.08), "metastasis": (0.2, 0.24),
    "cholelithiasis": (0.13, 0.15), "ascites": (0.2, 0.26),
}
FINDING_ZONE = {"effusion": "base", "pneumothorax": "apex", "kidney_calculi": "kidney",
                "cholelithiasis": "gb", "ascites": "flank"}

# +1: drawn brighter than the tissue around it, -1: darker (per modality; default +1).
_POLARITY = {
    "us": dict(nodule=-1, mass=-1, cyst=-1),
    "mri": dict(calcification=-1, aneurysm=-1, fracture=-1),
    "angio": {k: -1 for k in FINDING_SIZE},
    "ct": dict(cyst=-1),
    "oct": dict(cyst=-1),
    "xray": dict(pneumothorax=-1),
}


def _target(cv: Canvas, x, y, r, pol: int, delta: float) -> float:
    """A grey value clearly brighter (pol=+1) or darker than the tissue around (x, y)."""
    mean = cv.local_mean(x, y, r * 1.6)
    v = mean + pol * delta
    if not 0.02 <= v <= 0.98:
        clipped = min(max(v, 0.02), 0.98)
        if abs(clipped - mean) < 0.7 * delta:  # no room that way: go the other way
            v = mean - pol * delta
        v = min(max(v, 0.02), 0.98)
    return v


@dataclass
class FindingSpec:
    """One finding of one image: what, where (image fractions), how big, which way turned."""

    key: str
    x: float
    y: float
    size: float
    angle: float
    side: str | None = None  # "right" / "left" (radiological convention), None near the midline
    level: str | None = None  # "upper" / "lower", None near the middle
    area: float = 0.0  # fraction of the image (an upper bound), set when drawn


def _fluid_value(cv: Canvas, x, y, r, lut: dict) -> float:
    """The modality's fluid grey, pushed away from the surroundings when too close to them."""
    fluid = lut.get("fluid", 0.5)
    mean = cv.local_mean(x, y, r)
    return fluid if abs(fluid - mean) >= 0.3 else _target(cv, x, y, r, 1 if fluid >= mean else -1, 0.32)


# One drawer per finding: (canvas, finding, polarity, modality, lut, rng) -> area.
def _nodule(cv, f, pol, modality, lut, rng):
    r = f.size / 2
    return cv.ellipse(f.x, f.y, r, r * rng.uniform(0.9, 1.0), _target(cv, f.x, f.y, r, pol, 0.38), angle=f.angle,
                      soft=1.3)


def _mass(cv, f, pol, modality, lut, rng):  # lobulated: three overlapping blobs, maybe a necrotic core
    x, y, d, r = f.x, f.y, f.size, f.size / 2
    v = _target(cv, x, y, r, pol, 0.34)
    area = cv.ellipse(x, y, r, r * 0.8, v, angle=f.angle)
    for j in range(2):
        a2 = f.angle + math.pi * (0.5 + j)
        area += cv.ellipse(x + 0.25 * d * math.cos(a2), y + 0.25 * d * math.sin(a2), 0.3 * d, 0.3 * d, v)
    if rng.random() < 0.5:
        cv.ellipse(x, y, r * 0.35, r * 0.3, v - pol * 0.15)
    return area


def _cyst(cv, f, pol, modality, lut, rng):
    # anechoic / hyporeflective on ultrasound and OCT, fluid-dark on CT, T2-bright on MRI
    x, y, d, r = f.x, f.y, f.size, f.size / 2
    v = 0.03 if modality in ("us", "oct") else _target(cv, x, y, r, pol, 0.32)
    area = 0.0
    if modality == "us":  # posterior acoustic enhancement
        area += cv.ellipse(x, y + 0.9 * d, r, 0.5 * d, 1.35, op="mul")
    return area + cv.ellipse(x, y, r, r * rng.uniform(0.8, 1.0), v, angle=f.angle, soft=0.6)


def _calcification(cv, f, pol, modality, lut, rng):  # also a kidney stone: dense, sharp, shadowing
    x, y, d, r = f.x, f.y, f.size, f.size / 2
    v = _target(cv, x, y, r, pol, 0.5)
    if pol > 0:
        v = max(v, 0.95)
    area = 0.0
    if modality == "us":  # acoustic shadow
        area += cv.capsule(x, y + r, x, y + 2.4 * d, r * 0.9, 0.25, op="mul")
    return area + cv.ellipse(x, y, r, r * 0.85, v, angle=f.angle, soft=0.6)


def _fracture(cv, f, pol, modality, lut, rng):  # a bone segment broken in two, the far part displaced
    x, y = f.x, f.y
    ca, sa = math.cos(f.angle), math.sin(f.angle)
    half, w, gap, off = f.size / 2, 0.033, 0.014, 0.014
    bone = _target(cv, x, y, half, pol, 0.45)
    if pol > 0:
        bone = max(bone, 0.9)
    area = 0.0
    if modality == "mri":  # marrow oedema around the break
        area += cv.ellipse(x, y, 0.06, 0.05, _target(cv, x, y, 0.06, 1, 0.4), angle=f.angle)
    inner = bone - pol * 0.18  # the medullary cavity

    def at(t, shift):  # t along the bone, shift across it
        return x + ca * t - sa * shift, y + sa * t + ca * shift

    # (cortex from, to), (cavity from, to): the near fragment, then the displaced, angulated far one
    for (c0, c1), (m0, m1) in (
        (((-half, 0.0), (-gap, 0.0)), ((-0.85 * half, 0.0), (-1.4 * gap, 0.0))),
        (((gap, off), (half, 1.6 * off)), ((1.4 * gap, off), (0.85 * half, 1.6 * off))),
    ):
        area += cv.capsule(*at(*c0), *at(*c1), w, bone)
        cv.capsule(*at(*m0), *at(*m1), w * 0.45, inner)
    return area


def _stent(cv, f, pol, modality, lut, rng):  # a bright tube with a diagonal wire mesh
    ca, sa = math.cos(f.angle), math.sin(f.angle)
    half = f.size / 2
    v = _target(cv, f.x, f.y, half * 0.5, pol, 0.32)
    wire = min(max(v + pol * 0.25, 0.0), 1.0)
    return cv.capsule(f.x - ca * half, f.y - sa * half, f.x + ca * half, f.y + sa * half, 0.035, v, mesh=(0.05, wire))


def _effusion(cv, f, pol, modality, lut, rng):  # dependent fluid with a flat level on top
    r = f.size / 2
    return cv.ellipse(f.x, f.y, r, 0.6 * r, _fluid_value(cv, f.x, f.y, r, lut), cut_above=-0.12 * r, soft=1.5)


def _abscess(cv, f, pol, modality, lut, rng):  # bright (enhancing) rim, dark core
    x, y, r = f.x, f.y, f.size / 2
    rim = _target(cv, x, y, r, 1, 0.35)
    core = _target(cv, x, y, r, -1, 0.25) if modality != "us" else 0.04
    area = cv.ellipse(x, y, r, r * 0.85, rim, angle=f.angle)
    cv.ellipse(x, y, r * 0.65, r * 0.55, core, angle=f.angle)
    return area


def _hemorrhage(cv, f, pol, modality, lut, rng):  # a bright lens
    r = f.size / 2
    return cv.ellipse(f.x, f.y, r, 0.5 * r, _target(cv, f.x, f.y, r, pol, 0.36), angle=f.angle, soft=1.3)


def _aneurysm(cv, f, pol, modality, lut, rng):  # a round sac on a short vessel neck
    x, y, d, r = f.x, f.y, f.size, f.size / 2
    v = _target(cv, x, y, r, pol, 0.4)
    area = cv.capsule(x, y, x + math.cos(f.angle) * 0.9 * d, y + math.sin(f.angle) * 0.9 * d, 0.022, v)
    return area + cv.ellipse(x, y, r, r * 0.9, v, angle=f.angle)


def _pneumothorax(cv, f, pol, modality, lut, rng):  # dark air with a bright pleural line around it
    x, y, r = f.x, f.y, f.size / 2
    area = cv.ellipse(x, y, r, 0.7 * r, _target(cv, x, y, r, -1, 0.3), angle=f.angle)
    return area + cv.ring(x, y, r, 0.7 * r, 0.012, _target(cv, x, y, r, 1, 0.4), angle=f.angle)


def _metastasis(cv, f, pol, modality, lut, rng):  # 3-4 nodules in a cluster
    area = 0.0
    n = int(rng.integers(3, 5))
    for j in range(n):
        a2 = f.angle + 2 * math.pi * j / n
        dj = rng.uniform(0.065, 0.075)
        xj, yj = f.x + 0.3 * f.size * math.cos(a2), f.y + 0.3 * f.size * math.sin(a2)
        area += cv.ellipse(xj, yj, dj / 2, dj / 2, _target(cv, xj, yj, dj / 2, pol, 0.38), soft=1.2)
    return area


def _cholelithiasis(cv, f, pol, modality, lut, rng):  # two dense stones in a dark gallbladder
    x, y, r = f.x, f.y, f.size / 2
    bile = lut.get("fluid", 0.2) if modality == "us" else _target(cv, x, y, r, -1, 0.2)
    area = cv.ellipse(x, y, r, r * 0.7, bile, angle=f.angle)
    for j in (-1, 1):
        xs, ys = x + j * 0.034 * math.cos(f.angle), y + j * 0.034 * math.sin(f.angle) + 0.01
        if modality == "us":
            area += cv.capsule(xs, ys, xs, ys + 0.12, 0.028, 0.25, op="mul")
        area += cv.ellipse(xs, ys, 0.036, 0.034, 0.95 if modality != "mri" else 0.05, soft=0.6)
    return area


def _ascites(cv, f, pol, modality, lut, rng):  # a band of fluid along the flank
    r = f.size / 2
    return cv.ellipse(f.x, f.y, 0.35 * r, r, _fluid_value(cv, f.x, f.y, r, lut), angle=f.angle * 0.2, soft=1.5)


DRAWERS = {
    "nodule": _nodule, "mass": _mass, "cyst": _cyst, "fracture": _fracture, "calcification": _calcification,
    "stent": _stent, "effusion": _effusion, "abscess": _abscess, "hemorrhage": _hemorrhage,
    "aneurysm": _aneurysm, "pneumothorax": _pneumothorax, "kidney_calculi": _calcification,
    "metastasis": _metastasis, "cholelithiasis": _cholelithiasis, "ascites": _ascites,
}


def draw_finding(cv: Canvas, f: FindingSpec, modality: str, lut: dict, rng: np.random.Generator) -> float:
    """Paint one finding (image coordinates); return its area as a fraction of the image (an upper bound)."""
    pol = _POLARITY.get(modality, {}).get(f.key, 1)
    return DRAWERS[f.key](cv, f, pol, modality, lut, rng)
