"""What a campaign will cost before it is submitted: core-hours, GPU-hours, bytes, job lengths, warnings.

Per shard, from what its spec runs: MD as atoms x steps x the measured seconds per atom-step of its
potential; imaging as views x (a multislice on the view's grid and slices) + images x (one optics
variant); training and evaluation as images x epochs x the measured seconds per image of the network,
scaled by its arithmetic; storage as images x pixels x the measured bytes per pixel of each array. The
coefficients are measured by `benchmarks/cost_table.py` into costs.yaml beside this module; the
figures are one core's CPU work. A GPU's speed-up is not measured yet: GPU-hours are marked assumed.
`hrtemflow summary` puts the measured cost of every job that ran beside these (`report.summary`).
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..core.tasks import TASKS
from ..core.tubes import GRAPHENE_A, TERSOFF_BOND_A, atoms_per_period, tube_diameter_A, tube_period_A
from .jobs import JOBS
from .plan import Plan

COSTS_FILE = Path(__file__).with_name("costs.yaml")
#: a job shorter than this wastes a cluster's scheduling (HPC centres ask for at least ~30 min)
MIN_JOB_MINUTES = 10.0
#: jobs in flight a user may have, a common cluster default (often 100-5,000)
SUBMIT_LIMIT = 5000
CARBON_G = 12.011 * 1.66053906660e-24  # grams per carbon atom
#: atoms per Å^3 of an Ag/Co particle (fcc Ag 0.0586, Co 0.0906: a mixture in between)
METAL_DENSITY = 0.07


@functools.cache
def load_costs(path: str | None = None) -> dict[str, Any]:
    return yaml.safe_load(Path(path or COSTS_FILE).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------- MD


def md_steps(family: str, md: Mapping[str, Any]) -> int:
    """MD steps of one sample's protocol (what `atomistic.lammps_run.protocol` runs); for nanoalloys with an
    `unannealed_share`, the mean over samples (that share runs none)."""
    if family == "nanoalloy":
        dt = md["timestep_fs"]
        steps = sum(round(md[k] * 1000 / dt) for k in ("anneal_ps", "quench_ps", "hold_ps"))
        return round(steps * (1.0 - float(md.get("unannealed_share") or 0.0)))
    if family == "cnt":
        return round(md["duration_ps"] * 1000 / md["timestep_fs"])
    hot, cold = md["melt_timestep_fs"], md["hold_timestep_fs"]
    return round(md["melt_ps"] * 1000 / hot) + round(md["quench_ps"] * 1000 / hot) + round(md["hold_ps"] * 1000 / cold)


def mean_atoms(family: str, structure: Mapping[str, Any]) -> float:
    """Atoms of an average sample: the middle of the atom-count range; a tube's length x atoms per
    length of its (n, m); an amorphous box's mass at the middle density."""
    if family == "nanoalloy":
        return 0.5 * (structure["n_atoms"][0] + structure["n_atoms"][1])
    if family == "cnt":  # whole periods of the tube, as structures.build_cnt rolls it (at the MD's bond)
        n, m = structure["chirality"]
        period = tube_period_A(n, m, math.sqrt(3.0) * TERSOFF_BOND_A)
        return max(1, math.ceil(10.0 * structure["length_nm"] / period - 1e-9)) * atoms_per_period(n, m)
    rho = 0.5 * (structure["density_g_cm3"][0] + structure["density_g_cm3"][1])
    volume_cm3 = math.prod(structure["box_nm"]) * 1e-21
    return rho * volume_cm3 / CARBON_G


def md_sample_seconds(spec: Mapping[str, Any], costs: Mapping[str, Any]) -> float:
    family = spec["family"]
    c = costs["md"]
    atoms = mean_atoms(family, spec["structure"])
    return c["per_sample_s"] + atoms * md_steps(family, spec["md"]) * c["us_per_atom_step"][family] * 1e-6


