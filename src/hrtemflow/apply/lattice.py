"""A nanotube's own graphene lattice as a ruler: does the micrograph's pixel size hold on this tube?

Why: the chirality classifier reads a tube's diameter in pixels, so a magnification calibrated 3 % off
reads (11,8) as (10,8), confidently (independent-images.md: 15 % confident and wrong at -2.85 %). The
tube carries its own ruler. Along its axis the Fourier transform of a straight tube shows layer lines;
the graphene {100} reflections (g = 1/0.2130 nm⁻¹) put the two strong ones at heights g·cos θ and
g·cos(60° - θ) (θ the chiral angle), whatever the tube's diameter, so

    g² = 4/3 · (h₁² + h₂² - h₁·h₂)

from the two heights alone (an armchair tube, θ = 30°, shows one line: g = 2h/√3). Comparing that g with
the graphene lattice gives the pixel size the tube says the micrograph has. A tube tilted out of the
image plane by τ shortens its axis in projection and raises the heights by 1/cos τ, so a reading above 1
is a tilt or a calibration error, one below 1 only a calibration error.

Measured (`studies/lattice_reading.py`; independent-images.md, Run 5): on 40 ideal tubes at the chirality
bench's 0.375 Å pixels the reading is the true scale within 0.26 % for 90 % of them (median 0.00 %; its chiral
angle off by 0.05° in the median), on the campaign's own MD tubes off a film within 0.17 %; both sets whose pixel
size is declared 2.85 % off are read outside the band, every tube of them. A film under the tube (its speckle passes
the same contrast transfer) is the background measured in strips beside the tube, and still two thirds of the
readings on a film are right; drift and coarse pixels hide the lattice. A wrong reading comes with lines of
another chiral angle, so a reading is used (`check`) only where its angle is the answer's: then no tube of
the 13 independent sets nor of the 96 rightly answered validation tubes was flagged wrongly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from ..core.tubes import GRAPHENE_A

#: graphene {100} spacing's inverse (1/nm): √3/2 · a is the (100) plane spacing
G100_PER_NM = 2.0 / (math.sqrt(3.0) * GRAPHENE_A / 10.0)
#: the strip read across the tube's axis: its radius plus this much (nm) on either side
STRIP_MARGIN_NM = 0.3
#: the strip starts and ends this far (nm) inside the tube's ends (the caps, the end's blur)
END_INSET_NM = 0.5
#: strips as wide as the tube's, this far (nm) beside its axis on either side, give the background
BESIDE_NM = (2.2, 3.3, 4.4)
#: ... scaled to the tube's profile at this quantile of their ratio (the tube's own diffuse power between its lines)
BESIDE_LEVEL = 0.1
#: zero padding of the axial transform (finer sampling of a line's peak, no more resolution)
PAD = 16
#: the profile beside the tube is smoothed over a quarter of this (1/nm): its speckle, not its Thon rings
BESIDE_SMOOTH_PER_NM = 0.6
#: a line is a local maximum this many times above its background (and above this share of the strongest)
MIN_LINE_EXCESS, MIN_LINE_SHARE = 0.8, 0.05
#: the lattice scale is searched within this factor of the declared pixel size
SCALE_RANGE = (0.9, 1.1)
#: three times a reading's spread on ideal tubes (Run 5: 90 % within 0.26 %); 0.5 % flags a validation tube
MARGIN = 0.0075
#: a reading is trusted when its chiral angle is the answer's within this (deg)
ANGLE_AGREEMENT_DEG = 2.0
#: the imaging stage's default largest tilt (deg), for cards that do not record theirs
DEFAULT_TILT_DEG = 10.0
#: shortest tube (nm) whose lines are sharp enough to read (the axial resolution is 1/length)
MIN_LENGTH_NM = 4.0


def axis_strip(
    image: np.ndarray,
    p0: np.ndarray,
    p1: np.ndarray,
    half_width: int,
    inset: int,
    offset: float = 0.0,
    outside: float | None = None,
) -> np.ndarray:
    """The image resampled on the tube's axis, or on a parallel line `offset` px to its side: rows along the
    axis, columns across it; beyond the image `outside` (None: the image reflected, for the tube's own strip)."""
    d = p1 - p0
    length = float(np.hypot(*d))
    u = d / length
    v = np.array([-u[1], u[0]])
    s, t = np.meshgrid(np.arange(inset, length - inset), offset + np.arange(-half_width, half_width + 1), indexing="ij")
    rows, cols = p0[1] + s * u[1] + t * v[1], p0[0] + s * u[0] + t * v[0]
    mode, cval = ("reflect", 0.0) if outside is None else ("constant", outside)
    return ndimage.map_coordinates(np.asarray(image, dtype=np.float64), [rows, cols], order=1, mode=mode, cval=cval)


def layer_line_profile(strip: np.ndarray, pixel_nm: float) -> tuple[np.ndarray, np.ndarray]:
    """Axial frequencies (1/nm) and the strip's power summed across the tube at each (its layer lines)."""
    s = strip - strip.mean(axis=0, keepdims=True)  # the tube's profile across is the equator, not a line
    n = s.shape[0]
    f = np.fft.rfft(s * np.hanning(n)[:, None], n=PAD * n, axis=0)
    return np.fft.rfftfreq(PAD * n, d=pixel_nm), (np.abs(f) ** 2).sum(axis=1)


def _peak(k: np.ndarray, p: np.ndarray, i: int) -> float:
    """A line's height, refined by a parabola through the log power of its three samples."""
    a, b, c = np.log(np.maximum(p[i - 1 : i + 2], 1e-300))
    den = a - 2 * b + c
    return float(k[i] + (0.5 * (k[1] - k[0]) * (a - c) / den if den < 0 else 0.0))


def fit_lines(k: np.ndarray, power: np.ndarray, beside: np.ndarray) -> dict[str, Any] | None:
    """The lattice scale (measured g / graphene g), chiral angle and lines that best explain the profile;
    `beside`: the same profile of strips beside the tube (a film's speckle through the same CTF), its background."""
    smooth = max(3, int(BESIDE_SMOOTH_PER_NM / (k[1] - k[0])) // 4)
    background = ndimage.uniform_filter1d(beside, smooth)
    band = (k > 0.4 * G100_PER_NM) & (k < 1.2 * G100_PER_NM)
    background = background * np.quantile(power[band] / np.maximum(background[band], 1e-300), BESIDE_LEVEL)
    excess = power / np.maximum(background, 1e-300) - 1.0
    lo, hi = SCALE_RANGE
    inside = np.flatnonzero((k > 0.4 * G100_PER_NM) & (k < 1.02 * hi * G100_PER_NM))[1:-1]
    peaks = [i for i in inside if excess[i] >= excess[i - 1] and excess[i] >= excess[i + 1]]
    peaks = sorted(peaks, key=lambda i: -excess[i])[:8]
    if not peaks:
        return None
    floor = max(MIN_LINE_EXCESS, MIN_LINE_SHARE * excess[peaks[0]])
    best: tuple[float, float, float, list[float]] | None = None
    for i in peaks:
        h1 = _peak(k, power, i)
        if excess[i] < floor or not 0.866 * lo * G100_PER_NM <= h1 <= hi * G100_PER_NM:
            continue
        found = []
        if h1 <= 0.866 * hi * G100_PER_NM:  # one line: an armchair tube
            found.append((float(excess[i]), 2.0 * h1 / math.sqrt(3.0), 30.0, [h1]))
        for j in peaks:
            h2 = _peak(k, power, j)
            if j == i or excess[j] < floor or not 0.45 * G100_PER_NM <= h2 < h1 - 0.1:
                continue
            g = math.sqrt(4.0 / 3.0 * (h1 * h1 + h2 * h2 - h1 * h2))
            theta = math.degrees(math.acos(min(1.0, h1 / g)))
            if lo * G100_PER_NM <= g <= hi * G100_PER_NM and theta <= 30.5:
                third = h1 - h2  # the weak third line, g·cos(60° + θ), confirms the pair where it shows
                e3 = max(float(np.interp(third, k, excess)), 0.0) if third > 0.15 * G100_PER_NM else 0.0
                found.append((float(excess[i] + excess[j] + e3), g, theta, [h1, h2]))
        for cand in found:
            if best is None or cand[0] > best[0]:
                best = cand
    if best is None:
        return None
    strength, g, theta, lines = best
    return {"scale": g / G100_PER_NM, "chiral_angle_deg": theta, "lines_per_nm": lines, "strength": strength}


def read_tube_lattice(image: np.ndarray, points: Sequence[tuple[float, float]], pixel_nm: float) -> dict[str, Any]:
    """The tube's lattice reading on its longest straight piece; `scale` None (with `reason`) when unread.

    `scale` > 1: the lattice looks finer than graphene's at the declared pixel size (the true pixel is larger
    or the tube is tilted); the pixel size the tube says is `pixel_nm` · `scale`.
    """
    pts = np.asarray(points, dtype=np.float64)
    seg = int(np.argmax(np.hypot(*np.diff(pts, axis=0).T)))
    p0, p1 = pts[seg], pts[seg + 1]
    length_nm = float(np.hypot(*(p1 - p0))) * pixel_nm
    if length_nm - 2 * END_INSET_NM < MIN_LENGTH_NM:
        return {"scale": None, "reason": f"tube piece {length_nm:.1f} nm: too short to read its lattice"}
    # the widest tube the classifiers know is 1.4 nm; a wider strip only adds background
    half = int(round((0.7 + STRIP_MARGIN_NM) / pixel_nm))
    inset = int(round(END_INSET_NM / pixel_nm))
    if 0.5 / pixel_nm < 1.1 * SCALE_RANGE[1] * G100_PER_NM:
        return {"scale": None, "reason": f"pixel size {pixel_nm:.4f} nm too coarse for the 0.213 nm lattice"}
    k, power = layer_line_profile(axis_strip(image, p0, p1, half, inset), pixel_nm)
    # the median over strips on both sides: a strip that catches the tube (bent, or its axis given loosely)
    # or a neighbour does not make the background
    outside = float(np.median(image))
    beside = np.median(
        [
            layer_line_profile(axis_strip(image, p0, p1, half, inset, o, outside), pixel_nm)[1]
            for o in np.outer(BESIDE_NM, (-1, 1)).ravel() / pixel_nm
        ],
        axis=0,
    )
    fit = fit_lines(k, power, beside)
    if fit is None:
        return {"scale": None, "reason": "no graphene layer line above the background (lattice not resolved)"}
    return {**fit, "pixel_size_nm": pixel_nm * fit["scale"]}


def check(reading: dict[str, Any], answer_angle_deg: float, tilt_deg: float | None) -> tuple[bool, str]:
    """(out of range, why): the reading against the band a tube of the training's tilt gives, used only
    where its chiral angle is the answer's (an unresolved lattice makes lines of another angle)."""
    if reading.get("scale") is None:
        return False, reading.get("reason", "")
    if abs(reading["chiral_angle_deg"] - answer_angle_deg) > ANGLE_AGREEMENT_DEG:
        return False, (
            f"lattice chiral angle {reading['chiral_angle_deg']:.1f}° is not the answer's {answer_angle_deg:.1f}°:"
            " reading not used"
        )
    tilt = DEFAULT_TILT_DEG if tilt_deg is None else float(tilt_deg)
    lo, hi = 1.0 - MARGIN, 1.0 / math.cos(math.radians(tilt)) + MARGIN
    scale = float(reading["scale"])
    off = 100.0 * (scale - 1.0)
    said = reading["pixel_size_nm"]
    if scale < lo:
        return True, (
            f"the tube's graphene lattice says the pixel size is {said:.5f} nm, {off:+.1f} % off the declared:"
            " the calibration is off; check it or give --pixel-size"
        )
    if scale > hi:
        return True, (
            f"the tube's graphene lattice says the pixel size is {said:.5f} nm, {off:+.1f} %: the calibration"
            f" is off or the tube is tilted more than the training's {tilt:g}°; check it or give --pixel-size"
        )
    band = f"{100 * (lo - 1):+.2f} to {100 * (hi - 1):+.2f} %"
    return False, f"lattice agrees with the pixel size ({off:+.1f} %, in-range band {band})"
