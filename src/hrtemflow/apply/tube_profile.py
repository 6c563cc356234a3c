"""A tube's profile across its axis, averaged over its whole length: where its two walls are.

Why: the 71-class chirality classifier confuses tubes of one chiral angle and neighbouring diameters
((16,0) against (17,0): 0.078 nm, two pixels at 0.375 Å) and it sees 2.4 nm of tube at a time. The walls of
a whole tube, averaged over 10-20 nm (300-500 rows), are read to a fraction of a pixel. Projected, a
cylinder's wall is densest just inside its radius; through the contrast transfer each wall is a line whose
contrast and exact position depend on the defocus, but both walls alike: the tube's profile is symmetric
about its axis. So the reading is the folded profile (the mean of its two sides about the refined axis)
and the radii of its darkest and brightest points. How these relate to the diameter (their offset with
defocus, their spread) is not modelled here: `lattice_fusion` fits it on labelled validation tubes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from .lattice import END_INSET_NM, MIN_LENGTH_NM, axis_strip

#: the profile is read this far (nm) either side of the axis: the widest tube's radius (0.7) and its fringes
HALF_WIDTH_NM = 1.5
#: the walls are searched between these radii (nm): the classes' 0.4-0.7 nm and what defocus shifts them by
WALL_RANGE_NM = (0.25, 0.95)
#: outside the tube: the profile's level is its mean between these radii (nm)
OUTSIDE_NM = (1.1, 1.5)
#: the axis is refined on this many pieces along the tube (a line fitted through their centres)
PIECES = 4
#: the centre is searched this far (nm) either side of the given axis
CENTRE_SEARCH_NM = 0.3
#: sub-pixel step of the folded profile and of the centre search (px)
STEP_PX = 0.05
#: the profile across the tube is binned this finely (px) and smoothed over this much (px, Gaussian sigma)
BIN_PX, SMOOTH_PX = 0.2, 0.3


def _centre(profile: np.ndarray, t: np.ndarray, reach: float, search: float) -> float:
    """The offset (px) within ±search of 0 about which the profile is most nearly symmetric out to `reach` px."""
    r = np.arange(0.0, reach, STEP_PX)
    cs = np.arange(-search, search + 1e-9, STEP_PX)
    a = np.stack([np.interp(c + r, t, profile) for c in cs])
    b = np.stack([np.interp(c - r, t, profile) for c in cs])
    return float(cs[int(np.argmin(np.mean((a - b) ** 2, axis=1)))])


def _extremum(r: np.ndarray, q: np.ndarray, i: int) -> float:
    """The extremum's radius, refined by a parabola through its three samples."""
    if 0 < i < len(q) - 1:
        a, b, c = q[i - 1 : i + 2]
        den = a - 2 * b + c
        if den != 0:
            return float(r[i] + 0.5 * (r[1] - r[0]) * (a - c) / den)
    return float(r[i])


def _binned_profile(image: np.ndarray, q0: np.ndarray, q1: np.ndarray, half: float, inset: float) -> np.ndarray:
    """The mean of the image's pixels at each distance across the axis q0-q1 (within `half` px, `inset` px inside
    its ends), in bins of BIN_PX: a tube at an angle to the pixel grid samples its profile finer than a pixel
    (as a slanted edge does); bins no pixel fell in are interpolated."""
    length = float(np.hypot(*(q1 - q0)))
    u = (q1 - q0) / length
    v = np.array([-u[1], u[0]])
    corners = np.array([q0 + a * v for a in (-half, half)] + [q1 + a * v for a in (-half, half)])
    lo = np.maximum(np.floor(corners.min(axis=0)).astype(int), 0)
    hi = np.minimum(np.ceil(corners.max(axis=0)).astype(int) + 1, np.array(image.shape[::-1]))
    ys, xs = np.mgrid[lo[1] : hi[1], lo[0] : hi[0]]
    d = np.stack([xs - q0[0], ys - q0[1]], axis=-1).astype(np.float64)
    s, t = d @ u, d @ v
    keep = (s >= inset) & (s <= length - inset) & (np.abs(t) <= half)
    edges = np.arange(-half, half + BIN_PX, BIN_PX)
    k = np.clip(np.digitize(t[keep], edges) - 1, 0, len(edges) - 2)
    values = np.asarray(image, dtype=np.float64)[lo[1] : hi[1], lo[0] : hi[0]][keep]
    counts = np.bincount(k, minlength=len(edges) - 1)
    sums = np.bincount(k, weights=values, minlength=len(edges) - 1)
    centres = 0.5 * (edges[:-1] + edges[1:])
    full = counts > 0
    return centres, np.interp(centres, centres[full], sums[full] / counts[full])