def md_job_seconds(spec: Mapping[str, Any], costs: Mapping[str, Any]) -> float:
    return costs["md"]["per_job_s"] + len(spec["samples"]) * md_sample_seconds(spec, costs)


# ------------------------------------------------------------------------------------------ imaging


def _height_A(family: str, structure: Mapping[str, Any], physics: Mapping[str, Any], support: float) -> float:
    if family == "nanoalloy":
        return 2.0 * (3.0 * mean_atoms(family, structure) / (4.0 * math.pi * METAL_DENSITY)) ** (1 / 3) + support
    if family == "cnt":
        n, m = structure["chirality"]
        return tube_diameter_A(n, m, GRAPHENE_A) + 2.0
    return 10.0 * structure["box_nm"][2]


def view_seconds(
    family: str,
    structure: Mapping[str, Any],
    imaging: Mapping[str, Any],
    costs: Mapping[str, Any],
    support_A: float = 0.0,
) -> tuple[float, float]:
    """(seconds of one view's multislice, seconds of one optics variant of it) on one CPU core."""
    c = costs["imaging"]
    phys = imaging["physics"]
    fov = 5.0 * (phys["fov_nm"][0] + phys["fov_nm"][1])  # Å, the middle of the range
    grid = fov / phys["sampling_A"]
    points = grid * grid
    slices = max(1.0, (_height_A(family, structure, phys, support_A) + 2.0) / phys["slice_thickness_A"])
    elements = 2 + (1 if support_A else 0) if family == "nanoalloy" else 1
    configs = max(1, int(phys.get("frozen_phonons", 0) or 0))
    multislice = c["multislice_ns"] * 1e-9 * points * math.log2(points) * slices * (2 + elements) / 3 * configs
    output = sum(s * s for s in imaging["sizes"])
    variant = c["variant_grid_ns"] * 1e-9 * points + c["variant_output_ns"] * 1e-9 * output
    if imaging["optics"].get("temporal_coherence") == "defocus_average":
        variant *= 16.0  # 13-19x measured (benchmarks/imaging_throughput.py)
    return multislice, variant


def image_job_seconds(spec: Mapping[str, Any], md_spec: Mapping[str, Any], costs: Mapping[str, Any]) -> float:
    img = spec["imaging"]
    support = 0.0
    if spec.get("support"):
        support = 10.0  # a support film's thickness (Å), the amorphous family's box
    view, variant = view_seconds(spec["family"], md_spec["structure"], img, costs, support)
    per_structure = img["views_per_structure"] * (view + img["variants_per_view"] * variant)
    return costs["imaging"]["per_job_s"] + len(md_spec["samples"]) * per_structure


def image_bytes(imaging: Mapping[str, Any], n_images: int, costs: Mapping[str, Any]) -> float:
    per_px = costs["storage"][imaging.get("storage", "float32")]
    return n_images * sum(s * s for s in imaging["sizes"]) * sum(per_px.values())


# ----------------------------------------------------------------------------------------- learning


def _network_factor(task: str, hyper: Mapping[str, Any], size: int, costs: Mapping[str, Any]) -> float:
    """The network's arithmetic per image against the reference network of costs.yaml."""
    width, depth = hyper["width"], hyper["depth"]
    spectral = hyper.get("spectral_width", width if TASKS[task].spectrum_by_default else 0)
    factor = (size / 64.0) ** 2 * (width**2 + (spectral or 0) ** 2) / 16.0**2 * depth / 3.0
    if TASKS[task].kind == "denoising":
        factor = (size / 64.0) ** 2 * width**2 / 16.0**2 * depth / 3.0 * costs["learn"]["denoiser_factor"]
    elif hyper.get("stem") == "patchify":
        factor /= 4.0
    return factor


