"""Driving LAMMPS for one sample: the protocol's stages, the box, the potential, the checks between runs.

Protocols (`protocol`): nanoalloy anneal at T ~ U(anneal_K), linear ramp to end_K, hold, in a
fixed-wall box (`boundary f f f`, 10 Å beyond the stored cell); cnt one NVT run, periodic along z
(`f f p`); amorphous melt, quench (melt timestep), hold (hold timestep), fully periodic. Nose-Hoover
is `fix nvt`, Langevin `fix langevin ... zero yes` + `fix nve`. Each stage runs in chunks of at most
CHUNK_STEPS (`run N start/stop`, so ramps stay linear) with the checks between chunks (`SampleFailed`
when atoms are lost, the energy is NaN, not negative or beyond MAX_ABS_PE_PER_ATOM, or positions are
not finite). The final snapshot keeps its thermal fluctuations unless `minimize` is set (CG to MINIMIZE);
a nanoalloy sample drawn into `unannealed_share` runs no stage and is only minimised.
Fault injection does something physical to the simulation that these checks must catch
(`inject_fault`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import atomic_masses, atomic_numbers

from ..core.errors import HrtemflowError
from ..core.runtime import load_lammps
from . import structures
from .potentials import lammps_pair_commands

MAX_ABS_PE_PER_ATOM = 50.0  # eV; TB-SMA Ag/Co is −3…−4.4, Tersoff C about −7.4
BOX_MARGIN_A = 10.0  # free space between the stored cell and a fixed LAMMPS wall
#: longest single `run`; the state is checked between runs so a blown-up sample stops early
CHUNK_STEPS = 5000
#: `minimize` arguments: energy tolerance, force tolerance (eV/Å), max iterations, max force calls
MINIMIZE = "1.0e-10 1.0e-3 2000 20000"
PAIR_STYLE = {"nanoalloy": "eam/fs", "cnt": "tersoff", "amorphous": "tersoff"}
ELEMENTS = {"nanoalloy": ["Ag", "Co"], "cnt": ["C"], "amorphous": ["C"]}
BOUNDARY = {"nanoalloy": "f f f", "cnt": "f f p", "amorphous": "p p p"}
FAULT_MODES = ("nan", "lost_atoms")


class SampleFailed(Exception):
    """A check found the sample unusable; the message is the manifest's reason."""


def _steps(ps: float, dt_fs: float) -> int:
    return int(round(float(ps) * 1000.0 / float(dt_fs)))


def protocol(family: str, md: dict, rng: np.random.Generator) -> dict:
    """Stages (name, steps, dt_fs, T start, T stop), the velocity temperature, damping, thermostat.

    nanoalloy: anneal at T ~ U(anneal_K), linear ramp to end_K over quench_ps, hold; amorphous:
    melt, quench (melt timestep, still hot), hold (hold timestep); cnt: one run at temperature_K.
    With `unannealed_share`, that share of the samples (a last draw of the sample's own generator) runs no
    stage and is only minimised: a random alloy stays random where the anneal would start demixing it.
    """
    if family == "nanoalloy":
        t_anneal = structures.draw_uniform(rng, md["anneal_K"])
        dt = md["timestep_fs"]
        stages = [
            ("anneal", _steps(md["anneal_ps"], dt), dt, t_anneal, t_anneal),
            ("quench", _steps(md["quench_ps"], dt), dt, t_anneal, md["end_K"]),
            ("hold", _steps(md["hold_ps"], dt), dt, md["end_K"], md["end_K"]),
        ]
        t0 = t_anneal
    elif family == "cnt":
        dt = md["timestep_fs"]
        stages = [("thermalise", _steps(md["duration_ps"], dt), dt, md["temperature_K"], md["temperature_K"])]
        t0 = md["temperature_K"]
    else:
        hot, cold = md["melt_timestep_fs"], md["hold_timestep_fs"]
        stages = [
            ("melt", _steps(md["melt_ps"], hot), hot, md["melt_K"], md["melt_K"]),
            ("quench", _steps(md["quench_ps"], hot), hot, md["melt_K"], md["end_K"]),
            ("hold", _steps(md["hold_ps"], cold), cold, md["end_K"], md["end_K"]),
        ]
        t0 = md["melt_K"]
    proto = {
        "stages": [
            dict(zip(("name", "steps", "dt_fs", "t_start", "t_stop"), (n, s, float(d), float(a), float(b))))
            for n, s, d, a, b in stages
            if s > 0
        ],
        "t_velocity": float(t0),
        "damping_fs": float(md["damping_fs"]),
        "thermostat": md["thermostat"],
        "minimize": bool(md["minimize"]),
        "velocity_seed": int(rng.integers(1, 900_000_000)),
        "langevin_seed": int(rng.integers(1, 900_000_000)),
    }
    share = md.get("unannealed_share")  # drawn last and only when set: other samples and specs stay as they were
    if share is not None and rng.random() < float(share):
        proto["stages"], proto["minimize"] = [], True  # as built, minimised at 0 K: the chemical order stays
    return proto