def read_tube_walls(image: np.ndarray, points: Sequence[tuple[float, float]], pixel_nm: float) -> dict[str, Any]:
    """The folded profile's darkest and brightest radii (nm) on the tube's longest straight piece, with their
    contrast over the profile's own asymmetry (its noise); `radius_dark_nm` None (with `reason`) when unread."""
    pts = np.asarray(points, dtype=np.float64)
    seg = int(np.argmax(np.hypot(*np.diff(pts, axis=0).T)))
    p0, p1 = pts[seg], pts[seg + 1]
    length_px = float(np.hypot(*(p1 - p0)))
    if length_px * pixel_nm - 2 * END_INSET_NM < MIN_LENGTH_NM:
        return {"radius_dark_nm": None, "reason": f"tube piece {length_px * pixel_nm:.1f} nm: too short to read"}
    search = CENTRE_SEARCH_NM / pixel_nm
    reach = HALF_WIDTH_NM / pixel_nm
    half = int(np.ceil(reach + search)) + 1
    inset = int(round(END_INSET_NM / pixel_nm))
    t = np.arange(-half, half + 1, dtype=np.float64)
    u = (p1 - p0) / length_px
    v = np.array([-u[1], u[0]])
    # the axis as given can be off by a pixel and a fraction of a degree: refine it on pieces of the tube
    strip = axis_strip(image, p0, p1, half, inset)
    pieces = np.array_split(np.arange(strip.shape[0]), PIECES)
    mids = np.array([inset + float(np.mean(ix)) for ix in pieces])
    cent = np.array([_centre(strip[ix].mean(axis=0), t, reach, search) for ix in pieces])
    slope, offset = np.polyfit(mids, cent, 1)
    q0, q1 = p0 + v * offset, p1 + v * (offset + slope * length_px)
    t, profile = _binned_profile(image, q0, q1, reach + 2.0, inset)
    profile = ndimage.gaussian_filter1d(profile, SMOOTH_PX / BIN_PX)
    c = _centre(profile, t, reach, 1.0)
    r = np.arange(0.0, reach, STEP_PX)
    right, left = np.interp(c + r, t, profile), np.interp(c - r, t, profile)
    q = 0.5 * (right + left)
    rn = r * pixel_nm
    q = q - q[(rn >= OUTSIDE_NM[0]) & (rn <= OUTSIDE_NM[1])].mean()
    noise = float(np.std(right - left) / np.sqrt(2.0)) or 1e-12
    inside = np.flatnonzero((rn >= WALL_RANGE_NM[0]) & (rn <= WALL_RANGE_NM[1]))
    dark = int(inside[np.argmin(q[inside])])
    bright = int(inside[np.argmax(q[inside])])
    return {
        "radius_dark_nm": _extremum(rn, q, dark),
        "radius_bright_nm": _extremum(rn, q, bright),
        "contrast_dark": float(-q[dark] / noise),
        "contrast_bright": float(q[bright] / noise),
        "axis_shift_nm": float((offset + slope * length_px / 2 + c) * pixel_nm),
    }
