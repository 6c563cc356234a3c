"""The cost estimate against what campaigns measured: per stage, estimated and measured CPU hours.

    python benchmarks/estimate_accuracy.py results results-bench-denoise    # results folders that ran

For each results folder: the plan's estimate of every job that ran (`hrtemflow.campaign.estimate`, the
coefficients of src/hrtemflow/campaign/costs.yaml) beside its CPU time in Snakemake's benchmark file
(`hrtemflow.report.cost`), summed per stage; the target is agreement within +-30 %.
"""

from __future__ import annotations

import sys
from pathlib import Path

from _common import ROOT, emit, header
from hrtemflow.campaign.estimate import load_costs
from hrtemflow.report.cost import cost_report


def main() -> None:
    folders = [Path(a) for a in sys.argv[1:]] or [ROOT / "results"]
    costs = load_costs()
    rows = []
    for folder in folders:
        for stage, r in cost_report(folder, costs).items():
            if not r["jobs_done"]:
                continue
            ratio = r["measured_over_estimated"]
            ok = "yes" if ratio is not None and 0.7 <= ratio <= 1.3 else "no"
            rows.append(
                f"| {folder.name} | {stage} | {r['jobs_done']} | {r['estimated_cpu_h_done'] * 60:.2f} | "
                f"{r['measured_cpu_h'] * 60:.2f} | {ratio:.2f} | {ok} |"
            )
    block = (
        header("Cost estimate against measured CPU time (benchmarks/estimate_accuracy.py)")
        + f"\nCoefficients: costs.yaml measured {costs['measured']['date']} ({costs['measured']['machine']}). "
        "CPU minutes summed over the jobs that ran (Snakemake's benchmark files); target 0.7-1.3.\n\n"
        "| results | stage | jobs | estimated (CPU min) | measured (CPU min) | measured / estimated | within 30 % |\n"
        "|---|---|---:|---:|---:|---:|---|\n" + "\n".join(rows) + "\n"
    )
    emit(block, "estimate_accuracy")


if __name__ == "__main__":
    main()
