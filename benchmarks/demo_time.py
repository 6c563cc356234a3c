"""Wall time of the demo campaign (config/config.yaml) after installation, per stage.

Target (issue 2): at most 15 minutes on a 2-core machine. Runs in a temporary folder, so the
repository's results/ is left alone.

    python benchmarks/demo_time.py [--cores 2]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from collections import defaultdict
from pathlib import Path

import yaml

from _common import ROOT, emit, header, run_campaign


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cores", type=int, default=2)
    args = ap.parse_args()
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        wall = run_campaign(cfg, work, cores=args.cores)
        per_rule: dict[str, list[float]] = defaultdict(list)
        peak: dict[str, float] = defaultdict(float)
        for tsv in (work / "results" / "benchmarks").rglob("*.tsv"):
            rule = tsv.relative_to(work / "results" / "benchmarks").parts[0]
            row = next(csv.DictReader(tsv.open(), delimiter="\t"))
            per_rule[rule].append(float(row["s"]))
            try:
                peak[rule] = max(peak[rule], float(row["max_rss"]))
            except ValueError:
                pass
    lines = [
        header("Demo campaign wall time (`make demo` after installation)"),
        "",
        f"`snakemake --cores {args.cores}` on config/config.yaml: **{wall / 60:.1f} min** in all "
        f"(target ≤ 15 min: {'met' if wall <= 900 else 'NOT met'}).",
        "",
        "| rule | jobs | job time sum (s) | slowest job (s) | peak RSS (MB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for rule, times in sorted(per_rule.items()):
        lines.append(f"| {rule} | {len(times)} | {sum(times):.0f} | {max(times):.0f} | {peak[rule]:.0f} |")
    lines.append("")
    emit("\n".join(lines), "demo_time")


if __name__ == "__main__":
    main()
