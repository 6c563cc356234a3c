"""Tubes of a micrograph: found automatically or given by the user as end points (a polyline), and the
windows along each tube's axis that a chirality classifier reads.

Why windows on the axis: the classifier was trained on windows with the tube across the field near its
centre (± the imaging stage's shift), turned in-plane at random. A sliding window that cuts a tube off
its axis, or half in vacuum, is not such a window; a window centred on the axis, inside the tube's ends,
is. So a tube is a polyline, and its windows are centred on it every `step` pixels, from half a window
inside one end to half a window inside the other.

Automatic finding (`find_tubes`): a map of line contrast (the image's detail, smoothed over SMOOTH_A
against its background over BACKGROUND_A, averaged along a line of ALONG_A in N_DIRECTIONS directions,
squared; `contrast_map`) is high on a tube and flat on vacuum. The map is thresholded at its median
(vacuum is most of a CNT micrograph) plus THRESHOLD_SIGMAS robust standard deviations; each connected
part that is long and thin is a piece of tube, its axis the part's principal direction; collinear pieces,
and the two wall lines of a wide tube near focus, are joined (`_join`); each end is then placed at the
midpoint of the fall of the contrast along the axis (`_refined_ends`). Near focus a tube's walls show so
little contrast that this map misses it or breaks it into pieces; a second, faint pass averages along a
40 Å line (FAINT_ALONG_A) on coarser pixels, adds the tubes only it sees and replaces the pieces of one
(`_merged`); its ends are placed on the first map, whose shorter line blurs them less. Ends stay inside
the image (`_inside`).
Straight tubes only; a bent tube, crossing tubes or a bundle come as one part, or none, and should be
given by the user (`--tube x0,y0,x1,y1[,x2,y2...]`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.errors import HrtemflowError
from ..learn.ood import majority_flag
from .regions import MAX_COORDINATE
from .tube_calibration import pool_windows, segment_distance, temper

#: a polyline of more points than this is not a tube a person drew
MAX_TUBE_POINTS = 1000
#: map scales (Å): noise smoothing, background, the line average along a direction, the smoothing after
SMOOTH_A, BACKGROUND_A, ALONG_A, AFTER_A = 0.7, 25.0, 15.0, 3.0
#: directions the line average tries (a 15 Å line of 1 Å walls needs steps under 4°... 7.5° keeps most of it)
N_DIRECTIONS = 24
#: the faint pass (`find_tubes`): a line this long (Å, Gaussian sigma) in this many directions, on pixels
#: binned to about this size (Å). Near focus a tube's walls have little contrast and the 15 Å line leaves
#: them below the threshold; a longer line averages more noise away (the tubes of a micrograph are 10-20 nm
#: long) at the cost of blurring the ends, which are placed on the first map (`find_tubes`).
#: The coarser pixels keep most of a wall's contrast (1.4 Å against its 3-4 Å period) and make the pass
#: cheaper than the first (0.3 s against 0.85 s for a 640 x 640 micrograph)
FAINT_ALONG_A, FAINT_DIRECTIONS, FAINT_PIXEL_A = 40.0, 48, 1.4
#: the map is computed on pixels binned to about this size (Å): the scales above do not need finer
MAP_PIXEL_A = 0.7
#: an object is a tube when it is at least this long (Å) and this many times longer than wide
MIN_TUBE_LENGTH_A, MIN_ASPECT = 20.0, 2.0
#: the map's threshold: its median (vacuum) plus this many robust standard deviations
THRESHOLD_SIGMAS = 8.0
#: pieces of one tube (a stretch of weak contrast between them) are joined when they point the same way
#: within this angle (deg), lie on one line within this distance (Å) and leave a gap under this length (Å)
JOIN_ANGLE_DEG, JOIN_OFFSET_A, JOIN_GAP_A = 8.0, 6.0, 100.0
#: two parallel pieces this close (Å) that overlap along the axis by this fraction of the shorter are the
#: two walls of one tube (a 1.4 nm tube near focus shows its walls as two lines 1.2-1.4 nm apart); tubes
#: in contact (a bundle) are at least their diameter + 0.34 nm apart and should be given with --tube
WALLS_A, WALLS_OVERLAP = 16.0, 0.5
#: how far the found ends are moved in (Å) where their contrast profile cannot place them
END_INSET_A = 0.5 * ALONG_A
#: how far beyond the thresholded part's ends the contrast profile is searched for the true end (Å)
END_SEARCH_A = 30.0
#: how far inside the thresholded end the step is fitted (Å; at most half the tube), and the blur widths
#: (Gaussian sigma, Å) it tries: the line average alone is ALONG_A, the lens adds up to about a nanometre
END_FIT_INSIDE_A, END_FIT_WIDTHS_A = 40.0, (6.0, 10.0, 15.0, 20.0, 27.0, 36.0)
#: how far beyond a faint-pass part's ends its tube's ends are searched for (Å): the part is where the long line
#: rises above the threshold, which near focus can be the middle third of the tube
END_SEARCH_FAINT_A = 60.0
#: a faint-pass tube replaces the first pass's pieces of it when it is this many times longer than the longest
FAINT_LONGER = 1.5


@dataclass(frozen=True)
class Tube:
    """A tube's axis as a polyline of (x, y) points in pixels of the original micrograph (x: column,
    y: row). `source`: "auto" (found) or "user" (given)."""

    name: str
    source: str
    points: tuple[tuple[float, float], ...]

    @property
    def length_px(self) -> float:
        p = np.asarray(self.points, dtype=np.float64)
        return float(np.hypot(*np.diff(p, axis=0).T).sum())

    def check(self, shape: tuple[int, int], where: str) -> None:
        ny, nx = shape
        for x, y in self.points:
            if not (0 <= x <= nx and 0 <= y <= ny):
                raise HrtemflowError(
                    f"{where}: tube {self.name} point ({x:g},{y:g}) is not inside the image of {nx} x {ny} px "
                    "(x = column, y = row, in pixels of the original image)"
                )


def parse_tube(text: str, name: str) -> Tube:
    """`x0,y0,x1,y1[,x2,y2...]`: a tube's end points, or a polyline along a bent tube, in pixels."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) < 4 or len(parts) % 2 or len(parts) > 2 * MAX_TUBE_POINTS:
        raise HrtemflowError(
            f"--tube {text[:80]!r}: expected x0,y0,x1,y1 (the tube's two end points) or a polyline "
            f"x0,y0,x1,y1,x2,y2,... of at most {MAX_TUBE_POINTS} points, in pixels of the original image"
        )
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise HrtemflowError(f"--tube {text[:80]!r}: every coordinate must be a number (pixels)") from None
    if not all(math.isfinite(v) and 0 <= v <= MAX_COORDINATE for v in values):
        raise HrtemflowError(
            f"--tube {text[:80]!r}: coordinates must be finite pixel positions between 0 and {MAX_COORDINATE:,}"
        )
    points = tuple(zip(values[0::2], values[1::2]))
    tube = Tube(name, "user", points)
    if tube.length_px <= 0:
        raise HrtemflowError(f"--tube {text[:80]!r}: the end points coincide; give two different points")
    return tube


