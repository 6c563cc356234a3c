"""A tube's own chiral angle and diameter, read from the whole tube, as evidence beside the network's windows.

Why: the 71-class chirality classifier's errors are neighbours (83 % of them under 5° apart in chiral
angle, most of nearly equal diameter: (10,8) against (9,9), 0.003 nm and 3.7°; the rest neighbours of one
angle: (16,0) against (17,0), 0.078 nm), and it sees 2.4 nm of tube at a time. The whole tube gives both
coordinates of its (n,m) directly: its layer lines the chiral angle to 0.04° in the median
(`lattice.read_tube_lattice`), its walls averaged over 10-20 nm its projected radius to 0.006 nm in the median
(`tube_profile`; chirality-all.md, sixth run: a projected radius is the tube's only as far as the tube is round, so
`tube_calibration.fit_lattice` keeps the walls only where they gain over the angle out of sample). So the answer is

    p(c) ∝ pool(c)^α · L(θ_read | θ_c) · L(r_read | r_c)

with `pool` the network's pooled windows (`tube_calibration`) and

- L(θ) = (1 - ε)·N(θ_read - θ_c; 0, σ) + ε / 30°, ε = sigmoid(e₀ + e₁·ln strength) the chance that an angle
  reading is not the tube's (a film's speckle, a bent tube). A tube within a degree or two of armchair shows
  its two lines merged into one, which reads as 30°: a one-line reading only says "near 30°", so it has its
  own, wider σ₁;
- L(r) = (1 - ε_w)·N(r_read - r_c; 0, σ_w) + ε_w / 0.4 nm, where r_read = a·r_dark + b·r_bright + c maps the
  folded profile's darkest and brightest radii to the tube's radius. Through the contrast transfer the two
  move apart with defocus in opposite directions, so their weighted sum cancels most of it: a, b, c are the
  least-squares fit on the labelled tubes (the reader's calibration, no network in it). The walls of a faint
  tube (small defocus, low dose) can be lost in the noise: ε_w = sigmoid(w₀ + w₁·ln contrast), the contrast
  the fainter of the two extrema's over the profile's noise.

α, σ, σ₁, e₀, e₁, σ_w, w₀ and w₁ are fitted together by likelihood on the same labelled validation tubes as the
pool's exponent (`hrtemflow fit-tubes`), so a reading that is poor on a kind of micrograph (a film under the
tubes) is trusted as little as it earns there. The angle depends neither on the pixel size nor on the tilt;
the radius does on the pixel size (`lattice.check` flags a micrograph whose lattice says it is off). A tube
with neither reading keeps the pool's own calibration.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..core.ids import parse_chirality
from ..core.tubes import GRAPHENE_A, tube_chiral_angle_deg, tube_diameter_A

#: the chiral angle's range (deg): a reading that is not the tube's angle lands anywhere in it
ANGLE_SPAN_DEG = 30.0
#: the radii's range (nm) a reading that is not the tube's lands in (the walls searched: tube_profile)
RADIUS_SPAN_NM = 0.4
#: σ (deg) is searched within these bounds: below, one pixel's noise; above, the angle tells nothing
SIGMA_RANGE_DEG = (0.02, 10.0)
#: σ_w (nm) is searched within these bounds
SIGMA_RANGE_NM = (0.002, 0.5)
#: the angle's parameters, as tube_calibration.json's `lattice` holds them
PARAMETERS = ("exponent", "sigma_deg", "sigma_one_line_deg", "e0", "e1")
#: the walls' parameters, held beside them where the walls were read: the map of the two radii to the tube's
#: radius (a, b, c) and the spread and outlier share of what it gives
WALL_PARAMETERS = ("wall_dark", "wall_bright", "wall_offset_nm", "wall_sigma_nm", "w0", "w1")
#: parameters a fit starts from: α (replaced by the pool's fitted exponent), σ (deg), σ₁ (deg), e₀, e₁
START = (1.0, 0.5, 1.5, 0.0, -1.0)
#: ... and w₀, w₁ (σ_w starts at the map's residual spread)
START_WALLS = (0.0, -1.0)
_TINY = 1e-300


def class_geometry(classes: Sequence[str]) -> np.ndarray | None:
    """Each class's chiral angle (deg) and radius (nm), (classes, 2); None when a class is not an (n,m)."""
    try:
        nm = [parse_chirality(c) for c in classes]
    except ValueError:
        return None
    return np.array([(tube_chiral_angle_deg(n, m), tube_diameter_A(n, m, GRAPHENE_A) / 20.0) for n, m in nm])


