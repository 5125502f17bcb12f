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
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import numpy as np

# ----------------------------------------------------------------------------------------
# Tissue values per modality ("lookup tables"). A template paints tissues by name; the
# modality decides the grey value. PET values are tracer uptake (inverted at the end).
_TISSUES = ("air", "lung", "fat", "soft", "muscle", "organ", "kidney", "fluid", "bladder",
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

VIEW = {"ct": "axial", "mri": "axial", "us": "axial", "xray": "frontal", "angio": "frontal",
        "pet": "pet", "oct": "oct"}

# Field of view in mm for the image width (for finding sizes in captions).
FOV_MM = {"chest": 360, "abdomen": 380, "skull": 210, "spine": 300, "pelvis": 380,
          "upper_limb": 160, "lower_limb": 220, "breast": 200, "none": 160}


# ----------------------------------------------------------------------------------------
# Noise banks: one per (size, kind), built once per process from a fixed seed; each image
# takes a random window (offsets from the image's own generator, so output stays a pure
# function of the dataset seed and the image index).
@lru_cache(maxsize=16)
def _bank(size: int, kind: str) -> np.ndarray:
    rng = np.random.default_rng([20250, size, len(kind)])
    n = 2 * size
    if kind == "gauss":
        return rng.standard_normal((n, n), dtype=np.float32)
    if kind == "speckle":  # laterally elongated grains with mean 1 (ultrasound, OCT)
        small = rng.standard_exponential((n, n // 3 + 2)).astype(np.float32)
        return small @ _interp_cached(n, small.shape[1]).T
    if kind.startswith("smooth"):  # low-frequency field, `cells` cells per image width
        cells = int(kind[6:])
        small = rng.standard_normal((2 * cells + 1, 2 * cells + 1)).astype(np.float32)
        big = _upsample(small, n)
        return big / big.std()
    raise ValueError(kind)


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Linear-interpolation matrix (n_out, n_in) mapping pixel centres."""
    pos = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    w = (pos - lo).astype(np.float32)
    m = np.zeros((n_out, n_in), np.float32)
    m[np.arange(n_out), lo] += 1 - w
    m[np.arange(n_out), hi] += w
    return m


@lru_cache(maxsize=32)
def _interp_cached(n_out: int, n_in: int) -> np.ndarray:
    return _interp_matrix(n_out, n_in)


def _upsample(a: np.ndarray, n: int) -> np.ndarray:
    """Bilinear upsampling of a square array to n x n (two small matrix products)."""
    m = _interp_cached(n, a.shape[0])
    return (m @ a.astype(np.float32) @ m.T).astype(np.float32)


def _window(bank: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    oy, ox = rng.integers(0, bank.shape[0] - size + 1, size=2)
    return bank[oy:oy + size, ox:ox + size]


@lru_cache(maxsize=16)
def _grids(size: int) -> dict[str, np.ndarray]:
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    x = c[None, :]
    y = c[:, None]
    r_centre = np.sqrt((x - 0.5) ** 2 + (y - 0.5) ** 2)
    # ultrasound: polar coordinates around the probe apex at the top centre
    ay = -0.02
    r_apex = np.sqrt((x - 0.5) ** 2 + (y - ay) ** 2)
    theta = np.arctan2(x - 0.5, y - ay)
    return {
        "c": c,
        "ct_fov": np.clip((0.485 - r_centre) * size * 0.7 + 0.5, 0, 1).astype(np.float32),
        "vignette": (1.0 - 0.35 * r_centre ** 2).astype(np.float32),
        "r_apex": r_apex.astype(np.float32),
        "theta": theta.astype(np.float32),
    }


def _clip01(a: np.ndarray) -> np.ndarray:
    """In-place clip to [0, 1] (two ufunc calls; np.clip's wrapper costs more at this size)."""
    np.minimum(a, 1.0, out=a)
    np.maximum(a, 0.0, out=a)
    return a


# ----------------------------------------------------------------------------------------
class Canvas:
    """A float32 image with shape-painting primitives that touch only a window around each shape.

    Every primitive returns the shape's area as a fraction of the image (analytic, an
    upper bound once clipped), which is how finding areas are bounded.
    """

    def __init__(self, size: int, fill: float = 0.0):
        self.S = size
        self.img = np.full((size, size), fill, np.float32)
        self.c = _grids(size)["c"]
        self.set_transform()

    # -- anatomy transform ---------------------------------------------------------------
    def set_transform(self, scale: float = 1.0, dx: float = 0.0, dy: float = 0.0, rot: float = 0.0) -> None:
        self.s, self.dx, self.dy, self.rot = scale, dx, dy, rot
        self._cos, self._sin = math.cos(rot), math.sin(rot)
        self._identity = scale == 1.0 and dx == 0.0 and dy == 0.0 and rot == 0.0

    def identity(self) -> None:
        self.set_transform()

    def pt(self, x: float, y: float) -> tuple[float, float]:
        """Anatomy coordinates -> image coordinates."""
        if self._identity:
            return x, y
        u, v = x - 0.5, y - 0.5
        return (0.5 + self.s * (self._cos * u - self._sin * v) + self.dx,
                0.5 + self.s * (self._sin * u + self._cos * v) + self.dy)

    # -- helpers -------------------------------------------------------------------------
    def _win(self, x0: float, x1: float, y0: float, y1: float):
        S = self.S
        i0, i1 = max(int(x0 * S), 0), min(int(x1 * S) + 2, S)
        j0, j1 = max(int(y0 * S), 0), min(int(y1 * S) + 2, S)
        if i0 >= i1 or j0 >= j1:
            return None
        return slice(j0, j1), slice(i0, i1)

    def _apply(self, win, m: np.ndarray, v, op: str) -> None:
        reg = self.img[win]
        if op == "set":
            reg += (v - reg) * m
        elif op == "add":
            reg += v * m
        elif op == "mul":
            reg *= 1.0 + (v - 1.0) * m
        else:  # pragma: no cover - programming error
            raise ValueError(op)

    def local_mean(self, x: float, y: float, r: float) -> float:
        win = self._win(x - r, x + r, y - r, y + r)
        return 0.5 if win is None else float(self.img[win].mean())

    # -- primitives ----------------------------------------------------------------------
    def ellipse(self, x, y, a, b, v, angle=0.0, p=2, op="set", soft=1.0, cut_above=None) -> float:
        """Filled ellipse (p=2) or rounded rectangle (p=4, a superellipse) with a soft edge.

        ``cut_above``: keep only the part lower than ``y + cut_above`` (a fluid level).
        """
        x, y = self.pt(x, y)
        a, b, angle = a * self.s, b * self.s, angle + self.rot
        r = max(a, b) * (1.2 if p == 4 else 1.0) + 2.0 / self.S
        win = self._win(x - r, x + r, y - r, y + r)
        area = (math.pi if p == 2 else 3.708) * a * b
        if win is None:
            return area
        ys, xs = win
        ddx = self.c[xs] - x  # (w,)
        ddy = self.c[ys] - y  # (h,)
        if angle:  # rotated: u, w are 2-D from the start
            ca, sa = math.cos(angle), math.sin(angle)
            u = (ddx * (ca / a))[None, :] + (ddy * (sa / a))[:, None]
            w = (ddy * (ca / b))[:, None] - (ddx * (sa / b))[None, :]
            u *= u
            w *= w
        else:  # axis-aligned: the squares stay 1-D until the sum
            u = ((ddx * (1.0 / a)) ** 2)[None, :]
            w = ((ddy * (1.0 / b)) ** 2)[:, None]
        if p == 4:
            u = u * u
            w = w * w
        m = u + w  # q: 1 on the outline
        k = min(a, b) * self.S / (p * soft)
        m *= -k  # soft edge about `soft` pixels wide: clip((1 - q) * k + 0.5)
        m += k + 0.5
        _clip01(m)
        if cut_above is not None:
            m *= _clip01((ddy[:, None] - cut_above) * self.S + 0.5)
        self._apply(win, m, v, op)
        return area

    def ring(self, x, y, a, b, width, v, angle=0.0, op="set") -> float:
        """Outline of an ellipse, ``width`` thick (image fraction)."""
        x, y = self.pt(x, y)
        a, b, angle, width = a * self.s, b * self.s, angle + self.rot, width * self.s
        r = max(a, b) + width + 2.0 / self.S
        win = self._win(x - r, x + r, y - r, y + r)
        area = math.pi * (a + b) * width
        if win is None:
            return area
        ys, xs = win
        ddx = self.c[xs][None, :] - x
        ddy = self.c[ys][:, None] - y
        ca, sa = math.cos(angle), math.sin(angle)
        u = (ddx * ca + ddy * sa) / a
        w = (ddy * ca - ddx * sa) / b
        q = np.sqrt(u * u + w * w)
        m = _clip01((width * 0.5 - np.abs(q - 1.0) * min(a, b)) * self.S + 0.5)
        self._apply(win, m, v, op)
        return area

    def capsule(self, x0, y0, x1, y1, r, v, op="set", soft=1.0, mesh=None) -> float:
        """A thick line segment with round ends.

        ``mesh=(period, v_wire)`` overlays a diagonal wire pattern (a stent).
        """
        x0, y0 = self.pt(x0, y0)
        x1, y1 = self.pt(x1, y1)
        r = r * self.s
        win = self._win(min(x0, x1) - r, max(x0, x1) + r, min(y0, y1) - r, max(y0, y1) + r)
        ddx, ddy = x1 - x0, y1 - y0
        length2 = ddx * ddx + ddy * ddy + 1e-12
        area = 2 * r * math.sqrt(length2) + math.pi * r * r
        if win is None:
            return area
        ys, xs = win
        px = self.c[xs] - x0  # (w,)
        py = self.c[ys] - y0  # (h,)
        t = (px * (ddx / length2))[None, :] + (py * (ddy / length2))[:, None]
        _clip01(t)
        ex = px[None, :] - t * ddx
        ey = t
        ey *= -ddy
        ey += py[:, None]
        ex *= ex
        ey *= ey
        ex += ey
        m = np.sqrt(ex, out=ex)  # distance to the segment
        m *= -self.S / soft  # clip((r - d) * S / soft + 0.5)
        m += r * self.S / soft + 0.5
        _clip01(m)
        if mesh is not None:
            period, v_wire = mesh
            length = math.sqrt(length2)
            t = _clip01((px * (ddx / length2))[None, :] + (py * (ddy / length2))[:, None])
            along = t * length
            across = ((px * ddy)[None, :] - (py * ddx)[:, None]) / length
            k = 2 * math.pi / period
            wire = (np.abs(np.sin((along + across) * k)) < 0.45) | (np.abs(np.sin((along - across) * k)) < 0.45)
            v = v + (v_wire - v) * wire.astype(np.float32)
        self._apply(win, m, v, op)
        return area

    def polyline(self, pts, r, v, op="set") -> None:
        for (xa, ya), (xb, yb) in zip(pts[:-1], pts[1:]):
            self.capsule(xa, ya, xb, yb, r, v, op)


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
    for ang in (0.35, 0.75, 1.15, 2.0, 2.4, 2.8):
        for sgn in (-1, 1):
            cv.ellipse(0.5 + sgn * 0.39 * math.cos(ang - math.pi / 2) * 1.0,
                       0.5 + 0.26 * math.sin(ang - math.pi / 2) * -1, 0.02, 0.012, t["bone"])
    for _ in range(6):  # pulmonary vessels
        side = rng.choice((0.31, 0.69))
        cv.ellipse(side + rng.uniform(-0.08, 0.08), rng.uniform(0.36, 0.6), 0.008, 0.008, t["soft"])


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


@_template("axial", "upper_limb", body=[(0.5, 0.5, 0.2, 0.14)])
def _upper_axial(cv, t, rng, variant):
    cv.ellipse(0.5, 0.5, 0.3, 0.24, t["fat"])
    cv.ellipse(0.5, 0.5, 0.27, 0.21, t["muscle"])
    _bone_circle(cv, 0.4, 0.52, 0.045, t)
    _bone_circle(cv, 0.61, 0.54, 0.04, t)
    cv.ellipse(0.5, 0.36, 0.014, 0.014, t["vessel"])
    cv.ellipse(0.56, 0.35, 0.012, 0.012, t["vessel"])


@_template("axial", "lower_limb", body=[(0.5, 0.5, 0.27, 0.24)])
def _lower_axial(cv, t, rng, variant):
    cv.ellipse(0.5, 0.5, 0.42, 0.37, t["fat"])
    cv.ellipse(0.5, 0.5, 0.37, 0.33, t["muscle"])
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
    rib = 0.5 * (t["lung"] + t["bone"])
    for i in range(6):
        y = 0.26 + i * 0.075
        cv.polyline([(0.47, y), (0.28, y + 0.02), (0.2, y + 0.07)], 0.009, rib)
        cv.polyline([(0.53, y), (0.72, y + 0.02), (0.8, y + 0.07)], 0.009, rib)


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
        cv.ellipse(rng.uniform(0.35, 0.65), rng.uniform(0.6, 0.85), 0.05, 0.03, t["organ"] * 0.6, angle=rng.uniform(0, 3))


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


# ----------------------------------------------------------------------------------------
# Findings. Each drawer paints one finding in image coordinates and returns its area
# (an upper bound, as a fraction of the image).
FINDING_SIZE = {  # diameter (or length) range as a fraction of the image width
    "nodule": (0.065, 0.1), "mass": (0.13, 0.18), "cyst": (0.08, 0.14), "fracture": (0.2, 0.26),
    "calcification": (0.065, 0.085), "stent": (0.2, 0.26), "effusion": (0.18, 0.26),
    "abscess": (0.11, 0.15), "hemorrhage": (0.14, 0.2), "aneurysm": (0.08, 0.11),
    "pneumothorax": (0.14, 0.2), "kidney_calculi": (0.065, 0.075), "metastasis": (0.2, 0.24),
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
        area += cv.ellipse(x, y, r, r * rng.uniform(0.85, 1.0), v, angle=ang, soft=1.3)
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
        area += cv.ellipse(x, y, r, r * (0.85 if k == "calcification" else 0.7), v, angle=ang, soft=0.6)
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
        area += cv.ellipse(x, y, r, 0.45 * r, v, cut_above=-0.2 * 0.45 * r, soft=1.5)
    elif k == "abscess":
        rim = _target(cv, x, y, r, 1, 0.35)
        core = _target(cv, x, y, r, -1, 0.25) if modality != "us" else 0.04
        area += cv.ellipse(x, y, r, r * 0.85, rim, angle=ang)
        cv.ellipse(x, y, r * 0.65, r * 0.55, core, angle=ang)
    elif k == "hemorrhage":
        v = _target(cv, x, y, r, pol, 0.36)
        area += cv.ellipse(x, y, r, 0.38 * r, v, angle=ang, soft=1.3)
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
            area += cv.ellipse(xs, ys, 0.033, 0.03, 0.95 if modality != "mri" else 0.05, soft=0.6)
    elif k == "ascites":
        fluid = lut.get("fluid", 0.5)
        mean = cv.local_mean(x, y, r)
        v = fluid if abs(fluid - mean) >= 0.3 else _target(cv, x, y, r, 1 if fluid >= mean else -1, 0.32)
        area += cv.ellipse(x, y, 0.2 * r, r, v, angle=ang * 0.2, soft=1.5)
    else:  # pragma: no cover - catalogue and drawers are kept in step by a test
        raise KeyError(k)
    return area


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
        bend = rng.uniform(-0.35, 0.35)
        xm, ym = x + math.cos(a) * length * 0.5, y + math.sin(a) * length * 0.5
        a2 = a + bend
        xe, ye = xm + math.cos(a2) * length * 0.5, ym + math.sin(a2) * length * 0.5
        cv.capsule(x, y, xm, ym, w, v, soft=1.2)
        cv.capsule(xm, ym, xe, ye, w * 0.9, v, soft=1.2)
        if depth >= 3 or w < 0.006:
            continue
        if trunk_branches and depth == 0:  # side branches off a straight trunk
            for frac in (0.2, 0.35, 0.55):
                bx, by = x + math.cos(a) * length * frac, y + math.sin(a) * length * frac
                for sgn in (-1, 1):
                    stack.append((bx, by, a + sgn * rng.uniform(1.0, 1.5), 0.18, w * 0.45, depth + 2))
            continue
        n_children = 2 if rng.random() < 0.8 else 3
        for j in range(n_children):
            da = (j - (n_children - 1) / 2) * rng.uniform(0.5, 0.8)
            stack.append((xe, ye, a2 + da, length * rng.uniform(0.55, 0.75), w * 0.62, depth + 1))


def _finish_ct(img, rng, S, g):
    img += 0.03 * _window(_bank(S, "smooth12"), S, rng) * (img > 0.15)
    img += float(rng.uniform(0.018, 0.04)) * _window(_bank(S, "gauss"), S, rng)
    lo, hi = rng.uniform(-0.04, 0.04), rng.uniform(0.95, 1.05)
    img -= lo
    img *= 1.0 / (hi - lo)
    img *= g["ct_fov"]
    return img


def _finish_mri(img, rng, S, g):
    img *= 0.92 + 0.14 * _window(_bank(S, "smooth3"), S, rng)  # coil bias field
    sigma = float(rng.uniform(0.025, 0.05))
    n1 = _window(_bank(S, "gauss"), S, rng)
    n2 = _window(_bank(S, "gauss"), S, rng)
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


def _finish_xray(img, rng, S, g):
    img = _blur3(img)
    img += 0.04 * _window(_bank(S, "smooth6"), S, rng)
    img += 0.014 * _window(_bank(S, "gauss"), S, rng)
    img *= g["vignette"]
    gamma = float(rng.uniform(0.8, 1.2))
    np.clip(img, 0.0, 1.0, out=img)
    img **= gamma
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


def _finish_us(img, rng, S, g, fan):
    half, r0, r1 = fan
    img *= 0.3 + 0.7 * _window(_bank(S, "speckle"), S, rng)
    img *= 1.15 - 0.6 * g["r_apex"]
    img += 0.02 * _window(_bank(S, "gauss"), S, rng)
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


def _finish_angio(img, rng, S, g):
    img += 0.05 * _window(_bank(S, "smooth3"), S, rng)
    img += float(rng.uniform(0.02, 0.035)) * _window(_bank(S, "gauss"), S, rng)
    return img


def _render_oct(cv: Canvas, geo: Geometry, rng, S):
    base, amp, fovea_x, phase = geo.extra["oct"]
    g = _grids(S)
    x = g["c"][None, :]
    y = g["c"][:, None]
    surface = base + amp * np.sin(2 * math.pi * (x * 0.7 + phase)) - 0.06 * np.exp(-((x - fovea_x) / 0.06) ** 2)
    depth = y - surface  # (S, S)
    # retinal layers from the inner surface down: NFL, GCL, IPL, INL, OPL, ONL, EZ, RPE, choroid
    bounds = np.array([0.0, 0.02, 0.05, 0.075, 0.1, 0.115, 0.16, 0.175, 0.195, 0.3], np.float32)
    values = np.array([0.04, 0.75, 0.42, 0.58, 0.25, 0.55, 0.2, 0.8, 0.95, 0.5, 0.15], np.float32)
    cv.img[:] = values[np.searchsorted(bounds, depth)]
    return surface


def _oct_band(geo: Geometry, x: float) -> float:
    base, amp, fovea_x, phase = geo.extra["oct"]
    return base + amp * math.sin(2 * math.pi * (x * 0.7 + phase)) - 0.06 * math.exp(-((x - fovea_x) / 0.06) ** 2)


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
    g = _grids(S)
    if m == "pet":
        cv = Canvas(max(S // 4, 16))
    else:
        cv = Canvas(S, LUTS["angio"]["air"] if m == "angio" else 0.0)
    lut = lut_for(m, scene.contrast, rng)
    if m == "oct":
        _render_oct(cv, geo, rng, S)
    else:
        cv.set_transform(*geo.transform)
        TEMPLATES[(geo.view, geo.region)](cv, lut, rng, geo.variant)
        if m == "angio":
            _angio_vessels(cv, rng, geo.region, float(rng.uniform(0.12, 0.25)))
        if m == "ct":  # the scanner couch under the patient
            cv.ring(0.5, 1.25, 0.55, 0.42, 0.012, 0.6)
        cv.identity()
    if geo.extra.get("mirror_breast"):
        cv.img[:] = cv.img[:, ::-1]
    areas = [draw_finding(cv, f, m, lut, rng) for f in scene.findings]
    img = cv.img
    if m == "ct":
        img = _finish_ct(img, rng, S, g)
    elif m == "mri":
        img = _finish_mri(img, rng, S, g)
    elif m == "xray":
        img = _finish_xray(img, rng, S, g)
    elif m == "us":
        img = _finish_us(img, rng, S, g, geo.extra["fan"])
    elif m == "angio":
        img = _finish_angio(img, rng, S, g)
    elif m == "pet":
        s = cv.S
        img += 0.05 * rng.standard_normal((s, s), dtype=np.float32) * np.sqrt(np.clip(img, 0, 1) + 0.02)
        img = _upsample(np.clip(img, 0, 1.2), S)
        img = 1.0 - float(rng.uniform(0.75, 0.95)) * img  # maximum intensity projection: hot = dark
    elif m == "oct":
        img *= 0.35 + 0.65 * _window(_bank(S, "speckle"), S, rng)
        img += 0.03 * _window(_bank(S, "gauss"), S, rng)
    out = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out, areas