def _binned(image: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return np.asarray(image, dtype=np.float64)
    ny, nx = (s // factor for s in image.shape)
    a = np.asarray(image[: ny * factor, : nx * factor], dtype=np.float64)
    return a.reshape(ny, factor, nx, factor).mean(axis=(1, 3))


def contrast_map(
    image: np.ndarray,
    pixel_A: float,
    along_A: float = ALONG_A,
    n_directions: int = N_DIRECTIONS,
    map_pixel_A: float = MAP_PIXEL_A,
) -> tuple[np.ndarray, int]:
    """Line contrast on binned pixels, and the binning factor: the image's detail (smoothed over
    SMOOTH_A against its background over BACKGROUND_A) averaged along a line of `along_A`, squared, for
    each of `n_directions` directions; the largest. A tube's walls are straight lines along its axis: the
    line average adds them up and averages the noise away, which an isotropic neighbourhood cannot."""
    from scipy import ndimage  # noqa: PLC0415

    factor = max(1, int(round(map_pixel_A / pixel_A)))
    img = _binned(image, factor)
    p = pixel_A * factor
    # a plane off first: the background filter mirrors the image at its edges, which turns a gradient
    # of the illumination into a false edge of contrast
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    a = np.stack([np.ones(img.size), yy.ravel(), xx.ravel()], axis=1)
    coef, *_ = np.linalg.lstsq(a, img.ravel(), rcond=None)
    img = img - (a @ coef).reshape(img.shape)
    detail = ndimage.gaussian_filter(img, SMOOTH_A / p) - ndimage.gaussian_filter(img, BACKGROUND_A / p)
    best = np.zeros_like(detail)
    for angle in np.arange(n_directions) * 180.0 / n_directions:
        r = ndimage.rotate(detail, angle, reshape=True, order=1, mode="constant")
        r = ndimage.gaussian_filter1d(r, along_A / p, axis=1)
        r = ndimage.gaussian_filter(r * r, AFTER_A / p)
        back = ndimage.rotate(r, -angle, reshape=True, order=1, mode="constant")
        oy, ox = ((b - s) // 2 for b, s in zip(back.shape, detail.shape))
        np.maximum(best, back[oy : oy + detail.shape[0], ox : ox + detail.shape[1]], out=best)
    return best, factor


def _threshold(cmap: np.ndarray) -> float:
    """Above vacuum: the map's median (vacuum is most of a CNT micrograph) plus THRESHOLD_SIGMAS robust
    standard deviations."""
    med = float(np.median(cmap))
    mad = 1.4826 * float(np.median(np.abs(cmap - med)))
    return med + THRESHOLD_SIGMAS * mad if mad > 0 else math.inf


def _join(segments: list[tuple[np.ndarray, np.ndarray]], p: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pieces of one tube joined (see JOIN_* and WALLS_*): at low contrast a tube's map breaks into collinear
    parts, and near focus a wide tube's two walls come as two parallel lines."""
    segs = [(np.asarray(a, float), np.asarray(b, float)) for a, b in segments]
    joined = True
    while joined:
        joined = False
        for i in range(len(segs)):
            for j in range(i + 1, len(segs)):
                (a, b), (c, d) = segs[i], segs[j]
                u, v = (b - a) / np.hypot(*(b - a)), (d - c) / np.hypot(*(d - c))
                if math.degrees(math.acos(min(1.0, abs(float(u @ v))))) > JOIN_ANGLE_DEG:
                    continue
                normal = np.array([-u[1], u[0]])
                offsets = [float((q - a) @ normal) for q in (c, d)]
                t = sorted(float((q - a) @ u) for q in (c, d))
                length = float(np.hypot(*(b - a)))
                gap = max(t[0] - length, -t[1], 0.0)
                overlap = min(t[1], length) - max(t[0], 0.0)
                farthest = max(abs(o) for o in offsets) * p
                if farthest <= JOIN_OFFSET_A:
                    if gap * p > JOIN_GAP_A:
                        continue
                    shift = 0.0  # collinear pieces: one axis
                elif (
                    farthest <= WALLS_A
                    and abs(offsets[0] - offsets[1]) * p <= JOIN_OFFSET_A
                    and overlap >= WALLS_OVERLAP * min(length, t[1] - t[0])
                ):
                    shift = 0.5 * float(np.mean(offsets))  # the two walls of one wide tube: its midline
                else:
                    continue
                ts = [0.0, length, *t]
                a = a + shift * normal
                segs[i] = (a + min(ts) * u, a + max(ts) * u)
                del segs[j]
                joined = True
                break
            if joined:
                break
    return segs


def _refined_ends(
    cmap: np.ndarray,
    vacuum: float,
    a: np.ndarray,
    b: np.ndarray,
    p: float,
    search_A: float = END_SEARCH_A,
) -> tuple[np.ndarray, np.ndarray]:
    """The tube's ends where its contrast falls to half of its level along the axis.

    The map spreads a tube's contrast past its ends, by the line average and, at large defocus, by the
    lens's delocalisation (a nanometre at 20 nm underfocus): the thresholded part overshoots by an
    amount that grows with both, so no fixed inset fits every micrograph. Both blurs are symmetric about
    the true end, so the midpoint of the fall of the contrast amplitude (the root of the map above
    vacuum), averaged across the axis over AFTER_A, lands on it. The midpoint is that of a blurred step
    fitted to the profile next to each thresholded end (`_fitted_end`): near focus a tube's contrast is
    weak, and the first fall of a noisy profile below half its level can lie a nanometre into vacuum,
    while a fit weighs every sample of the fall. Falls back to the half-level crossing where a fit finds
    no fall, and to the fixed inset END_INSET_A where the profile has no clear level (a tube too short or
    too faint)."""
    from scipy import ndimage  # noqa: PLC0415

    length = float(np.hypot(*(b - a)))
    u = (b - a) / max(length, 1e-9)
    normal = np.array([-u[1], u[0]])
    reach = search_A / p
    t = np.arange(-reach, length + reach + 0.5, 0.5)
    offsets = np.linspace(-AFTER_A / p, AFTER_A / p, 5)
    pts = a[None, None, :] + t[:, None, None] * u + offsets[None, :, None] * normal  # (t, offset, xy)
    vals = ndimage.map_coordinates(cmap, [pts[..., 1].ravel(), pts[..., 0].ravel()], order=1, mode="nearest")
    amp = np.sqrt(np.maximum(vals.reshape(pts.shape[:2]).mean(axis=1) - vacuum, 0.0))
    inside = (t >= 0.2 * length) & (t <= 0.8 * length)
    level = float(np.median(amp[inside])) if inside.any() else 0.0
    fallback = (a + u * END_INSET_A / p, b - u * END_INSET_A / p)
    if level <= 0 or length * p < 2 * END_INSET_A:
        return fallback
    above = amp >= 0.5 * level
    ends = []
    for start, outward in ((0.0, -1), (length, +1)):
        fitted = _fitted_end(t, amp, start, outward, min(0.5 * length, END_FIT_INSIDE_A / p), p)
        if fitted is None:
            i = _crossing(above, int(np.searchsorted(t, start)), outward)
            if i is None:  # no fall to half within the search
                return fallback
            fitted = float(t[i]) + 0.25 * outward  # the crossing, to half a step
        ends.append(fitted)
    t0, t1 = ends
    if t1 - t0 < 0.5 * length:
        return fallback
    return a + u * t0, a + u * t1


def _fitted_end(t: np.ndarray, amp: np.ndarray, start: float, outward: int, inside: float, p: float) -> float | None:
    """The midpoint of a Gaussian-blurred step, level inside and a floor outside, fitted by least squares
    to the amplitude profile from `inside` (map pixels) within the thresholded end `start` out to the end
    of the search; blur widths END_FIT_WIDTHS_A, the midpoint on the profile's own half-pixel steps. None
    when the best fit has no fall (its step not down outward) or puts the end at the edge of the search."""
    from scipy.special import ndtr  # noqa: PLC0415

    s = (t - start) * outward  # > 0 outward of the thresholded end
    keep = np.flatnonzero(s >= -inside)
    keep = keep[np.argsort(s[keep])]  # inside to outside, whichever end
    s, y = s[keep], amp[keep]
    if s.size < 8:
        return None
    candidates = s[(s > s[0] + 2.0) & (s < s[-1] - 2.0)]
    if candidates.size < 3:
        return None
    best: tuple[float, int | None] = (math.inf, None)
    for width in END_FIT_WIDTHS_A:
        step = ndtr((candidates[:, None] - s[None, :]) / (width / p))  # (candidate end, sample): 1 inside
        # y = floor + height * step, per candidate by linear least squares
        m0, m1 = step.mean(axis=1), (step * step).mean(axis=1)
        cov = (step * y).mean(axis=1) - m0 * y.mean()
        var = m1 - m0 * m0
        height = np.where(var > 1e-12, cov / np.maximum(var, 1e-12), 0.0)
        sse = ((y - y.mean()) ** 2).sum() - height * cov * s.size
        sse = np.where(height > 0, sse, math.inf)
        i = int(np.argmin(sse))
        if sse[i] < best[0]:
            best = (float(sse[i]), i)
    if best[1] is None or best[1] in (0, candidates.size - 1):
        return None
    return start + outward * float(candidates[best[1]])


def _crossing(above: np.ndarray, start: int, outward: int) -> int | None:
    """The last sample above half level at one end: from the thresholded end outward to the first fall
    (so another tube further along the same line is never reached), or inward to the first rise where the
    thresholded part overshot. Between the two ends nothing is looked at, so a faint stretch inside a
    tube (pieces joined across it) does not cut it. None when the profile does not fall within the search."""
    i = min(max(start, 0), len(above) - 1)
    if above[i]:
        while 0 <= i + outward < len(above) and above[i + outward]:
            i += outward
        return None if not 0 <= i + outward < len(above) else i
    while 0 <= i - outward < len(above) and not above[i]:
        i -= outward
    return i if above[i] else None


def _pieces(cmap: np.ndarray, p: float, min_length_A: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """The long, thin parts of the map above its threshold, each as its principal axis's two ends."""
    from scipy import ndimage  # noqa: PLC0415
    from skimage.measure import label, regionprops  # noqa: PLC0415

    thr = _threshold(cmap)
    if not math.isfinite(thr):
        return []
    mask = ndimage.binary_opening(cmap > thr, iterations=1)
    pieces = []
    for part in regionprops(label(mask)):
        rows, cols = part.coords[:, 0].astype(np.float64), part.coords[:, 1].astype(np.float64)
        centre = np.array([cols.mean(), rows.mean()])
        xy = np.stack([cols, rows], axis=1) - centre
        _, _, vt = np.linalg.svd(xy, full_matrices=False)
        along = xy @ vt[0]
        lo, hi = np.percentile(along, [0.5, 99.5])
        width = max(math.sqrt(12.0) * float(np.std(xy @ vt[1])), 1.0) * p  # a band's full width
        if (hi - lo) * p < MIN_ASPECT * width or (hi - lo) * p < 0.5 * min_length_A:
            continue
        pieces.append((centre + lo * vt[0], centre + hi * vt[0]))
    return pieces


def _tubes_on(
    cmap: np.ndarray,
    p: float,
    min_length_A: float,
    pieces: list[tuple[np.ndarray, np.ndarray]] | None = None,
    search_A: float = END_SEARCH_A,
) -> list[tuple[float, tuple[np.ndarray, np.ndarray]]]:
    """(length in Å, (end, end)) of the tubes on one contrast map: its own pieces, or `pieces` found on another
    map (in this map's pixels), joined, their ends refined on this map within `search_A`."""
    vacuum = float(np.median(cmap))
    found = []
    for a, b in _join(_pieces(cmap, p, min_length_A) if pieces is None else pieces, p):
        a, b = _inside(_refined_ends(cmap, vacuum, a, b, p, search_A), cmap.shape)
        found.append((float(np.hypot(*(b - a))) * p, (a, b)))
    return [f for f in found if f[0] >= min_length_A]


def _near(point: np.ndarray, ends: tuple[np.ndarray, np.ndarray], p: float) -> bool:
    """Whether a point lies within WALLS_A of a tube's axis (between its ends)."""
    return float(segment_distance(np.asarray(point)[None], *ends)[0]) * p <= WALLS_A


def _parallel(one: tuple[np.ndarray, np.ndarray], other: tuple[np.ndarray, np.ndarray]) -> bool:
    u, v = one[1] - one[0], other[1] - other[0]
    cos = abs(float(u @ v)) / max(float(np.hypot(*u) * np.hypot(*v)), 1e-9)
    return math.degrees(math.acos(min(1.0, cos))) <= JOIN_ANGLE_DEG


def _touches(one: tuple[np.ndarray, np.ndarray], other: tuple[np.ndarray, np.ndarray], p: float) -> bool:
    """Whether two tubes' axes cross or come within WALLS_A of each other."""
    (a, b), (c, d) = one, other

    def side(o: np.ndarray, q: np.ndarray, r: np.ndarray) -> float:
        return float((q[0] - o[0]) * (r[1] - o[1]) - (q[1] - o[1]) * (r[0] - o[0]))

    if side(a, b, c) * side(a, b, d) < 0 and side(c, d, a) * side(c, d, b) < 0:
        return True
    return any(_near(q, other, p) for q in one) or any(_near(q, one, p) for q in other)


def _merged(
    found: list[tuple[float, tuple[np.ndarray, np.ndarray]]],
    faint: tuple[float, tuple[np.ndarray, np.ndarray]],
    p: float,
) -> list[tuple[float, tuple[np.ndarray, np.ndarray]]]:
    """The tubes found with one faint-pass tube merged in: added where it lies on none of them; where the
    first pass found the same tube in pieces (a near-focus tube's contrast breaks along it), the faint
    tube, longer than FAINT_LONGER times its longest piece, replaces them, unless it runs into another tube
    (the long line carries that tube's contrast along its own axis, and the faint tube on past its end);
    otherwise the first pass's."""
    length, ends = faint
    on = [i for i, (_, e) in enumerate(found) if _near(0.5 * (e[0] + e[1]), ends, p) and _parallel(e, ends)]
    if not on:
        if any(_near(0.5 * (ends[0] + ends[1]), e, p) for _, e in found):
            return found  # across a clear tube: one tube's walls, or a crossing the user should give
        return [*found, faint]
    if any(_touches(ends, e, p) for i, (_, e) in enumerate(found) if i not in on):
        return found
    if length > FAINT_LONGER * max(found[i][0] for i in on):
        return [f for i, f in enumerate(found) if i not in on] + [faint]
    return found


def find_tubes(image: np.ndarray, pixel_A: float, *, min_length_A: float = MIN_TUBE_LENGTH_A) -> list[Tube]:
    """Straight tubes of a micrograph, longest first (see the module docstring for how and its limits).

    Two passes: the 15 Å line (ALONG_A) finds every tube whose walls it sees clearly; the faint pass
    (FAINT_ALONG_A) then adds the tubes it alone sees and joins those the first found in pieces (`_merged`):
    near focus a tube shows little contrast. Every end is placed on the first pass's map."""
    cmap, factor = contrast_map(image, pixel_A)
    found = [(length, _unbinned(ends, factor)) for length, ends in _tubes_on(cmap, pixel_A * factor, min_length_A)]
    if math.isfinite(_threshold(cmap)):
        faint_map, coarse = contrast_map(image, pixel_A, FAINT_ALONG_A, FAINT_DIRECTIONS, FAINT_PIXEL_A)
        # the faint map gives the axis and the part of the tube it sees; the ends are placed on the first map,
        # whose 15 Å line blurs them less than the faint pass's 40 Å, and whose fitted step weighs the whole
        # fall, so a profile too noisy to threshold still places them
        pieces = [
            tuple((q - (factor - 1) / 2) / factor for q in _unbinned(ends, coarse))  # on the first map
            for ends in _pieces(faint_map, pixel_A * coarse, min_length_A)
        ]
        for length, ends in _tubes_on(cmap, pixel_A * factor, min_length_A, pieces, END_SEARCH_FAINT_A):
            found = _merged(found, (length, _unbinned(ends, factor)), pixel_A)
    found.sort(key=lambda f: -f[0])
    return [
        Tube(f"t{i + 1:02d}", "auto", tuple((float(x), float(y)) for x, y in ends)) for i, (_, ends) in enumerate(found)
    ]


def _inside(ends: tuple[np.ndarray, np.ndarray], shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A tube's ends moved along its axis into the map (an end fitted where the profile runs off the image
    can land outside it)."""
    a, b = ends
    d = b - a
    lo, hi = 0.0, 1.0
    for k, size in ((0, shape[1]), (1, shape[0])):  # x: columns, y: rows
        if abs(d[k]) < 1e-12:
            continue
        t0, t1 = sorted(((0.0 - a[k]) / d[k], (size - 1.0 - a[k]) / d[k]))
        lo, hi = max(lo, t0), min(hi, t1)
    if lo >= hi:
        return ends
    return a + lo * d, a + hi * d


def _unbinned(ends: tuple[np.ndarray, np.ndarray], factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Points on binned pixels back in original pixels (a binned pixel's centre)."""
    return tuple(np.asarray(q, dtype=np.float64) * factor + (factor - 1) / 2 for q in ends)  # type: ignore[return-value]


def axis_centres(points: Sequence[tuple[float, float]], window: int, step: float) -> np.ndarray:
    """Window centres (x, y) along a polyline (in the pixels the windows are cut from): every `step`
    from half a window inside one end to half a window inside the other; one centre, the middle, when
    the tube is shorter than a window."""
    p = np.asarray(points, dtype=np.float64)
    seg = np.hypot(*np.diff(p, axis=0).T)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    total = float(cum[-1])
    if total <= window:
        s = np.array([total / 2])
    else:
        span = total - window
        n = int(math.ceil(span / max(step, 1e-9))) + 1  # spacing at most `step`
        s = window / 2 + (np.linspace(0, span, n) if n > 1 else np.array([span / 2]))
    x = np.interp(s, cum, p[:, 0])
    y = np.interp(s, cum, p[:, 1])
    return np.stack([x, y], axis=1)


def window_origins(
    centres: np.ndarray, window: int, shape: tuple[int, int]
) -> tuple[list[tuple[int, int]], np.ndarray]:
    """(row, col) origins of the windows centred on `centres` (x, y), and which centres have a window:
    a window that would leave the image is moved inside it if it moves by under a quarter window, else
    dropped (its tube runs off the micrograph there)."""
    ny, nx = shape
    origins, kept = [], []
    for x, y in centres:
        x0, y0 = int(round(x - window / 2)), int(round(y - window / 2))
        cx, cy = min(max(x0, 0), nx - window), min(max(y0, 0), ny - window)
        ok = nx >= window and ny >= window and abs(cx - x0) <= window / 4 and abs(cy - y0) <= window / 4
        kept.append(ok)
        if ok:
            origins.append((cy, cx))
    return origins, np.array(kept, dtype=bool)


def scaled(tube: Tube, sx: float, sy: float) -> list[tuple[float, float]]:
    """The tube's points in the pixels of an image resampled by (sx, sy) = original / new pixel size."""
    return [((x + 0.5) * sx - 0.5, (y + 0.5) * sy - 0.5) for x, y in tube.points]


def combine(
    probabilities: np.ndarray, flags: np.ndarray, calibration: Sequence[Any] | None = None
) -> tuple[np.ndarray, str, int, dict[str, np.ndarray]]:
    """One tube's class probabilities from its windows' (already temperature-scaled) probabilities:
    the windows in distribution (all windows when none is) pooled and tempered by the bundle's fitted
    `calibration` (pool, exponent) (`tube_calibration`; None: their mean as it is); its flag; how many
    windows were combined; and both pools untempered (`tube_calibration.pool_windows`), for a refit.

    Not a plain product: windows of one tube share its structure and the micrograph's optics, so their
    errors are not independent, and a product of overconfident windows is overconfident. The mean alone is
    under-confident; the fitted pool and exponent correct that.
    """
    flags = np.asarray(flags)
    n = len(flags)
    if n == 0:
        return np.full(probabilities.shape[-1], np.nan), "no window", 0, {}
    flag = majority_flag(flags)
    keep = (flags == "") | (flags == "?")
    if not keep.any():
        keep = np.ones(n, dtype=bool)
    pools = pool_windows(probabilities[keep])
    if calibration is None:
        return pools["mean"], flag, int(keep.sum()), pools
    pool, exponent = calibration[0], calibration[1]
    return temper(pools[pool], exponent), flag, int(keep.sum()), pools
