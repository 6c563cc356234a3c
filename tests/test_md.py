"""MD shards with real LAMMPS on tiny systems: contract, determinism, failures as data, the CLI."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from ase.io import read

from hrtemflow.atomistic import lammps_run
from hrtemflow.atomistic import md_shard as md
from hrtemflow.campaign.config import load_config
from hrtemflow.campaign.plan import make_plan
from hrtemflow.campaign.specs import md_spec
from hrtemflow.cli import main
from hrtemflow.core.errors import HrtemflowError

REPO = Path(__file__).resolve().parents[1]

# tiny protocols: a few hundred steps, ~100-atom systems
CFG = {
    "campaign": {"seed": 11},
    "families": {
        "nanoalloy": {
            "orderings": ["core-shell", "janus", "disordered"],
            "samples_per_ordering": 2,
            "shard_size": 2,
            "structure": {"n_atoms": [80, 120], "co_fraction": [0.25, 0.4]},
            "md": {"timestep_fs": 5.0, "anneal_K": [500, 600], "anneal_ps": 0.5, "quench_ps": 0.5, "hold_ps": 0.25},
        },
        "cnt": {
            "chiralities": [[8, 4], [5, 5]],
            "samples_per_chirality": 2,
            "shard_size": 2,
            "structure": {"length_nm": 1.5, "vacancy_rate": 0.01, "stone_wales_rate": 0.01},
            "md": {"timestep_fs": 1.0, "duration_ps": 0.2},
        },
        "amorphous": {
            "samples": 2,
            "shard_size": 2,
            "structure": {"density_g_cm3": [2.0, 2.4], "box_nm": [1.0, 1.0, 0.8]},
            "md": {
                "melt_K": 6000,
                "melt_ps": 0.1,
                "melt_timestep_fs": 0.2,
                "quench_ps": 0.05,
                "hold_ps": 0.05,
                "hold_timestep_fs": 0.5,
            },
        },
    },
    "imaging": {"enabled": False},
    "learning": {"enabled": False},
}

LABELS = {
    "nanoalloy": {
        "composition",
        "co_fraction",
        "motif",
        "ordering_intent",
        "ordering",
        "com_offset_A",
        "surface_ag_fraction",
        "core_co_fraction",
        "order_measure",
        "radius_A",
    },
    "cnt": {"n", "m", "chirality", "diameter_A", "chiral_angle_deg", "length_A", "vacancies", "stone_wales"},
    "amorphous": {"density_g_cm3", "sp_fraction", "sp2_fraction", "sp3_fraction", "thickness_A"},
}


@pytest.fixture(scope="module")
def specs() -> dict[str, dict]:
    cfg = load_config(copy.deepcopy(CFG), base=REPO)
    plan = make_plan(cfg)
    return {s.name: md_spec(cfg, s) for s in plan.shards}


def run(spec: dict, out: Path, **kw) -> tuple[dict, list]:
    out.mkdir(parents=True, exist_ok=True)
    xyz, man = out / f"{spec['shard']}.extxyz", out / f"{spec['shard']}.manifest.json"
    manifest = md.run_shard(spec, xyz, man, progress=False, base=REPO, **kw)
    assert json.loads(man.read_text()) == manifest
    return manifest, read(xyz, ":", format="extxyz")


def check_contract(spec: dict, manifest: dict, frames: list) -> None:
    family = spec["family"]
    assert manifest["kind"] == "md-manifest"
    assert (manifest["shard"], manifest["family"], manifest["group"]) == (spec["shard"], family, spec["group"])
    assert {"lammps", "hrtemflow"} <= set(manifest["versions"])
    assert [s["id"] for s in manifest["samples"]] == [s["id"] for s in spec["samples"]]
    ok = [s for s in manifest["samples"] if s["status"] == "ok"]
    assert [f.info["sample_id"] for f in frames] == [s["id"] for s in ok]
    for s, atoms in zip(ok, frames):
        assert (
            s["reason"] is None and s["steps"] + s["min_iterations"] > 0 and s["wall_s"] >= 0
        )  # MD, a minimisation or both
        lab = s["labels"]
        assert LABELS[family] | {"n_atoms", "energy_per_atom_eV"} <= set(lab)
        assert lab["n_atoms"] == len(atoms)
        assert atoms.info["energy_per_atom_eV"] == lab["energy_per_atom_eV"] < 0
        cell = atoms.cell.array
        assert np.allclose(cell, np.diag(np.diag(cell)))
        frac = atoms.positions / np.diag(cell)
        assert frac.min() >= 0 and frac.max() < 1  # inside the cell
        if family == "nanoalloy":
            assert not atoms.pbc.any() and np.allclose(np.diag(cell), cell[0, 0])
            assert lab["composition"]["Ag"] + lab["composition"]["Co"] == len(atoms)
            # a short, mild anneal keeps the built ordering: the measured class must find it
            assert lab["ordering"] == lab["ordering_intent"] == spec["structure"]["ordering"], lab
            assert -4.5 < lab["energy_per_atom_eV"] < -2.5
        elif family == "cnt":
            assert atoms.pbc.tolist() == [False, False, True]
            assert [lab["n"], lab["m"]] == spec["structure"]["chirality"]
            assert (lab["vacancies"], lab["stone_wales"]) == (s["intent"]["vacancies"], s["intent"]["stone_wales"])
            assert -7.5 < lab["energy_per_atom_eV"] < -6.5
        else:
            assert atoms.pbc.all()
            assert abs(lab["density_g_cm3"] - s["intent"]["density_g_cm3"]) < 0.02
            fractions = [lab["sp_fraction"], lab["sp2_fraction"], lab["sp3_fraction"]]
            assert all(0 <= f <= 1 for f in fractions) and sum(fractions) <= 1 + 1e-3
            assert lab["sp2_fraction"] > 0.3 and lab["thickness_A"] == spec["structure"]["box_nm"][2] * 10


@pytest.mark.parametrize("shard", ["nanoalloy-core-shell-s00000", "cnt-8-4-s00000", "amorphous-s00000"])
def test_shard_runs_conforms_and_repeats_bytewise(specs, shard, tmp_path):
    spec = specs[shard]
    m1, frames = run(spec, tmp_path / "a")
    assert m1["n_ok"] == len(spec["samples"]) == 2, [s["reason"] for s in m1["samples"]]
    check_contract(spec, m1, frames)
    m2, _ = run(spec, tmp_path / "b")
    assert (tmp_path / "a" / f"{shard}.extxyz").read_bytes() == (tmp_path / "b" / f"{shard}.extxyz").read_bytes()
    assert md.strip_timing(m1) == md.strip_timing(m2)
    assert "timing" in m1 and "timing" not in md.strip_timing(m1)


def test_other_groups_run(specs, tmp_path):
    """Janus and disordered particles and an armchair tube, one sample each."""
    for shard in ["nanoalloy-janus-s00000", "nanoalloy-disordered-s00000", "cnt-5-5-s00000"]:
        spec = copy.deepcopy(specs[shard])
        spec["samples"] = spec["samples"][:1]
        manifest, frames = run(spec, tmp_path)
        assert manifest["n_ok"] == 1, manifest["samples"][0]["reason"]
        check_contract(spec, manifest, frames)


def _mean_bond_A(atoms) -> float:
    from ase.neighborlist import neighbor_list  # noqa: PLC0415

    return float(neighbor_list("d", atoms, 1.75).mean())


def test_tube_is_imaged_at_the_measured_bond(specs, tmp_path):
    """Tersoff holds graphene at 1.4605 Å; the frame handed to imaging has the measured 1.42 Å bond, so a
    real tube's diameter, unless bond_A is null, which keeps the MD's geometry. The same sample both ways:
    one MD, scaled by 1.42 / 1.4605 about and along its axis."""
    from hrtemflow.core.tubes import TERSOFF_BOND_A  # noqa: PLC0415

    spec = copy.deepcopy(specs["cnt-8-4-s00000"])
    assert spec["structure"]["bond_A"] == 1.42  # the default enters every tube's spec
    spec["samples"] = spec["samples"][:1]
    spec["structure"]["vacancy_rate"] = spec["structure"]["stone_wales_rate"] = 0.0
    raw = copy.deepcopy(spec)
    raw["structure"].pop("bond_A")
    scaled_manifest, (scaled,) = run(spec, tmp_path / "scaled")
    raw_manifest, (unscaled,) = run(raw, tmp_path / "raw")
    assert _mean_bond_A(scaled) == pytest.approx(1.42, rel=0.008)  # the two bonds are 2.8 % apart
    assert _mean_bond_A(unscaled) == pytest.approx(TERSOFF_BOND_A, rel=0.008)
    ratio = 1.42 / TERSOFF_BOND_A
    a, b = scaled_manifest["samples"][0]["labels"], raw_manifest["samples"][0]["labels"]
    assert [a["n"], a["m"]] == [b["n"], b["m"]] == [8, 4]  # the label reads the lattice, not the bond
    assert a["diameter_A"] == pytest.approx(b["diameter_A"] * ratio, rel=1e-3)
    assert scaled.cell.array[2, 2] == pytest.approx(unscaled.cell.array[2, 2] * ratio, rel=1e-9)
    assert len(scaled) == len(unscaled)


def test_null_bond_leaves_the_key_out_of_the_spec(tmp_path):
    cfg = copy.deepcopy(CFG)
    cfg["families"]["cnt"]["structure"]["bond_A"] = None
    cfg = load_config(cfg, base=REPO)
    shard = next(s for s in make_plan(cfg).shards if s.family == "cnt")
    assert "bond_A" not in md_spec(cfg, shard)["structure"]


@pytest.mark.parametrize("shard", ["nanoalloy-core-shell-s00000", "cnt-5-5-s00000", "amorphous-s00000"])
@pytest.mark.parametrize("mode", ["nan", "lost_atoms"])
def test_injected_faults_are_detected(specs, shard, mode, tmp_path):
    spec = copy.deepcopy(specs[shard])
    spec["samples"] = spec["samples"][:1]
    spec["fault_injection"] = {"fraction": 1.0, "modes": [mode]}
    manifest, frames = run(spec, tmp_path)
    assert frames == [] and manifest["n_failed"] == 1
    (s,) = manifest["samples"]
    assert s["status"] == "failed" and s["fault"] == mode and s["labels"] == {}
    assert s["reason"].startswith(f"injected fault: {mode}")
    detected = s["reason"].split("detected: ", 1)[1]
    assert detected.startswith(
        {"nan": ("NaN", "exploding energy", "LAMMPS error"), "lost_atoms": ("lost atoms",)}[mode]
    ), s["reason"]


def test_fault_fraction_from_env_and_cli_exit_0(specs, tmp_path, monkeypatch, capsys):
    spec = copy.deepcopy(specs["cnt-8-4-s00000"])
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    monkeypatch.setenv("HRTEMFLOW_FAULT_FRACTION", "1.0")
    xyz, man = tmp_path / "out.extxyz", tmp_path / "out.manifest.json"
    rc = main(["md", str(path), "--structures", str(xyz), "--manifest", str(man), "--no-progress", "--base", str(REPO)])
    assert rc == 0
    manifest = json.loads(man.read_text())
    assert manifest["fault_injection"]["source"] == "env" and manifest["n_failed"] == 2
    assert all(s["reason"].startswith("injected fault: ") for s in manifest["samples"])
    assert xyz.read_text() == "" and read(xyz, ":", format="extxyz") == []
    assert "0 ok, 2 failed" in capsys.readouterr().out


def test_fault_choice_is_per_sample_and_stable():
    seeds = range(2000)
    hits = [md.fault_for(s, 0.25, ["nan", "lost_atoms"]) for s in seeds]
    assert hits == [md.fault_for(s, 0.25, ["nan", "lost_atoms"]) for s in seeds]
    assert 0.2 < sum(h is not None for h in hits) / len(hits) < 0.3
    assert {h for h in hits if h} == {"nan", "lost_atoms"}
    assert all(md.fault_for(s, 0.0, ["nan"]) is None for s in seeds)


def _no_lammps(*_a, **_k):
    raise AssertionError("LAMMPS must not start for a bad spec")


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda s: s["potential"].update(file="resources/potentials/missing.eam.fs"), "potential file"),
        (lambda s: s.update(samples=[]), "samples"),
        (lambda s: s.update(kind="images"), "kind"),
        (lambda s: s.update(family="graphene"), "family"),
        (lambda s: s["md"].pop("anneal_K"), "anneal_K"),
    ],
)
def test_bad_spec_fails_before_lammps(specs, tmp_path, monkeypatch, capsys, breakage, message):
    monkeypatch.setattr(md, "new_lammps", _no_lammps)
    monkeypatch.setattr(lammps_run, "load_lammps", _no_lammps)
    spec = copy.deepcopy(specs["nanoalloy-core-shell-s00000"])
    breakage(spec)
    with pytest.raises(HrtemflowError, match=message):
        md.run_shard(spec, tmp_path / "x.extxyz", tmp_path / "x.json", progress=False, base=REPO)
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    rc = main(
        [
            "md",
            str(path),
            "--structures",
            str(tmp_path / "x.extxyz"),
            "--manifest",
            str(tmp_path / "x.json"),
            "--base",
            str(REPO),
        ]
    )
    assert rc == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x.extxyz").exists() and not (tmp_path / "x.json").exists()


def test_corrupt_potential_stops_the_shard(specs, tmp_path):
    """LAMMPS refusing our own input is an error to fix, not a failed sample."""
    bad = tmp_path / "C.tersoff"
    bad.write_text("C C C not numbers\n")
    spec = copy.deepcopy(specs["cnt-5-5-s00000"])
    spec["potential"]["file"] = str(bad)
    with pytest.raises(HrtemflowError, match="LAMMPS rejected the setup"):
        md.run_shard(spec, tmp_path / "x.extxyz", tmp_path / "x.json", progress=False, base=REPO)


@pytest.mark.parametrize("shard", ["nanoalloy-janus-s00000", "cnt-8-4-s00000"])
def test_langevin_and_minimize(specs, shard, tmp_path):
    spec = copy.deepcopy(specs[shard])
    spec["samples"] = spec["samples"][:1]
    spec["md"].update(thermostat="langevin", minimize=True)
    manifest, frames = run(spec, tmp_path)
    assert manifest["n_ok"] == 1, manifest["samples"][0]["reason"]
    assert manifest["samples"][0]["min_iterations"] > 0
    check_contract(spec, manifest, frames)


def test_unannealed_share_skips_the_anneal_of_its_share_only(specs, tmp_path):
    """`unannealed_share` is a last draw of the sample's generator: unset, the protocol is exactly as before;
    set, the drawn share runs no stage and is minimised, with every other value as before; in LAMMPS such a
    particle is minimised and written, with no MD step."""
    spec = copy.deepcopy(specs["nanoalloy-janus-s00000"])
    assert "unannealed_share" not in spec["md"]  # unset: not in the spec, whose hash stays

    def proto(share, seed):
        md_cfg = spec["md"] if share is None else {**spec["md"], "unannealed_share": share}
        return lammps_run.protocol("nanoalloy", md_cfg, np.random.default_rng(seed))

    for seed in range(5):
        plain, none, every = proto(None, seed), proto(0.0, seed), proto(1.0, seed)
        assert none == plain and plain["stages"] and not plain["minimize"]
        assert every["stages"] == [] and every["minimize"]
        assert {k: v for k, v in every.items() if k not in ("stages", "minimize")} == {
            k: v for k, v in plain.items() if k not in ("stages", "minimize")
        }
    drawn = [not proto(0.3, seed)["stages"] for seed in range(400)]
    assert 0.22 < np.mean(drawn) < 0.38
    spec["samples"] = spec["samples"][:1]
    spec["md"]["unannealed_share"] = 1.0
    manifest, frames = run(spec, tmp_path)
    record = manifest["samples"][0]
    assert manifest["n_ok"] == 1 and record["steps"] == 0 and record["min_iterations"] > 0, record
    check_contract(spec, manifest, frames)


def test_openmp_threads(specs, tmp_path):
    spec = copy.deepcopy(specs["nanoalloy-janus-s00000"])
    spec["samples"] = spec["samples"][:1]
    manifest, frames = run(spec, tmp_path, threads=2)
    assert manifest["n_ok"] == 1 and manifest["threads"] == 2
    check_contract(spec, manifest, frames)


def test_md_figure(specs, tmp_path):
    spec = copy.deepcopy(specs["cnt-8-4-s00000"])
    run(spec, tmp_path)
    failing = copy.deepcopy(specs["cnt-5-5-s00000"])
    failing["samples"] = failing["samples"][:1]
    failing["fault_injection"] = {"fraction": 1.0, "modes": ["lost_atoms"]}
    run(failing, tmp_path)
    png = tmp_path / "md_cnt.png"
    rc = main(
        [
            "md-figure",
            "--family",
            "cnt",
            "--structures",
            *map(str, sorted(tmp_path.glob("*.extxyz"))),
            "--manifests",
            *map(str, sorted(tmp_path.glob("*.manifest.json"))),
            "--out",
            str(png),
        ]
    )
    assert rc == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