def train_seconds(spec: Mapping[str, Any], n_images: int, costs: Mapping[str, Any]) -> tuple[float, float]:
    """(training job, evaluation job) seconds on one CPU core for a task's `n_images`."""
    c = costs["learn"]
    hyper, task, size = spec["hyper"], spec["task"], spec["image_size"]
    f = _network_factor(task, hyper, size, costs)
    val, test = spec["split"]["val"], spec["split"]["test"]
    n_train, n_val, n_test = n_images * (1 - val - test), n_images * val, n_images * test
    batches = (n_train + n_val) / hyper["batch_size"]
    epoch = n_train * c["train_ms_per_image"] * f / 1e3 + n_val * c["infer_ms_per_image"] * f / 1e3
    epoch += batches * c["per_batch_ms"] / 1e3
    train = c["per_job_s"] + hyper["epochs"] * epoch
    if TASKS[task].kind != "denoising":  # the OOD statistics: 8-fold passes over train and val
        train += 8 * min(n_train + n_val, c["ood_fit_images"]) * c["infer_ms_per_image"] * f / 1e3
    if TASKS[task].kind == "denoising":  # one pass over the test split; 32 test images per family through BM3D
        evaluate = c["per_job_s"] + n_test * c["infer_ms_per_image"] * f / 1e3  # and non-local means
        evaluate += len(spec["families"]) * 32 * c["baseline_s_per_image"]
    else:  # 8-fold test-time augmentation over the test split (and the validation split: the temperature)
        passed = n_test + (n_val if TASKS[task].kind == "classification" else 0)
        evaluate = c["per_job_s"] + 8 * passed * c["infer_ms_per_image"] * f / 1e3
    return train, evaluate


# ------------------------------------------------------------------------------------------ a plan


@dataclass
class StageCost:
    """One stage of a campaign: its jobs' estimated seconds (one core), where they run, bytes written."""

    stage: str
    device: str
    seconds: list[float] = field(default_factory=list)
    bytes: float = 0.0
    #: seconds and bytes per family (md, image) or task (train, evaluate)
    by: dict[str, list[float]] = field(default_factory=dict)

    def add(self, key: str, seconds: float, nbytes: float = 0.0) -> None:
        self.seconds.append(seconds)
        self.bytes += nbytes
        entry = self.by.setdefault(key, [0.0, 0.0])
        entry[0] += seconds
        entry[1] += nbytes

    @property
    def core_hours(self) -> float:
        return sum(self.seconds) / 3600.0


def estimate(plan: Plan, costs: Mapping[str, Any] | None = None) -> dict[str, StageCost]:
    """Per stage (md, image, train, evaluate) the estimated seconds of every job and the bytes written."""
    from .specs import image_spec, md_spec, train_spec  # noqa: PLC0415 (specs imports plan: kept one way)

    costs = costs or load_costs()
    cfg = plan.cfg
    img = cfg["imaging"]
    stages = {
        "md": StageCost("md", "cpu"),
        "image": StageCost("image", img["device"]),
        "train": StageCost("train", "gpu"),
        "evaluate": StageCost("evaluate", "gpu"),
    }
    by_group: dict[str, tuple[dict, dict | None]] = {}
    images_of_family: dict[str, int] = {}
    per_image = img["views_per_structure"] * img["variants_per_view"]
    for shard in plan.shards:
        key = f"{shard.group.name}:{shard.n_samples}"
        if key not in by_group:  # the shards of a group differ only in their samples
            md = md_spec(cfg, shard)
            by_group[key] = (md, image_spec(plan, shard) if img["enabled"] else None)
        md, im = by_group[key]
        md_bytes = shard.n_samples * mean_atoms(shard.family, md["structure"]) * costs["storage"]["md_bytes_per_atom"]
        stages["md"].add(shard.family, md_job_seconds(md, costs), md_bytes)
        if im is not None:
            nbytes = image_bytes(im["imaging"], shard.n_samples * per_image, costs)
            stages["image"].add(shard.family, image_job_seconds(im, md, costs), nbytes)
            images_of_family[shard.family] = images_of_family.get(shard.family, 0) + shard.n_samples * per_image
    for task in plan.tasks():
        spec = train_spec(plan, task)
        n = sum(images_of_family.get(f, 0) for f in spec["families"])
        t, e = train_seconds(spec, n, costs)
        stages["train"].add(task, t)
        stages["evaluate"].add(task, e)
    return stages


