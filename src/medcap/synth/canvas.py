"""Painting primitives for the SYNTHETIC images: a float32 canvas, noise banks, grids.

Coordinates are fractions of the image: x to the right, y downwards, (0.5, 0.5) the centre.
Every primitive touches only a window around its shape and is vectorised numpy (pixel
centres precomputed per size, no per-pixel Python loops). Noise comes from per-size banks
built once per process; each image takes a random window of them, with offsets drawn
from the image's own generator, so images stay a pure function of the dataset seed.
"""
from __future__ import annotations

import math
import zlib
from functools import lru_cache

import numpy as np


# Noise banks: one per (size, kind), built once per process from a fixed seed; each image
# takes a random window (offsets from the image's own generator, so output stays a pure
# function of the dataset seed and the image index).
@lru_cache(maxsize=16)
def noise_bank(size: int, kind: str) -> np.ndarray:
    rng = np.random.default_rng([20250, size, zlib.crc32(kind.encode())])
    n = 2 * size
    if kind == "gauss":
        return rng.standard_normal((n, n), dtype=np.float32)
    if kind == "speckle":  # laterally elongated grains with mean 1 (ultrasound, OCT)
        small = rng.standard_exponential((n, n // 3 + 2), dtype=np.float32)
        return _resize_axis(small, n, axis=1)
    if kind.startswith("smooth"):  # low-frequency field, `cells` cells per image width
        cells = int(kind[6:])
        small = rng.standard_normal((2 * cells + 1, 2 * cells + 1), dtype=np.float32)
        big = upsample(small, n)
        return big / big.std()
    raise ValueError(kind)


@lru_cache(maxsize=64)
def _interp_index(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear interpolation from n_in to n_out pixel centres: (lower index, upper index, weight)."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (pos - lo).astype(np.float32)


def _resize_axis(a: np.ndarray, n: int, axis: int) -> np.ndarray:
    lo, hi, w = _interp_index(n, a.shape[axis])
    if axis == 0:
        w = w[:, None]
    out = np.take(a, lo, axis=axis)
    out += (np.take(a, hi, axis=axis) - out) * w
    return out


def upsample(a: np.ndarray, n: int) -> np.ndarray:
    """Bilinear resize of a square float32 array to n x n (gathers, no BLAS: the result
    does not depend on thread counts, and nothing spawns threads)."""
    return _resize_axis(_resize_axis(a.astype(np.float32, copy=False), n, axis=0), n, axis=1)


def bank_window(bank: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    oy, ox = rng.integers(0, bank.shape[0] - size + 1, size=2)
    return bank[oy:oy + size, ox:ox + size]


@lru_cache(maxsize=16)
def grids(size: int) -> dict[str, np.ndarray]:
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
        self.c = grids(size)["c"]
        # hard: "set" paints without anti-aliasing (about half the work; used for the
        # anatomy, whose edges the modality's noise and blur soften anyway)
        self.hard = False
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
        if angle and p == 2 and a != b:  # rotated ellipse: q = A dx^2 + B dx dy + C dy^2
            ca, sa = math.cos(angle), math.sin(angle)
            ia, ib = 1.0 / (a * a), 1.0 / (b * b)
            qa = ca * ca * ia + sa * sa * ib
            qb = 2.0 * ca * sa * (ia - ib)
            qc = sa * sa * ia + ca * ca * ib
            m = (ddx * qb)[None, :] * ddy[:, None]  # the only 2-D products: 3 full-window ops
            m += (ddx * ddx * qa)[None, :]
            m += (ddy * ddy * qc)[:, None]
        elif angle and p == 4:  # rotated rounded rectangle
            ca, sa = math.cos(angle), math.sin(angle)
            u = (ddx * (ca / a))[None, :] + (ddy * (sa / a))[:, None]
            w = (ddy * (ca / b))[:, None] - (ddx * (sa / b))[None, :]
            u *= u
            w *= w
            u *= u
            w *= w
            m = u + w
        else:  # axis-aligned (or a circle): the squares stay 1-D until the sum
            u = (ddx * (1.0 / a)) ** 2
            w = (ddy * (1.0 / b)) ** 2
            if p == 4:
                u = u * u
                w = w * w
            m = u[None, :] + w[:, None]  # q: 1 on the outline
        if self.hard and op == "set" and cut_above is None:
            np.copyto(self.img[win], v, where=m < 1.0)
            return area
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
        ex += ey  # squared distance to the segment
        if self.hard and op == "set" and mesh is None:
            np.copyto(self.img[win], v, where=ex < r * r)
            return area
        m = np.sqrt(ex, out=ex)
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
