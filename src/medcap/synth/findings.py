"""Findings of the SYNTHETIC images: small local objects, clearly brighter or darker than
the tissue around them, each at most 5 % of the image and about 8 px or more across at
128 px (what made findings learnable on the prototypes, shared/reference/ENVIRONMENT.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .canvas import Canvas

# Findings. Each drawer paints one finding in image coordinates and returns its area
# (an upper bound, as a fraction of the image).
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
    "us": dict(nodule=-1, mass=-1, cyst=-1, effusion=-1, abscess=-1, ascites=-1, hemorrhage=-1),
    "mri": dict(calcification=-1, aneurysm=-1, fracture=-1),
    "angio": {k: -1 for k in FINDING_SIZE},
    "ct": dict(cyst=-1, abscess=-1),
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
    area: float = 0.0  # filled in by render()


def draw_finding(cv: Canvas, f: FindingSpec, modality: str, lut: dict, rng: np.random.Generator) -> float:
    pol = _POLARITY.get(modality, {}).get(f.key, 1)
    x, y, d, ang = f.x, f.y, f.size, f.angle
    r = d / 2
    k = f.key
    area = 0.0
    shadow = modality == "us"
    if k == "nodule":
        v = _target(cv, x, y, r, pol, 0.38)
        area += cv.ellipse(x, y, r, r * rng.uniform(0.9, 1.0), v, angle=ang, soft=1.3)
    elif k == "mass":
        v = _target(cv, x, y, r, pol, 0.34)
        area += cv.ellipse(x, y, r, r * 0.8, v, angle=ang)
        for j in range(2):
            a2 = ang + math.pi * (0.5 + j)
            area += cv.ellipse(x + 0.25 * d * math.cos(a2), y + 0.25 * d * math.sin(a2), 0.3 * d, 0.3 * d, v)
        if rng.random() < 0.5:
            cv.ellipse(x, y, r * 0.35, r * 0.3, v - pol * 0.15)
    elif k == "cyst":
        # anechoic / hyporeflective on ultrasound and OCT, fluid-dark on CT, T2-bright on MRI
        v = 0.03 if modality in ("us", "oct") else _target(cv, x, y, r, pol, 0.32)
        if shadow:  # posterior acoustic enhancement
            area += cv.ellipse(x, y + 0.9 * d, r, 0.5 * d, 1.35, op="mul")
        area += cv.ellipse(x, y, r, r * rng.uniform(0.8, 1.0), v, angle=ang, soft=0.6)
    elif k in ("calcification", "kidney_calculi"):
        v = _target(cv, x, y, r, pol, 0.5)
        if pol > 0:
            v = max(v, 0.95)
        if shadow:
            area += cv.capsule(x, y + r, x, y + 2.4 * d, r * 0.9, 0.25, op="mul")
        area += cv.ellipse(x, y, r, r * 0.85, v, angle=ang, soft=0.6)
    elif k == "fracture":
        ca, sa = math.cos(ang), math.sin(ang)
        half, w, gap = d / 2, 0.033, 0.014
        bone = _target(cv, x, y, half, pol, 0.45)
        if pol > 0:
            bone = max(bone, 0.9)
        if modality == "mri":  # marrow oedema around the break
            area += cv.ellipse(x, y, 0.06, 0.05, _target(cv, x, y, 0.06, 1, 0.4), angle=ang)
        off = 0.014  # displacement of the distal fragment
        area += cv.capsule(x - ca * half, y - sa * half, x - ca * gap, y - sa * gap, w, bone)
        area += cv.capsule(x + ca * gap - sa * off, y + sa * gap + ca * off,
                           x + ca * half - sa * off * 1.6, y + sa * half + ca * off * 1.6, w, bone)
        inner = bone - pol * 0.18
        cv.capsule(x - ca * half * 0.85, y - sa * half * 0.85, x - ca * gap * 1.4, y - sa * gap * 1.4, w * 0.45, inner)
        cv.capsule(x + ca * gap * 1.4 - sa * off, y + sa * gap * 1.4 + ca * off,
                   x + ca * half * 0.85 - sa * off * 1.6, y + sa * half * 0.85 + ca * off * 1.6, w * 0.45, inner)
    elif k == "stent":
        ca, sa = math.cos(ang), math.sin(ang)
        half = d / 2
        v = _target(cv, x, y, half * 0.5, pol, 0.32)
        wire = min(max(v + pol * 0.25, 0.0), 1.0)
        area += cv.capsule(x - ca * half, y - sa * half, x + ca * half, y + sa * half, 0.035, v,
                           mesh=(0.05, wire))
    elif k == "effusion":
        fluid = lut.get("fluid", 0.5)
        mean = cv.local_mean(x, y, r)
        v = fluid if abs(fluid - mean) >= 0.3 else _target(cv, x, y, r, 1 if fluid >= mean else -1, 0.32)
        area += cv.ellipse(x, y, r, 0.6 * r, v, cut_above=-0.2 * 0.6 * r, soft=1.5)  # fluid level on top
    elif k == "abscess":
        rim = _target(cv, x, y, r, 1, 0.35)
        core = _target(cv, x, y, r, -1, 0.25) if modality != "us" else 0.04
        area += cv.ellipse(x, y, r, r * 0.85, rim, angle=ang)
        cv.ellipse(x, y, r * 0.65, r * 0.55, core, angle=ang)
    elif k == "hemorrhage":
        v = _target(cv, x, y, r, pol, 0.36)
        area += cv.ellipse(x, y, r, 0.5 * r, v, angle=ang, soft=1.3)
    elif k == "aneurysm":
        v = _target(cv, x, y, r, pol, 0.4)
        ca, sa = math.cos(ang), math.sin(ang)
        area += cv.capsule(x, y, x + ca * 0.9 * d, y + sa * 0.9 * d, 0.022, v)
        area += cv.ellipse(x, y, r, r * 0.9, v, angle=ang)
    elif k == "pneumothorax":
        v = _target(cv, x, y, r, -1, 0.3)
        area += cv.ellipse(x, y, r, 0.7 * r, v, angle=ang)
        area += cv.ring(x, y, r, 0.7 * r, 0.012, _target(cv, x, y, r, 1, 0.4), angle=ang)
    elif k == "metastasis":
        n = int(rng.integers(3, 5))
        for j in range(n):
            a2 = ang + 2 * math.pi * j / n
            dj = rng.uniform(0.065, 0.075)
            xj, yj = x + 0.3 * d * math.cos(a2), y + 0.3 * d * math.sin(a2)
            area += cv.ellipse(xj, yj, dj / 2, dj / 2, _target(cv, xj, yj, dj / 2, pol, 0.38), soft=1.2)
    elif k == "cholelithiasis":
        bile = lut.get("fluid", 0.2) if modality == "us" else _target(cv, x, y, r, -1, 0.2)
        area += cv.ellipse(x, y, r, r * 0.7, bile, angle=ang)
        for j in (-1, 1):
            xs, ys = x + j * 0.034 * math.cos(ang), y + j * 0.034 * math.sin(ang) + 0.01
            if shadow:
                area += cv.capsule(xs, ys, xs, ys + 0.12, 0.028, 0.25, op="mul")
            area += cv.ellipse(xs, ys, 0.036, 0.034, 0.95 if modality != "mri" else 0.05, soft=0.6)
    elif k == "ascites":
        fluid = lut.get("fluid", 0.5)
        mean = cv.local_mean(x, y, r)
        v = fluid if abs(fluid - mean) >= 0.3 else _target(cv, x, y, r, 1 if fluid >= mean else -1, 0.32)
        area += cv.ellipse(x, y, 0.35 * r, r, v, angle=ang * 0.2, soft=1.5)
    else:  # pragma: no cover - catalogue and drawers are kept in step by a test
        raise KeyError(k)
    return area


