"""The independent generator's 0 K relaxation (studies/independent/relax.py): its TB-SMA energy is the
published Ag/Co set's (bulk lattices and cohesive energies of ../shared/design/REFERENCE.md), its forces are
its energy's gradient, and a relaxed particle keeps its ordering while each metal takes its own spacing."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from studies.independent.relax import check_relax_params, energy_forces, relax_particle


def test_forces_are_the_energys_gradient():
    from ase.cluster import Icosahedron

    rng = np.random.default_rng(0)
    atoms = Icosahedron("Ag", 3, latticeconstant=3.9)
    atoms.numbers[rng.random(len(atoms)) < 0.4] = 27
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    _, forces = energy_forces(atoms)
    step = 1e-5
    for k in (0, 7, 30, 54):  # centre, inner shell, surface atoms
        for c in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[k, c] += step
            minus.positions[k, c] -= step
            slope = (energy_forces(plus)[0] - energy_forces(minus)[0]) / (2 * step)
            assert forces[k, c] == pytest.approx(-slope, abs=1e-6)
    assert np.abs(forces.sum(axis=0)).max() < 1e-9  # no net force on a free particle


@pytest.mark.parametrize(("element", "lattice", "cohesive"), [("Ag", 4.0871, -2.9500), ("Co", 3.5355, -4.3870)])
def test_bulk_lattice_and_cohesive_energy_are_the_reference_sets(element, lattice, cohesive):
    grid = np.linspace(lattice - 0.04, lattice + 0.04, 17)
    per_atom = []
    for a in grid:
        crystal = bulk(element, "fcc", a=a, cubic=True).repeat(3)
        per_atom.append(energy_forces(crystal)[0] / len(crystal))
    best = int(np.argmin(per_atom))
    assert 0 < best < len(grid) - 1 and grid[best] == pytest.approx(lattice, abs=0.006)
    assert per_atom[best] == pytest.approx(cohesive, abs=2e-3)


def _nearest_pair_distances(pos: np.ndarray, z: np.ndarray, a: int, b: int) -> float:
    """Median distance of a-b neighbours within 3.2 Å."""
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    sel = (z[:, None] == a) & (z[None] == b) & (d > 0) & (d < 3.2)
    return float(np.median(d[sel]))


def test_a_relaxed_particle_keeps_its_ordering_and_each_metal_takes_its_spacing():
    """A core-shell decahedron on the Vegard lattice (one spacing for both metals: 2.73 Å at 40 % Co)
    relaxes to Co-Co bonds near Co's 2.50 Å and Ag-Ag bonds longer than the Vegard spacing (short of Ag's
    2.89 Å: the shell sits on a shrunk core, and its surface contracts), without moving the metals past each
    other: the pipeline's own measure still reads core-shell."""
    from studies.independent.generate import alloy_particle

    from hrtemflow.atomistic.analysis import nanoalloy_labels

    d = {"motif": "decahedron", "ordering": "core-shell", "n_atoms_target": 300, "co_fraction": 0.4}
    ideal, z, _ = alloy_particle(d, np.random.default_rng(1))
    relaxed, z2, built = alloy_particle({**d, "relax": {"fmax_eV_A": 0.02}}, np.random.default_rng(1))
    assert (z == z2).all() and built["relax_steps"] > 0 and built["relax_energy_drop_eV_per_atom"] > 0
    assert abs(relaxed.mean(axis=0)).max() < 1e-9
    vegard = _nearest_pair_distances(ideal, z, 27, 27)
    assert vegard == pytest.approx(0.6 * 4.0853 / 2**0.5 + 0.4 * 3.5447 / 2**0.5, abs=0.01)
    assert _nearest_pair_distances(ideal, z, 47, 47) == pytest.approx(vegard, abs=1e-6)
    co, ag = _nearest_pair_distances(relaxed, z, 27, 27), _nearest_pair_distances(relaxed, z, 47, 47)
    assert co < vegard - 0.1 and ag > vegard + 0.03 and ag > co + 0.2
    _, forces = energy_forces(Atoms(numbers=z, positions=relaxed))
    assert np.linalg.norm(forces, axis=1).max() <= 0.02 + 1e-9
    measured = nanoalloy_labels(Atoms(numbers=z, positions=relaxed + 30, cell=[60, 60, 60]))
    assert measured["ordering"] == "core-shell"


def test_relax_draws_nothing_so_other_sets_stay_as_they_were():
    from studies.independent.generate import draw_particle, load_factors, resolve_set

    factors = load_factors()
    plain = resolve_set(factors, "NA0_ideal", overrides={"pixel_size_A": 0.625})
    relaxed = resolve_set(factors, "na_relaxed", overrides={"pixel_size_A": 0.625})
    assert plain.get("relax") is None and relaxed["relax"] == {"fmax_eV_A": 0.02, "steps": 2000}
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    da, db = draw_particle(plain, a), draw_particle(relaxed, b)
    assert {k: v for k, v in db.items() if k != "relax"} == da and a.random() == b.random()