def angle_read(reading: Mapping[str, Any] | None) -> bool:
    """A reading with an angle and a strength (`lattice.read_tube_lattice` read the tube)."""
    return (
        isinstance(reading, Mapping)
        and reading.get("scale") is not None
        and reading.get("chiral_angle_deg") is not None
        and float(reading.get("strength") or 0.0) > 0.0
    )


def walls_read(reading: Mapping[str, Any] | None) -> bool:
    """A reading with both wall radii and their contrast (`tube_profile.read_tube_walls` read the tube)."""
    walls = reading.get("walls") if isinstance(reading, Mapping) else None
    return isinstance(walls, Mapping) and all(
        walls.get(k) is not None for k in ("radius_dark_nm", "radius_bright_nm", "contrast_dark", "contrast_bright")
    )


def usable(reading: Mapping[str, Any] | None, params: Mapping[str, float] | None = None) -> bool:
    """Something to weigh: an angle, or wall radii where the parameters (if given) weigh walls."""
    return angle_read(reading) or (walls_read(reading) and (params is None or weighs_walls(params)))


def weighs_walls(params: Mapping[str, float]) -> bool:
    return all(k in params for k in WALL_PARAMETERS)


def outlier_share(strength: np.ndarray | float, e0: float, e1: float) -> np.ndarray:
    """ε: the chance that a reading of this strength (an angle's, a wall's contrast) is not the tube's."""
    z = e0 + e1 * np.log(np.maximum(np.asarray(strength, dtype=np.float64), _TINY))
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))


