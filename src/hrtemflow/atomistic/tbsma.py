"""Direct TB-SMA (second-moment tight-binding) energies and forces, independent of the eam/fs tables.

Why: the tables in resources/potentials are checked against this evaluator, so it shares only the
parameters with `hrtemflow.atomistic.potentials`: the functional forms, the tail (solved here as a linear system
rather than the writer's closed form) and the analytic forces are written out again with numpy.

E_i = sum_j V(r_ij) - sqrt(sum_j h(r_ij)^2), V = A exp(-p(r/r0-1)), h = xi exp(-q(r/r0-1)), both
replaced between rc1 and rc2 by a x^3 + b x^4 + c x^5 (x = r - rc2) matching value, slope, curvature.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list

from ..core.errors import HrtemflowError
from .potentials import TBSMAPair, pair_key


def _tail(f0: float, f1: float, f2: float, rc1: float, rc2: float) -> np.ndarray:
    """Coefficients (a3, a4, a5) solving the three matching conditions at rc1."""
    x = rc1 - rc2
    matrix = np.array(
        [
            [x**3, x**4, x**5],
            [3 * x**2, 4 * x**3, 5 * x**4],
            [6 * x, 12 * x**2, 20 * x**3],
        ]
    )
    return np.linalg.solve(matrix, np.array([f0, f1, f2]))


def tailed_exponential(
    r: np.ndarray, prefactor: float, k: float, r0: float, rc1: float, rc2: float
) -> tuple[np.ndarray, np.ndarray]:
    """Value and derivative of prefactor*exp(-k(r/r0-1)) with the fifth-order tail, zero beyond rc2."""
    r = np.asarray(r, dtype=float)
    f0 = prefactor * np.exp(-k * (rc1 / r0 - 1.0))
    a3, a4, a5 = _tail(f0, -k / r0 * f0, (k / r0) ** 2 * f0, rc1, rc2)
    expo = prefactor * np.exp(-k * (r / r0 - 1.0))
    x = r - rc2
    poly = a3 * x**3 + a4 * x**4 + a5 * x**5
    dpoly = 3 * a3 * x**2 + 4 * a4 * x**3 + 5 * a5 * x**4
    inner, tail = r < rc1, (r >= rc1) & (r < rc2)
    value = np.where(inner, expo, np.where(tail, poly, 0.0))
    deriv = np.where(inner, -k / r0 * expo, np.where(tail, dpoly, 0.0))
    return value, deriv


def pair_functions(pair: TBSMAPair, r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """V, dV/dr, h, dh/dr of one pair at distances r."""
    v, dv = tailed_exponential(r, pair.A, pair.p, pair.r0, pair.rc1, pair.rc2)
    h, dh = tailed_exponential(r, pair.xi, pair.q, pair.r0, pair.rc1, pair.rc2)
    return v, dv, h, dh


@dataclass(frozen=True)
class TBSMAResult:
    energy: float  # eV, total
    energies: np.ndarray  # eV, per atom (N,)
    forces: np.ndarray  # eV/Å (N, 3)
    rho: np.ndarray  # sum_j h^2 per atom (N,), the eam/fs density


def evaluate(atoms: Atoms, pairs: Mapping[tuple[str, str], TBSMAPair]) -> TBSMAResult:
    """TB-SMA energy, per-atom energies, forces and densities of `atoms` (cluster or periodic cell)."""
    symbols = atoms.get_chemical_symbols()
    table = {pair_key(*k): v for k, v in pairs.items()}
    species = sorted(set(symbols))
    for a in species:
        for b in species:
            if pair_key(a, b) not in table:
                raise HrtemflowError(f"TB-SMA: no parameters for pair {a}-{b}; add it to the pair dict")
    n = len(atoms)
    cutoff = max(table[pair_key(a, b)].rc2 for a in species for b in species)
    # full list: every pair appears as (i, j) and (j, i); D = r_j - r_i (minimum image with offsets)
    i_idx, j_idx, dist, vec = neighbor_list("ijdD", atoms, cutoff)
    kinds = np.array([species.index(s) for s in symbols])
    v = np.zeros_like(dist)
    dv = np.zeros_like(dist)
    h = np.zeros_like(dist)
    dh = np.zeros_like(dist)
    for a_i, a in enumerate(species):
        for b_i, b in enumerate(species):
            mask = (kinds[i_idx] == a_i) & (kinds[j_idx] == b_i)
            if mask.any():
                v[mask], dv[mask], h[mask], dh[mask] = pair_functions(table[pair_key(a, b)], dist[mask])
    rho = np.bincount(i_idx, weights=h * h, minlength=n)
    sqrt_rho = np.sqrt(rho)
    energies = np.bincount(i_idx, weights=v, minlength=n) - sqrt_rho
    # dF/drho = -1/(2 sqrt rho); an atom with rho = 0 has no neighbours and no band force
    fprime = np.divide(-0.5, sqrt_rho, out=np.zeros(n), where=rho > 0)
    # directed term (i, j): V(r) + [F(rho_i) share] -> dE/dr = V' + F'(rho_i) 2 h h'
    de_dr = dv + fprime[i_idx] * 2.0 * h * dh
    pair_force = (de_dr / dist)[:, None] * vec  # force on i from term (i, j); j gets the opposite
    forces = np.zeros((n, 3))
    for axis in range(3):
        forces[:, axis] = np.bincount(i_idx, weights=pair_force[:, axis], minlength=n) - np.bincount(
            j_idx, weights=pair_force[:, axis], minlength=n
        )
    return TBSMAResult(float(energies.sum()), energies, forces, rho)