def _minutes(seconds: list[float], threads: int = 1) -> tuple[float, float, float]:
    m = sorted(s / 60.0 / threads for s in seconds)
    return m[0], statistics.median(m), m[-1]


def cost_summary(
    plan: Plan,
    *,
    costs: Mapping[str, Any] | None = None,
    submit_limit: int = SUBMIT_LIMIT,
    quota_tb: float | None = None,
    min_job_minutes: float = MIN_JOB_MINUTES,
) -> dict[str, Any]:
    """What `hrtemflow plan --summary` reports: per stage jobs, core-hours, GPU-hours, job minutes
    (shortest, median, longest) against the runtime the rule requests, bytes; and warnings."""
    costs = costs or load_costs()
    stages = estimate(plan, costs)
    speedup = float(costs["gpu"]["speedup"])
    rows, warnings = [], []
    for name, st in stages.items():
        if not st.seconds:
            continue
        gpu = st.device == "gpu"
        job = JOBS[name]
        minutes = _minutes([s / speedup if gpu else s for s in st.seconds])
        per = {
            k: {
                "core_hours": 0.0 if gpu else v[0] / 3600,
                "gpu_hours": v[0] / 3600 / speedup if gpu else 0.0,
                "bytes": v[1],
            }
            for k, v in st.by.items()
        }
        rows.append(
            {
                "by": per,
                "stage": name,
                "jobs": len(st.seconds),
                "device": st.device,
                "core_hours": 0.0 if gpu else st.core_hours,
                "gpu_hours": st.core_hours / speedup if gpu else 0.0,
                "job_minutes": {"min": minutes[0], "median": minutes[1], "max": minutes[2]},
                "requested_minutes": job.runtime_min,
                "bytes": st.bytes,
            }
        )
        over = sum(1 for s in st.seconds if (s / speedup if gpu else s) / 60 > job.runtime_min)
        if over:
            fix = (
                "lower the shard_size of their family (image shards are the MD shards)"
                if name in ("md", "image")
                else "train fewer epochs or images, or raise the runtime the rule requests (hrtemflow.campaign.jobs)"
            )
            warnings.append(
                f"{name}: {over} job(s) estimated over the {job.runtime_min} min the rule requests "
                f"(longest {minutes[2]:,.0f} min): {fix}"
            )
        short = sum(1 for s in st.seconds if (s / speedup if gpu else s) / 60 < min_job_minutes)
        if short and name == "md":
            factor = max(2, math.ceil(30.0 / max(minutes[1], 1e-3)))
            warnings.append(
                f"md: {short} of {len(st.seconds)} job(s) estimated under {min_job_minutes:g} min "
                f"(median {minutes[1]:.1f} min): on a cluster, raise shard_size about {factor}x so each runs "
                "~30 min (fine on a laptop)"
            )
        if short and name == "image":
            group = max(2, math.ceil(30.0 / max(minutes[1], 1e-3)))
            warnings.append(
                f"image: {short} of {len(st.seconds)} job(s) estimated under {min_job_minutes:g} min "
                f"(median {minutes[1]:.1f} min{' on a GPU' if gpu else ''}); image shards are the MD shards, so on a "
                f"cluster submit them in groups: snakemake --groups image=imaging --group-components imaging={group} "
                "(fine on a laptop)"
            )
    n_jobs = sum(r["jobs"] for r in rows)
    if n_jobs > submit_limit:
        warnings.append(
            f"{n_jobs:,} jobs, more than the submit limit of {submit_limit:,} (--submit-limit): raise "
            f"shard_size, or let the SLURM profile's `jobs:` keep fewer in flight"
        )
    total_bytes = sum(r["bytes"] for r in rows)
    if quota_tb is not None and total_bytes > quota_tb * 1e12:
        warnings.append(
            f"{total_bytes / 1e12:.2f} TB of products, over the quota of {quota_tb:g} TB (--quota-tb): "
            "imaging.storage: compact stores images in 1/4-1/5 of the bytes, or image fewer sizes"
        )
    compact_bytes = None
    if plan.cfg["imaging"]["enabled"] and plan.cfg["imaging"].get("storage", "float32") != "compact":
        ratio = sum(costs["storage"]["compact"].values()) / sum(costs["storage"]["float32"].values())
        compact_bytes = stages["image"].bytes * ratio
    return {
        "stages": rows,
        "total": {
            "jobs": n_jobs,
            "core_hours": sum(r["core_hours"] for r in rows),
            "gpu_hours": sum(r["gpu_hours"] for r in rows),
            "bytes": total_bytes,
        },
        "image_bytes_if_compact": compact_bytes,
        "warnings": warnings,
        "assumptions": {
            "gpu_speedup": speedup,
            "gpu_speedup_measured": False,
            "costs": str(COSTS_FILE),
            "measured": costs.get("measured"),
        },
    }


