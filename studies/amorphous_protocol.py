"""Amorphous carbon at a fraction of the cost: is a shorter melt-quench the same material?

    python studies/amorphous_protocol.py                          # 4 densities x 3 samples x 2 protocols
    python studies/amorphous_protocol.py --densities 2.0 3.0 --samples 2 --box 2.0 2.0 1.5

The seed campaign's amorphous carbon follows de Tomas et al. (Carbon 109, 681 (2016), REFERENCE.md):
melt at 8000 K for 5 ps at a 0.05 fs step, quench to 300 K in 1 ps, hold 4 ps at 0.2 fs, minimise:
140,000 steps per sample, three quarters of the campaign's MD core-hours. The melt starts from a
random packing, so it only has to equilibrate a liquid whose structure relaxes in about 0.1 ps at
8000 K; the step only has to keep a thermostatted Tersoff liquid stable. This study runs the
reference protocol and a shorter one through the MD stage's own code (`hrtemflow.atomistic.md_shard`,
one sample per seed, the same random packings for both) at several densities and compares what the
images will see, per density:

- the sp / sp2 / sp3 fractions (coordination within 1.85 Å, as every manifest records them), against
  the reference's band (sp3 about 30-35 % at 3.0 g/cm³, rising with density);
- ring statistics: primitive 5-, 6- and 7-rings per atom;
- the density (NVT: kept by construction) and the energy per atom;
- the CPU seconds per sample, from which the seed campaign's amorphous core-hours follow (the cost
  is linear in atoms x steps: `benchmarks/md_throughput.py` measures the per-atom-step cost).

The boxes are smaller than the seed campaign's (6 x 6 x 1.5 nm) to keep the study to minutes; the
thickness, density range and protocols are the campaign's. Results: studies/out/amorphous_protocol.md
and .json, and a figure studies/out/amorphous_protocol.png.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from common import OUT, ROOT, emit, header
from hrtemflow.atomistic.analysis import C_COORD_A, bond_graph, ring_counts
from hrtemflow.atomistic.md_shard import run_shard
from hrtemflow.campaign.config import load_config
from hrtemflow.campaign.plan import make_plan
from hrtemflow.campaign.specs import md_spec

#: config/campaign-seed.yaml's amorphous protocol (de Tomas et al. 2016)
REFERENCE = {
    "melt_K": 8000,
    "melt_ps": 5.0,
    "melt_timestep_fs": 0.05,
    "quench_ps": 1.0,
    "end_K": 300,
    "hold_ps": 4.0,
    "hold_timestep_fs": 0.2,
    "minimize": True,
}
#: the same quench (its rate sets the structure); a 1 ps melt at 0.1 fs, a 2 ps hold at 0.5 fs
SHORT = {
    "melt_K": 8000,
    "melt_ps": 1.0,
    "melt_timestep_fs": 0.1,
    "quench_ps": 1.0,
    "end_K": 300,
    "hold_ps": 2.0,
    "hold_timestep_fs": 0.5,
    "minimize": True,
}
PROTOCOLS = {"reference": REFERENCE, "short": SHORT}
RING_SIZES = (5, 6, 7)


def steps(md: dict) -> int:
    return (
        round(md["melt_ps"] * 1000 / md["melt_timestep_fs"])
        + round(md["quench_ps"] * 1000 / md["melt_timestep_fs"])
        + round(md["hold_ps"] * 1000 / md["hold_timestep_fs"])
    )


def spec_for(density: float, samples: int, box: list[float], md: dict, seed: int) -> dict:
    """The MD spec of one amorphous shard at one density, as the plan writes it."""
    cfg = load_config(
        {
            "campaign": {"name": "ac-protocol", "seed": seed, "results": "results"},
            "potentials": {"directory": str(ROOT / "resources" / "potentials")},
            "families": {
                "nanoalloy": {"enabled": False},
                "cnt": {"enabled": False},
                "amorphous": {
                    "samples": samples,
                    "shard_size": samples,
                    "structure": {"density_g_cm3": [density, density], "box_nm": box},
                    "md": md,
                },
            },
            "imaging": {"enabled": False},
            "learning": {"enabled": False},
        },
        base=ROOT,
    )
    (shard,) = make_plan(cfg).shards
    spec = md_spec(cfg, shard)
    spec["potential"]["file"] = str(ROOT / spec["potential"]["file"])
    return spec


def rings_per_atom(atoms) -> dict[str, float]:
    i, j, _ = bond_graph(atoms.positions, atoms.cell.array, atoms.pbc, C_COORD_A)
    counts = ring_counts(len(atoms), i, j, RING_SIZES)
    return {f"rings_{k}": counts[k] / len(atoms) for k in RING_SIZES}


def run(density: float, args, protocol: str, tmp: Path) -> list[dict]:
    from ase.io import read

    spec = spec_for(density, args.samples, args.box, PROTOCOLS[protocol], args.seed)
    out = tmp / f"{protocol}-{density:.2f}"
    t0 = time.process_time()
    manifest = run_shard(spec, out.with_suffix(".extxyz"), out.with_suffix(".json"), progress=False)
    cpu = time.process_time() - t0
    frames = {f.info["sample_id"]: f for f in read(out.with_suffix(".extxyz"), ":")} if manifest["n_ok"] else {}
    rows = []
    for s in manifest["samples"]:
        row = {
            "protocol": protocol,
            "density": density,
            "id": s["id"],
            "status": s["status"],
            "cpu_s": cpu / len(manifest["samples"]),
        }
        if s["status"] == "ok":
            lab = s["labels"]
            row.update(
                {
                    k: lab[k]
                    for k in (
                        "density_g_cm3",
                        "sp_fraction",
                        "sp2_fraction",
                        "sp3_fraction",
                        "mean_coordination",
                        "energy_per_atom_eV",
                    )
                }
            )
            row["n_atoms"] = len(frames[s["id"]])
            row.update(rings_per_atom(frames[s["id"]]))
        rows.append(row)
    return rows


def summarise(rows: list[dict]) -> dict:
    keys = (
        "sp_fraction",
        "sp2_fraction",
        "sp3_fraction",
        "mean_coordination",
        "energy_per_atom_eV",
        *(f"rings_{k}" for k in RING_SIZES),
    )
    out: dict = {}
    for p in PROTOCOLS:
        for d in sorted({r["density"] for r in rows}):
            ok = [r for r in rows if r["protocol"] == p and r["density"] == d and r["status"] == "ok"]
            all_ = [r for r in rows if r["protocol"] == p and r["density"] == d]
            entry = {"n_ok": len(ok), "n": len(all_), "cpu_s_per_sample": float(np.mean([r["cpu_s"] for r in all_]))}
            for k in keys:
                v = np.array([r[k] for r in ok])
                entry[k] = [float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0] if len(v) else None
            out.setdefault(p, {})[f"{d:.2f}"] = entry
    return out


def figure(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained")
    for p, style in zip(PROTOCOLS, ("o-", "s--")):
        ds = sorted(summary[p], key=float)
        x = [float(d) for d in ds]
        for ax, key, label in ((axes[0], "sp3_fraction", "sp3 fraction"), (axes[1], "rings_6", "6-rings per atom")):
            m = [summary[p][d][key][0] for d in ds]
            e = [summary[p][d][key][1] for d in ds]
            ax.errorbar(x, m, yerr=e, fmt=style, capsize=3, label=f"{p} ({steps(PROTOCOLS[p]):,} steps)")
            ax.set_xlabel("density (g/cm³)")
            ax.set_ylabel(label)
    axes[0].axhspan(0.30, 0.35, xmin=0.9, color="0.85", zorder=0, label="reference at 3.0 g/cm³ (30-35 %)")
    axes[0].legend(fontsize=8)
    fig.suptitle("amorphous carbon (Tersoff): reference and short melt-quench")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--densities", type=float, nargs="+", default=[1.5, 2.0, 2.5, 3.0])
    ap.add_argument("--samples", type=int, default=3, help="samples per density and protocol (the same seeds for both)")
    ap.add_argument(
        "--box", type=float, nargs=3, default=[2.0, 2.0, 1.5], help="box in nm (the seed campaign: 6 6 1.5)"
    )
    ap.add_argument("--seed", type=int, default=20261205)
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for d in args.densities:
            for p in PROTOCOLS:
                rows += run(d, args, p, Path(tmp))
                print(f"  {p} at {d} g/cm3: done ({time.perf_counter() - t0:.0f} s)", flush=True)
    summary = summarise(rows)
    cpu = {p: float(np.mean([r["cpu_s"] for r in rows if r["protocol"] == p])) for p in PROTOCOLS}
    OUT.mkdir(exist_ok=True)
    (OUT / "amorphous_protocol.json").write_text(
        json.dumps(
            {
                "args": vars(args),
                "protocols": PROTOCOLS,
                "steps": {p: steps(m) for p, m in PROTOCOLS.items()},
                "summary": summary,
                "samples": rows,
            },
            indent=1,
        )
    )
    figure(summary, OUT / "amorphous_protocol.png")
    lines = [
        header("Amorphous carbon: the reference melt-quench against a short one (studies/amorphous_protocol.py)"),
        "",
        f"Boxes {args.box[0]:g} x {args.box[1]:g} x {args.box[2]:g} nm, {args.samples} samples per density "
        "and protocol "
        "(the same random packings for both), Tersoff, single core. Mean ± standard deviation over samples.",
        "",
        "| protocol | steps | density (g/cm³) | ok | sp3 | sp2 | sp | 5-rings/atom | 6-rings/atom | 7-rings/atom "
        "| E (eV/atom) | CPU s/sample |",
        "|---|---:|---:|---:|---|---|---|---|---|---|---|---:|",
    ]

    def pm(v, digits=3):
        return "—" if v is None else f"{v[0]:.{digits}f} ± {v[1]:.{digits}f}"

    for p in PROTOCOLS:
        for d, e in summary[p].items():
            lines.append(
                f"| {p} | {steps(PROTOCOLS[p]):,} | {d} | {e['n_ok']}/{e['n']} | {pm(e['sp3_fraction'])} | "
                f"{pm(e['sp2_fraction'])} | {pm(e['sp_fraction'])} | {pm(e['rings_5'])} | {pm(e['rings_6'])} | "
                f"{pm(e['rings_7'])} | {pm(e['energy_per_atom_eV'])} | {e['cpu_s_per_sample']:.1f} |"
            )
    lines += [
        "",
        f"CPU per sample: reference {cpu['reference']:.1f} s, short {cpu['short']:.1f} s: "
        f"**{cpu['reference'] / cpu['short']:.2f}x** fewer core-seconds "
        f"(steps {steps(REFERENCE) / steps(SHORT):.2f}x).",
    ]
    emit("\n".join(lines) + "\n", "amorphous_protocol")


if __name__ == "__main__":
    main()
