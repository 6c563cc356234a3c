"""Starting structures for MD: Ag/Co nanoalloys, carbon nanotubes, amorphous carbon (ASE `Atoms`).

Every builder takes a `numpy.random.Generator` seeded from the sample seed and the spec's
`structure` dict (docs/data-products.md) and draws every choice from the configured ranges, so one
spec gives the same atoms. The intent (what was asked for) goes into `atoms.info["intent"]`; labels
are measured later on the final structure (hrtemflow.atomistic.analysis), never copied from the intent.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from ase import Atoms
from ase.build import nanotube
from ase.cluster import Decahedron, Icosahedron, Octahedron
from scipy.spatial import cKDTree

from ..core.errors import HrtemflowError
from ..core.tubes import tube_period_A
from .analysis import bond_graph

#: fcc lattice constants (Å) of the default TB-SMA set (REFERENCE.md), mixed by Vegard's law.
FCC_A = {"Ag": 4.0871, "Co": 3.5355}
#: C–C bond of the built tube (Å): ASE's default, so the built tube has a = √3·1.42 = 2.46 Å.
CNT_BOND_A = 1.42
#: carbon bond cutoff (Å) used to find the graph of a built tube.
C_BOND_CUTOFF_A = 1.85
AMU_G = 1.66053906660e-24  # g per atomic mass unit
M_C = 12.011


# ----------------------------------------------------------------------------------------------
# Ag/Co nanoalloys
# ----------------------------------------------------------------------------------------------


def _ico_count(k: int) -> int:
    return (10 * k**3 - 15 * k**2 + 11 * k - 3) // 3


def _octa_count(length: int, cutoff: int) -> int:
    return length * (2 * length**2 + 1) // 3 - 6 * cutoff * (cutoff + 1) * (2 * cutoff + 1) // 6


def _deca_count(p: int, q: int, r: int) -> int:
    """Atoms of ase.cluster.Decahedron(p, q, r) (exact cubic, fitted to and tested against ASE)."""
    six_n = (
        5 * p**3
        + 15 * p**2 * q
        - 15 * p**2
        - 15 * p * q
        + 16 * p
        + 6 * q
        - 6
        + r * (27 - 30 * q - 60 * p + 60 * p * q + 30 * p**2)
        + r**2 * (-45 + 30 * q + 60 * p)
        + 30 * r**3
    )
    return six_n // 6


def _motif_candidates(motif: str, n_max: int) -> list[tuple[int, tuple[int, ...]]]:
    """(atom count, motif parameters) for every size of `motif` up to about 1.5·n_max atoms."""
    limit = int(1.5 * n_max) + 20
    out: list[tuple[int, tuple[int, ...]]] = []
    if motif == "icosahedron":
        k = 2
        while _ico_count(k) <= limit or k == 2:
            out.append((_ico_count(k), (k,)))
            k += 1
    elif motif == "truncated_octahedron":
        length = 3
        while _octa_count(length, (length - 1) // 2) <= limit:
            third = round((length - 1) / 3)
            for c in range(max(1, third - 1), min((length - 1) // 2, third + 1) + 1):
                if _octa_count(length, c) <= limit:
                    out.append((_octa_count(length, c), (length, c)))
            length += 1
    elif motif == "decahedron":
        p = 2
        while _deca_count(p, p, 0) <= limit:
            for q in (p - 1, p, p + 1):
                for r in (0, 1, 2):
                    if q >= 1 and _deca_count(p, q, r) <= limit:
                        out.append((_deca_count(p, q, r), (p, q, r)))
            p += 1
    else:
        raise HrtemflowError(f"unknown nanoalloy motif {motif!r}; use icosahedron, decahedron or truncated_octahedron")
    return out


def _build_motif(motif: str, params: tuple[int, ...], a: float) -> Atoms:
    if motif == "icosahedron":
        return Icosahedron("Ag", params[0], latticeconstant=a)
    if motif == "decahedron":
        return Decahedron("Ag", *params, latticeconstant=a)
    return Octahedron("Ag", params[0], params[1], latticeconstant=a)


def nearest_motif(motif: str, target: int) -> tuple[int, tuple[int, ...]]:
    """The size of `motif` whose atom count is nearest `target` (ties: the smaller one)."""
    cands = _motif_candidates(motif, target)
    return min(cands, key=lambda c: (abs(c[0] - target), c[0], c[1]))


def draw_uniform(rng: np.random.Generator, bounds) -> float:
    """A uniform draw in [lo, hi] (exactly lo, consuming nothing, when the range is a point)."""
    lo, hi = float(bounds[0]), float(bounds[1])
    return lo if hi <= lo else float(rng.uniform(lo, hi))


def assign_ordering(rng: np.random.Generator, positions: np.ndarray, n_co: int, ordering: str) -> np.ndarray:
    """Boolean mask of Co sites for an ordering: core-shell, janus or disordered.

    core-shell: Co on the n_co sites nearest the centre; janus: Co on the n_co sites furthest along a
    random direction (a plane through the particle, shifted so the count is right); disordered: a
    random choice of sites.
    """
    n = len(positions)
    centre = positions.mean(axis=0)
    if ordering == "core-shell":
        key = np.linalg.norm(positions - centre, axis=1)
    elif ordering == "janus":
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        key = -(positions - centre) @ direction
    elif ordering == "disordered":
        key = rng.random(n)
    else:
        raise HrtemflowError(f"unknown ordering {ordering!r}; use core-shell, janus or disordered")
    mask = np.zeros(n, dtype=bool)
    mask[np.argsort(key, kind="stable")[:n_co]] = True
    return mask


def vacuum_box(atoms: Atoms, vacuum: float, cubic: bool = True) -> Atoms:
    """Centre a finite particle in a (cubic) box with `vacuum` Å on every side; pbc off."""
    pos = atoms.positions
    lo, hi = pos.min(axis=0), pos.max(axis=0)
    size = hi - lo + 2 * vacuum
    if cubic:
        size = np.full(3, size.max())
    atoms.set_cell(np.diag(size))
    atoms.positions = pos - (lo + hi) / 2 + size / 2
    atoms.pbc = False
    return atoms


def build_nanoalloy(rng: np.random.Generator, structure: dict) -> Atoms:
    """An Ag/Co particle: motif, size, Co fraction and ordering drawn from `structure`."""
    motifs = list(structure["motifs"])
    motif = motifs[int(rng.integers(len(motifs)))]
    lo, hi = (int(v) for v in structure["n_atoms"])
    target = int(rng.integers(lo, hi + 1))
    x_co = draw_uniform(rng, structure["co_fraction"])
    ordering = structure["ordering"]
    n, params = nearest_motif(motif, target)
    a = (1 - x_co) * FCC_A["Ag"] + x_co * FCC_A["Co"]
    atoms = _build_motif(motif, params, a)
    n_co = min(max(round(x_co * n), 1), n - 1)
    co = assign_ordering(rng, atoms.positions, n_co, ordering)
    atoms.set_chemical_symbols(np.where(co, "Co", "Ag").tolist())
    vacuum_box(atoms, float(structure["vacuum_A"]))
    atoms.info["intent"] = {
        "motif": motif,
        "motif_params": list(params),
        "n_atoms_target": target,
        "n_atoms": n,
        "co_fraction_target": round(x_co, 6),
        "ordering": ordering,
        "lattice_A": round(a, 6),
    }
    return atoms


# ----------------------------------------------------------------------------------------------
# Carbon nanotubes
# ----------------------------------------------------------------------------------------------


def _adjacency(n: int, i: np.ndarray, j: np.ndarray) -> list[list[int]]:
    adj: list[list[int]] = [[] for _ in range(n)]
    for a, b in zip(i.tolist(), j.tolist()):
        adj[a].append(b)
        adj[b].append(a)
    return adj


def _within_hops(adj: list[list[int]], start: list[int], hops: int) -> set[int]:
    seen, frontier = set(start), set(start)
    for _ in range(hops):
        frontier = {b for a in frontier for b in adj[a]} - seen
        seen |= frontier
    return seen


def _rotate_bond(pos: np.ndarray, axis_xy: np.ndarray, i: int, j: int, d: np.ndarray) -> None:
    """Stone-Wales: turn bond i-j by 90° about its midpoint, in the plane tangent to the tube."""
    mid = pos[i] + d / 2
    normal = np.array([mid[0] - axis_xy[0], mid[1] - axis_xy[1], 0.0])
    radius = float(np.linalg.norm(normal))
    normal /= radius
    turned = np.cross(normal, d)
    for atom, sign in ((i, -0.5), (j, 0.5)):
        p = mid + sign * turned
        r_xy = p[:2] - axis_xy
        p[:2] = axis_xy + r_xy / np.linalg.norm(r_xy) * radius  # back onto the cylinder
        pos[atom] = p


def scale_tube(atoms: Atoms, factor: float) -> Atoms:
    """Scale a tube (axis along z, periodic) by `factor` about its axis and along it, period included.

    Tersoff (1989) holds graphene at a 1.4605 Å bond, 2.85 % longer than the measured 1.42 Å; the
    classifier reads the diameter in pixels, so images need the measured lattice, and scaling the MD
    frame keeps its thermal displacements and defects as they came out (scaled with it)."""
    cell = atoms.cell.array.copy()
    axis = atoms.positions[:, :2].mean(axis=0)
    pos = atoms.positions.copy()
    pos[:, :2] = axis + factor * (pos[:, :2] - axis)
    pos[:, 2] *= factor
    cell[2] *= factor
    atoms.set_cell(cell)
    atoms.positions = pos
    atoms.wrap()
    return atoms


def build_cnt(rng: np.random.Generator, structure: dict, bond: float = CNT_BOND_A) -> Atoms:
    """An (n,m) tube along z, periodic in z, with random vacancies and Stone-Wales defects.

    Stone-Wales: each bond is picked with probability `stone_wales_rate`; a pick is kept only if its
    neighbourhood (3 bonds around it) does not touch an earlier one, so every defect stays a clean
    5-7-7-5 that analysis can count. Vacancies: each atom is removed with probability
    `vacancy_rate`, except atoms of Stone-Wales rings and removals that would leave a neighbour with
    fewer than 2 bonds (an isolated atom is a broken tube, not a vacancy). The counts done are in
    `info["intent"]`. `bond` (Å) sets the C–C distance (MD builds at the potential's own bond so the
    periodic length is unstrained).
    """
    n, m = (int(v) for v in structure["chirality"])
    period = tube_period_A(n, m, math.sqrt(3) * bond)
    cells = max(1, math.ceil(float(structure["length_nm"]) * 10.0 / period - 1e-9))
    atoms = nanotube(n, m, length=cells, bond=bond, symbol="C")
    vac = float(structure["vacuum_A"])
    pos = atoms.positions.copy()
    radius = float(np.linalg.norm(pos[:, :2], axis=1).mean())
    side = 2 * radius + 2 * vac
    lz = float(atoms.cell[2, 2])
    cell = np.diag([side, side, lz])
    pos[:, :2] += side / 2
    axis_xy = np.array([side / 2, side / 2])
    n_ideal = len(pos)

    i, j, d = bond_graph(pos, cell, (False, False, True), C_BOND_CUTOFF_A)
    adj = _adjacency(n_ideal, i, j)
    sw_rate = float(structure["stone_wales_rate"])
    taken: set[int] = set()
    n_sw = 0
    if sw_rate > 0:
        picks = np.flatnonzero(rng.random(len(i)) < sw_rate)
        for b in rng.permutation(picks).tolist():
            foot = _within_hops(adj, [int(i[b]), int(j[b])], 3)
            if foot & taken:
                continue
            taken |= foot
            _rotate_bond(pos, axis_xy, int(i[b]), int(j[b]), d[b])
            n_sw += 1
        if n_sw:  # bonds changed: rebuild the graph for the vacancy step
            i, j, d = bond_graph(pos, cell, (False, False, True), C_BOND_CUTOFF_A)
            adj = _adjacency(n_ideal, i, j)

    vac_rate = float(structure["vacancy_rate"])
    keep = np.ones(n_ideal, dtype=bool)
    if vac_rate > 0:
        degree = np.array([len(a) for a in adj])
        for k in np.flatnonzero(rng.random(n_ideal) < vac_rate).tolist():
            if k in taken or any(keep[nb] and degree[nb] <= 2 for nb in adj[k]):
                continue
            keep[k] = False
            for nb in adj[k]:
                degree[nb] -= 1
    out = Atoms("C" * int(keep.sum()), positions=pos[keep], cell=cell, pbc=(False, False, True))
    out.info["intent"] = {
        "chirality": [n, m],
        "cells": cells,
        "bond_A": bond,
        "length_A": round(lz, 6),
        "n_atoms_ideal": n_ideal,
        "vacancies": int(n_ideal - keep.sum()),
        "stone_wales": n_sw,
    }
    return out


# ----------------------------------------------------------------------------------------------
# Amorphous carbon
# ----------------------------------------------------------------------------------------------


def random_packing(
    rng: np.random.Generator, n: int, box: np.ndarray, min_sep: float, max_rounds: int = 400
) -> np.ndarray:
    """n random points in a periodic box, no two closer than `min_sep` (batched KD-tree rejection)."""
    box = np.asarray(box, dtype=float)
    kept = np.zeros((0, 3))
    for _ in range(max_rounds):
        need = n - len(kept)
        if need <= 0:
            break
        cand = rng.random((max(2 * need, 16), 3)) * box
        cand = np.minimum(cand, np.nextafter(box, 0))
        ok = np.ones(len(cand), dtype=bool)
        if len(kept):
            dist, _ = cKDTree(kept, boxsize=box).query(cand, k=1)
            ok &= dist >= min_sep
        # conflicts inside the batch: keep the earlier point of every close pair
        pairs = cKDTree(cand, boxsize=box).query_pairs(min_sep, output_type="ndarray")
        if len(pairs):
            ok[np.maximum(pairs[:, 0], pairs[:, 1])] = False
        kept = np.vstack([kept, cand[ok][:need]])
    if len(kept) < n:
        raise HrtemflowError(
            f"could not place {n} atoms {min_sep} Å apart in a {box.round(2).tolist()} Å box; "
            "lower families.amorphous.structure.min_separation_A or the density"
        )
    return kept


def n_carbon_atoms(density_g_cm3: float, volume_A3: float) -> int:
    return max(1, round(density_g_cm3 * volume_A3 * 1e-24 / (M_C * AMU_G)))


def build_amorphous(rng: np.random.Generator, structure: dict) -> Atoms:
    """Random carbon at a density drawn from `density_g_cm3` in the periodic `box_nm` box."""
    rho = draw_uniform(rng, structure["density_g_cm3"])
    box = np.asarray(structure["box_nm"], dtype=float) * 10.0
    n = n_carbon_atoms(rho, float(np.prod(box)))
    pos = random_packing(rng, n, box, float(structure["min_separation_A"]))
    atoms = Atoms("C" * n, positions=pos, cell=np.diag(box), pbc=True)
    atoms.info["intent"] = {"density_g_cm3": round(rho, 6), "n_atoms": n, "box_A": box.round(6).tolist()}
    return atoms


BUILDERS: dict[str, Callable[[np.random.Generator, dict], Atoms]] = {
    "nanoalloy": build_nanoalloy,
    "cnt": build_cnt,
    "amorphous": build_amorphous,
}


def build(family: str, rng: np.random.Generator, structure: dict) -> Atoms:
    try:
        builder = BUILDERS[family]
    except KeyError:
        raise HrtemflowError(f"unknown family {family!r}; use one of {', '.join(BUILDERS)}") from None
    return builder(rng, structure)
