"""The cost estimate of `hrtemflow plan --summary` (campaign.estimate): its counts agree with what the
stages build and run, and its warnings say what a cluster operator must change."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from hrtemflow.atomistic import structures
from hrtemflow.atomistic.lammps_run import protocol
from hrtemflow.campaign.config import load_config
from hrtemflow.campaign.estimate import cost_summary, md_steps, mean_atoms
from hrtemflow.campaign.jobs import JOBS
from hrtemflow.campaign.plan import make_plan
from hrtemflow.campaign.specs import md_spec


@pytest.mark.parametrize("config", ["config/config.yaml", "config/campaign-seed.yaml", "config/bench-denoise.yaml"])
def test_steps_and_atoms_are_what_the_md_stage_runs(repo_root, config):
    cfg = load_config(repo_root / config, base=repo_root)
    seen = set()
    for shard in make_plan(cfg).shards:
        if shard.family in seen:
            continue
        seen.add(shard.family)
        spec = md_spec(cfg, shard)
        rng = np.random.default_rng(1)
        assert md_steps(shard.family, spec["md"]) == sum(
            st["steps"] for st in protocol(shard.family, spec["md"], rng)["stages"]
        )
        built = [len(structures.build(shard.family, np.random.default_rng(k), spec["structure"])) for k in range(6)]
        if shard.family == "cnt":
            built = [len(structures.build_cnt(np.random.default_rng(k), spec["structure"])) for k in range(3)]
        tolerance = 0.25 if shard.family == "nanoalloy" else 0.05  # motif sizes snap to magic numbers
        assert abs(np.mean(built) / mean_atoms(shard.family, spec["structure"]) - 1) < tolerance, (shard.family, built)


def test_seed_campaign_summary_in_json_and_within_the_dag_target(repo_root):
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "hrtemflow.cli", "plan", "--json", "--dry", "config/campaign-seed.yaml"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert time.perf_counter() - t0 < 30  # the DAG target
    out = json.loads(res.stdout)
    stages = {r["stage"]: r for r in out["stages"]}
    assert set(stages) == {"md", "image", "train", "evaluate"}
    assert stages["md"]["core_hours"] > 1000 and stages["image"]["bytes"] > 1e12
    assert out["assumptions"]["gpu_speedup_measured"] is False
    assert out["total"]["jobs"] == sum(r["jobs"] for r in out["stages"])


def test_warnings_name_short_and_long_jobs_submit_limit_and_quota(demo_cfg, repo_root):
    cfg = load_config(demo_cfg, base=repo_root)
    summary = cost_summary(make_plan(cfg), submit_limit=10, quota_tb=1e-9)
    text = "\n".join(summary["warnings"])
    assert "under 10 min" in text and "raise shard_size" in text
    assert "submit limit of 10" in text and "quota" in text
    big = load_config(
        {
            **demo_cfg,
            "families": {
                **demo_cfg["families"],
                "amorphous": {
                    **demo_cfg["families"]["amorphous"],
                    "shard_size": 2,
                    "samples": 4,
                    "structure": {"box_nm": [8.0, 8.0, 3.0]},
                    "md": {"melt_ps": 200.0},
                },
            },
        },
        base=repo_root,
    )
    long = cost_summary(make_plan(big))
    assert any("md:" in w and f"over the {JOBS['md'].runtime_min} min" in w for w in long["warnings"])


def test_md_steps_count_the_unannealed_share_as_running_none():
    md = {"timestep_fs": 5.0, "anneal_ps": 2.0, "quench_ps": 4.0, "hold_ps": 1.0}
    assert md_steps("nanoalloy", md) == 1400
    assert md_steps("nanoalloy", {**md, "unannealed_share": 0.3}) == 980
    assert md_steps("nanoalloy", {**md, "unannealed_share": 1.0}) == 0
