"""Procedural drawing of the SYNTHETIC images (no real patient data anywhere).

Every image is painted on a float32 canvas with values in [0, 1] and saved as an
8-bit grayscale JPEG. Three things decide what it looks like:

- the **modality** sets the global look: circular field of view and fine noise for CT,
  bias field and Rician noise with bright fat/fluid for MRI, a blurred frontal projection
  for plain X-ray, a speckled fan sector for ultrasound, dark vessels on a bright ground
  for angiography, low-resolution hot spots on white for PET, retinal layers for OCT;
- the **body region** sets the anatomy silhouette (one axial/sagittal and one frontal
  drawing per region, plus coronal uptake maps for PET);
- the **findings** are small local objects (each at most 5 % of the image area and at
  least about 8 px across at 128 px) drawn clearly brighter or darker than the tissue
  around them, at a position that decides the location labels.

Speed: everything is vectorised numpy on small windows around each shape (precomputed
pixel-centre coordinates, no per-pixel Python loops); the noise comes from per-size noise
banks from which each image takes a random window, so one core draws several hundred
224 px images per second (bench/bench_synth.py).

Coordinates are fractions of the image: x to the right, y downwards, (0.5, 0.5) the centre.
Anatomy is drawn in "anatomy coordinates" through a per-image similarity transform
(scale, shift, small rotation; never a mirror: left and right are labels); findings are
drawn in image coordinates.
"""
from __future__ import annotations

import math

import numpy as np

from .anatomy import TEMPLATES, Geometry, oct_surface
from .canvas import Canvas, bank_window, grids, noise_bank, upsample
from .findings import draw_finding

# ----------------------------------------------------------------------------------------
# Tissue values per modality ("lookup tables"). A template paints tissues by name; the
# modality decides the grey value. PET values are tracer uptake (inverted at the end).
TISSUES = ("air", "lung", "fat", "soft", "muscle", "organ", "kidney", "fluid", "bladder",
           "bone", "marrow", "gm", "wm", "csf", "vessel", "gas", "heart", "disc", "gland")

LUTS: dict[str, dict[str, float]] = {
    "ct": dict(air=0.0, lung=0.07, fat=0.24, soft=0.47, muscle=0.45, organ=0.55, kidney=0.53,
               fluid=0.34, bladder=0.34, bone=0.96, marrow=0.64, gm=0.52, wm=0.42, csf=0.28,
               vessel=0.49, gas=0.02, heart=0.5, disc=0.5, gland=0.5),
    "mri": dict(air=0.0, lung=0.04, fat=0.8, soft=0.32, muscle=0.26, organ=0.36, kidney=0.46,
                fluid=0.92, bladder=0.92, bone=0.05, marrow=0.6, gm=0.56, wm=0.34, csf=0.93,
                vessel=0.05, gas=0.0, heart=0.3, disc=0.78, gland=0.45),
    "xray": dict(air=0.03, lung=0.17, fat=0.36, soft=0.46, muscle=0.46, organ=0.5, kidney=0.5,
                 fluid=0.5, bladder=0.5, bone=0.92, marrow=0.74, gm=0.52, wm=0.52, csf=0.52,
                 vessel=0.5, gas=0.2, heart=0.55, disc=0.38, gland=0.66),
    "us": dict(air=0.0, lung=0.6, fat=0.3, soft=0.47, muscle=0.36, organ=0.55, kidney=0.45,
               fluid=0.03, bladder=0.03, bone=0.95, marrow=0.95, gm=0.42, wm=0.5, csf=0.03,
               vessel=0.04, gas=0.8, heart=0.45, disc=0.5, gland=0.6),
    # angiography: digital subtraction leaves only a faint ghost of the anatomy
    "angio": dict(air=0.8, lung=0.77, fat=0.74, soft=0.73, muscle=0.73, organ=0.72, kidney=0.71,
                  fluid=0.73, bladder=0.73, bone=0.62, marrow=0.66, gm=0.72, wm=0.72, csf=0.73,
                  vessel=0.72, gas=0.78, heart=0.71, disc=0.7, gland=0.72),
    "pet": dict(air=0.0, lung=0.04, fat=0.03, soft=0.1, muscle=0.12, organ=0.3, kidney=0.75,
                fluid=0.05, bladder=0.95, bone=0.07, marrow=0.14, gm=0.88, wm=0.4, csf=0.05,
                vessel=0.15, gas=0.0, heart=0.72, disc=0.08, gland=0.12),
    "oct": {},  # OCT draws its own layers
}
# Contrast Media (C0009924): vessels and enhancing organs light up on CT and MRI.
CONTRAST_LUT = {
    "ct": dict(vessel=0.9, kidney=0.8, organ=0.62, heart=0.7),
    "mri": dict(vessel=0.85, kidney=0.72, organ=0.48, heart=0.6),
}


