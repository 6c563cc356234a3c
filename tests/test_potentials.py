"""Potential files: reproducible, exact where they must be, and LAMMPS reproduces the physics.

LAMMPS runs on small systems (≤ 120 atoms); the whole module takes a few seconds.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from hrtemflow.atomistic import potentials as P
from hrtemflow.atomistic import tbsma
from hrtemflow.cli.commands import potentials as potentials_cmd
from hrtemflow.core.errors import HrtemflowError
from hrtemflow.core.runtime import load_lammps

ROOT = Path(__file__).resolve().parents[1]
RESOURCES = ROOT / "resources" / "potentials"
MASSES = {"Ag": 107.8682, "Co": 58.933194, "C": 12.011}


def table(set_name: str) -> Path:
    return RESOURCES / P.agco_table_name(set_name)


def new_lammps():
    return load_lammps().lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])


# ----------------------------------------------------------------------------------------------------
# files


def test_committed_files_match_regeneration():
    assert P.check_tables(RESOURCES) == []
    for name in [*(P.agco_table_name(s) for s in P.PARAMETER_SETS), "C.tersoff"]:
        assert (RESOURCES / name).stat().st_size < 5_000_000


def test_parameter_sets_match_reference_table():
    d = P.PARAMETER_SETS["default"].pairs
    assert (d["Ag", "Ag"].rc1, d["Ag", "Ag"].rc2) == pytest.approx((4.08707719, 5.00562683), abs=1e-8)
    assert (d["Co", "Co"].rc1, d["Co", "Co"].rc2) == pytest.approx((3.53553391, 4.33012702), abs=1e-8)
    assert (d["Ag", "Co"].rc1, d["Ag", "Co"].rc2) == pytest.approx((4.08707719, 4.33012702), abs=1e-8)
    agco = d["Ag", "Co"]
    assert (agco.A, agco.xi, agco.p, agco.q, agco.r0) == (0.15202, 1.4319, 10.001, 3.085, 2.695)
    assert P.PARAMETER_SETS["baletto_ag"].pairs["Ag", "Ag"].A == 0.1031
    assert P.PARAMETER_SETS["baletto_ag"].pairs["Co", "Co"] == d["Co", "Co"]
    assert P.PARAMETER_SETS["cleri_rosato"].pairs["Co", "Co"].r0 == 2.497
    assert P.agco_table_name("default") == "AgCo_default.eam.fs"


def test_tail_is_smooth_at_both_ends():
    pair = P.PARAMETER_SETS["default"].pairs["Ag", "Co"]
    for fn in (P.repulsive(pair), P.hopping(pair)):
        # value, slope and curvature by finite differences just inside and outside rc1; zero at rc2
        def derivs(f, r, eps=1e-5):
            return f(r), (f(r + eps) - f(r - eps)) / (2 * eps), (f(r + eps) - 2 * f(r) + f(r - eps)) / eps**2

        below = derivs(fn._exponential, pair.rc1)
        x = pair.rc1 - pair.rc2
        a3, a4, a5 = fn.coefficients
        poly = (
            a3 * x**3 + a4 * x**4 + a5 * x**5,
            3 * a3 * x**2 + 4 * a4 * x**3 + 5 * a5 * x**4,
            6 * a3 * x + 12 * a4 * x**2 + 20 * a5 * x**3,
        )
        assert poly == pytest.approx(below, rel=1e-5)
        assert fn(pair.rc2) == 0.0 and fn(pair.rc2 + 1.0) == 0.0
        # triple zero at rc2 (value, slope, curvature vanish): f(rc2 - eps) ~ eps^3
        assert fn(pair.rc2 - 2e-3) / fn(pair.rc2 - 1e-3) == pytest.approx(8.0, rel=1e-2)


def test_tables_exactly_zero_beyond_each_pairs_rc2():
    data = P.read_eam_fs(table("default"))
    pairs = P.PARAMETER_SETS["default"].pairs
    r = np.arange(data["nr"]) * data["dr"]
    assert data["cutoff"] == max(p.rc2 for p in pairs.values())
    assert r[-1] > data["cutoff"]
    for el in data["elements"]:
        rho = np.arange(data["nrho"]) * data["drho"]
        np.testing.assert_array_equal(data["F"][el], -np.sqrt(rho))
        assert rho[-1] == pytest.approx(200.0)
    for (a, b), rho in data["rho"].items():
        rc2 = pairs[P.pair_key(a, b)].rc2
        assert np.all(rho[r >= rc2] == 0.0), (a, b)
        assert np.all(rho[r < rc2 - 2 * data["dr"]] > 0.0), (a, b)
        np.testing.assert_array_equal(rho, data["rho"][(b, a)])
    for key, rphi in data["rphi"].items():
        rc2 = pairs[key].rc2
        assert np.all(rphi[r >= rc2] == 0.0), key
        assert np.all(rphi[(r > 0) & (r < rc2 - 2 * data["dr"])] > 0.0), key


def test_writer_rejects_bad_input(tmp_path):
    good = dict(P.PARAMETER_SETS["default"].pairs)
    out = tmp_path / "x.eam.fs"
    bad_cut = P.TBSMAPair(0.1, 1.2, 10.0, 3.0, 2.9, 5.0, 4.0)
    with pytest.raises(HrtemflowError, match="rc1"):
        P.write_eam_fs(out, ["Ag", "Co"], {**good, ("Ag", "Co"): bad_cut})
    with pytest.raises(HrtemflowError, match="Ag-Co"):
        P.write_eam_fs(out, ["Ag", "Co"], {k: v for k, v in good.items() if k != ("Ag", "Co")})
    with pytest.raises(HrtemflowError, match="chemical symbol"):
        P.write_eam_fs(out, ["Ag", "Xx"], good)
    with pytest.raises(HrtemflowError, match="repeat"):
        P.write_eam_fs(out, ["Ag", "Ag"], good)
    with pytest.raises(HrtemflowError, match="positive"):
        P.write_eam_fs(out, ["Ag"], {("Ag", "Ag"): P.TBSMAPair(-0.1, 1.2, 10.0, 3.0, 2.9, 4.0, 5.0)})
    with pytest.raises(HrtemflowError, match="nr"):
        P.write_eam_fs(out, ["Ag"], good, nr=100)
    with pytest.raises(HrtemflowError, match="unknown TB-SMA parameter set"):
        P.write_all(tmp_path, sets=["nope"])
    with pytest.raises(HrtemflowError, match="pair style"):
        P.lammps_pair_commands("lj/cut", "x", ["Ag"])
    assert not out.exists()


def test_writer_is_generic_and_deterministic(tmp_path):
    """Any elements, any order: a single-element and a reversed-order table load in LAMMPS and agree."""
    pairs = P.PARAMETER_SETS["default"].pairs
    one = tmp_path / "Ag.eam.fs"
    rev = tmp_path / "CoAg.eam.fs"
    assert P.write_eam_fs(one, ["Ag"], pairs, header_lines=["Ag only"]) is True
    assert P.write_eam_fs(one, ["Ag"], pairs, header_lines=["Ag only"]) is False  # unchanged: not rewritten
    P.write_eam_fs(rev, ["Co", "Ag"], pairs)
    assert rev.read_text().splitlines()[3] == "2 Co Ag"
    atoms = random_cluster(40, 0.5, np.random.default_rng(7))
    e_ref = tbsma.evaluate(atoms, pairs).energy
    e_rev, _ = lammps_energy_forces(atoms, rev, ["Co", "Ag"])
    assert e_rev == pytest.approx(e_ref, abs=1e-6)
    ag = atoms[[s == "Ag" for s in atoms.get_chemical_symbols()]]
    e_one, _ = lammps_energy_forces(ag, one, ["Ag"])
    assert e_one == pytest.approx(tbsma.evaluate(ag, pairs).energy, abs=1e-6)


def test_command_writes_and_checks(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    potentials_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["potentials", "--out", str(tmp_path), "--set", "default"])
    assert args.func(args) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["AgCo_default.eam.fs", "C.tersoff"]
    assert (tmp_path / "AgCo_default.eam.fs").read_bytes() == table("default").read_bytes()
    assert "wrote" in capsys.readouterr().out
    check = parser.parse_args(["potentials", "--out", str(tmp_path), "--set", "default", "--check"])
    assert check.func(check) == 0
    (tmp_path / "C.tersoff").write_text("changed\n")
    assert check.func(check) == 1
    assert "C.tersoff" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------------
# LAMMPS eam/fs vs direct TB-SMA


def random_cluster(n: int, co_fraction: float, rng: np.random.Generator, dmin: float = 2.2) -> Atoms:
    """Random positions in a sphere (0.045 Å^-3, every atom has close neighbours), min separation dmin."""
    radius = (3 * n / (4 * math.pi * 0.045)) ** (1 / 3)
    pos: list[np.ndarray] = []
    while len(pos) < n:
        p = rng.uniform(-radius, radius, 3)
        if np.linalg.norm(p) <= radius and (not pos or np.min(np.linalg.norm(np.array(pos) - p, axis=1)) >= dmin):
            pos.append(p)
    n_co = round(co_fraction * n)
    symbols = np.array(["Co"] * n_co + ["Ag"] * (n - n_co))
    rng.shuffle(symbols)
    return Atoms(list(symbols), positions=np.array(pos))


def lammps_energy_forces(atoms: Atoms, file: Path, elements: list[str], periodic: bool = False):
    """Total energy and forces (in atom order) of `atoms` with an eam/fs file."""
    lmp = new_lammps()
    try:
        lmp.command("units metal")
        lmp.command("atom_style atomic")
        lmp.command("atom_modify map array")
        if periodic:
            lmp.command("boundary p p p")
            (lx, xy, xz), (_, ly, yz), (_, _, lz) = atoms.cell.array
            assert atoms.cell.array[0, 1] == atoms.cell.array[0, 2] == atoms.cell.array[1, 2] == 0
            lmp.command(f"region box prism 0 {lx} 0 {ly} 0 {lz} {xy} {xz} {yz}")
        else:
            lmp.command("boundary f f f")
            lmp.command("region box block -60 60 -60 60 -60 60")
        lmp.command(f"create_box {len(elements)} box")
        for t, el in enumerate(elements, 1):
            lmp.command(f"mass {t} {MASSES[el]}")
        n = len(atoms)
        types = [elements.index(s) + 1 for s in atoms.get_chemical_symbols()]
        lmp.create_atoms(n, list(range(1, n + 1)), types, atoms.positions.ravel().tolist())
        assert lmp.get_natoms() == n
        for line in P.lammps_pair_commands("eam/fs", file, elements):
            lmp.command(line)
        lmp.command("run 0")
        energy = lmp.get_thermo("pe")
        ids = lmp.numpy.extract_atom("id")[:n].copy()  # without ghost atoms
        forces = lmp.numpy.extract_atom("f")[:n][np.argsort(ids)].copy()
    finally:
        lmp.close()
    return energy, forces


CLUSTERS = [
    ("default", 0.0, 80),
    ("default", 0.25, 120),
    ("default", 0.5, 100),
    ("default", 0.8, 90),
    ("default", 1.0, 60),
    ("baletto_ag", 0.4, 100),
    ("cleri_rosato", 0.6, 100),
]


@pytest.mark.parametrize(("set_name", "co_fraction", "n"), CLUSTERS)
def test_lammps_matches_direct_tbsma_on_clusters(set_name, co_fraction, n):
    rng = np.random.default_rng(CLUSTERS.index((set_name, co_fraction, n)))
    atoms = random_cluster(n, co_fraction, rng)
    ref = tbsma.evaluate(atoms, P.PARAMETER_SETS[set_name].pairs)
    energy, forces = lammps_energy_forces(atoms, table(set_name), ["Ag", "Co"])
    # the test exercises the tails and mixed pairs: some pair distances fall between rc1 and rc2
    assert ref.rho.min() > 0.1 and np.abs(ref.forces).max() > 1.0
    assert abs(energy - ref.energy) / n < 1e-6
    assert np.abs(forces - ref.forces).max() < 1e-4


def test_lammps_matches_direct_tbsma_in_periodic_alloy():
    rng = np.random.default_rng(5)
    atoms = bulk("Ag", "fcc", a=3.9, cubic=True).repeat((3, 3, 3))
    atoms.symbols[rng.random(len(atoms)) < 0.4] = "Co"
    atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
    atoms.wrap()
    ref = tbsma.evaluate(atoms, P.PARAMETER_SETS["default"].pairs)
    energy, forces = lammps_energy_forces(atoms, table("default"), ["Ag", "Co"], periodic=True)
    assert abs(energy - ref.energy) / len(atoms) < 1e-6
    assert np.abs(forces - ref.forces).max() < 1e-4


def test_eam_fs_density_sections_list_emitted_densities(tmp_path):
    """LAMMPS convention the writer relies on: section alpha, column beta = density alpha emits at beta.

    A hand-made table with rho_{Ag->Co} = 1·g and rho_{Co->Ag} = 4·g: in an Ag-Co dimer the Ag atom must
    receive 4·g and the Co atom 1·g (per-atom F = -sqrt(received density)).
    """
    nr, dr, nrho, drho, cut = 601, 0.01, 501, 0.02, 6.0
    r = np.arange(nr) * dr
    g = np.where(r < cut, ((cut - r) / cut) ** 4, 0.0)
    fmt = lambda v: "\n".join(f"{x:.16e}" for x in v)  # noqa: E731
    emb = fmt(-np.sqrt(np.arange(nrho) * drho))
    zero = fmt(np.zeros(nr))
    text = (
        "\n".join(
            [
                "x",
                "x",
                "x",
                "2 Ag Co",
                f"{nrho} {drho} {nr} {dr} {cut}",
                "47 107.8682 4.09 fcc",
                emb,
                fmt(0.5 * g),
                fmt(1.0 * g),  # Ag -> Ag, Ag -> Co
                "27 58.933194 2.51 hcp",
                emb,
                fmt(4.0 * g),
                fmt(0.5 * g),  # Co -> Ag, Co -> Co
                zero,
                zero,
                zero,
            ]
        )
        + "\n"
    )
    path = tmp_path / "asym.eam.fs"
    path.write_text(text)
    lmp = new_lammps()
    try:
        lmp.commands_string(
            "units metal\natom_style atomic\natom_modify map array\nboundary f f f\n"
            "region box block -10 10 -10 10 -10 10\ncreate_box 2 box\n"
            "create_atoms 1 single 0 0 0\ncreate_atoms 2 single 3 0 0\nmass * 1.0\n"
            + "\n".join(P.lammps_pair_commands("eam/fs", path, ["Ag", "Co"]))
            + "\ncompute pe all pe/atom\nrun 0"
        )
        pe = lmp.numpy.extract_compute("pe", 1, 1)[:2].copy()
        types = lmp.numpy.extract_atom("type")[:2].copy()
    finally:
        lmp.close()
    g3 = ((cut - 3.0) / cut) ** 4
    e = dict(zip(types.tolist(), pe.tolist(), strict=True))
    # coarse test grid: 1e-3 is far tighter than the swap the test guards against (a factor 2)
    assert e[1] == pytest.approx(-math.sqrt(4.0 * g3), rel=1e-3)  # Ag receives Co's emission
    assert e[2] == pytest.approx(-math.sqrt(1.0 * g3), rel=1e-3)


# ----------------------------------------------------------------------------------------------------
# bulk references (REFERENCE.md, computed with the default set / Tersoff 1989)


def relax_crystal(
    lattice: str,
    a: float,
    reps: tuple[int, int, int],
    file: Path,
    kind: str,
    el: str,
    relax: str = "iso 0.0",
    create: str | None = None,
) -> tuple[float, tuple[float, float, float]]:
    """Energy per atom and box lengths after a box/relax minimisation at zero pressure."""
    lmp = new_lammps()
    try:
        lmp.commands_string("units metal\natom_style atomic\nboundary p p p")
        if create is None:
            lmp.commands_string(
                f"lattice {lattice} {a}\nregion box block 0 {reps[0]} 0 {reps[1]} 0 {reps[2]}\n"
                "create_box 1 box\ncreate_atoms 1 box"
            )
        else:
            lmp.commands_string(create)
        lmp.command(f"mass 1 {MASSES[el]}")
        for line in P.lammps_pair_commands(kind, file, [el]):
            lmp.command(line)
        lmp.commands_string(
            f"thermo_style custom step pe lx ly lz press\nfix relax all box/relax {relax} vmax 0.001\n"
            "min_modify line quadratic\nminimize 0.0 1.0e-12 2000 20000"
        )
        energy = lmp.get_thermo("pe") / lmp.get_natoms()
        box = (lmp.get_thermo("lx"), lmp.get_thermo("ly"), lmp.get_thermo("lz"))
    finally:
        lmp.close()
    return energy, box


def test_ag_fcc_bulk():
    e, (lx, _, _) = relax_crystal("fcc", 4.05, (3, 3, 3), table("default"), "eam/fs", "Ag")
    assert e == pytest.approx(-2.9500, rel=1e-3)
    assert lx / 3 == pytest.approx(4.0871, rel=1e-3)
    # the direct evaluator agrees on the periodic crystal too
    atoms = bulk("Ag", "fcc", a=lx / 3, cubic=True).repeat(2)
    assert tbsma.evaluate(atoms, P.PARAMETER_SETS["default"].pairs).energy / len(atoms) == pytest.approx(e, abs=1e-8)


def test_co_hcp_bulk():
    e, (lx, ly, lz) = relax_crystal("hcp", 2.48, (3, 2, 2), table("default"), "eam/fs", "Co", relax="aniso 0.0")
    assert e == pytest.approx(-4.3874, rel=1e-3)
    assert lx / 3 == pytest.approx(2.5026, rel=1e-3)
    assert ly / (2 * math.sqrt(3)) == pytest.approx(2.5026, rel=1e-3)
    assert lz / 2 == pytest.approx(4.0696, rel=1e-3)


def test_tersoff_diamond():
    e, (lx, _, _) = relax_crystal("diamond", 3.6, (2, 2, 2), RESOURCES / "C.tersoff", "tersoff", "C")
    assert e == pytest.approx(-7.3705, rel=1e-3)
    assert lx / 2 == pytest.approx(3.5656, rel=1e-3)


def test_tersoff_graphene():
    b, nx, ny = 1.42, 3, 3  # rectangular 4-atom cell 3b x sqrt3 b, vacuum along z
    basis = [(0, 0), (b, 0), (1.5 * b, math.sqrt(3) / 2 * b), (2.5 * b, math.sqrt(3) / 2 * b)]
    atoms = "\n".join(
        f"create_atoms 1 single {x + 3 * b * i} {y + math.sqrt(3) * b * j} 0"
        for i in range(nx)
        for j in range(ny)
        for x, y in basis
    )
    create = f"region box block 0 {3 * b * nx} 0 {math.sqrt(3) * b * ny} -10 10\ncreate_box 1 box\n{atoms}"
    e, (lx, ly, _) = relax_crystal(
        "", 0, (0, 0, 0), RESOURCES / "C.tersoff", "tersoff", "C", relax="x 0.0 y 0.0 couple xy", create=create
    )
    assert e == pytest.approx(-7.3955, rel=1e-3)
    assert lx / (3 * nx) == pytest.approx(1.4605, rel=1e-3)
    assert ly / (math.sqrt(3) * ny) == pytest.approx(1.4605, rel=1e-3)
