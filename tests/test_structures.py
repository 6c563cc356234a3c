"""Builders and analysis without LAMMPS: what is built is what analysis measures."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ase import Atoms

from hrtemflow.atomistic import analysis, structures
from hrtemflow.core import tubes
from hrtemflow.core.errors import HrtemflowError

MOTIFS = ["icosahedron", "decahedron", "truncated_octahedron"]


def nanoalloy_structure(ordering: str, **kw) -> dict:
    s = {"motifs": MOTIFS, "n_atoms": [80, 400], "co_fraction": [0.2, 0.5], "vacuum_A": 8.0, "ordering": ordering}
    s.update(kw)
    return s


def cnt_structure(n: int, m: int, **kw) -> dict:
    s = {"chirality": [n, m], "length_nm": 1.5, "vacancy_rate": 0.0, "stone_wales_rate": 0.0, "vacuum_A": 10.0}
    s.update(kw)
    return s


# ---------------------------------------------------------------------------------------------
# nanoalloys
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ordering", ["core-shell", "janus", "disordered"])
def test_built_orderings_are_measured_right(ordering):
    for seed in range(40):
        atoms = structures.build_nanoalloy(np.random.default_rng(seed), nanoalloy_structure(ordering))
        labels = analysis.nanoalloy_labels(atoms)
        assert labels["ordering"] == ordering, (seed, atoms.info["intent"], labels)
        if ordering != "disordered":
            assert labels["order_measure"] >= analysis.ORDER_THRESHOLD


@pytest.mark.parametrize("motif", MOTIFS)
def test_nanoalloy_size_composition_and_cell(motif):
    rng = np.random.default_rng(3)
    atoms = structures.build_nanoalloy(
        rng, nanoalloy_structure("core-shell", motifs=[motif], n_atoms=[150, 150], co_fraction=[0.3, 0.3])
    )
    intent = atoms.info["intent"]
    assert intent["motif"] == motif
    n_nearest, _ = structures.nearest_motif(motif, 150)
    assert len(atoms) == n_nearest == intent["n_atoms"]
    assert abs(len(atoms) - 150) <= 40
    assert atoms.get_chemical_symbols().count("Co") == round(0.3 * len(atoms))
    cell = atoms.cell.array
    assert np.allclose(cell, np.diag(np.diag(cell))) and np.allclose(np.diag(cell), cell[0, 0])  # cubic
    assert not atoms.pbc.any()
    pos = atoms.positions
    assert pos.min() >= 8.0 - 1e-9 and (cell[0, 0] - pos.max(axis=0)).min() >= 8.0 - 1e-9
    assert np.allclose((pos.min(axis=0) + pos.max(axis=0)) / 2, cell[0, 0] / 2)


def test_motif_counts_match_ase():
    from ase.cluster import Decahedron, Icosahedron, Octahedron

    for p, q, r in [(1, 1, 0), (2, 1, 0), (3, 3, 1), (4, 3, 2), (6, 7, 2), (9, 9, 3)]:
        assert structures._deca_count(p, q, r) == len(Decahedron("Ag", p, q, r))

    assert [structures._ico_count(k) for k in range(2, 6)] == [len(Icosahedron("Ag", k)) for k in range(2, 6)]
    for length, cut in [(5, 1), (7, 2), (9, 3), (10, 3)]:
        assert structures._octa_count(length, cut) == len(Octahedron("Ag", length, cut))


def test_builders_are_deterministic():
    for family, st in [
        ("nanoalloy", nanoalloy_structure("janus")),
        ("cnt", cnt_structure(8, 4, vacancy_rate=0.02, stone_wales_rate=0.02)),
        ("amorphous", {"density_g_cm3": [1.8, 2.6], "box_nm": [1.0, 1.0, 0.8], "min_separation_A": 1.2}),
    ]:
        a = structures.build(family, np.random.default_rng(42), st)
        b = structures.build(family, np.random.default_rng(42), st)
        assert a.get_chemical_symbols() == b.get_chemical_symbols()
        assert np.array_equal(a.positions, b.positions) and np.array_equal(a.cell.array, b.cell.array)


def test_particle_pieces_sees_an_evaporated_atom():
    atoms = structures.build_nanoalloy(np.random.default_rng(0), nanoalloy_structure("core-shell"))
    assert analysis.particle_pieces(atoms).tolist() == [len(atoms)]
    far = atoms.copy()
    far.positions[0] += (
        20.0
        * (far.positions[0] - far.positions.mean(axis=0))
        / np.linalg.norm(far.positions[0] - far.positions.mean(axis=0))
    )
    assert analysis.particle_pieces(far).tolist() == [len(atoms) - 1, 1]


# ---------------------------------------------------------------------------------------------
# nanotubes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,m", [(5, 5), (10, 0), (8, 4), (7, 5), (9, 3), (6, 1), (13, 7), (17, 0)])
def test_cnt_chirality_and_diameter_measured(n, m):
    atoms = structures.build_cnt(np.random.default_rng(0), cnt_structure(n, m))
    labels = analysis.cnt_labels(atoms)
    d_ref = 2.46 / math.pi * math.sqrt(n * n + n * m + m * m)
    assert (labels["n"], labels["m"], labels["chirality"]) == (n, m, f"{n}-{m}")
    assert abs(labels["diameter_A"] - d_ref) / d_ref < 0.01
    assert abs(labels["chiral_angle_deg"] - tubes.tube_chiral_angle_deg(n, m)) < 0.5
    assert labels["vacancies"] == 0 and labels["stone_wales"] == 0
    assert labels["length_A"] >= 15.0
    assert atoms.pbc.tolist() == [False, False, True]
    assert analysis.amorphous_labels(atoms)["sp2_fraction"] == 1.0  # a perfect tube is all sp2
    assert analysis.tube_intact(atoms) == (True, "")


def test_cnt_geometry_with_a_different_bond():
    atoms = structures.build_cnt(np.random.default_rng(0), cnt_structure(9, 3), bond=1.4605)
    labels = analysis.cnt_labels(atoms)
    assert labels["chirality"] == "9-3"
    assert abs(labels["lattice_A"] - math.sqrt(3) * 1.4605) < 0.01


@pytest.mark.parametrize("n,m,seed", [(8, 4, 0), (10, 0, 1), (7, 5, 2), (10, 10, 3)])
def test_cnt_defects_measured_match_intended(n, m, seed):
    atoms = structures.build_cnt(
        np.random.default_rng(seed), cnt_structure(n, m, length_nm=4.0, vacancy_rate=0.02, stone_wales_rate=0.01)
    )
    intent = atoms.info["intent"]
    labels = analysis.cnt_labels(atoms)
    assert intent["vacancies"] > 0 and intent["stone_wales"] > 0
    assert labels["chirality"] == f"{n}-{m}"
    assert labels["vacancies"] == intent["vacancies"]
    assert labels["stone_wales"] == intent["stone_wales"]
    assert labels["rings_5"] == labels["rings_7"] == 2 * intent["stone_wales"]


def _rings(atoms: Atoms) -> dict[int, int]:
    i, j, _ = analysis.bond_graph(atoms.positions, atoms.cell.array, atoms.pbc, analysis.C_COORD_A)
    return analysis.ring_counts(len(atoms), i, j, (5, 6, 7))


def test_single_stone_wales_is_5_7_7_5():
    perfect = structures.build_cnt(np.random.default_rng(0), cnt_structure(10, 10, length_nm=2.0))
    for seed in range(20):
        atoms = structures.build_cnt(
            np.random.default_rng(seed), cnt_structure(10, 10, length_nm=2.0, stone_wales_rate=0.004)
        )
        if atoms.info["intent"]["stone_wales"] == 1:
            break
    else:
        pytest.skip("no seed gave exactly one defect")
    # four hexagons become two pentagons and two heptagons; every atom keeps three bonds
    assert _rings(perfect) == {5: 0, 6: len(perfect) // 2, 7: 0}
    assert _rings(atoms) == {5: 2, 6: len(perfect) // 2 - 4, 7: 2}
    i, j, _ = analysis.bond_graph(atoms.positions, atoms.cell.array, atoms.pbc, analysis.C_COORD_A)
    assert analysis.coordination(len(atoms), i, j).tolist() == [3] * len(atoms)


def test_tube_intact_sees_a_cut_tube():
    atoms = structures.build_cnt(np.random.default_rng(0), cnt_structure(8, 0, length_nm=2.0))
    z = atoms.positions[:, 2]
    cut = atoms[(z < 5.0) | (z > 8.0)]  # remove a ring of atoms: two open ends, no longer periodic
    ok, why = analysis.tube_intact(cut)
    assert not ok and why.startswith("broken tube")
    one_piece = atoms[z > 3.0]  # shorter than the period: one piece that does not wrap
    ok, why = analysis.tube_intact(one_piece)
    assert not ok and "wraps" in why


# ---------------------------------------------------------------------------------------------
# amorphous carbon
# ---------------------------------------------------------------------------------------------


def test_amorphous_density_and_separation():
    st = {"density_g_cm3": [2.0, 2.0], "box_nm": [1.5, 1.5, 1.0], "min_separation_A": 1.3}
    atoms = structures.build_amorphous(np.random.default_rng(1), st)
    labels = analysis.amorphous_labels(atoms)
    assert abs(labels["density_g_cm3"] - 2.0) < 0.01
    assert labels["thickness_A"] == 10.0 and atoms.pbc.all()
    i, j, d = analysis.bond_graph(atoms.positions, atoms.cell.array, True, 1.3)
    assert len(i) == 0  # nothing closer than min_separation, periodic images included
    assert len(analysis.bond_graph(atoms.positions, atoms.cell.array, True, 1.5)[0]) > 0


def test_amorphous_impossible_packing_is_a_clear_error():
    with pytest.raises(HrtemflowError, match="min_separation_A"):
        structures.build_amorphous(
            np.random.default_rng(0), {"density_g_cm3": [3.6, 3.6], "box_nm": [0.8, 0.8, 0.8], "min_separation_A": 2.0}
        )


def test_sp3_of_diamond():
    from ase.build import bulk

    atoms = bulk("C", "diamond", a=3.5656, cubic=True).repeat(2)
    labels = analysis.amorphous_labels(atoms)
    assert labels["sp3_fraction"] == 1.0 and labels["sp2_fraction"] == 0.0
    assert abs(labels["density_g_cm3"] - 3.52) < 0.02


def test_bond_graph_periodic_minimum_image():
    atoms = Atoms("C2", positions=[[0.2, 5, 5], [9.5, 5, 5]], cell=[10, 10, 10], pbc=True)
    i, j, d = analysis.bond_graph(atoms.positions, atoms.cell.array, atoms.pbc, 1.0)
    assert (i.tolist(), j.tolist()) == ([0], [1]) and np.allclose(d, [[-0.7, 0, 0]])
    i, *_ = analysis.bond_graph(atoms.positions, atoms.cell.array, False, 1.0)
    assert len(i) == 0
