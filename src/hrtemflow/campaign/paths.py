"""Where every product of a campaign lands, relative to the working directory (Snakemake's view).

The one owner of the results layout (docs/data-products.md): the plan, the specs, the workflow's
rules and the summary all take their paths from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .plan import Shard


def results_dir(cfg: dict) -> str:
    return cfg["campaign"]["results"].rstrip("/")


def shard_paths(cfg: dict, shard: Shard) -> dict[str, str]:
    """Every file of one shard: its two specs, the MD products and the image store."""
    r, g, s = results_dir(cfg), shard.group.name, shard.name
    return {
        "md_spec": f"{r}/plan/md/{g}/{s}.json",
        "image_spec": f"{r}/plan/images/{g}/{s}.json",
        "structures": f"{r}/md/{g}/{s}.extxyz",
        "manifest": f"{r}/md/{g}/{s}.manifest.json",
        "images": f"{r}/images/{g}/{s}.zarr",
    }


def train_paths(cfg: dict, task: str) -> dict[str, str]:
    """A task's train spec, its bundle's files and its report."""
    r = results_dir(cfg)
    return {
        "spec": f"{r}/plan/train/{task}.json",
        "model_dir": f"{r}/models/{task}",
        "model": f"{r}/models/{task}/model.keras",
        "card": f"{r}/models/{task}/card.json",
        "ood": f"{r}/models/{task}/ood.npz",
        "report_dir": f"{r}/reports/{task}",
        "report": f"{r}/reports/{task}/metrics.json",
        "figures": f"{r}/reports/{task}/figures",
    }


#: each campaign job's folder under <results>/logs and under <results>/benchmarks, by stage
_JOB_FOLDERS = {
    "md": ("md", "md"),
    "image": ("images", "image"),
    "train": ("train", "train"),
    "evaluate": ("evaluate", "evaluate"),
}


def job_log(results: str, stage: str, job: str) -> str:
    """A campaign job's log (`job`: "<group>/<shard>" or "<task>", wildcards allowed), which ends with the
    job's usage line (`core.usage`)."""
    return f"{results}/logs/{_JOB_FOLDERS[stage][0]}/{job}.log"


def job_benchmark(results: str, stage: str, job: str) -> str:
    """Snakemake's benchmark file of a campaign job."""
    return f"{results}/benchmarks/{_JOB_FOLDERS[stage][1]}/{job}.tsv"


def plan_dir(cfg: dict) -> str:
    return f"{results_dir(cfg)}/plan"


def summary_path(cfg: dict) -> str:
    return f"{results_dir(cfg)}/summary/campaign.json"


def apply_summary_path(cfg: dict) -> str:
    return f"{results_dir(cfg)}/apply/summary.json"


def figure_path(cfg: dict, stage: str, family: str) -> str:
    """A family's picture of one stage: stage "md" (structures) or "images" (a contact sheet)."""
    return f"{results_dir(cfg)}/figures/{stage}_{family}.png"