def _bytes(b: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if b >= scale:
            return f"{b / scale:.2f} {unit}"
    return f"{b / 1e3:.1f} kB"


def format_costs(summary: Mapping[str, Any]) -> str:
    head = (
        f"{'stage':<9} {'jobs':>7} {'core-hours':>11} {'GPU-hours':>10} {'job min: shortest / median / longest':>37} "
        f"{'requested':>9} {'writes':>10}"
    )
    lines = [
        "estimated cost (one core's CPU work; GPU-hours assume a GPU "
        f"{summary['assumptions']['gpu_speedup']:g}x a core, not yet measured):",
        head,
        "-" * len(head),
    ]
    for r in summary["stages"]:
        m = r["job_minutes"]
        lines.append(
            f"{r['stage']:<9} {r['jobs']:>7,} {r['core_hours']:>11,.1f} {r['gpu_hours']:>10,.1f} "
            f"{m['min']:>13,.1f} / {m['median']:>8,.1f} / {m['max']:>9,.1f} {r['requested_minutes']:>6} min "
            f"{_bytes(r['bytes']):>10}"
        )
        if len(r["by"]) > 1:
            for key, b in r["by"].items():
                lines.append(
                    f"  {key:<22} {b['core_hours']:>11,.1f} {b['gpu_hours']:>10,.1f} {'':>54} {_bytes(b['bytes']):>10}"
                )
    t = summary["total"]
    lines.append("-" * len(head))
    lines.append(
        f"{'total':<9} {t['jobs']:>7,} {t['core_hours']:>11,.1f} {t['gpu_hours']:>10,.1f} {'':>37} {'':>9} "
        f"{_bytes(t['bytes']):>10}"
    )
    if summary["image_bytes_if_compact"] is not None:
        lines.append(f"images with imaging.storage: compact: {_bytes(summary['image_bytes_if_compact'])}")
    for w in summary["warnings"]:
        lines.append(f"warning: {w}")
    return "\n".join(lines)


def shard_estimates(plan: Plan, costs: Mapping[str, Any] | None = None) -> dict[str, dict[str, float]]:
    """Estimated seconds per job, by stage and shard (or task) name: what `hrtemflow summary` compares."""
    stages = estimate(plan, costs)
    out: dict[str, dict[str, float]] = {}
    names = [s.name for s in plan.shards]
    out["md"] = dict(zip(names, stages["md"].seconds))
    if stages["image"].seconds:
        out["image"] = dict(zip(names, stages["image"].seconds))
    tasks = plan.tasks()
    out["train"] = dict(zip(tasks, stages["train"].seconds))
    out["evaluate"] = dict(zip(tasks, stages["evaluate"].seconds))
    return out
