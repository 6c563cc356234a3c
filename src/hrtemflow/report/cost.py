"""What the jobs that ran cost, beside what the plan estimated, and what is left to run.

Each job's wall and CPU seconds: the usage line its command ends its log with (`core.usage`: exact),
else Snakemake's benchmark file <results>/benchmarks/<rule>/... (`benchmark:` in the rules; it misses the
CPU time of up to 30 s of a job's end, so it reads low for jobs of a minute or two). The specs in
<results>/plan/ say what each job runs, from which `campaign.estimate` gives its estimated CPU seconds.
Per stage: the jobs done and planned, measured against estimated CPU hours of the jobs done, and the rest
projected at the measured ratio.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..campaign.estimate import image_job_seconds, load_costs, md_job_seconds, train_seconds
from ..campaign.paths import job_benchmark, job_log
from ..core.errors import HrtemflowError
from ..core.usage import read_usage
from ..learn.card import ModelCard

STAGES = ("md", "image", "train", "evaluate")


def _benchmark(path: Path) -> tuple[float, float] | None:
    """(wall s, CPU s) of a Snakemake benchmark file, or None where it is missing or unreadable."""
    try:
        with open(path, newline="") as fh:
            row = next(csv.DictReader(fh, delimiter="\t"))
        return float(row["s"]), float(row["cpu_time"])
    except (OSError, StopIteration, KeyError, ValueError):
        return None


def _measured(results: Path, stage: str, job: str) -> dict[str, Any]:
    """A job's entry: "measured" (wall s, CPU s), or None where it has not run, and where that came from
    (`job`: its path under the stage's folders, no suffix): its own usage line, else its benchmark file."""
    own = read_usage(job_log(str(results), stage, job))
    if own is not None:
        return {"measured": (float(own["wall_s"]), float(own["cpu_s"])), "source": "log"}
    bench = _benchmark(Path(job_benchmark(str(results), stage, job)))
    return {"measured": bench, "source": "benchmark" if bench is not None else None}


def _epochs_run(bundle: Path) -> int | None:
    """The epochs a finished training ran (its model card), or None where no valid card says."""
    try:
        ran = ModelCard.read(bundle).epochs_run
    except (HrtemflowError, OSError):
        return None
    return ran if ran > 0 else None


def _spec(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def job_costs(results: str | Path, costs: Mapping[str, Any] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Per stage, every planned job: its name, estimated CPU seconds, and measured (wall, CPU) or None."""
    results = Path(results)
    costs = costs or load_costs()
    plan = results / "plan"
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in STAGES}
    md_specs = {p.stem: s for p in sorted((plan / "md").rglob("*.json")) if (s := _spec(p)) is not None}
    for name, spec in md_specs.items():
        out["md"].append(
            {
                "job": name,
                "estimated_s": md_job_seconds(spec, costs),
                **_measured(results, "md", f"{spec['group']}/{name}"),
            }
        )
    images_of: dict[str, int] = {}
    for p in sorted((plan / "images").rglob("*.json")):
        spec = _spec(p)
        if spec is None or p.stem not in md_specs:
            continue
        img = spec["imaging"]
        n = len(md_specs[p.stem]["samples"]) * img["views_per_structure"] * img["variants_per_view"]
        images_of[spec["family"]] = images_of.get(spec["family"], 0) + n
        out["image"].append(
            {
                "job": p.stem,
                "estimated_s": image_job_seconds(spec, md_specs[p.stem], costs),
                **_measured(results, "image", f"{spec['group']}/{p.stem}"),
            }
        )
    for p in sorted((plan / "train").glob("*.json")):
        spec = _spec(p)
        if spec is None:
            continue
        n = sum(images_of.get(f, 0) for f in spec.get("families", []))
        t, e = train_seconds(spec, n, costs)
        trained = _measured(results, "train", p.stem)
        ran = _epochs_run(results / "models" / p.stem) if trained["measured"] is not None else None
        if ran is not None:  # early stopping: judge the estimate on the epochs that ran, not those allowed
            t = train_seconds({**spec, "hyper": {**spec["hyper"], "epochs": ran}}, n, costs)[0]
        out["train"].append({"job": p.stem, "estimated_s": t, "epochs_run": ran, **trained})
        out["evaluate"].append(
            {
                "job": p.stem,
                "estimated_s": e,
                **_measured(results, "evaluate", p.stem),
            }
        )
    return out


def cost_report(results: str | Path, costs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Per stage: jobs done of planned, CPU hours measured and estimated for the jobs done, their ratio,
    and the hours left: as estimated, and projected at the measured ratio."""
    report: dict[str, Any] = {}
    for stage, jobs in job_costs(results, costs).items():
        if not jobs:
            continue
        done = [j for j in jobs if j["measured"] is not None]
        measured = sum(j["measured"][1] for j in done)
        estimated_done = sum(j["estimated_s"] for j in done)
        left = sum(j["estimated_s"] for j in jobs if j["measured"] is None)
        ratio = measured / estimated_done if estimated_done > 0 and done else None
        report[stage] = {
            "jobs_done": len(done),
            "jobs_planned": len(jobs),
            "jobs_measured_by_themselves": sum(j["source"] == "log" for j in done),
            "measured_cpu_h": measured / 3600,
            "measured_wall_h": sum(j["measured"][0] for j in done) / 3600,
            "estimated_cpu_h_done": estimated_done / 3600,
            "measured_over_estimated": ratio,
            "left_estimated_cpu_h": left / 3600,
            "left_projected_cpu_h": left * ratio / 3600 if ratio else None,
        }
    return report


def format_cost_report(report: Mapping[str, Any]) -> str:
    head = (
        f"{'stage':<9} {'jobs done':>12} {'CPU h measured':>15} {'estimated':>10} {'ratio':>6} {'left, projected':>16}"
    )
    lines = [
        "cost: measured (the jobs' logs, else Snakemake's benchmark files) against the plan's estimate",
        head,
        "-" * len(head),
    ]
    for stage, r in report.items():
        ratio = f"{r['measured_over_estimated']:.2f}" if r["measured_over_estimated"] is not None else "-"
        left = r["left_projected_cpu_h"] if r["left_projected_cpu_h"] is not None else r["left_estimated_cpu_h"]
        lines.append(
            f"{stage:<9} {r['jobs_done']:>5} of {r['jobs_planned']:<5} {r['measured_cpu_h']:>15.3f} "
            f"{r['estimated_cpu_h_done']:>10.3f} {ratio:>6} {left:>16.3f}"
        )
    return "\n".join(lines)
