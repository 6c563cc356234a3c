"""Relaxed particles for the independent sets: a TB-SMA (Gupta) energy minimisation written here.

Why: the generator's particles sit on one Vegard's-law lattice, where Ag and Co share a spacing that neither
has, and the bench images particles after MD. A minimisation at 0 K (no MD, no temperature) lets each metal
take its own spacing and the surfaces their relaxed positions, so a set of relaxed particles says how much of
the transfer gap is the unrelaxed lattice and how much the MD's history (anneal, quench, thermal disorder).

Independent of the pipeline: only the published parameters are shared (the Ag/Co set of
../shared/design/REFERENCE.md, Foerster's potential.f90). The cutoff is a quintic switch of both the
repulsion and the hopping between the second- and third-neighbour distances (a C2 smoothstep), not the MD's
fifth-order exponential tails: another tail, the same first and second neighbours. ASE gives the neighbour
list of a crystal, scipy's k-d tree that of a particle, and the FIRE minimiser.

E = sum_i [ sum_j V(r_ij) - sqrt(sum_j h(r_ij)^2) ],  V = A exp(-p (r/r0 - 1)),  h = xi exp(-q (r/r0 - 1)).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.neighborlist import neighbor_list

#: (A eV, xi eV, p, q, r0 Å, switch start Å, switch end Å) by the pair's atomic numbers (smaller first)
GUPTA = {
    (47, 47): (0.10433, 1.194019, 10.79, 3.19, 2.89, 4.0871, 5.0056),
    (27, 27): (0.1757, 1.843, 9.21, 2.975, 2.50, 3.5355, 4.3301),
    (27, 47): (0.15202, 1.4319, 10.001, 3.085, 2.695, 4.0871, 4.3301),
}
CUTOFF_A = max(v[-1] for v in GUPTA.values())


def _pair_table(zi: np.ndarray, zj: np.ndarray) -> np.ndarray:
    """The pair parameters of each (i, j), one row each (7 columns, as GUPTA)."""
    lo, hi = np.minimum(zi, zj), np.maximum(zi, zj)
    out = np.empty((len(zi), 7))
    found = np.zeros(len(zi), dtype=bool)
    for (a, b), row in GUPTA.items():
        sel = (lo == a) & (hi == b)
        out[sel] = row
        found |= sel
    if not found.all():
        bad = sorted({(int(x), int(y)) for x, y in zip(lo[~found], hi[~found])})
        raise ValueError(f"no TB-SMA parameters for atomic-number pairs {bad}; this relaxation knows Ag and Co only")
    return out


def _switch(r: np.ndarray, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1 below `start`, 0 beyond `end`, 1 - 10t^3 + 15t^4 - 6t^5 between; and its derivative in r."""
    t = np.clip((r - start) / (end - start), 0.0, 1.0)
    s = 1.0 - t**3 * (10.0 - 15.0 * t + 6.0 * t * t)
    ds = -30.0 * t * t * (1.0 - t) ** 2 / (end - start)
    return s, ds


def _pairs(atoms: Atoms) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every directed pair (i, j) within the cutoff: i, j, x_j - x_i, |x_j - x_i|. A free particle's by a
    k-d tree (ASE's list bins a cluster without a cell 400x slower); a periodic crystal's by ASE."""
    if atoms.pbc.any():
        return neighbor_list("ijDd", atoms, CUTOFF_A)
    from scipy.spatial import cKDTree

    pos = atoms.positions
    half = cKDTree(pos).query_pairs(CUTOFF_A, output_type="ndarray")
    i = np.concatenate([half[:, 0], half[:, 1]])
    j = np.concatenate([half[:, 1], half[:, 0]])
    vec = pos[j] - pos[i]
    return i, j, vec, np.linalg.norm(vec, axis=1)


def energy_forces(atoms: Atoms) -> tuple[float, np.ndarray]:
    """TB-SMA energy (eV) and forces (eV/Å) of an Ag/Co configuration (periodic or not)."""
    i, j, vec, r = _pairs(atoms)
    z = atoms.numbers
    a, xi, p, q, r0, start, end = _pair_table(z[i], z[j]).T
    s, ds = _switch(r, start, end)
    ev = a * np.exp(-p * (r / r0 - 1.0))
    eh = xi * np.exp(-q * (r / r0 - 1.0))
    v, dv = ev * s, ev * (ds - p / r0 * s)
    h, dh = eh * s, eh * (ds - q / r0 * s)
    n = len(atoms)
    root = np.sqrt(np.maximum(np.bincount(i, h * h, minlength=n), 1e-300))
    energy = float(v.sum() - root.sum())
    g = dv - h * dh / root[i]  # dE/dr of each directed pair (i's own sums)
    pull = (g / r)[:, None] * vec  # vec = x_j - x_i: the force on i is +g vec / r, on j its opposite
    forces = np.zeros((n, 3))
    for k in range(3):
        forces[:, k] = np.bincount(i, pull[:, k], minlength=n) - np.bincount(j, pull[:, k], minlength=n)
    return energy, forces


class TBSMA(Calculator):
    """ASE calculator of `energy_forces`, for ASE's minimisers."""

    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        energy, forces = energy_forces(self.atoms)
        self.results = {"energy": energy, "forces": forces}


def relax_particle(
    positions: np.ndarray, numbers: np.ndarray, fmax_eV_A: float = 0.02, steps: int = 2000
) -> tuple[np.ndarray, dict[str, Any]]:
    """Minimise a free Ag/Co particle with FIRE: the relaxed positions (Å) and what the minimisation did
    (steps, energy drop per atom, RMS and largest displacement, the largest force left)."""
    from ase.optimize import FIRE

    atoms = Atoms(numbers=numbers, positions=positions, pbc=False)
    atoms.calc = TBSMA()
    e0 = atoms.get_potential_energy()
    opt = FIRE(atoms, logfile=None)
    opt.run(fmax=float(fmax_eV_A), steps=int(steps))
    moved = np.linalg.norm(atoms.positions - positions, axis=1)
    info = {
        "relax_steps": int(opt.nsteps),
        "relax_energy_drop_eV_per_atom": round((e0 - atoms.get_potential_energy()) / len(atoms), 5),
        "relax_rms_shift_A": round(float(np.sqrt(np.mean(moved**2))), 4),
        "relax_max_shift_A": round(float(moved.max()), 4),
        "relax_max_force_eV_A": round(float(np.linalg.norm(atoms.get_forces(), axis=1).max()), 4),
    }
    return atoms.positions.copy(), info


def check_relax_params(relax: Mapping[str, Any] | None, where: str) -> None:
    """Refuse a `relax` block this minimisation cannot run."""
    if relax is None:
        return
    if not isinstance(relax, Mapping):
        raise SystemExit(f"{where}: relax must be a mapping such as {{fmax_eV_A: 0.02, steps: 2000}}, not {relax!r}")
    unknown = set(relax) - {"fmax_eV_A", "steps"}
    if unknown:
        raise SystemExit(f"{where}: relax has unknown keys {sorted(unknown)}; it takes fmax_eV_A and steps")
    fmax, steps = relax.get("fmax_eV_A", 0.02), relax.get("steps", 2000)
    if not (isinstance(fmax, (int, float)) and 0.0 < float(fmax) <= 1.0):
        raise SystemExit(f"{where}: relax.fmax_eV_A {fmax!r} must be a force in (0, 1] eV/Å")
    if not (isinstance(steps, int) and 1 <= steps <= 100000):
        raise SystemExit(f"{where}: relax.steps {steps!r} must be a whole number of steps in 1..100000")
