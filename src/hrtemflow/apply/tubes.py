"""Tubes of a micrograph: found automatically or given by the user as end points (a polyline), and the
windows along each tube's axis that a chirality classifier reads.

Why windows on the axis: the classifier was trained on windows with the tube across the field near its
centre (± the imaging stage's shift), turned in-plane at random. A sliding window that cuts a tube off
its axis, or half in vacuum, is not such a window; a window centred on the axis, inside the tube's ends,
is. So a tube is a polyline, and its windows are centred on it every `step` pixels, from half a window
inside one end to half a window inside the other.

Automatic finding (`find_tubes`): a map of local contrast (the image smoothed over 1 Å against its
background over 25 Å, squared and averaged over 4 Å) is high on an object and flat on vacuum. The map is
thresholded above the vacuum level (its median, as vacuum is most of a CNT micrograph, plus Otsu's split
of what lies above), and each connected part that is long and thin is a tube: its axis is the part's
principal direction through its centroid, its ends the extremes of its pixels along that direction.
Straight tubes only; a bent tube, crossing tubes or a bundle come as one part, or none, and should be
given by the user (`--tube x0,y0,x1,y1[,x2,y2...]`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..core.errors import HrtemflowError
from .regions import MAX_COORDINATE

#: a polyline of more points than this is not a tube a person drew
MAX_TUBE_POINTS = 1000
#: map scales (Å): noise smoothing, background, contrast neighbourhood
SMOOTH_A, BACKGROUND_A, NEIGHBOURHOOD_A = 1.0, 25.0, 4.0
#: the map is computed on pixels binned to at least this size (Å): the scales above do not need finer
MAP_PIXEL_A = 0.5
#: an object is a tube when it is at least this long (Å) and this many times longer than wide
MIN_TUBE_LENGTH_A, MIN_ASPECT = 20.0, 2.0
#: an object's contrast must be this many times the vacuum's to count (noise never gets there)
MIN_CONTRAST = 3.0


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


def contrast_map(image: np.ndarray, pixel_A: float) -> tuple[np.ndarray, int]:
    """Local contrast on binned pixels, and the binning factor."""
    from scipy import ndimage  # noqa: PLC0415

    factor = max(1, int(MAP_PIXEL_A / pixel_A))
    img = _binned(image, factor)
    p = pixel_A * factor
    # a plane off first: the background filter mirrors the image at its edges, which turns a gradient
    # of the illumination into a false edge of contrast
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    a = np.stack([np.ones(img.size), yy.ravel(), xx.ravel()], axis=1)
    coef, *_ = np.linalg.lstsq(a, img.ravel(), rcond=None)
    img = img - (a @ coef).reshape(img.shape)
    detail = ndimage.gaussian_filter(img, SMOOTH_A / p) - ndimage.gaussian_filter(img, BACKGROUND_A / p)
    return ndimage.gaussian_filter(detail * detail, NEIGHBOURHOOD_A / p), factor


def _threshold(cmap: np.ndarray) -> float:
    """Above vacuum: Otsu's split of log contrast, never below MIN_CONTRAST x the vacuum (median) level."""
    from skimage.filters import threshold_otsu  # noqa: PLC0415

    floor = float(np.median(cmap)) * MIN_CONTRAST
    logc = np.log(np.maximum(cmap, 1e-300))
    try:
        otsu = float(np.exp(threshold_otsu(logc)))
    except ValueError:  # a constant map
        return math.inf
    return max(otsu, floor)


def find_tubes(image: np.ndarray, pixel_A: float, *, min_length_A: float = MIN_TUBE_LENGTH_A) -> list[Tube]:
    """Straight tubes of a micrograph, longest first (see the module docstring for how and its limits)."""
    from scipy import ndimage  # noqa: PLC0415
    from skimage.measure import label, regionprops  # noqa: PLC0415

    cmap, factor = contrast_map(image, pixel_A)
    thr = _threshold(cmap)
    if not math.isfinite(thr) or float(np.median(cmap)) <= 0:
        return []
    mask = ndimage.binary_opening(cmap > thr, iterations=1)
    p = pixel_A * factor
    found = []
    for part in regionprops(label(mask)):
        rows, cols = part.coords[:, 0].astype(np.float64), part.coords[:, 1].astype(np.float64)
        centre = np.array([cols.mean(), rows.mean()])
        xy = np.stack([cols, rows], axis=1) - centre
        _, s, vt = np.linalg.svd(xy, full_matrices=False)
        direction = vt[0]
        along = xy @ direction
        across = xy @ vt[1]
        lo, hi = np.percentile(along, [0.5, 99.5])
        length, width = (hi - lo) * p, max(math.sqrt(12.0) * float(np.std(across)), 1.0) * p  # a band's full width
        if length < min_length_A or length < MIN_ASPECT * width:
            continue
        ends = [centre + t * direction for t in (lo, hi)]
        # back to original pixels (a binned pixel's centre)
        pts = tuple((float(x * factor + (factor - 1) / 2), float(y * factor + (factor - 1) / 2)) for x, y in ends)
        found.append((length, pts))
    found.sort(key=lambda t: -t[0])
    return [Tube(f"t{i + 1:02d}", "auto", pts) for i, (_, pts) in enumerate(found)]


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


def combine(probabilities: np.ndarray, flags: np.ndarray) -> tuple[np.ndarray, str, int]:
    """One tube's class probabilities from its windows' (already temperature-scaled) probabilities:
    the mean over the windows in distribution (all windows when none is), its flag, and how many
    windows were combined.

    The mean, not the product: windows of one tube share its structure and the micrograph's optics,
    so their errors are not independent, and a product of overconfident windows is overconfident.
    """
    flags = np.asarray(flags)
    n = len(flags)
    if n == 0:
        return np.full(probabilities.shape[-1], np.nan), "no window", 0
    n_vac = int((flags == "vacuum").sum())
    n_ood = int((flags == "ood").sum())
    flag = "vacuum" if 2 * n_vac > n else "ood" if 2 * (n_vac + n_ood) > n else ""
    keep = (flags == "") | (flags == "?")
    if not keep.any():
        keep = np.ones(n, dtype=bool)
    return probabilities[keep].mean(axis=0), flag, int(keep.sum())
