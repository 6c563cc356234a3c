"""Dry-run time and peak memory of Snakemake's DAG for config/campaign-seed.yaml.

Targets (issue 2): at most 30 s and 1 GB on a 2-core machine. For scale, the same workflow with one
job per sample (shard_size 1) is timed in the same run on a smaller campaign.

    python benchmarks/dag_scale.py [--per-sample N]
"""

from __future__ import annotations

import argparse
import copy
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from _common import ROOT, emit, header

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def dry_run(cfg: dict, workdir: Path) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MB of the snakemake process, jobs) of one dry run."""
    cfg_path = workdir / "campaign.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    cmd = [
        "/usr/bin/time",
        "-f",
        "%M",
        SNAKEMAKE,
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(cfg_path),
        "--dry-run",
        "--cores",
        "1",
    ]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"dry run failed:\n{res.stderr[-3000:]}")
    peak_kb = int(res.stderr.strip().splitlines()[-1])
    total = re.search(r"^total\s+(\d+)", res.stdout, re.M)
    return wall, peak_kb / 1024, int(total.group(1)) if total else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--per-sample", type=int, default=10_000, help="samples of the one-job-per-sample comparison")
    args = ap.parse_args()

    seed = yaml.safe_load((ROOT / "config" / "campaign-seed.yaml").read_text())
    seed["potentials"] = {**seed.get("potentials", {}), "directory": str(ROOT / "resources" / "potentials")}
    seed["campaign"]["results"] = "results"
    from hrtemflow.campaign.config import load_config
    from hrtemflow.campaign.plan import make_plan, summary_rows

    n_samples = sum(r["samples"] for r in summary_rows(make_plan(load_config(seed))))

    # the same workflow cut one job per sample, on a smaller campaign (scaled down in every family)
    small = copy.deepcopy(seed)
    frac = args.per_sample / n_samples
    fam = small["families"]
    fam["nanoalloy"]["samples_per_ordering"] = max(1, round(fam["nanoalloy"]["samples_per_ordering"] * frac))
    fam["cnt"]["samples_per_chirality"] = max(1, round(fam["cnt"]["samples_per_chirality"] * frac))
    fam["amorphous"]["samples"] = max(1, round(fam["amorphous"]["samples"] * frac))
    for f in fam.values():
        f["shard_size"] = 1
    n_small = sum(r["samples"] for r in summary_rows(make_plan(load_config(small))))

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "seed"
        work.mkdir()
        rows.append(("seed campaign, cold (plan written)", n_samples, *dry_run(seed, work)))
        rows.append(("seed campaign, warm (plan unchanged)", n_samples, *dry_run(seed, work)))
        work2 = Path(tmp) / "per-sample"
        work2.mkdir()
        rows.append(("one job per sample, cold", n_small, *dry_run(small, work2)))

    lines = [
        header("DAG scale: `snakemake --dry-run` of config/campaign-seed.yaml"),
        "",
        "| case | MD samples | jobs | wall (s) | peak RSS (MB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, n, wall, mb, jobs in rows:
        lines.append(f"| {name} | {n:,} | {jobs:,} | {wall:.1f} | {mb:.0f} |")
    seed_wall = rows[0][2]
    per_job_sharded = seed_wall / max(rows[0][4], 1)
    per_job_single = rows[2][2] / max(rows[2][4], 1)
    ok = rows[0][2] <= 30 and rows[0][3] <= 1024
    lines += [
        "",
        f"Target: at most 30 s and 1 GB for the seed campaign: **{'met' if ok else 'NOT met'}**. "
        f"Per job: {1000 * per_job_sharded:.2f} ms sharded vs {1000 * per_job_single:.2f} ms one-per-sample; "
        f"the seed campaign as one job per sample would be {2 * n_samples:,} jobs.",
        "",
    ]
    emit("\n".join(lines), "dag_scale")


if __name__ == "__main__":
    main()
