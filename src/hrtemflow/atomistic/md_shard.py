"""Run one MD shard: build each sample, run its protocol in LAMMPS, measure labels, write outputs.

One LAMMPS instance serves the whole shard (`clear` between samples); a new one is made only after
a LAMMPS error, since an instance that raised may be in a bad state. Outputs follow
docs/data-products.md: an extxyz with one frame per ok sample and a manifest with every sample.

Failure is data. A sample fails, with its reason, when LAMMPS loses atoms, the energy is NaN, not
negative or beyond MAX_ABS_PE_PER_ATOM, positions are not finite, a particle has come apart (more
than one piece with bonds < 3.5 Å), a tube has broken (more than one piece with bonds < 2.0 Å, or no
longer wrapping around its period), or LAMMPS raises. The shard still finishes.

Fault injection (`spec["fault_injection"]`, or HRTEMFLOW_FAULT_FRACTION) makes a fraction of the
samples fail on purpose, chosen from each sample's seed, by doing something physical to the
simulation that the checks above must catch: "nan" puts one atom exactly on top of its nearest
neighbour (r = 0 in the potential), "lost_atoms" moves one atom 10 µm out of the box (LAMMPS drops
it). The reason then reads "injected fault: <mode>; detected: <what the checks saw>".

The protocols and the checks between runs are in `lammps_run`; tubes are built at the Tersoff
graphene bond (1.4605 Å) so their fixed period is unstrained, then (`structure.bond_A`, default
1.42 Å) scaled after MD to the measured bond, so their images show a real tube's diameter.

Determinism: one spec gives the same extxyz bytes and the same manifest except for wall-clock
times, which live in `manifest["timing"]` and `samples[*]["wall_s"]` (drop them with
`strip_timing`). Single-threaded LAMMPS is bitwise reproducible; with OpenMP threads it is not.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from ..core.atomic import atomic_file, canonical_json
from ..core.errors import HrtemflowError
from ..core.families import FAMILIES, ORDERINGS
from ..core.runtime import versions
from ..core.tubes import TERSOFF_BOND_A
from . import analysis, structures
from .lammps_run import (
    ELEMENTS,
    FAULT_MODES,
    PAIR_STYLE,
    SampleFailed,
    inject_fault,
    new_lammps,
    pair_commands,
    protocol,
    read_back,
    run_protocol,
    setup_sample,
)

TERSOFF_C_BOND_A = TERSOFF_BOND_A  # tubes are built at the potential's own bond: the period is unstrained
REQUIRED = {
    "nanoalloy": (
        ("motifs", "n_atoms", "co_fraction", "vacuum_A", "ordering"),
        (
            "timestep_fs",
            "thermostat",
            "damping_fs",
            "anneal_K",
            "anneal_ps",
            "quench_ps",
            "end_K",
            "hold_ps",
            "minimize",
        ),
    ),
    "cnt": (
        ("chirality", "length_nm", "vacancy_rate", "stone_wales_rate", "vacuum_A"),
        ("timestep_fs", "thermostat", "damping_fs", "temperature_K", "duration_ps", "minimize"),
    ),
    "amorphous": (
        ("density_g_cm3", "box_nm", "min_separation_A"),
        (
            "thermostat",
            "melt_K",
            "melt_ps",
            "melt_timestep_fs",
            "quench_ps",
            "end_K",
            "hold_ps",
            "hold_timestep_fs",
            "damping_fs",
            "minimize",
        ),
    ),
}
MANIFEST_VERSION = 1


# ----------------------------------------------------------------------------------------------
# Spec checks (before LAMMPS starts)
# ----------------------------------------------------------------------------------------------


def check_spec(spec: Any, base: str | os.PathLike = ".") -> None:
    """Raise HrtemflowError naming what is wrong with an MD spec; `base` resolves the potential path."""
    if not isinstance(spec, dict):
        raise HrtemflowError(f"an MD spec must be a JSON object, not {type(spec).__name__}")
    if spec.get("kind") != "md":
        raise HrtemflowError(f"spec kind is {spec.get('kind')!r}, not 'md'; pass a plan/md/<group>/<shard>.json file")
    family = spec.get("family")
    if family not in FAMILIES:
        raise HrtemflowError(f"spec family {family!r} is unknown; use one of {', '.join(FAMILIES)}")
    for key in ("shard", "group", "samples", "structure", "md", "potential"):
        if key not in spec:
            raise HrtemflowError(
                f"spec {spec.get('shard', '?')}: key {key!r} is missing (see docs/data-products.md, 'MD spec')"
            )
    samples = spec["samples"]
    if not isinstance(samples, list) or not samples:
        raise HrtemflowError(f"spec {spec['shard']}: 'samples' is empty; a shard needs at least one sample")
    for s in samples:
        if not (
            isinstance(s, dict)
            and isinstance(s.get("id"), str)
            and isinstance(s.get("seed"), int)
            and isinstance(s.get("index"), int)
        ):
            raise HrtemflowError(
                f"spec {spec['shard']}: every sample needs 'id' (str), 'index' and 'seed' (int); got {s!r}"
            )
    need_structure, need_md = REQUIRED[family]
    for section, need in (("structure", need_structure), ("md", need_md)):
        missing = [k for k in need if k not in spec[section]]
        if missing:
            raise HrtemflowError(
                f"spec {spec['shard']}: {section} lacks {', '.join(missing)} (the plan fills defaults; regenerate the "
                "spec with `hrtemflow plan`)"
            )
    if family == "nanoalloy":
        st = spec["structure"]
        if st["ordering"] not in ORDERINGS:
            raise HrtemflowError(
                f"spec {spec['shard']}: structure.ordering {st['ordering']!r} is not one of {', '.join(ORDERINGS)}"
            )
        for motif in st["motifs"]:
            structures.nearest_motif(motif, 13)  # raises for an unknown motif
    pot = spec["potential"]
    if pot.get("pair_style") != PAIR_STYLE[family] or list(pot.get("elements", [])) != ELEMENTS[family]:
        raise HrtemflowError(
            f"spec {spec['shard']}: potential {pot.get('pair_style')!r} for {pot.get('elements')} does not fit family "
            f"{family} (expected {PAIR_STYLE[family]} for {ELEMENTS[family]})"
        )
    path = Path(base) / str(pot.get("file", ""))
    if not pot.get("file") or not path.is_file():
        raise HrtemflowError(
            f"spec {spec['shard']}: potential file {pot.get('file')!r} does not exist (looked in "
            f"{path.parent.resolve()}); run `hrtemflow potentials` or fix potentials.directory"
        )
    fault_fraction(spec)


def fault_fraction(spec: dict) -> tuple[float, list[str], str]:
    """(fraction, modes, source): HRTEMFLOW_FAULT_FRACTION overrides the spec's fault_injection."""
    fi = spec.get("fault_injection") or {}
    modes = list(fi.get("modes") or FAULT_MODES)
    bad = [m for m in modes if m not in FAULT_MODES]
    if bad:
        raise HrtemflowError(f"fault_injection.modes: {bad} unknown; use {', '.join(FAULT_MODES)}")
    env = os.environ.get("HRTEMFLOW_FAULT_FRACTION")
    if env not in (None, ""):
        try:
            value = float(env)
        except ValueError:
            value = math.nan
        if not 0.0 <= value <= 1.0:
            raise HrtemflowError(f"HRTEMFLOW_FAULT_FRACTION={env!r}: give a number between 0 and 1")
        return value, modes, "env"
    return float(fi.get("fraction", 0.0)), modes, "spec"


