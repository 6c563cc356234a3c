"""How mixed the two metals are: MD particles against the generator's, per ordering.

    python -m studies.independent.chemical_order --extxyz 'results-bench-nanoalloy-ncsi/md/nanoalloy-*/*.extxyz' \
        --ids test_ids.txt --set na_relaxed --n 60

Why: a transfer gap that sits in one class (the bench's "disordered" particles against the generator's) is a
difference of structure a network can read; two numbers say whether the MD left the alloy random. For each
particle, with neighbours within NEIGHBOUR_A:
- Co-Co enrichment: the Co share of a Co atom's neighbours over the particle's Co fraction (1 for a random
  alloy, above 1 where Co atoms cluster, as in a demixing immiscible pair);
- surface Co: the Co fraction of the surface atoms (fewer than SURFACE_CN neighbours) over the particle's
  (below 1 where Ag, of the lower surface energy, has gone to the surface).
The generator's particles are those the set draws for micrographs 0..n-1 (its seed and draws_as), built
as it builds them (relaxed when the set relaxes).
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
from scipy.spatial import cKDTree

from . import generate

NEIGHBOUR_A = 3.3  # between the first (2.5-2.9 Å) and second (3.5-4.1 Å) neighbour shells of Ag/Co
SURFACE_CN = 10  # bulk fcc has 12 neighbours; a (111) facet's atoms 9, edges and corners fewer


def mixing(pos: np.ndarray, numbers: np.ndarray) -> tuple[float, float]:
    """(Co-Co enrichment, surface Co over the particle's Co) of one particle."""
    tree = cKDTree(pos)
    neighbours = [
        np.array([j for j in nb if j != i], dtype=int) for i, nb in enumerate(tree.query_ball_point(pos, NEIGHBOUR_A))
    ]
    co = numbers == 27
    x = co.mean()
    enrichment = float(np.mean([co[nb].mean() for nb, c in zip(neighbours, co) if c and len(nb)]) / x)
    surface = np.array([len(nb) < SURFACE_CN for nb in neighbours])
    return enrichment, float(co[surface].mean() / x)


def md_particles(pattern: str, ids: str) -> dict[str, list[tuple[float, float]]]:
    """The MD particles `particles_from` would image (`generate.md_frames`), each file read once."""
    from ase.io import read

    by_file: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for f, k, _, ordering in generate.md_frames(pattern, ids):
        by_file[f].append((k, ordering))
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for f, wanted in by_file.items():
        frames = read(f, index=":")
        for k, ordering in wanted:
            out[ordering].append(mixing(frames[k].positions, frames[k].numbers))
    return out


def set_particles(name: str, n: int, seed: int, pixel_A: float) -> dict[str, list[tuple[float, float]]]:
    p = generate.resolve_set(generate.load_factors(), name, overrides={"pixel_size_A": pixel_A})
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for i in range(n):
        rng = np.random.default_rng(generate.set_micrograph_seed(p, seed, i))
        d = generate.draw(p, rng)
        pos, numbers, _ = generate.alloy_particle(d, rng)
        out[d["ordering"]].append(mixing(pos, numbers))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--extxyz", required=True, help="glob of the MD stage's .extxyz files")
    ap.add_argument("--ids", default="", help="file of the sample ids to take (e.g. a bundle's test particles)")
    ap.add_argument("--set", default="na_relaxed", help="the generator's set to compare with")
    ap.add_argument("--n", type=int, default=60, help="the set's micrographs 0..n-1")
    ap.add_argument("--seed", type=int, default=29, help="the generator's master seed (its default)")
    ap.add_argument("--pixel-size-A", type=float, default=0.625)
    args = ap.parse_args(argv)
    rows = [
        ("MD", md_particles(args.extxyz, args.ids)),
        (args.set, set_particles(args.set, args.n, args.seed, args.pixel_size_A)),
    ]
    print("| particles | ordering | n | Co-Co enrichment: mean [10-90 %] | surface Co / Co: mean [10-90 %] |")
    print("|---|---|---:|---|---|")
    for source, by in rows:
        for ordering in sorted(by):
            v = np.array(by[ordering])
            cells = [
                f"{v[:, k].mean():.2f} [{np.percentile(v[:, k], 10):.2f}-{np.percentile(v[:, k], 90):.2f}]"
                for k in (0, 1)
            ]
            print(f"| {source} | {ordering} | {len(v)} | {cells[0]} | {cells[1]} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