def wall_radii(readings: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """(readings, 3): the darkest and brightest radii (nm) and the fainter one's contrast, NaN where the walls
    were not read."""
    out = np.full((len(readings), 3), np.nan)
    for i, r in enumerate(readings):
        if walls_read(r):
            w = r["walls"]
            out[i] = (
                float(w["radius_dark_nm"]),
                float(w["radius_bright_nm"]),
                min(float(w["contrast_dark"]), float(w["contrast_bright"])),
            )
    return out


def tube_radius(readings: Sequence[Mapping[str, Any]], params: Mapping[str, float]) -> np.ndarray:
    """The tube's radius (nm) the walls say, through the fitted map; NaN where they were not read."""
    w = wall_radii(readings)
    return (
        float(params["wall_dark"]) * w[:, 0] + float(params["wall_bright"]) * w[:, 1] + float(params["wall_offset_nm"])
    )


def fit_wall_map(readings: Sequence[Mapping[str, Any]], radii: np.ndarray) -> dict[str, float] | None:
    """a, b, c of r = a·r_dark + b·r_bright + c on labelled tubes (`radii`: their true radii), robust to walls
    lost in the noise (soft-L1 least squares, the loss turning linear beyond 0.02 nm), unbiased in the radius;
    None with fewer than 10 read."""
    from scipy.optimize import least_squares  # noqa: PLC0415

    w = wall_radii(readings)
    ok = np.isfinite(w).all(axis=1)
    if ok.sum() < 10:
        return None
    a = np.column_stack([w[ok, :2], np.ones(int(ok.sum()))])
    y = np.asarray(radii, dtype=np.float64)[ok]
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    coef = least_squares(lambda c: a @ c - y, coef, loss="soft_l1", f_scale=0.02).x
    # that regression weighs the two radii for the least spread but, the readings being noisy, shrinks the radius
    # toward the classes' mean; the forward fit of the weighted sum on the true radius undoes it (k, m)
    z = a[:, :2] @ coef[:2]
    k, m = least_squares(lambda q: q[0] * y + q[1] - z, [1.0, 0.0], loss="soft_l1", f_scale=0.02).x
    return {"wall_dark": float(coef[0] / k), "wall_bright": float(coef[1] / k), "wall_offset_nm": float(-m / k)}


def log_likelihood(
    readings: Sequence[Mapping[str, Any]], geometry: np.ndarray, params: Mapping[str, float]
) -> np.ndarray:
    """ln L(readings | c) per reading and class (readings, classes): the angle's term where the lattice was
    read, the walls' where they were and the parameters weigh them; 0 for what was not read."""
    out = np.zeros((len(readings), len(geometry)))
    ang = np.array([angle_read(r) for r in readings], dtype=bool)
    if ang.any():
        rs = [r for r, ok in zip(readings, ang) if ok]
        a = np.array([float(r["chiral_angle_deg"]) for r in rs])[:, None]
        strength = np.array([float(r["strength"]) for r in rs])
        one_line = np.array([len(r.get("lines_per_nm") or ()) == 1 for r in rs])
        sigma = np.where(one_line, float(params["sigma_one_line_deg"]), float(params["sigma_deg"]))[:, None]
        eps = outlier_share(strength, float(params["e0"]), float(params["e1"]))[:, None]
        z = (a - geometry[None, :, 0]) / sigma
        gauss = np.exp(-0.5 * z * z) / (sigma * math.sqrt(2.0 * math.pi))
        out[ang] += np.log((1.0 - eps) * gauss + eps / ANGLE_SPAN_DEG + _TINY)
    if weighs_walls(params):
        r = tube_radius(readings, params)
        ok = np.isfinite(r)
        if ok.any():
            sigma_w = float(params["wall_sigma_nm"])
            eps_w = outlier_share(wall_radii(readings)[ok, 2], float(params["w0"]), float(params["w1"]))[:, None]
            z = (r[ok, None] - geometry[None, :, 1]) / sigma_w
            gauss = np.exp(-0.5 * z * z) / (sigma_w * math.sqrt(2.0 * math.pi))
            out[ok] += np.log((1.0 - eps_w) * gauss + eps_w / RADIUS_SPAN_NM + _TINY)
    return out


def fuse(
    pooled: np.ndarray, readings: Sequence[Mapping[str, Any]], geometry: np.ndarray, params: Mapping[str, float]
) -> np.ndarray:
    """The tubes' answers (tubes, classes) from their untempered pools and their readings."""
    pooled = np.atleast_2d(np.asarray(pooled, dtype=np.float64))
    logp = float(params["exponent"]) * np.log(np.maximum(pooled, _TINY)) + log_likelihood(readings, geometry, params)
    logp -= logp.max(axis=1, keepdims=True)
    p = np.exp(logp)
    return p / p.sum(axis=1, keepdims=True)


def _params(x: Sequence[float], walls: Mapping[str, float] | None) -> dict[str, float]:
    lo, hi = SIGMA_RANGE_DEG
    out = {
        "exponent": float(math.exp(np.clip(x[0], -5.0, 5.0))),
        "sigma_deg": float(math.exp(np.clip(x[1], math.log(lo), math.log(hi)))),
        "sigma_one_line_deg": float(math.exp(np.clip(x[2], math.log(lo), math.log(hi)))),
        "e0": float(x[3]),
        "e1": float(x[4]),
    }
    if walls is not None:
        lo, hi = SIGMA_RANGE_NM
        out |= walls | {
            "wall_sigma_nm": float(math.exp(np.clip(x[5], math.log(lo), math.log(hi)))),
            "w0": float(x[6]),
            "w1": float(x[7]),
        }
    return out


def fit(
    pooled: np.ndarray,
    readings: Sequence[Mapping[str, Any]],
    labels: np.ndarray,
    geometry: np.ndarray,
    exponent: float,
    walls: bool = True,
) -> dict[str, float]:
    """The weighing's parameters minimising the NLL of the fused answers on labelled tubes with usable readings:
    the walls' map by least squares first (`fit_wall_map`; not with `walls` False or too few walls read), then
    the rest by Nelder-Mead from the pool's own exponent and START (the best of a few starting σ: the
    likelihood has a ridge in σ)."""
    from scipy.optimize import minimize  # noqa: PLC0415

    labels = np.asarray(labels)
    rows = np.arange(len(labels))
    wall_map = fit_wall_map(readings, geometry[labels, 1]) if walls else None
    # only what was read is fitted: without angle readings their parameters stay at START
    angles = any(angle_read(r) for r in readings)
    free = np.array([True] + [angles] * 4 + [wall_map is not None] * 3)

    def full(z: np.ndarray, x0: np.ndarray) -> np.ndarray:
        x = x0.copy()
        x[free[: len(x)]] = z
        return x

    best = None
    for sigma in (0.2, START[1], 2.0) if angles else (START[1],):
        x0 = [math.log(exponent), math.log(sigma), math.log(START[2]), START[3], START[4]]
        if wall_map is not None:
            r = tube_radius(readings, wall_map) - geometry[labels, 1]
            spread = 1.4826 * float(np.nanmedian(np.abs(r))) if np.isfinite(r).any() else 0.05
            x0 += [math.log(max(spread, SIGMA_RANGE_NM[0])), *START_WALLS]
        x0 = np.array(x0)

        def loss(z: np.ndarray, x0: np.ndarray = x0) -> float:
            p = fuse(pooled, readings, geometry, _params(full(z, x0), wall_map))
            return float(-np.mean(np.log(np.maximum(p[rows, labels], _TINY))))

        res = minimize(
            loss, x0[free[: len(x0)]], method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-6, "maxiter": 6000}
        )
        if best is None or res.fun < best[0].fun:
            best = (res, x0)
    return _params(full(best[0].x, best[1]), wall_map)
