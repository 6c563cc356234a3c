"""Labels measured on a final MD structure (docs/data-products.md, "Family labels").

Nothing here reads the intent back as a label: chirality comes from the tube's diameter and bond
orientations, the ordering class from continuous chemical-order measures, sp/sp²/sp³ fractions from
coordination. Neighbour search is a KD-tree with periodic images (orthogonal cells, which is what
every family uses); everything else is vectorised numpy/scipy.

Ordering of Ag/Co particles, decided from two scores that are each 1 for the ideal arrangement of
*this* particle's sites and composition and about 0 for a random one:
- shell score s = (x_surf(Ag) − x(Ag)) / (x_surf,max(Ag) − x(Ag)): how Ag-rich the surface is
  compared with a fully Ag-covered surface (x_surf,max = min(1, N_Ag / N_surf));
- Janus score j = (|r_Co − r_Ag| − c) / (D − c): the distance between the Co and Ag centres, against
  D, the same distance for the ideal Janus split along that direction (Co on the sites furthest
  along it), and c = 0.92·R_g·√(1/N_Co + 1/N_Ag), what a random assignment gives on average.
`order_measure` = clip(max(s, j), 0, 1); ordering = "disordered" if it is below ORDER_THRESHOLD,
else "janus" if j > s, or if there is too little Ag to cover the surface and j ≥ ORDER_THRESHOLD
(then s ≈ 1 for a partial shell and a Janus cap alike), else "core-shell". A Co core displaced from
the centre but still covered by Ag keeps s ≈ 1 and stays core-shell; a Janus particle has Co on
its surface, so s stays low.
Surface atoms: coordination ≤ SURFACE_MAX_CN (fcc bulk 12, (111) facet 9) with the pair cutoffs
SURFACE_CUTOFF_A, between the 1st and 2nd neighbour shells (fixed values: the nearest-neighbour
distance of a 300 K snapshot is biased short by vibrations, a poor ruler). The scores are noisy
when the minority species has fewer than about 10 atoms; the class is then a weak label.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
from ase import Atoms
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import breadth_first_order, connected_components
from scipy.spatial import cKDTree

from ..core.tubes import atoms_per_period, nearest_chirality, tube_period_A

ORDER_THRESHOLD = 0.5
SURFACE_MAX_CN = 9
#: neighbour cutoffs (Å) for surface detection: above the 1st shell (≤ 3.2 Å at 300 K, also Co on a
#: stretched, Ag-sized lattice of a freshly built motif) and below the 2nd (Ag 4.09, Co 3.54 Å)
SURFACE_CUTOFF_A = {("Ag", "Ag"): 3.5, ("Ag", "Co"): 3.4, ("Co", "Co"): 3.3}
#: bond cutoff (Å) for "is the particle still one piece" (above Ag–Ag 1st neighbours, below 2nd)
CLUSTER_BOND_A = 3.5
#: carbon coordination cutoff (Å): sp/sp²/sp³ counting and the tube's ring graph (REFERENCE.md)
C_COORD_A = 1.85
#: carbon bond cutoff (Å) for "is the tube still one periodic piece" (lenient: stretched bonds)
C_BROKEN_A = 2.0
AMU_G = 1.66053906660e-24


# ----------------------------------------------------------------------------------------------
# Geometry helpers
# ----------------------------------------------------------------------------------------------


def bond_graph(
    positions: np.ndarray, cell: np.ndarray, pbc, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs i<j closer than `cutoff`, minimum image along periodic (orthogonal) directions.

    Returns (i, j, d) with d = x_j − x_i (minimum image), sorted by (i, j).
    """
    cell = np.asarray(cell, dtype=float)
    lengths = np.diag(cell).copy() if cell.ndim == 2 else cell.copy()
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    pos = np.array(positions, dtype=float, copy=True)
    box = np.empty(3)
    for k in range(3):
        if pbc[k]:
            pos[:, k] = np.mod(pos[:, k], lengths[k])
            box[k] = lengths[k]
        else:
            pos[:, k] -= pos[:, k].min() if len(pos) else 0.0
            box[k] = (pos[:, k].max() if len(pos) else 0.0) + 2 * cutoff + 1.0  # wider than the span: no wrap
    pos = np.minimum(pos, np.nextafter(box, 0))  # cKDTree demands x < boxsize
    pairs = cKDTree(pos, boxsize=box).query_pairs(cutoff, output_type="ndarray")
    if len(pairs) == 0:
        return np.zeros(0, int), np.zeros(0, int), np.zeros((0, 3))
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    i, j = pairs[:, 0], pairs[:, 1]
    d = pos[j] - pos[i]
    for k in range(3):
        if pbc[k]:
            d[:, k] -= box[k] * np.round(d[:, k] / box[k])
    return i, j, d