def test_relax_refuses_what_it_cannot_run():
    check_relax_params(None, "set x")
    check_relax_params({"fmax_eV_A": 0.05, "steps": 100}, "set x")
    for bad, match in (
        ({"fmax": 0.05}, "unknown keys"),
        ({"fmax_eV_A": 0}, "fmax_eV_A"),
        ({"steps": 2.5}, "steps"),
        ("yes", "mapping"),
    ):
        with pytest.raises(SystemExit, match=match):
            check_relax_params(bad, "set x")
    with pytest.raises(ValueError, match="Ag and Co only"):
        energy_forces(Atoms("AgAu", positions=[[0, 0, 0], [2.8, 0, 0]]))
    pos, info = relax_particle(np.array([[0.0, 0, 0], [3.0, 0, 0]]), np.array([47, 47]), steps=500)
    assert np.linalg.norm(pos[1] - pos[0]) < 3.0 and info["relax_max_force_eV_A"] <= 0.02  # a dimer pulls in


def test_given_md_particles_are_imaged_as_they_are(tmp_path):
    """`particles_from` puts the frames of MD .extxyz files (only the listed sample ids) in place of built
    particles, their ordering read from the id; the set is made only when named, not by `all`."""
    from ase.cluster import Icosahedron
    from ase.io import write
    from studies.independent.__main__ import pick_sets
    from studies.independent.generate import alloy_particle, draw_particle, load_factors, md_frames, resolve_set

    frames = []
    for k, ordering in enumerate(("core-shell", "janus")):
        atoms = Icosahedron("Ag", 3, latticeconstant=4.0)
        atoms.numbers[: 13 * (k + 1)] = 27
        atoms.positions += 20.0 + k
        atoms.info["sample_id"] = f"nanoalloy-{ordering}-{k:07d}"
        frames.append(atoms)
    write(tmp_path / "shard.extxyz", frames)
    (tmp_path / "ids.txt").write_text("nanoalloy-janus-0000001\n")
    factors = load_factors()
    assert "na_md_particles" not in pick_sets(factors, ["all"], {"task": "ordering", "classes": ["janus"]})
    assert pick_sets(factors, ["na_md_particles"], None) == ["na_md_particles"]
    given = {"extxyz": str(tmp_path / "*.extxyz"), "ids": str(tmp_path / "ids.txt")}
    over = {"pixel_size_A": 0.625, "particles_from": given}
    p = resolve_set(factors, "na_md_particles", overrides=over)
    rng = np.random.default_rng(0)
    d = draw_particle(p, rng)
    assert d["ordering"] == "janus" and d["frame"][2] == "nanoalloy-janus-0000001"
    pos, z, built = alloy_particle(d, rng)
    assert np.allclose(pos, frames[1].positions - frames[1].positions.mean(axis=0))
    assert (z == frames[1].numbers).all() and built["n_co"] == 26 and built["n_atoms"] == 55
    assert len(md_frames(str(tmp_path / "*.extxyz"), "")) == 2  # no ids: every frame
    with pytest.raises(SystemExit, match="matches no file"):
        md_frames(str(tmp_path / "none-*.extxyz"), "")
    (tmp_path / "other.txt").write_text("nanoalloy-janus-9999999\n")
    with pytest.raises(SystemExit, match="holds a sample id"):
        md_frames(str(tmp_path / "*.extxyz"), str(tmp_path / "other.txt"))
    with pytest.raises(SystemExit, match="particles_from must be"):
        resolve_set(factors, "na_md_particles", overrides={"pixel_size_A": 0.625, "particles_from": {"extxyz": ""}})


def test_mixing_tells_a_random_alloy_from_a_segregated_one():
    from studies.independent.chemical_order import mixing
    from studies.independent.generate import alloy_particle

    d = {"motif": "truncated_octahedron", "n_atoms_target": 400, "co_fraction": 0.4}
    random_alloy = [
        mixing(*alloy_particle({**d, "ordering": "disordered"}, np.random.default_rng(s))[:2]) for s in range(4)
    ]
    assert all(0.85 < e < 1.15 and 0.8 < s < 1.2 for e, s in random_alloy)
    enrichment, surface = mixing(*alloy_particle({**d, "ordering": "core-shell"}, np.random.default_rng(0))[:2])
    assert enrichment > 1.5 and surface < 0.1  # Co clustered in the core, none on the surface