def fault_for(seed: int, fraction: float, modes: list[str]) -> str | None:
    """The injected fault of a sample (or None): from its own stream, so it moves nothing else."""
    if fraction <= 0:
        return None
    rng = np.random.default_rng([seed, 0x6661756C74])  # "fault"
    hit = rng.random() < fraction
    mode = modes[int(rng.integers(len(modes)))]
    return mode if hit else None


def place_in_cell(atoms: Atoms, family: str, vacuum: float | None) -> Atoms:
    """The imaging cell of docs/data-products.md: particle centred in a cubic vacuum box; tube axis
    at the centre of its (x, y) cell, wrapped along z; amorphous wrapped into its periodic box."""
    if family == "nanoalloy":
        return structures.vacuum_box(atoms, float(vacuum))
    if family == "cnt":
        axis = atoms.positions[:, :2].mean(axis=0)
        atoms.positions[:, :2] += np.diag(atoms.cell.array)[:2] / 2 - axis
    atoms.wrap()
    return atoms


def integrity(family: str, atoms: Atoms) -> None:
    """Raise SampleFailed if the structure came apart (see the module docstring)."""
    if family == "nanoalloy":
        sizes = analysis.particle_pieces(atoms)
        if len(sizes) > 1:
            big = int((sizes[1:] > 2).sum())
            what = f"fragmented into {big + 1} pieces" if big else "evaporated"
            raise SampleFailed(
                f"{what}: {int(sizes[1:].sum())} of {len(atoms)} atoms left the particle (pieces {sizes[:6].tolist()}, "
                f"bonds < {analysis.CLUSTER_BOND_A} Å)"
            )
    elif family == "cnt":
        ok, why = analysis.tube_intact(atoms)
        if not ok:
            raise SampleFailed(why)


