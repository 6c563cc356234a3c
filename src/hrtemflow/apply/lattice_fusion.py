"""A tube's own chiral angle, read from its graphene layer lines, as evidence beside the network's windows.

Why: the 71-class chirality classifier's errors are neighbours in chiral angle (83 % of them under 5°
apart, most of nearly equal diameter: (10,8) against (9,9), 0.003 nm and 3.7°), while a straight tube's
layer lines give its chiral angle to 0.04° in the median off a film (`lattice.read_tube_lattice`;
independent-images.md, Run 5). The two are independent readings of one tube: the network mostly its
diameter and a rough angle from 2.4 nm windows, the lattice the angle from the whole tube. So the answer is

    p(c) ∝ pool(c)^α · L(θ_read | θ_c),   L = (1 - ε)·N(θ_read - θ_c; 0, σ) + ε / 30°

with `pool` the network's pooled windows (`tube_calibration`), ε the chance that a reading is not the
tube's angle (a film's speckle, a bent tube), falling with the reading's strength:
ε = sigmoid(e₀ + e₁·ln strength). A tube within a degree or two of armchair shows its two lines merged into
one, which reads as 30°: a one-line reading only says "near 30°", so it has its own, wider σ₁. α, σ, σ₁, e₀
and e₁ are fitted together by likelihood on the same labelled validation tubes as the pool's exponent
(`hrtemflow fit-tubes`), so a lattice that reads badly on a kind of micrograph (a film under the tubes) is
trusted as little as it earns there. The angle does not depend on the pixel size or on the tube's tilt (both
scale the two lines alike), so a miscalibrated micrograph still gives the right angle; its diameter is
`lattice.check`'s business. A tube without a reading keeps the pool's own calibration.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..core.ids import parse_chirality
from ..core.tubes import tube_chiral_angle_deg

#: the chiral angle's range (deg): a reading that is not the tube's angle lands anywhere in it
ANGLE_SPAN_DEG = 30.0
#: σ (deg) is searched within these bounds: below, one pixel's noise; above, the angle tells nothing
SIGMA_RANGE_DEG = (0.02, 10.0)
#: the fitted parameters, as tube_calibration.json's `lattice` holds them
PARAMETERS = ("exponent", "sigma_deg", "sigma_one_line_deg", "e0", "e1")
#: parameters a fit starts from: α (replaced by the pool's fitted exponent), σ (deg), σ₁ (deg), e₀, e₁
START = (1.0, 0.5, 1.5, 0.0, -1.0)
_TINY = 1e-300


def class_angles(classes: Sequence[str]) -> np.ndarray | None:
    """Each class's chiral angle (deg); None when a class is not an (n,m) (then there is nothing to fuse)."""
    try:
        return np.array([tube_chiral_angle_deg(*parse_chirality(c)) for c in classes])
    except ValueError:
        return None


def usable(reading: Mapping[str, Any] | None) -> bool:
    """A reading with an angle and a strength (`lattice.read_tube_lattice` read the tube)."""
    return (
        isinstance(reading, Mapping)
        and reading.get("scale") is not None
        and reading.get("chiral_angle_deg") is not None
        and float(reading.get("strength") or 0.0) > 0.0
    )


def outlier_share(strength: np.ndarray | float, e0: float, e1: float) -> np.ndarray:
    """ε: the chance that a reading of this strength is not the tube's chiral angle."""
    z = e0 + e1 * np.log(np.maximum(np.asarray(strength, dtype=np.float64), _TINY))
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))


def log_likelihood(
    readings: Sequence[Mapping[str, Any]], angles: np.ndarray, params: Mapping[str, float]
) -> np.ndarray:
    """ln L(θ_read | θ_c) per reading and class (readings, classes)."""
    a = np.array([float(r["chiral_angle_deg"]) for r in readings])[:, None]
    strength = np.array([float(r["strength"]) for r in readings])
    one_line = np.array([len(r.get("lines_per_nm") or ()) == 1 for r in readings])
    sigma = np.where(one_line, float(params["sigma_one_line_deg"]), float(params["sigma_deg"]))[:, None]
    eps = outlier_share(strength, float(params["e0"]), float(params["e1"]))[:, None]
    z = (a - angles[None, :]) / sigma
    gauss = np.exp(-0.5 * z * z) / (sigma * math.sqrt(2.0 * math.pi))
    return np.log((1.0 - eps) * gauss + eps / ANGLE_SPAN_DEG + _TINY)


def fuse(
    pooled: np.ndarray, readings: Sequence[Mapping[str, Any]], angles: np.ndarray, params: Mapping[str, float]
) -> np.ndarray:
    """The tubes' answers (tubes, classes) from their untempered pools and lattice readings (all usable)."""
    pooled = np.atleast_2d(np.asarray(pooled, dtype=np.float64))
    logp = float(params["exponent"]) * np.log(np.maximum(pooled, _TINY)) + log_likelihood(readings, angles, params)
    logp -= logp.max(axis=1, keepdims=True)
    p = np.exp(logp)
    return p / p.sum(axis=1, keepdims=True)


def _params(x: Sequence[float]) -> dict[str, float]:
    lo, hi = SIGMA_RANGE_DEG
    return {
        "exponent": float(math.exp(np.clip(x[0], -5.0, 5.0))),
        "sigma_deg": float(math.exp(np.clip(x[1], math.log(lo), math.log(hi)))),
        "sigma_one_line_deg": float(math.exp(np.clip(x[2], math.log(lo), math.log(hi)))),
        "e0": float(x[3]),
        "e1": float(x[4]),
    }


def fit(
    pooled: np.ndarray, readings: Sequence[Mapping[str, Any]], labels: np.ndarray, angles: np.ndarray, exponent: float
) -> dict[str, float]:
    """α, σ, σ₁, e₀, e₁ minimising the NLL of the fused answers on labelled tubes with usable readings (Nelder-Mead
    from the pool's own exponent and START; the best of a few starting σ, the likelihood has a ridge in σ)."""
    from scipy.optimize import minimize  # noqa: PLC0415

    labels = np.asarray(labels)
    rows = np.arange(len(labels))

    def loss(x: np.ndarray) -> float:
        p = fuse(pooled, readings, angles, _params(x))
        return float(-np.mean(np.log(np.maximum(p[rows, labels], _TINY))))

    best = None
    for sigma in (0.2, START[1], 2.0):
        x0 = np.array([math.log(exponent), math.log(sigma), math.log(START[2]), START[3], START[4]])
        res = minimize(loss, x0, method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-6, "maxiter": 4000})
        if best is None or res.fun < best.fun:
            best = res
    return _params(best.x)
