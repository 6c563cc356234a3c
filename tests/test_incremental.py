"""Incremental regeneration on a real, complete run of a tiny campaign (every stage), then dry runs.

(a) an imaging change schedules no MD job; (b) one more chirality schedules only its shards and what
depends on them; (c) a higher sample count adds shards and leaves existing ones untouched;
(d) an unchanged config schedules nothing.
"""

from __future__ import annotations

import copy
import json

import pytest
from tests.conftest import planned_jobs, run_snakemake, tiny_campaign

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def complete_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("campaign")
    cfg = tiny_campaign()
    # the apply rule runs the trained bundles on every micrograph of a folder: one calibrated TIFF
    import numpy as np
    import tifffile

    (work / "micrographs").mkdir()
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:96, :96]
    fringes = 100 + 20 * np.cos(2 * np.pi * x / 4.3) + rng.normal(0, 5, (96, 96))
    tifffile.imwrite(
        work / "micrographs" / "fringes.tif",
        fringes.astype(np.float32),
        imagej=True,
        resolution=(1 / 0.08, 1 / 0.08),
        metadata={"unit": "nm"},
    )
    cfg["apply"] = {"enabled": True, "input_dir": "micrographs", "tasks": ["chirality", "denoise"]}
    res = run_snakemake(work, cfg)
    assert res.returncode == 0, f"the tiny campaign failed:\n{res.stderr[-6000:]}"
    return work, cfg


def test_complete_run_made_every_product(complete_run):
    work, cfg = complete_run
    r = work / "results"
    summary = json.loads((r / "summary" / "campaign.json").read_text())
    assert set(summary["families"]) == {"nanoalloy", "cnt", "amorphous"}
    assert summary["total"]["samples"] == 4 + 8 + 2
    for fam in summary["families"].values():
        assert fam["images"]["consistent"], fam
    for f in ("nanoalloy", "cnt", "amorphous"):
        assert (r / "figures" / f"md_{f}.png").stat().st_size > 1000
        assert (r / "figures" / f"images_{f}.png").stat().st_size > 1000
    for task in ("chirality", "denoise"):
        assert (r / "models" / task / "model.keras").exists()
        assert (r / "reports" / task / "metrics.json").exists()
    assert (r / "models" / "chirality" / "ood.npz").exists()
    applied = json.loads((r / "apply" / "summary.json").read_text())
    assert "fringes" in json.dumps(applied)
    assert (r / "apply" / "fringes" / "denoised.tif").exists()


def test_summary_puts_measured_cost_beside_the_estimate(complete_run):
    """Every MD and imaging job ran before the summary: each ended its log with its own CPU time, which
    the summary sums beside the plan's estimate; `hrtemflow summary` run now sees the learning jobs too."""
    from hrtemflow.core.usage import read_usage
    from hrtemflow.report.cost import cost_report

    work, _ = complete_run
    cost = json.loads((work / "results" / "summary" / "campaign.json").read_text())["cost"]
    md_logs = sorted((work / "results" / "logs" / "md").rglob("*.log"))
    own = [read_usage(log) for log in md_logs]
    assert md_logs and all(u is not None and u["command"] == "md" and u["cpu_s"] > 0 for u in own)
    assert cost["md"]["measured_cpu_h"] * 3600 == pytest.approx(sum(u["cpu_s"] for u in own), rel=1e-6)
    for stage in ("md", "image"):
        c = cost[stage]
        assert c["jobs_done"] == c["jobs_planned"] > 0 and c["measured_cpu_h"] > 0 and c["estimated_cpu_h_done"] > 0
        assert 0.05 < c["measured_over_estimated"] < 20 and c["left_estimated_cpu_h"] == 0
    now = cost_report(work / "results")
    assert now["train"]["jobs_done"] == now["train"]["jobs_planned"] == 2 and now["evaluate"]["jobs_done"] == 2


def test_report_html_holds_the_network_figures(complete_run):
    """`snakemake --report` gathers the evaluation figures of every task beside the MD and image sheets."""
    work, cfg = complete_run
    res = run_snakemake(work, cfg, "--report", str(work / "report.html"))
    assert res.returncode == 0, res.stderr[-3000:]
    html = (work / "report.html").read_text(errors="replace")
    for name in (
        "md_cnt.png",
        "images_cnt.png",
        "confusion.png",
        "calibration.png",
        "conditions.png",
        "denoise_examples.png",
    ):
        assert name in html, f"{name} is not in the report"
    assert "3. Networks" in html and "chirality" in html


def test_d_unchanged_config_schedules_nothing(complete_run):
    work, cfg = complete_run
    assert planned_jobs(work, cfg) == {}


def test_train_jobs_feed_with_their_threads(complete_run):
    """Snakemake's threads reach the training feed (via OMP_NUM_THREADS): on a GPU node the profile's
    8 threads, not one, read the batches ahead and draw fresh shot noise."""
    work, _ = complete_run
    for task in ("chirality", "denoise"):
        log = (work / "results" / "logs" / "train" / f"{task}.log").read_text()
        assert "; 2 feed thread(s)" in log, log[:2000]


def _trainings(jobs: dict[str, int]) -> int:
    """Training jobs: classifiers and regressors (rule train, which also fits ood.npz) and the denoiser."""
    return jobs.get("train", 0) + jobs.get("train_denoiser", 0)


def test_a_imaging_change_schedules_no_md(complete_run):
    work, cfg = complete_run
    changed = copy.deepcopy(cfg)
    changed["imaging"]["optics"] = {"defocus_nm": [-20.0, 20.0]}
    jobs = planned_jobs(work, changed)
    assert "md" not in jobs and "md_figure" not in jobs
    assert jobs["image"] == 2 + 4 + 1  # every image shard
    assert _trainings(jobs) == 2
    # the dry run left the plan alone: the original config still has nothing to do
    assert planned_jobs(work, cfg) == {}


def test_b_one_more_chirality_schedules_only_its_shards(complete_run):
    work, cfg = complete_run
    changed = copy.deepcopy(cfg)
    changed["families"]["cnt"]["chiralities"].append([5, 3])
    jobs = planned_jobs(work, changed)
    assert jobs["md"] == 2 and jobs["image"] == 2  # the new chirality's two shards, nothing else
    assert _trainings(jobs) == 2 and jobs["evaluate"] == 2  # chirality gains a class, denoise gains data
    assert jobs.get("md_figure") == 1 and jobs.get("image_figure") == 1  # the cnt figures only


def test_c_more_samples_add_shards_and_leave_old_ones(complete_run):
    work, cfg = complete_run
    changed = copy.deepcopy(cfg)
    changed["families"]["amorphous"]["samples"] = 4  # one more shard of 2
    manifest = work / "results" / "md" / "amorphous" / "amorphous-s00000.manifest.json"
    before = manifest.read_bytes(), manifest.stat().st_mtime_ns
    jobs = planned_jobs(work, changed)
    assert jobs["md"] == 1 and jobs["image"] == 1
    assert jobs.get("train_denoiser") == 1  # the denoiser learns from amorphous images
    # now for real: the new shard runs, the old one is untouched
    res = run_snakemake(work, changed)
    assert res.returncode == 0, res.stderr[-4000:]
    assert (work / "results" / "md" / "amorphous" / "amorphous-s00001.manifest.json").exists()
    assert (manifest.read_bytes(), manifest.stat().st_mtime_ns) == before
    assert planned_jobs(work, changed) == {}