# ----------------------------------------------------------------------------------------------
# One sample, one shard
# ----------------------------------------------------------------------------------------------


def build_sample(spec: dict, sample: dict) -> tuple[Atoms, np.random.Generator]:
    rng = np.random.default_rng(sample["seed"])
    family = spec["family"]
    if family == "cnt":
        atoms = structures.build_cnt(rng, spec["structure"], bond=TERSOFF_C_BOND_A)
    else:
        atoms = structures.build(family, rng, spec["structure"])
    return atoms, rng


def run_sample(
    lmp, spec: dict, sample: dict, commands: list[str], threads: int, fault: str | None
) -> tuple[dict, Atoms | None]:
    """Run one sample on `lmp`; return its manifest record and final atoms (None if it failed).

    A LAMMPS error during the run is raised upward (the caller records it as the reason and
    replaces the instance); one while setting up (our own input rejected) is an HrtemflowError that
    stops the shard, since every sample would fail the same way.
    """
    family = spec["family"]
    record: dict[str, Any] = {
        "id": sample["id"],
        "index": sample["index"],
        "seed": sample["seed"],
        "status": "ok",
        "reason": None,
        "fault": fault,
        "steps": 0,
        "min_iterations": 0,
        "intent": None,
        "labels": {},
    }
    injected = ""
    started = False
    try:
        try:
            atoms, rng = build_sample(spec, sample)
        except HrtemflowError as exc:
            raise SampleFailed(f"build failed: {exc}") from None
        intent = atoms.info.pop("intent", {})
        record["intent"] = intent
        proto = protocol(family, spec["md"], rng)
        started = True
        try:
            setup_sample(lmp, atoms, family, commands, proto, threads)
        except SampleFailed:
            raise
        except Exception as exc:  # LAMMPS refused our input: a bug or a bad file, not data
            raise HrtemflowError(
                f"LAMMPS rejected the setup of sample {sample['id']}: {' '.join(str(exc).split())}"
            ) from exc
        if fault:
            injected = inject_fault(lmp, atoms, fault)
        run_protocol(lmp, proto, len(atoms))
        record["steps"] = sum(st["steps"] for st in proto["stages"])
        record["min_iterations"] = int(lmp.extract_global("ntimestep")) - record["steps"]
        final, pe = read_back(lmp, atoms)
        final = place_in_cell(final, family, spec["structure"].get("vacuum_A"))
        integrity(family, final)
        if family == "cnt" and spec["structure"].get("bond_A"):
            final = structures.scale_tube(final, float(spec["structure"]["bond_A"]) / TERSOFF_C_BOND_A)
        labels = analysis.measure(family, final)
        e_atom = round(pe / len(final), 6)
        labels["energy_per_atom_eV"] = e_atom
        if family == "nanoalloy":
            labels["motif"] = intent.get("motif")
            labels["ordering_intent"] = intent.get("ordering")
        record["labels"] = dict(sorted(labels.items()))
        final.info = {"sample_id": sample["id"], "energy_per_atom_eV": e_atom}
        return record, final
    except SampleFailed as exc:
        record["steps"] = int(lmp.extract_global("ntimestep")) if started else 0
        record["status"] = "failed"
        record["reason"] = f"injected fault: {injected}; detected: {exc}" if injected else str(exc)
        return record, None


def strip_timing(manifest: dict) -> dict:
    """The manifest without its wall-clock fields (what must be identical between two runs)."""
    out = {k: v for k, v in manifest.items() if k != "timing"}
    out["samples"] = [{k: v for k, v in s.items() if k != "wall_s"} for s in manifest["samples"]]
    return out