def coordination(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    return np.bincount(i, minlength=n) + np.bincount(j, minlength=n)


def components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Sizes of the connected components of the bond graph, largest first."""
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return np.sort(np.bincount(labels))[::-1]


def periodic_in(
    positions: np.ndarray, length: float, i: np.ndarray, j: np.ndarray, dz: np.ndarray, nodes: np.ndarray
) -> bool:
    """Whether the bonded network on `nodes` wraps around the periodic direction (an unbroken tube).

    Unwrap along a BFS tree; a bond whose image shift disagrees with the tree closes a loop that
    winds around the period.
    """
    n = len(positions)
    z = np.mod(positions[:, 2], length)
    shift = np.rint((z[i] + dz - z[j]) / length).astype(int)  # image of j seen from i
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)).tocsr()
    order, pred = breadth_first_order(graph, int(nodes[0]), directed=False, return_predecessors=True)
    lookup = {(a, b): s for a, b, s in zip(i.tolist(), j.tolist(), shift.tolist())}
    offset = np.zeros(n, dtype=int)
    for node in order[1:].tolist():
        p = int(pred[node])
        offset[node] = offset[p] + (lookup[(p, node)] if (p, node) in lookup else -lookup[(node, p)])
    inside = np.zeros(n, dtype=bool)
    inside[order] = True
    sel = inside[i] & inside[j]
    return bool(np.any(offset[i[sel]] + shift[sel] != offset[j[sel]]))


def _round(x: float, digits: int = 4) -> float:
    return float(round(float(x), digits))


# ----------------------------------------------------------------------------------------------
# Ag/Co particles
# ----------------------------------------------------------------------------------------------


def surface_mask(atoms: Atoms) -> np.ndarray:
    """Atoms with coordination ≤ SURFACE_MAX_CN, neighbours within the SURFACE_CUTOFF_A pair cutoffs."""
    symbols = np.array(atoms.get_chemical_symbols())
    i, j, d = bond_graph(atoms.positions, atoms.cell.array, False, max(SURFACE_CUTOFF_A.values()))
    cut = np.empty(len(i))
    for (a, b), c in SURFACE_CUTOFF_A.items():
        cut[((symbols[i] == a) & (symbols[j] == b)) | ((symbols[i] == b) & (symbols[j] == a))] = c
    keep = np.linalg.norm(d, axis=1) <= cut
    return coordination(len(atoms), i[keep], j[keep]) <= SURFACE_MAX_CN


def ordering_scores(positions: np.ndarray, is_co: np.ndarray, surface: np.ndarray) -> dict[str, float]:
    """Shell score, Janus score and the raw measures they come from (see the module docstring)."""
    n = len(positions)
    n_co = int(is_co.sum())
    n_ag = n - n_co
    centre = positions.mean(axis=0)
    rg = float(np.sqrt(((positions - centre) ** 2).sum(axis=1).mean()))
    radius = math.sqrt(5 / 3) * rg  # a uniform sphere of this radius of gyration
    n_surf = int(surface.sum())
    f_surf_ag = float((~is_co & surface).sum() / n_surf) if n_surf else 0.0
    n_core = n - n_surf
    core_co = float((is_co & ~surface).sum() / n_core) if n_core else 0.0
    x_ag = n_ag / n
    f_max = min(1.0, n_ag / n_surf) if n_surf else 0.0
    shell = (f_surf_ag - x_ag) / (f_max - x_ag) if f_max - x_ag > 1e-9 else 0.0
    if n_co == 0 or n_ag == 0:
        offset, janus = 0.0, 0.0
    else:
        delta = positions[is_co].mean(axis=0) - positions[~is_co].mean(axis=0)
        offset = float(np.linalg.norm(delta))
        u = delta / offset if offset > 1e-12 else np.array([0.0, 0.0, 1.0])
        top = np.argsort(-(positions @ u), kind="stable")[:n_co]
        ideal = np.zeros(n, dtype=bool)
        ideal[top] = True
        ideal_offset = float(np.linalg.norm(positions[ideal].mean(axis=0) - positions[~ideal].mean(axis=0)))
        # a random assignment already separates the centres by about this much: measure the excess
        chance = 0.92 * rg * math.sqrt(1 / n_co + 1 / n_ag)
        janus = (offset - chance) / (ideal_offset - chance) if ideal_offset - chance > 1e-12 else 0.0
    return {
        "shell": shell,
        "janus": janus,
        "offset_A": offset,
        "radius_A": radius,
        "surface_ag_fraction": f_surf_ag,
        "core_co_fraction": core_co,
    }


def classify_ordering(shell: float, janus: float, coverable: bool = True) -> tuple[str, float]:
    """(class, order_measure) from the two scores; thresholds in the module docstring.

    `coverable`: there is enough Ag to cover the whole surface. When there is not, every Ag atom
    sits on the surface in both a partial shell and a Janus cap (shell score ≈ 1 either way), so
    only the Janus score tells them apart.
    """
    measure = float(np.clip(max(shell, janus), 0.0, 1.0))
    if measure < ORDER_THRESHOLD:
        return "disordered", measure
    if janus > shell or (not coverable and janus >= ORDER_THRESHOLD):
        return "janus", measure
    return "core-shell", measure


def nanoalloy_labels(atoms: Atoms) -> dict:
    symbols = np.array(atoms.get_chemical_symbols())
    is_co = symbols == "Co"
    n = len(atoms)
    surface = surface_mask(atoms)
    sc = ordering_scores(atoms.positions, is_co, surface)
    coverable = int((~is_co).sum()) >= int(surface.sum())
    ordering, measure = classify_ordering(sc["shell"], sc["janus"], coverable)
    return {
        "composition": {"Ag": int(n - is_co.sum()), "Co": int(is_co.sum())},
        "co_fraction": _round(is_co.sum() / n, 6),
        "ordering": ordering,
        "order_measure": _round(measure),
        "shell_score": _round(sc["shell"]),
        "janus_score": _round(sc["janus"]),
        "com_offset_A": _round(sc["offset_A"]),
        "com_offset_rel": _round(sc["offset_A"] / sc["radius_A"]),
        "radius_A": _round(sc["radius_A"]),
        "surface_ag_fraction": _round(sc["surface_ag_fraction"]),
        "core_co_fraction": _round(sc["core_co_fraction"]),
    }


def particle_pieces(atoms: Atoms, cutoff: float = CLUSTER_BOND_A) -> np.ndarray:
    """Component sizes of a finite particle (one entry = intact)."""
    i, j, _ = bond_graph(atoms.positions, atoms.cell.array, False, cutoff)
    return components(len(atoms), i, j)


# ----------------------------------------------------------------------------------------------
# Carbon nanotubes
# ----------------------------------------------------------------------------------------------


def _cycles(adj: list[list[int]], lengths: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Simple cycles of the given lengths, each once (start = its smallest node)."""
    longest = max(lengths)
    found = []
    for s in range(len(adj)):
        stack = [(s, (s,))]
        while stack:
            node, path = stack.pop()
            for nb in adj[node]:
                if nb == s and len(path) in lengths and path[1] < path[-1]:
                    found.append(path)
                elif nb > s and nb not in path and len(path) < longest:
                    stack.append((nb, (*path, nb)))
    return found


def _is_ring(adj: list[list[int]], cycle: tuple[int, ...]) -> bool:
    """A primitive ring: no shortcut between any two of its atoms through the rest of the graph."""
    k = len(cycle)
    for a_pos in range(k):
        dist = {cycle[a_pos]: 0}
        frontier = [cycle[a_pos]]
        for depth in range(1, k // 2):
            nxt = []
            for u in frontier:
                for v in adj[u]:
                    if v not in dist:
                        dist[v] = depth
                        nxt.append(v)
            frontier = nxt
        for b_pos in range(k):
            ring_d = min(abs(a_pos - b_pos), k - abs(a_pos - b_pos))
            if cycle[b_pos] in dist and dist[cycle[b_pos]] < ring_d:
                return False
    return True


def ring_counts(n: int, i: np.ndarray, j: np.ndarray, sizes: tuple[int, ...] = (5, 7)) -> dict[int, int]:
    """How many primitive rings of each size the bond graph has."""
    adj: list[list[int]] = [[] for _ in range(n)]
    for a, b in zip(i.tolist(), j.tolist()):
        adj[a].append(b)
        adj[b].append(a)
    counts = Counter(len(c) for c in _cycles(adj, sizes) if _is_ring(adj, c))
    return {k: counts.get(k, 0) for k in sizes}


def cnt_geometry(atoms: Atoms) -> dict:
    """Diameter, chiral angle and lattice constant of a tube along z, from its atoms and bonds.

    Bonds are unrolled onto the cylinder (arc length R·Δφ, Δz); the chiral angle comes from the
    six-fold bond-orientation average <exp(6iβ)> (β: bond angle from the circumference), the
    lattice constant from the mean unrolled bond length (a = √3·b).
    """
    pos = atoms.positions
    axis = pos[:, :2].mean(axis=0)
    rel = pos[:, :2] - axis
    r = np.linalg.norm(rel, axis=1)
    radius = float(r.mean())
    i, j, d = bond_graph(pos, atoms.cell.array, atoms.pbc, C_COORD_A)
    phi = np.arctan2(rel[:, 1], rel[:, 0])
    dphi = np.angle(np.exp(1j * (phi[j] - phi[i])))
    ds, dz = radius * dphi, d[:, 2]
    bond = float(np.hypot(ds, dz).mean()) if len(i) else float("nan")
    psi = np.exp(6j * np.arctan2(dz, ds)).mean() if len(i) else 0j
    theta = (math.pi - float(np.angle(psi))) / 6.0  # in [0, 60°)
    if theta > math.pi / 6:
        theta = math.pi / 3 - theta  # the mirror tube (m,n) is (n,m)
    return {
        "diameter_A": 2 * radius,
        "chiral_angle_deg": math.degrees(theta),
        "a_A": math.sqrt(3) * bond,
        "bonds": (i, j, d),
    }


def cnt_labels(atoms: Atoms) -> dict:
    geo = cnt_geometry(atoms)
    a = geo["a_A"]
    n, m = nearest_chirality(geo["diameter_A"], geo["chiral_angle_deg"], a)
    lz = float(atoms.cell[2, 2])
    cells = max(1, round(lz / tube_period_A(n, m, a)))
    i, j, _ = geo["bonds"]
    rings = ring_counts(len(atoms), i, j)
    return {
        "n": n,
        "m": m,
        "chirality": f"{n}-{m}",
        "diameter_A": _round(geo["diameter_A"]),
        "chiral_angle_deg": _round(geo["chiral_angle_deg"], 3),
        "lattice_A": _round(a),
        "length_A": _round(lz),
        "vacancies": int(cells * atoms_per_period(n, m) - len(atoms)),
        "stone_wales": int(min(rings[5], rings[7]) // 2),
        "rings_5": rings[5],
        "rings_7": rings[7],
    }


def tube_intact(atoms: Atoms, cutoff: float = C_BROKEN_A) -> tuple[bool, str]:
    """(ok, why not): one bonded piece that still wraps around the periodic axis."""
    i, j, d = bond_graph(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    sizes = components(len(atoms), i, j)
    if len(sizes) > 1:
        return False, f"broken tube: {len(sizes)} pieces (sizes {sizes[:5].tolist()}) with bonds < {cutoff} Å"
    if not periodic_in(atoms.positions, float(atoms.cell[2, 2]), i, j, d[:, 2], np.arange(len(atoms))):
        return False, "broken tube: the network no longer wraps around the periodic axis"
    return True, ""


# ----------------------------------------------------------------------------------------------
# Amorphous carbon
# ----------------------------------------------------------------------------------------------


def amorphous_labels(atoms: Atoms) -> dict:
    i, j, _ = bond_graph(atoms.positions, atoms.cell.array, atoms.pbc, C_COORD_A)
    cn = coordination(len(atoms), i, j)
    n = len(atoms)
    mass_g = float(atoms.get_masses().sum()) * AMU_G
    volume_cm3 = float(abs(atoms.cell.volume)) * 1e-24
    return {
        "density_g_cm3": _round(mass_g / volume_cm3),
        "sp_fraction": _round((cn == 2).sum() / n),
        "sp2_fraction": _round((cn == 3).sum() / n),
        "sp3_fraction": _round((cn == 4).sum() / n),
        "mean_coordination": _round(cn.mean()),
        "thickness_A": _round(atoms.cell[2, 2]),
    }


def measure(family: str, atoms: Atoms) -> dict:
    """The family's labels for a final structure (plus n_atoms)."""
    labels = {"n_atoms": len(atoms)}
    if family == "nanoalloy":
        labels.update(nanoalloy_labels(atoms))
    elif family == "cnt":
        labels.update(cnt_labels(atoms))
    elif family == "amorphous":
        labels.update(amorphous_labels(atoms))
    else:
        raise ValueError(f"unknown family {family!r}")
    return labels