# ----------------------------------------------------------------------------------------
# Modality looks: applied to the whole canvas after anatomy and findings.
def _angio_vessels(cv: Canvas, rng: np.random.Generator, region: str, v: float) -> None:
    """A branching dark vessel tree whose layout depends on the region."""
    roots = {
        "skull": [((0.5, 1.05), -math.pi / 2, 0.32, 0.026)],
        "chest": [((0.45, 0.3), math.pi / 2 - 0.6, 0.3, 0.022), ((0.5, 0.3), math.pi / 2 + 0.5, 0.28, 0.02)],
        "abdomen": [((0.5, -0.05), math.pi / 2, 1.1, 0.035)],
        "pelvis": [((0.5, -0.05), math.pi / 2 - 0.45, 0.6, 0.03), ((0.5, -0.05), math.pi / 2 + 0.45, 0.6, 0.03)],
        "lower_limb": [((0.45, -0.05), math.pi / 2, 1.1, 0.028)],
        "upper_limb": [((0.5, -0.05), math.pi / 2, 0.6, 0.024)],
        "spine": [((0.5, -0.05), math.pi / 2, 1.1, 0.03)],
        "breast": [((0.1, 0.5), 0.0, 0.5, 0.015)],
        "none": [((0.5, 1.05), -math.pi / 2, 0.4, 0.022)],
    }[region]
    trunk_branches = region in ("abdomen", "lower_limb", "spine")
    stack = [(x, y, a, length, w, 0) for (x, y), a, length, w in roots]
    while stack:
        x, y, a, length, w, depth = stack.pop()
        xe, ye = x + math.cos(a) * length, y + math.sin(a) * length
        cv.capsule(x, y, xe, ye, w, v, soft=1.2)
        if depth >= 3 or w < 0.006:
            continue
        if trunk_branches and depth == 0:  # side branches off a straight trunk
            for frac in (0.2, 0.35, 0.55):
                bx, by = x + math.cos(a) * length * frac, y + math.sin(a) * length * frac
                for sgn in (-1, 1):
                    stack.append((bx, by, a + sgn * rng.uniform(1.0, 1.5), 0.18, w * 0.45, depth + 2))
            continue
        n_children = 2 if rng.random() < 0.8 else 3
        bend = rng.uniform(-0.3, 0.3)  # the parent's course bends where it divides
        for j in range(n_children):
            da = (j - (n_children - 1) / 2) * rng.uniform(0.5, 0.8)
            stack.append((xe, ye, a + bend + da, length * rng.uniform(0.55, 0.75), w * 0.62, depth + 1))


def _finish_ct(img, rng, S, g, geo):
    img += 0.03 * bank_window(noise_bank(S, "smooth12"), S, rng) * (img > 0.15)
    img += float(rng.uniform(0.018, 0.04)) * bank_window(noise_bank(S, "gauss"), S, rng)
    lo, hi = rng.uniform(-0.04, 0.04), rng.uniform(0.95, 1.05)
    img -= lo
    img *= 1.0 / (hi - lo)
    img *= g["ct_fov"]
    return img


def _finish_mri(img, rng, S, g, geo):
    img *= 0.92 + 0.14 * bank_window(noise_bank(S, "smooth3"), S, rng)  # coil bias field
    sigma = float(rng.uniform(0.025, 0.05))
    n1 = bank_window(noise_bank(S, "gauss"), S, rng)
    n2 = bank_window(noise_bank(S, "gauss"), S, rng)
    img += sigma * n1
    img *= img
    img += (sigma * n2) ** 2
    np.sqrt(img, out=img)  # Rician magnitude noise
    return img


def _blur3(img):
    out = img.copy()
    out[1:-1] += img[:-2] + img[2:]
    out[0] *= 1.5
    out[-1] *= 1.5
    tmp = out.copy()
    out[:, 1:-1] += tmp[:, :-2] + tmp[:, 2:]
    out[:, 0] *= 1.5
    out[:, -1] *= 1.5
    out *= 1.0 / 9.0
    return out


