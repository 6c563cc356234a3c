"""Smoke tests of the research studies (studies/*.py): their smallest case on a tiny real campaign
(MD, imaging, training and evaluation of the tasks they read), run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT, run_snakemake, tiny_campaign

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A tiny campaign with what both studies read: nanoalloy ordering and structure networks (and
    their MD), and a CNT/a-C denoiser."""
    cfg = tiny_campaign()
    cfg["families"]["nanoalloy"].update(samples_per_ordering=5, shard_size=5)
    cfg["families"]["cnt"].update(samples_per_chirality=3, shard_size=3)
    cfg["families"]["amorphous"].update(samples=3, shard_size=3)
    small = {"epochs": 1, "width": 4, "depth": 2, "batch_size": 4}
    cfg["learning"]["split"] = {"val": 0.2, "test": 0.2}
    cfg["learning"]["tasks"].update(ordering=small, structure=small, chirality={"enabled": False}, denoise=small)
    cfg["campaign"]["results"] = "results-tiny"
    work = tmp_path_factory.mktemp("studies")
    res = run_snakemake(work, cfg)
    assert res.returncode == 0, "the tiny campaign failed:\n" + res.stderr[-4000:]
    return work / "results-tiny"


def _study(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "studies" / f"{name}.py"), *args], capture_output=True, text=True, timeout=900
    )


def test_projection_bound_smallest_ladder(bench):
    res = _study(
        "projection_bound",
        "--results",
        str(bench),
        "--rungs",
        "potential",
        "image",
        "--epochs",
        "1",
        "--extra-views",
        "1",
        "--width",
        "4",
        "--depth",
        "2",
        "--batch-size",
        "8",
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    ladder = json.loads((bench / "benchmarks" / "projection_bound" / "ladder.json").read_text())
    for rung in ("potential", "image"):
        assert 0 <= ladder[rung]["ordering"]["accuracy"] <= 1 and ladder[rung]["co_fraction"]["mae"] >= 0
    assert "| potential: " in res.stdout and "| image: " in res.stdout  # the ladder table, one row per rung


def test_denoise_bound_smallest_case(bench):
    res = _study(
        "denoise_bound",
        "--results",
        str(bench),
        "--images",
        "4",
        "--spectrum-images",
        "8",
        "--thicker",
        "1",
        "3",
        "--bins",
        "1",
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    out = json.loads((bench / "benchmarks" / "denoise_bound.json").read_text())
    assert set(out["families"]) == {"cnt", "amorphous"} and out["model_dir"]
    amorphous = out["families"]["amorphous"]
    assert "optics Wiener" in amorphous["over_gaussian_dB"] and "network" in amorphous["over_gaussian_dB"]
    assert [r["thicker"] for r in amorphous["thicker_or_coarser"]] == [1.0, 3.0]
