"""The cost estimate against what campaigns measured: per stage, estimated and measured CPU minutes.

    python benchmarks/estimate_accuracy.py                                  # runs the demo in a temporary folder
    python benchmarks/estimate_accuracy.py results-bench-denoise-compact    # results folders that ran

For each campaign: the plan's estimate of every job that ran (`hrtemflow.campaign.estimate`, the
coefficients of src/hrtemflow/campaign/costs.yaml) beside its CPU time (`hrtemflow.report.cost`: the
job's own usage line in its log, else Snakemake's benchmark file), summed per stage. Target (issue 31):
agreement within +-30 %.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import yaml

from _common import ROOT, emit, header, run_campaign
from hrtemflow.campaign.estimate import load_costs
from hrtemflow.report.cost import cost_report


def rows_of(name: str, folder: Path, costs: dict) -> list[str]:
    rows = []
    for stage, r in cost_report(folder, costs).items():
        if not r["jobs_done"]:
            continue
        ratio = r["measured_over_estimated"]
        ok = "yes" if ratio is not None and 0.7 <= ratio <= 1.3 else "no"
        rows.append(
            f"| {name} | {stage} | {r['jobs_done']} ({r['jobs_measured_by_themselves']}) | "
            f"{r['estimated_cpu_h_done'] * 60:.2f} | {r['measured_cpu_h'] * 60:.2f} | {ratio:.2f} | {ok} |"
        )
    return rows


def main() -> None:
    costs = load_costs()
    rows = []
    if len(sys.argv) > 1:
        for arg in sys.argv[1:]:
            rows += rows_of(Path(arg).name, Path(arg), costs)
    else:
        cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
        with tempfile.TemporaryDirectory() as tmp:
            run_campaign(cfg, Path(tmp))
            rows += rows_of("demo (config/config.yaml)", Path(tmp) / cfg["campaign"]["results"], costs)
    block = (
        header("Cost estimate against measured CPU time (benchmarks/estimate_accuracy.py)")
        + f"\nCoefficients: costs.yaml measured {costs['measured']['date']} ({costs['measured']['machine']}). "
        "CPU minutes summed over the jobs that ran; in brackets the jobs measured by their own usage line "
        "(the rest by Snakemake's benchmark file, which misses up to 30 s of a job's end); target 0.7-1.3.\n\n"
        "| campaign | stage | jobs | estimated (CPU min) | measured (CPU min) | measured / estimated | within 30 % |\n"
        "|---|---|---:|---:|---:|---:|---|\n" + "\n".join(rows) + "\n"
    )
    emit(block, "estimate_accuracy")


if __name__ == "__main__":
    main()