def _finish_xray(img, rng, S, g, geo):
    img = _blur3(img)
    img += 0.04 * bank_window(noise_bank(S, "smooth6"), S, rng)
    img += 0.014 * bank_window(noise_bank(S, "gauss"), S, rng)
    img *= g["vignette"]
    np.clip(img, 0.0, 1.0, out=img)
    img += float(rng.uniform(-0.25, 0.25)) * img * (1.0 - img)  # film curve (a cheap gamma)
    # collimation: dark borders of random width
    m = rng.integers(0, max(S // 14, 1), size=4)
    if m[0]:
        img[: m[0]] *= 0.1
    if m[1]:
        img[S - m[1]:] *= 0.1
    if m[2]:
        img[:, : m[2]] *= 0.1
    if m[3]:
        img[:, S - m[3]:] *= 0.1
    return img


def _finish_us(img, rng, S, g, geo):
    half, r0, r1 = geo.extra["fan"]
    img *= 0.3 + 0.7 * bank_window(noise_bank(S, "speckle"), S, rng)
    img *= 1.15 - 0.6 * g["r_apex"]
    img += 0.02 * bank_window(noise_bank(S, "gauss"), S, rng)
    r, th = g["r_apex"], g["theta"]
    edge = np.minimum(np.minimum((r - r0) * S, (r1 - r) * S), (half - np.abs(th)) * r * S)
    img *= np.clip(edge + 0.5, 0.0, 1.0)
    # depth markers: bright dots down the right side of the sector
    for k in range(1, 6):
        yy = int(S * (0.05 + k * 0.16))
        xx = int(S * 0.93)
        if yy < S - 1:
            img[yy:yy + max(S // 100, 1) + 1, xx:xx + max(S // 100, 1) + 1] = 0.9
    return img


def _finish_angio(img, rng, S, g, geo):
    img += 0.05 * bank_window(noise_bank(S, "smooth3"), S, rng)
    img += float(rng.uniform(0.02, 0.035)) * bank_window(noise_bank(S, "gauss"), S, rng)
    return img


def _finish_pet(img, rng, S, g, geo):
    """Low counts, low resolution: noisy blobs upsampled, then hot = dark on white (MIP style)."""
    s = img.shape[0]
    img += 0.05 * rng.standard_normal((s, s), dtype=np.float32) * np.sqrt(np.clip(img, 0, 1) + 0.02)
    img = upsample(np.clip(img, 0, 1.2), S)
    return 1.0 - float(rng.uniform(0.75, 0.95)) * img


def _finish_oct(img, rng, S, g, geo):
    img *= 0.35 + 0.65 * bank_window(noise_bank(S, "speckle"), S, rng)
    img += 0.03 * bank_window(noise_bank(S, "gauss"), S, rng)
    return img


_FINISH = {"ct": _finish_ct, "mri": _finish_mri, "xray": _finish_xray, "us": _finish_us,
           "angio": _finish_angio, "pet": _finish_pet, "oct": _finish_oct}


def _render_oct(cv: Canvas, geo: Geometry, S: int) -> None:
    """Retinal layers below a wavy inner surface with a foveal pit."""
    g = grids(S)
    depth = g["c"][:, None] - oct_surface(geo, g["c"][None, :])  # (S, S)
    # from the inner surface down: NFL, GCL, IPL, INL, OPL, ONL, EZ, RPE, choroid
    bounds = np.array([0.0, 0.02, 0.05, 0.075, 0.1, 0.115, 0.16, 0.175, 0.195, 0.3], np.float32)
    values = np.array([0.04, 0.75, 0.42, 0.58, 0.25, 0.55, 0.2, 0.8, 0.95, 0.5, 0.15], np.float32)
    cv.img[:] = values[np.searchsorted(bounds, depth)]


def lut_for(modality: str, contrast: bool, rng: np.random.Generator) -> dict[str, float]:
    lut = dict(LUTS[modality])
    if contrast and modality in CONTRAST_LUT:
        lut.update(CONTRAST_LUT[modality])
    if lut and modality not in ("pet", "angio"):
        j = float(rng.uniform(-0.03, 0.03))
        lut = {k: v + j for k, v in lut.items()}
    return lut


def render(scene, size: int, rng: np.random.Generator) -> tuple[np.ndarray, list[float]]:
    """Draw ``scene`` (a :class:`medcap.synth.scene.Scene`) as a size x size uint8 array.

    Returns the image and the area (fraction of the image, an upper bound) of each finding.
    """
    m, geo = scene.modality, scene.geometry
    S = size
    g = grids(S)
    if m == "pet":
        cv = Canvas(max(S // 4, 16))
    else:
        cv = Canvas(S, LUTS["angio"]["air"] if m == "angio" else 0.0)
    lut = lut_for(m, scene.contrast, rng)
    if m == "oct":
        _render_oct(cv, geo, S)
    else:
        cv.set_transform(*geo.transform)
        cv.hard = True
        TEMPLATES[(geo.view, geo.region)](cv, lut, rng, geo.variant)
        if m == "angio":
            _angio_vessels(cv, rng, geo.region, float(rng.uniform(0.12, 0.25)))
        if m == "ct":  # the scanner couch under the patient
            cv.ring(0.5, 1.25, 0.55, 0.42, 0.012, 0.6)
        cv.identity()
        cv.hard = False
    if m == "pet":  # blobby uptake (the findings stay sharper: lesions are focal)
        cv.img = _blur3(cv.img)
    if geo.extra.get("mirror_breast"):
        cv.img = np.ascontiguousarray(cv.img[:, ::-1])
    for f in scene.findings:
        f.area = draw_finding(cv, f, m, lut, rng)
    areas = [f.area for f in scene.findings]
    img = _FINISH[m](cv.img, rng, S, g, geo)
    out = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out, areas