def write_structures(path: Path, frames: list[Atoms]) -> None:
    """extxyz, one frame per ok sample; an empty (zero-frame) file when none is ok. Written in
    place: the caller hands a temporary of its own (a second temporary inside it would be left as
    a temporary of a temporary by a kill, which nothing recognises or cleans)."""
    from ase.io import write  # noqa: PLC0415

    if frames:
        write(path, frames, format="extxyz")
    else:
        Path(path).write_text("")


def write_outputs(structures_out: Path, manifest_out: Path, frames: list[Atoms], manifest: dict) -> None:
    """Both files are written completely as temporaries first (a full disk fails here, and the
    outputs of an earlier run stay whole); only then are they renamed in, the manifest last and
    after the old one is gone, so a manifest always vouches for the extxyz beside it."""
    with atomic_file(Path(manifest_out)) as tmp_manifest:
        tmp_manifest.write_text(canonical_json(manifest))
        with atomic_file(Path(structures_out), suffix=".extxyz") as tmp:
            write_structures(tmp, frames)
            Path(manifest_out).unlink(missing_ok=True)


def run_shard(
    spec: dict,
    structures_out: Path,
    manifest_out: Path,
    threads: int = 1,
    progress: bool = True,
    base: str | os.PathLike = ".",
) -> dict:
    """Run every sample of an MD spec on one LAMMPS instance; write extxyz + manifest; return the manifest.

    `base` is the directory the spec's relative potential path refers to (the workflow's working
    directory). A failed sample is recorded, not raised; only a bad spec raises (HrtemflowError).
    """
    from tqdm import tqdm  # noqa: PLC0415

    check_spec(spec, base)
    fraction, modes, source = fault_fraction(spec)
    family = spec["family"]
    commands = pair_commands(spec["potential"], Path(base))
    t_start = time.perf_counter()
    lmp = new_lammps()
    lammps_version = int(lmp.version())
    records, frames = [], []
    bar = tqdm(spec["samples"], desc=spec["shard"], unit="sample", file=sys.stderr, disable=not progress, leave=False)
    for sample in bar:
        t0 = time.perf_counter()
        fault = fault_for(sample["seed"], fraction, modes)
        try:
            record, final = run_sample(lmp, spec, sample, commands, threads, fault)
        except HrtemflowError:
            lmp.close()
            raise
        except Exception as exc:  # noqa: BLE001 (LAMMPS raised: record it, start a fresh instance)
            message = " ".join(str(exc).split())
            record = {
                "id": sample["id"],
                "index": sample["index"],
                "seed": sample["seed"],
                "status": "failed",
                "reason": f"injected fault: {fault}; detected: LAMMPS error: {message}"
                if fault
                else f"LAMMPS error: {message}",
                "fault": fault,
                "steps": 0,
                "min_iterations": 0,
                "intent": None,
                "labels": {},
            }
            final = None
            with contextlib.suppress(Exception):  # an instance that raised may not close cleanly
                lmp.close()
            lmp = new_lammps()
        record["wall_s"] = round(time.perf_counter() - t0, 3)
        records.append(record)
        if final is not None:
            frames.append(final)
        bar.set_postfix(failed=sum(r["status"] == "failed" for r in records))
    lmp.close()
    n_failed = sum(r["status"] == "failed" for r in records)
    manifest = {
        "kind": "md-manifest",
        "manifest_version": MANIFEST_VERSION,
        "shard": spec["shard"],
        "family": family,
        "group": spec["group"],
        "spec_sha256": hashlib.sha256(canonical_json(spec).encode()).hexdigest(),
        "versions": {**versions(("hrtemflow", "numpy", "scipy", "ase", "lammps")), "lammps_build": str(lammps_version)},
        "threads": threads,
        "fault_injection": {"fraction": fraction, "modes": modes, "source": source},
        "n_samples": len(records),
        "n_ok": len(records) - n_failed,
        "n_failed": n_failed,
        "samples": records,
        "timing": {
            "total_s": round(time.perf_counter() - t_start, 3),
            "note": "wall-clock fields (this one and samples[*].wall_s) differ between runs",
        },
    }
    write_outputs(Path(structures_out), Path(manifest_out), frames, manifest)
    return manifest
