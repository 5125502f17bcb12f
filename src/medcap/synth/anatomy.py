"""Anatomy drawings of the SYNTHETIC images and where each image's anatomy sits.

One drawing per (view, body region): "axial" (CT, MRI, ultrasound; the spine is drawn
sagittal), "frontal" (plain X-ray projections, and the faint ghost under angiography
vessels) and "pet" (coronal uptake maps). A drawing paints tissues by name; the modality's
lookup table (draw.LUTS) decides their grey values. ZONES says where findings may sit.
Anatomy is drawn through a per-image similarity transform (scale, shift, small rotation),
never mirrored: left and right are labels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .canvas import Canvas

VIEW = {"ct": "axial", "mri": "axial", "us": "axial", "xray": "frontal", "angio": "frontal",
        "pet": "pet", "oct": "oct"}

# Field of view in mm for the image width (for finding sizes in captions).
FOV_MM = {"chest": 360, "abdomen": 380, "skull": 210, "spine": 300, "pelvis": 380,
          "upper_limb": 160, "lower_limb": 220, "breast": 200, "none": 160}


# ----------------------------------------------------------------------------------------
# Anatomy templates. Each takes (canvas, lut, rng, variant) and paints in anatomy
# coordinates. ZONES tells where findings may sit: ellipses (x, y, a, b) in anatomy
# coordinates, by zone name ("body" always present).
Template = Callable[[Canvas, dict, np.random.Generator, "str | None"], None]
TEMPLATES: dict[tuple[str, str], Template] = {}
ZONES: dict[tuple[str, str], dict[str, list[tuple[float, float, float, float]]]] = {}


def _template(view: str, region: str, **zones):
    def deco(fn):
        TEMPLATES[(view, region)] = fn
        ZONES[(view, region)] = zones
        return fn
    return deco


def _bone_circle(cv, x, y, r, t, cortex=0.3):
    cv.ellipse(x, y, r, r, t["bone"])
    cv.ellipse(x, y, r * (1 - cortex), r * (1 - cortex), t["marrow"])


# ---- axial / sagittal (CT, MRI, ultrasound) -----------------------------------------
@_template("axial", "chest",
           body=[(0.31, 0.48, 0.1, 0.15), (0.69, 0.48, 0.1, 0.15), (0.5, 0.5, 0.3, 0.18)],
           lung=[(0.31, 0.48, 0.1, 0.15), (0.69, 0.48, 0.1, 0.15)],
           base=[(0.31, 0.63, 0.08, 0.04), (0.69, 0.63, 0.08, 0.04)],
           apex=[(0.26, 0.36, 0.05, 0.04), (0.74, 0.36, 0.05, 0.04)])
def _chest_axial(cv, t, rng, variant):
    cv.ellipse(0.5, 0.5, 0.43, 0.31, t["fat"])
    cv.ellipse(0.5, 0.5, 0.4, 0.285, t["muscle"])
    cv.ellipse(0.31, 0.48, 0.14, 0.2, t["lung"], angle=0.12)
    cv.ellipse(0.69, 0.48, 0.14, 0.2, t["lung"], angle=-0.12)
    cv.ellipse(0.54, 0.5, 0.12, 0.105, t["heart"], angle=-0.3)
    cv.ellipse(0.47, 0.37, 0.035, 0.035, t["vessel"])  # ascending aorta
    cv.ellipse(0.57, 0.64, 0.03, 0.03, t["vessel"])  # descending aorta
    _bone_circle(cv, 0.5, 0.72, 0.055, t)
    cv.capsule(0.5, 0.76, 0.5, 0.8, 0.016, t["bone"])
    cv.ellipse(0.5, 0.22, 0.04, 0.016, t["bone"])
    for ang in (0.5, 1.1, 2.0, 2.6):  # ribs
        for sgn in (-1, 1):
            cv.ellipse(0.5 + sgn * 0.39 * math.sin(ang), 0.5 - 0.26 * math.cos(ang), 0.02, 0.012, t["bone"])
    for _ in range(3):  # pulmonary vessels
        side = (0.31, 0.69)[int(rng.integers(2))]
        cv.ellipse(side + rng.uniform(-0.08, 0.08), rng.uniform(0.36, 0.6), 0.01, 0.01, t["soft"])


@_template("axial", "abdomen",
           body=[(0.5, 0.5, 0.3, 0.2)],
           kidney=[(0.36, 0.63, 0.04, 0.05), (0.64, 0.63, 0.04, 0.05)],
           gb=[(0.38, 0.52, 0.04, 0.04)],
           flank=[(0.17, 0.52, 0.04, 0.1), (0.83, 0.52, 0.04, 0.1)])
def _abdomen_axial(cv, t, rng, variant):
    cv.ellipse(0.5, 0.52, 0.43, 0.33, t["fat"])
    cv.ellipse(0.5, 0.52, 0.39, 0.29, t["muscle"])
    cv.ellipse(0.5, 0.52, 0.37, 0.27, t["soft"])
    cv.ellipse(0.33, 0.44, 0.17, 0.14, t["organ"], angle=0.25)  # liver (patient's right)
    cv.ellipse(0.75, 0.44, 0.07, 0.09, t["organ"], angle=-0.4)  # spleen
    cv.ellipse(0.6, 0.35, 0.08, 0.05, t["gas"])  # stomach
    for _ in range(4):
        cv.ellipse(rng.uniform(0.45, 0.65), rng.uniform(0.42, 0.55), 0.028, 0.022, t[rng.choice(("gas", "fluid"))])
    cv.ellipse(0.37, 0.53, 0.028, 0.038, t["fluid"])  # gallbladder
    cv.ellipse(0.36, 0.63, 0.055, 0.075, t["kidney"], angle=0.3)
    cv.ellipse(0.64, 0.63, 0.055, 0.075, t["kidney"], angle=-0.3)
    cv.ellipse(0.42, 0.71, 0.04, 0.05, t["muscle"])
    cv.ellipse(0.58, 0.71, 0.04, 0.05, t["muscle"])
    _bone_circle(cv, 0.5, 0.7, 0.055, t)
    cv.ellipse(0.53, 0.6, 0.028, 0.028, t["vessel"])  # aorta
    cv.ellipse(0.45, 0.6, 0.03, 0.02, t["vessel"])  # IVC


@_template("axial", "skull", body=[(0.5, 0.5, 0.22, 0.28)])
def _skull_axial(cv, t, rng, variant):
    cv.ellipse(0.5, 0.5, 0.37, 0.45, t["soft"])
    cv.ellipse(0.5, 0.5, 0.345, 0.425, t["bone"])
    cv.ellipse(0.5, 0.5, 0.31, 0.39, t["csf"])
    cv.ellipse(0.5, 0.5, 0.3, 0.38, t["gm"])
    cv.ellipse(0.41, 0.5, 0.1, 0.24, t["wm"], angle=0.05)
    cv.ellipse(0.59, 0.5, 0.1, 0.24, t["wm"], angle=-0.05)
    cv.ellipse(0.46, 0.47, 0.022, 0.09, t["csf"], angle=0.25)
    cv.ellipse(0.54, 0.47, 0.022, 0.09, t["csf"], angle=-0.25)
    cv.capsule(0.5, 0.14, 0.5, 0.3, 0.004, t["csf"])
    cv.capsule(0.5, 0.66, 0.5, 0.86, 0.004, t["csf"])
    cv.ellipse(0.5, 0.86, 0.025, 0.02, t["vessel"])  # sagittal sinus
    cv.ellipse(0.45, 0.6, 0.012, 0.012, t["vessel"])
    cv.ellipse(0.55, 0.6, 0.012, 0.012, t["vessel"])


@_template("axial", "spine", body=[(0.46, 0.5, 0.1, 0.32)])
def _spine_sagittal(cv, t, rng, variant):
    cv.ellipse(0.5, 0.5, 0.46, 0.7, t["soft"], p=4)
    cv.ellipse(0.82, 0.5, 0.1, 0.7, t["fat"], p=4)
    cv.ellipse(0.2, 0.5, 0.15, 0.7, t["organ"], p=4)
    for i in range(7):
        y = 0.04 + i * 0.14
        x = 0.45 + 0.03 * math.sin(math.pi * y)
        cv.ellipse(x, y, 0.085, 0.055, t["bone"], p=4)
        cv.ellipse(x, y, 0.07, 0.043, t["marrow"], p=4)
        cv.ellipse(x + 0.005, y + 0.07, 0.075, 0.013, t["disc"], p=4)
        cv.ellipse(x + 0.24, y + 0.01, 0.035, 0.02, t["bone"], angle=0.3)
    cv.ellipse(0.6, 0.5, 0.028, 0.6, t["csf"], p=4)
    cv.ellipse(0.6, 0.5, 0.012, 0.6, t["gm"], p=4)
    cv.ellipse(0.6 + 0.04 * math.sin(math.pi * 0.5), 0.5, 0.006, 0.6, t["vessel"], op="add")


@_template("axial", "pelvis", body=[(0.5, 0.5, 0.3, 0.2)])
def _pelvis_axial(cv, t, rng, variant):
    cv.ellipse(0.5, 0.5, 0.45, 0.32, t["fat"])
    cv.ellipse(0.5, 0.5, 0.41, 0.29, t["muscle"])
    cv.ellipse(0.5, 0.42, 0.2, 0.12, t["soft"])
    cv.ellipse(0.28, 0.7, 0.13, 0.08, t["muscle"], angle=0.3)
    cv.ellipse(0.72, 0.7, 0.13, 0.08, t["muscle"], angle=-0.3)
    _bone_circle(cv, 0.29, 0.52, 0.07, t)
    _bone_circle(cv, 0.71, 0.52, 0.07, t)
    cv.ellipse(0.5, 0.45, 0.09, 0.07, t["bladder"])
    cv.ellipse(0.5, 0.67, 0.035, 0.035, t["gas"])
    cv.ellipse(0.38, 0.36, 0.018, 0.018, t["vessel"])
    cv.ellipse(0.62, 0.36, 0.018, 0.018, t["vessel"])


def _limb_section(cv, t, a, b, bones, vessels):
    """Cross-section of a limb: fat rim, muscle, bones (x, y, r) and vessels (x, y, r)."""
    cv.ellipse(0.5, 0.5, a, b, t["fat"])
    cv.ellipse(0.5, 0.5, a - 0.035, b - 0.035, t["muscle"])
    for x, y, r in bones:
        _bone_circle(cv, x, y, r, t)
    for x, y, r in vessels:
        cv.ellipse(x, y, r, r, t["vessel"])


@_template("axial", "upper_limb", body=[(0.5, 0.5, 0.2, 0.14)])
def _upper_axial(cv, t, rng, variant):  # forearm: radius and ulna
    _limb_section(cv, t, 0.3, 0.24, [(0.4, 0.52, 0.045), (0.61, 0.54, 0.04)], [(0.5, 0.36, 0.014), (0.56, 0.35, 0.012)])


@_template("axial", "lower_limb", body=[(0.5, 0.5, 0.27, 0.24)])
def _lower_axial(cv, t, rng, variant):  # thigh: one big femur, intermuscular septa
    _limb_section(cv, t, 0.42, 0.37, [], [])
    cv.capsule(0.5, 0.5, 0.2, 0.3, 0.004, t["fat"])
    cv.capsule(0.5, 0.5, 0.75, 0.35, 0.004, t["fat"])
    _bone_circle(cv, 0.5, 0.56, 0.07, t)
    cv.ellipse(0.42, 0.4, 0.02, 0.02, t["vessel"])
    cv.ellipse(0.46, 0.41, 0.016, 0.016, t["vessel"])


@_template("axial", "breast",
           body=[(0.27, 0.48, 0.13, 0.16), (0.73, 0.48, 0.13, 0.16)])
def _breast_axial(cv, t, rng, variant):
    cv.ellipse(0.5, 0.95, 0.52, 0.22, t["muscle"])
    cv.ellipse(0.27, 0.52, 0.21, 0.28, t["fat"])
    cv.ellipse(0.73, 0.52, 0.21, 0.28, t["fat"])
    cv.ellipse(0.28, 0.56, 0.11, 0.17, t["gland"], angle=0.1)
    cv.ellipse(0.72, 0.56, 0.11, 0.17, t["gland"], angle=-0.1)
    cv.ellipse(0.5, 0.98, 0.5, 0.12, t["lung"])


@_template("axial", "none", body=[(0.5, 0.5, 0.25, 0.22)])
def _none_axial(cv, t, rng, variant):
    cv.ellipse(0.5, 0.5, 0.38, 0.33, t["soft"], angle=rng.uniform(-0.5, 0.5))
    cv.ellipse(0.5, 0.5, 0.3, 0.26, t["organ"], angle=rng.uniform(-0.5, 0.5))
    for _ in range(3):
        cv.ellipse(rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), 0.05, 0.03, t["soft"], angle=rng.uniform(0, 3))


# ---- frontal projections (plain X-ray; the faint ghost under angiography) --------------
@_template("frontal", "chest",
           body=[(0.33, 0.45, 0.09, 0.2), (0.67, 0.45, 0.09, 0.2)],
           lung=[(0.33, 0.45, 0.09, 0.2), (0.67, 0.45, 0.09, 0.2)],
           base=[(0.33, 0.66, 0.07, 0.04), (0.67, 0.66, 0.07, 0.04)],
           apex=[(0.3, 0.3, 0.06, 0.04), (0.7, 0.3, 0.06, 0.04)])
def _chest_frontal(cv, t, rng, variant):
    cv.ellipse(0.5, 0.6, 0.46, 0.6, t["soft"], p=4)
    cv.ellipse(0.13, 0.16, 0.14, 0.1, t["soft"])
    cv.ellipse(0.87, 0.16, 0.14, 0.1, t["soft"])
    cv.ellipse(0.33, 0.46, 0.135, 0.28, t["lung"], angle=0.05)
    cv.ellipse(0.67, 0.46, 0.135, 0.28, t["lung"], angle=-0.05)
    cv.ellipse(0.5, 0.42, 0.065, 0.3, t["soft"], p=4)
    cv.ellipse(0.56, 0.63, 0.15, 0.12, t["heart"], angle=-0.2)
    cv.ellipse(0.5, 0.6, 0.035, 0.6, 0.5 * (t["soft"] + t["bone"]), p=4)
    cv.capsule(0.2, 0.19, 0.46, 0.24, 0.014, t["bone"])
    cv.capsule(0.8, 0.19, 0.54, 0.24, 0.014, t["bone"])
    rib = t["lung"] + 0.3 * (t["bone"] - t["lung"])
    for i in range(6):  # posterior ribs, sloping down and out
        y = 0.27 + i * 0.075
        cv.capsule(0.46, y, 0.21, y + 0.06, 0.007, rib)
        cv.capsule(0.54, y, 0.79, y + 0.06, 0.007, rib)


@_template("frontal", "abdomen",
           body=[(0.5, 0.45, 0.28, 0.26)],
           kidney=[(0.38, 0.38, 0.04, 0.06), (0.62, 0.38, 0.04, 0.06)],
           gb=[(0.35, 0.35, 0.04, 0.04)],
           flank=[(0.18, 0.5, 0.04, 0.12), (0.82, 0.5, 0.04, 0.12)])
def _abdomen_frontal(cv, t, rng, variant):
    cv.ellipse(0.5, 0.5, 0.44, 0.62, t["soft"], p=4)
    cv.ellipse(0.3, 0.2, 0.2, 0.13, t["organ"])
    for _ in range(7):
        cv.ellipse(rng.uniform(0.3, 0.7), rng.uniform(0.35, 0.75), rng.uniform(0.03, 0.06), 0.025,
                   t["gas"], angle=rng.uniform(0, 3))
    for i in range(6):
        y = 0.05 + i * 0.13
        cv.ellipse(0.5, y, 0.07, 0.045, t["bone"], p=4)
        cv.ellipse(0.5, y, 0.055, 0.034, t["marrow"], p=4)
    cv.ellipse(0.5, 1.02, 0.36, 0.22, t["bone"])
    cv.ellipse(0.5, 1.02, 0.32, 0.18, t["soft"])


@_template("frontal", "skull", body=[(0.5, 0.38, 0.2, 0.18)])
def _skull_frontal(cv, t, rng, variant):
    cv.ellipse(0.5, 0.47, 0.37, 0.43, t["soft"])
    cv.ellipse(0.5, 0.45, 0.34, 0.4, t["bone"])
    cv.ellipse(0.5, 0.45, 0.3, 0.36, 0.5 * (t["bone"] + t["soft"]))
    cv.ellipse(0.38, 0.52, 0.07, 0.055, t["gas"])
    cv.ellipse(0.62, 0.52, 0.07, 0.055, t["gas"])
    cv.ellipse(0.5, 0.63, 0.03, 0.06, t["gas"])
    cv.ellipse(0.5, 0.8, 0.17, 0.045, t["bone"], p=4)
    cv.ring(0.5, 0.78, 0.22, 0.14, 0.03, t["bone"])


@_template("frontal", "spine", body=[(0.5, 0.5, 0.1, 0.32)])
def _spine_frontal(cv, t, rng, variant):
    cv.ellipse(0.5, 0.5, 0.4, 0.7, t["soft"], p=4)
    for i in range(7):
        y = 0.03 + i * 0.145
        cv.ellipse(0.5, y, 0.09, 0.05, t["bone"], p=4)
        cv.ellipse(0.5, y, 0.075, 0.04, t["marrow"], p=4)
        cv.ellipse(0.44, y, 0.014, 0.02, t["bone"])
        cv.ellipse(0.56, y, 0.014, 0.02, t["bone"])
        cv.capsule(0.41, y, 0.31, y + 0.015, 0.012, t["bone"])
        cv.capsule(0.59, y, 0.69, y + 0.015, 0.012, t["bone"])


@_template("frontal", "pelvis", body=[(0.5, 0.52, 0.28, 0.22)])
def _pelvis_frontal(cv, t, rng, variant):
    cv.ellipse(0.5, 0.55, 0.46, 0.55, t["soft"], p=4)
    cv.ellipse(0.3, 0.33, 0.17, 0.14, t["bone"], angle=0.4)
    cv.ellipse(0.3, 0.35, 0.13, 0.1, t["marrow"], angle=0.4)
    cv.ellipse(0.7, 0.33, 0.17, 0.14, t["bone"], angle=-0.4)
    cv.ellipse(0.7, 0.35, 0.13, 0.1, t["marrow"], angle=-0.4)
    cv.ellipse(0.5, 0.4, 0.08, 0.12, t["bone"], p=4)
    for sgn in (-1, 1):
        cv.ellipse(0.5 + sgn * 0.12, 0.72, 0.08, 0.06, t["bone"])
        cv.ellipse(0.5 + sgn * 0.12, 0.72, 0.05, 0.035, t["soft"])
        _bone_circle(cv, 0.5 + sgn * 0.26, 0.6, 0.07, t)
        cv.capsule(0.5 + sgn * 0.27, 0.62, 0.5 + sgn * 0.31, 1.05, 0.055, t["bone"])


@_template("frontal", "upper_limb", body=[(0.5, 0.5, 0.14, 0.3)])
def _upper_frontal(cv, t, rng, variant):
    if variant == "hand":
        cv.ellipse(0.5, 0.64, 0.2, 0.17, t["soft"], p=4)
        cv.capsule(0.5, 0.8, 0.5, 1.1, 0.17, t["soft"])
        cv.capsule(0.31, 0.66, 0.14, 0.45, 0.04, t["soft"])
        for i in range(4):
            xb = 0.36 + 0.093 * i
            xt = 0.33 + 0.11 * i
            cv.capsule(xb, 0.5, xt, 0.12 + 0.04 * abs(i - 1.5), 0.036, t["soft"])
        cv.capsule(0.44, 0.84, 0.43, 1.1, 0.03, t["bone"])
        cv.capsule(0.57, 0.84, 0.58, 1.1, 0.025, t["bone"])
        for i in range(4):  # carpals
            cv.ellipse(0.42 + 0.05 * i, 0.78, 0.022, 0.02, t["bone"])
        for i in range(4):
            xb, xt = 0.36 + 0.093 * i, 0.33 + 0.11 * i
            ytop = 0.12 + 0.04 * abs(i - 1.5)
            cv.capsule(0.42 + 0.05 * i, 0.74, xb, 0.52, 0.016, t["bone"])  # metacarpal
            for k in range(3):  # phalanges
                f0, f1 = 0.04 + k * 0.33, 0.3 + k * 0.33
                cv.capsule(xb + (xt - xb) * f0, 0.5 + (ytop - 0.5) * f0,
                           xb + (xt - xb) * f1, 0.5 + (ytop - 0.5) * f1, 0.013, t["bone"])
        cv.capsule(0.38, 0.72, 0.29, 0.6, 0.016, t["bone"])
        cv.capsule(0.27, 0.57, 0.17, 0.47, 0.014, t["bone"])
    else:  # elbow / forearm
        cv.capsule(0.5, -0.1, 0.5, 1.1, 0.2, t["soft"])
        cv.capsule(0.5, -0.1, 0.5, 0.46, 0.05, t["bone"])
        cv.capsule(0.5, -0.1, 0.5, 0.44, 0.03, t["marrow"])
        cv.ellipse(0.5, 0.49, 0.09, 0.04, t["bone"])
        cv.capsule(0.44, 0.56, 0.41, 1.1, 0.028, t["bone"])
        cv.capsule(0.57, 0.54, 0.6, 1.1, 0.03, t["bone"])


@_template("frontal", "lower_limb", body=[(0.5, 0.5, 0.14, 0.3)])
def _lower_frontal(cv, t, rng, variant):
    if variant == "knee":
        cv.capsule(0.5, -0.1, 0.5, 1.1, 0.24, t["soft"])
        cv.capsule(0.5, -0.1, 0.5, 0.42, 0.07, t["bone"])
        cv.capsule(0.5, -0.1, 0.5, 0.4, 0.045, t["marrow"])
        cv.ellipse(0.5, 0.45, 0.13, 0.07, t["bone"], p=4)
        cv.ellipse(0.5, 0.6, 0.12, 0.04, t["bone"], p=4)
        cv.capsule(0.5, 0.62, 0.5, 1.1, 0.065, t["bone"])
        cv.capsule(0.5, 0.65, 0.5, 1.1, 0.04, t["marrow"])
        cv.capsule(0.64, 0.64, 0.65, 1.1, 0.022, t["bone"])
        cv.ellipse(0.5, 0.42, 0.05, 0.06, 0.5 * (t["bone"] + t["marrow"]))
    else:  # lower leg and ankle
        cv.capsule(0.5, -0.1, 0.5, 0.9, 0.19, t["soft"])
        cv.ellipse(0.52, 0.92, 0.18, 0.1, t["soft"])
        cv.capsule(0.46, -0.1, 0.47, 0.8, 0.05, t["bone"])
        cv.capsule(0.46, -0.1, 0.47, 0.78, 0.03, t["marrow"])
        cv.capsule(0.6, -0.1, 0.61, 0.82, 0.018, t["bone"])
        cv.ellipse(0.5, 0.86, 0.08, 0.045, t["bone"])


@_template("frontal", "breast", body=[(0.25, 0.5, 0.13, 0.22)])
def _breast_frontal(cv, t, rng, variant):
    # mammogram (mediolateral oblique): the breast is a dome from the image edge
    cv.ellipse(-0.02, 0.5, 0.58, 0.44, t["fat"])
    cv.ellipse(0.12, 0.52, 0.32, 0.28, t["gland"], angle=0.2)
    cv.ellipse(-0.05, 0.02, 0.18, 0.4, t["muscle"] + 0.15, angle=0.5)
    for _ in range(5):
        cv.ellipse(rng.uniform(0.05, 0.35), rng.uniform(0.3, 0.7), 0.06, 0.02,
                   t["gland"] + 0.08, angle=rng.uniform(-0.5, 0.5))


@_template("frontal", "none", body=[(0.5, 0.5, 0.25, 0.22)])
def _none_frontal(cv, t, rng, variant):
    _none_axial(cv, t, rng, variant)


# ---- PET (coronal maximum-intensity projections of tracer uptake) -----------------------
@_template("pet", "skull", body=[(0.5, 0.48, 0.2, 0.24)])
def _pet_skull(cv, t, rng, variant):
    cv.ellipse(0.5, 0.5, 0.32, 0.42, t["soft"])
    cv.ellipse(0.5, 0.45, 0.28, 0.33, t["gm"])
    cv.ellipse(0.5, 0.47, 0.19, 0.24, t["wm"])
    cv.ellipse(0.5, 0.82, 0.15, 0.08, t["gm"])


@_template("pet", "chest", body=[(0.33, 0.45, 0.09, 0.18), (0.67, 0.45, 0.09, 0.18)])
def _pet_chest(cv, t, rng, variant):
    cv.ellipse(0.5, 0.58, 0.4, 0.58, t["soft"], p=4)
    cv.ellipse(0.33, 0.45, 0.13, 0.26, t["lung"])
    cv.ellipse(0.67, 0.45, 0.13, 0.26, t["lung"])
    cv.ellipse(0.58, 0.62, 0.1, 0.09, t["heart"])
    cv.ellipse(0.56, 0.63, 0.05, 0.045, t["soft"] * 2)
    cv.ellipse(0.32, 0.93, 0.2, 0.1, t["organ"])


@_template("pet", "abdomen", body=[(0.5, 0.5, 0.26, 0.26)])
def _pet_abdomen(cv, t, rng, variant):
    cv.ellipse(0.5, 0.5, 0.4, 0.62, t["soft"], p=4)
    cv.ellipse(0.33, 0.28, 0.19, 0.14, t["organ"])
    cv.ellipse(0.73, 0.3, 0.06, 0.09, t["organ"] * 0.8)
    cv.ellipse(0.38, 0.55, 0.05, 0.08, t["kidney"])
    cv.ellipse(0.62, 0.55, 0.05, 0.08, t["kidney"])
    for _ in range(4):
        cv.ellipse(rng.uniform(0.35, 0.65), rng.uniform(0.6, 0.85), 0.05, 0.03, t["organ"] * 0.6,
                   angle=rng.uniform(0, 3))


@_template("pet", "pelvis", body=[(0.5, 0.45, 0.26, 0.2)])
def _pet_pelvis(cv, t, rng, variant):
    cv.ellipse(0.5, 0.5, 0.44, 0.6, t["soft"], p=4)
    cv.ellipse(0.5, 0.62, 0.1, 0.08, t["bladder"])
    for _ in range(4):
        cv.ellipse(rng.uniform(0.3, 0.7), rng.uniform(0.2, 0.45), 0.05, 0.03, t["organ"] * 0.6, angle=rng.uniform(0, 3))
    cv.ellipse(0.27, 0.62, 0.06, 0.06, t["marrow"])
    cv.ellipse(0.73, 0.62, 0.06, 0.06, t["marrow"])


@_template("pet", "none", body=[(0.5, 0.38, 0.12, 0.18)])
def _pet_body(cv, t, rng, variant):
    cv.ellipse(0.5, 0.1, 0.06, 0.07, t["gm"])  # brain
    cv.ellipse(0.5, 0.4, 0.15, 0.23, t["soft"], p=4)
    cv.capsule(0.35, 0.22, 0.28, 0.6, 0.035, t["soft"])
    cv.capsule(0.65, 0.22, 0.72, 0.6, 0.035, t["soft"])
    cv.capsule(0.44, 0.62, 0.42, 0.98, 0.05, t["soft"])
    cv.capsule(0.56, 0.62, 0.58, 0.98, 0.05, t["soft"])
    cv.ellipse(0.53, 0.3, 0.04, 0.035, t["heart"])
    cv.ellipse(0.44, 0.4, 0.07, 0.05, t["organ"])
    cv.ellipse(0.45, 0.47, 0.02, 0.03, t["kidney"])
    cv.ellipse(0.55, 0.47, 0.02, 0.03, t["kidney"])
    cv.ellipse(0.5, 0.61, 0.035, 0.03, t["bladder"])


ZONES[("oct", "none")] = {"body": [(0.5, 0.5, 0.34, 0.05)]}  # replaced by the retinal band


# ----------------------------------------------------------------------------------------
@dataclass
class Geometry:
    """Where the anatomy sits in the image and what lies inside the useful field."""

    view: str
    region: str  # "none" when the image has no body-region concept
    variant: str | None
    transform: tuple[float, float, float, float]  # scale, dx, dy, rotation (radians)
    extra: dict = field(default_factory=dict)  # ultrasound fan, OCT retina, mammogram side

    def to_image(self, x: float, y: float) -> tuple[float, float]:
        s, dx, dy, rot = self.transform
        u, v = x - 0.5, y - 0.5
        c, sn = math.cos(rot), math.sin(rot)
        return 0.5 + s * (c * u - sn * v) + dx, 0.5 + s * (sn * u + c * v) + dy

    def inside(self, x: float, y: float, r: float) -> bool:
        """Is a finding of radius r at (x, y) fully inside the useful field of view?"""
        if not (r + 0.03 <= x <= 1 - r - 0.03 and r + 0.03 <= y <= 1 - r - 0.03):
            return False
        if "fan" in self.extra:
            half, r0, r1 = self.extra["fan"]
            dist = math.hypot(x - 0.5, y + 0.02)
            ang = abs(math.atan2(x - 0.5, y + 0.02))
            return r0 + r + 0.05 < dist < r1 - r - 0.05 and ang < half - (r + 0.04) / max(dist, 1e-3)
        if self.view == "axial" and self.extra.get("ct"):
            return math.hypot(x - 0.5, y - 0.5) < 0.47 - r
        return True

    def zone(self, name: str) -> list[tuple[float, float, float, float]]:
        zones = ZONES[(self.view, self.region)]
        return zones.get(name) or zones["body"]


# US: where the probe looks for each region (anatomy coordinates)
_US_FOCUS = {"abdomen": [(0.34, 0.48), (0.63, 0.62), (0.4, 0.55)], "breast": [(0.28, 0.5), (0.72, 0.5)],
             "pelvis": [(0.5, 0.45)], "chest": [(0.54, 0.5)], "lower_limb": [(0.45, 0.45)],
             "upper_limb": [(0.5, 0.45)], "skull": [(0.5, 0.45)], "spine": [(0.5, 0.5)], "none": [(0.5, 0.5)]}


def sample_geometry(rng: np.random.Generator, modality: str, region: str | None, variant: str | None) -> Geometry:
    view = VIEW[modality]
    reg = region or "none"
    extra: dict = {}
    if modality == "us":
        fx, fy = _US_FOCUS[reg][int(rng.integers(len(_US_FOCUS[reg])))]
        zoom = float(rng.uniform(1.5, 1.9))
        tf = (zoom, 0.5 - 0.5 - zoom * (fx - 0.5) + float(rng.uniform(-0.03, 0.03)),
              0.55 - 0.5 - zoom * (fy - 0.5), float(rng.uniform(-0.06, 0.06)))
        extra["fan"] = (float(rng.uniform(0.6, 0.75)), 0.08, float(rng.uniform(0.88, 0.97)))
    elif modality == "oct":
        tf = (1.0, 0.0, 0.0, 0.0)
        extra["oct"] = (float(rng.uniform(0.3, 0.4)), float(rng.uniform(0.01, 0.04)),
                        float(rng.uniform(0.35, 0.65)), float(rng.uniform(0.4, 0.8)))
    else:
        big_rot = view == "frontal" and reg in ("upper_limb", "lower_limb")
        rot = float(rng.uniform(-0.4, 0.4)) if big_rot else float(rng.uniform(-0.08, 0.08))
        tf = (float(rng.uniform(0.92, 1.06)), float(rng.uniform(-0.03, 0.03)), float(rng.uniform(-0.03, 0.03)), rot)
        if modality == "ct":
            extra["ct"] = True
        if view == "frontal" and reg == "breast":
            extra["mirror_breast"] = bool(rng.random() < 0.5)
    return Geometry(view, reg, variant, tf, extra)



def oct_surface(geo: "Geometry", x):
    """Height of the inner retinal surface at x (float or array) for an OCT geometry."""
    base, amp, fovea_x, phase = geo.extra["oct"]
    return base + amp * np.sin(2 * math.pi * (x * 0.7 + phase)) - 0.06 * np.exp(-((x - fovea_x) / 0.06) ** 2)