def new_lammps():
    """A quiet LAMMPS instance (no screen, no log); OpenMP is switched on per sample."""
    lammps = load_lammps()
    return lammps.lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])


def pair_commands(pot: dict, base: Path) -> list[str]:
    """The pair_style and pair_coeff commands of a spec's potential (its file relative to `base`)."""
    return lammps_pair_commands(pot["pair_style"], (base / pot["file"]).resolve(), pot["elements"])


def lammps_box(atoms: Atoms, family: str) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) of the LAMMPS box: the cell, widened by BOX_MARGIN_A along fixed (non-periodic) walls."""
    lengths = np.diag(atoms.cell.array).copy()
    lo, hi = np.zeros(3), lengths.copy()
    for k, b in enumerate(BOUNDARY[family].split()):
        if b != "p":
            lo[k] -= BOX_MARGIN_A
            hi[k] += BOX_MARGIN_A
    return lo, hi


def setup_sample(lmp, atoms: Atoms, family: str, commands: list[str], proto: dict, threads: int) -> None:
    """Define box, atoms, potential and velocities for one sample (after `clear`)."""
    elements = ELEMENTS[family]
    lmp.command("clear")
    if threads > 1:
        lmp.command(f"package omp {threads}")
        lmp.command("suffix omp")
    lo, hi = lammps_box(atoms, family)
    lmp.commands_list(
        [
            "units metal",
            "atom_style atomic",
            f"boundary {BOUNDARY[family]}",
            "atom_modify map array",
            "region box block " + " ".join(f"{a!r} {b!r}" for a, b in zip(lo.tolist(), hi.tolist())) + " units box",
            f"create_box {len(elements)} box",
            *[f"mass {t + 1} {float(atomic_masses[atomic_numbers[e]])!r}" for t, e in enumerate(elements)],
        ]
    )
    types = [elements.index(s) + 1 for s in atoms.get_chemical_symbols()]
    pos = atoms.positions.copy()
    for k, b in enumerate(BOUNDARY[family].split()):
        if b == "p":
            pos[:, k] = np.mod(pos[:, k], atoms.cell[k, k])
    created = lmp.create_atoms(len(atoms), None, types, pos.ravel().tolist())
    if created != len(atoms):
        raise SampleFailed(f"lost atoms: only {created} of {len(atoms)} atoms fit in the LAMMPS box at the start")
    rot = "yes" if family == "nanoalloy" else "no"
    lmp.commands_list(
        [
            *commands,
            "neighbor 1.0 bin",
            "neigh_modify every 1 delay 0 check yes",
            "thermo 0",
            "thermo_modify lost warn norm no flush no",
            f"velocity all create {proto['t_velocity']!r} {proto['velocity_seed']} mom yes rot {rot} dist gaussian "
            "loop geom",
        ]
    )


def inject_fault(lmp, atoms: Atoms, mode: str) -> str:
    """Do the fault to the simulation; return what was done (for the reason text)."""
    pos = atoms.positions
    centre = pos.mean(axis=0)
    if mode == "nan":
        a = int(np.argmax(np.linalg.norm(pos - centre, axis=1)))
        others = np.delete(np.arange(len(pos)), a)
        b = int(others[np.argmin(np.linalg.norm(pos[others] - pos[a], axis=1))])
        nlocal = int(lmp.extract_global("nlocal"))
        row = np.flatnonzero(lmp.numpy.extract_atom("id")[:nlocal] == b + 1)[0]
        x, y, z = (repr(float(v)) for v in lmp.numpy.extract_atom("x")[row])
        lmp.command(f"set atom {a + 1} x {x} y {y} z {z}")
        return f"nan: atom {a + 1} placed exactly on atom {b + 1}"
    if mode == "lost_atoms":
        a = int(np.argmax(np.linalg.norm(pos - centre, axis=1)))
        lmp.command(f"set atom {a + 1} x 1.0e5")
        return f"lost_atoms: atom {a + 1} moved to x = 1e5 Å, outside the box"
    raise HrtemflowError(f"unknown fault mode {mode!r}")


def _check_state(lmp, n_expected: int, where: str) -> None:
    natoms = int(lmp.get_natoms())
    if natoms != n_expected:
        raise SampleFailed(f"lost atoms: {n_expected - natoms} of {n_expected} left the box during {where}")
    pe = float(lmp.get_thermo("pe"))
    if not math.isfinite(pe):
        raise SampleFailed(f"NaN energy: during {where}")
    x = lmp.numpy.extract_atom("x")[: int(lmp.extract_global("nlocal"))]
    if not np.isfinite(x).all():
        raise SampleFailed(f"NaN positions: during {where} (the energy reads {pe:.6g} eV)")
    per_atom = pe / natoms
    if per_atom >= 0 or abs(per_atom) > MAX_ABS_PE_PER_ATOM:
        raise SampleFailed(f"exploding energy: {per_atom:.4g} eV/atom during {where}")


def run_protocol(lmp, proto: dict, n_atoms: int) -> None:
    """The stages, each a thermostatted run, then an optional minimisation; checks after each."""
    damp = proto["damping_fs"] / 1000.0
    for k, st in enumerate(proto["stages"]):
        lmp.command(f"timestep {st['dt_fs'] / 1000.0!r}")
        if proto["thermostat"] == "nose-hoover":
            lmp.command(f"fix thermostat all nvt temp {st['t_start']!r} {st['t_stop']!r} {damp!r}")
        else:
            lmp.command("fix integrate all nve")
            lmp.command(
                f"fix thermostat all langevin {st['t_start']!r} {st['t_stop']!r} {damp!r} {proto['langevin_seed'] + k} "
                "zero yes"
            )
        first = int(lmp.extract_global("ntimestep"))
        last = first + st["steps"]
        for begin in range(first, last, CHUNK_STEPS):  # check between chunks: a blown-up sample stops early
            steps = min(CHUNK_STEPS, last - begin)
            # start/stop keep the thermostat's temperature ramp linear over the whole stage
            lmp.command(f"run {steps} start {first} stop {last} pre {'yes' if begin == first else 'no'} post no")
            _check_state(lmp, n_atoms, st["name"])
        lmp.command("unfix thermostat")
        if proto["thermostat"] != "nose-hoover":
            lmp.command("unfix integrate")
    if proto["minimize"]:
        lmp.command("min_style cg")
        lmp.command(f"minimize {MINIMIZE}")
        _check_state(lmp, n_atoms, "minimisation")


def read_back(lmp, template: Atoms) -> tuple[Atoms, float]:
    """Final positions (ordered by atom id) as Atoms in the output cell, and the potential energy."""
    nlocal = int(lmp.extract_global("nlocal"))
    ids = np.asarray(lmp.numpy.extract_atom("id")[:nlocal]).astype(np.int64)
    x = np.array(lmp.numpy.extract_atom("x")[:nlocal], dtype=float)
    pos = np.empty_like(x)
    pos[ids - 1] = x
    atoms = Atoms(
        template.get_chemical_symbols(), positions=pos, cell=template.cell.array.copy(), pbc=template.pbc.copy()
    )
    return atoms, float(lmp.get_thermo("pe"))
