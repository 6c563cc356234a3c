"""Shared fixtures: the repository root, a demo config as a dict, a small-campaign factory."""

from __future__ import annotations

import copy
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
BIN = Path(sys.executable).parent

# the workflow's shell commands call `hrtemflow` and `snakemake` from the same environment as the tests
os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def cnt_bundles(tmp_path_factory) -> dict:
    """Chirality, aberration and denoise bundles trained on real simulated (8,0), (8,8), (12,12) tubes, with
    their OOD statistics (`tests/cnt_bundles.py`): shared by every predict test, trained once."""
    pytest.importorskip("abtem")
    from cnt_bundles import make_cnt_bundles  # noqa: PLC0415

    return make_cnt_bundles(tmp_path_factory.mktemp("cnt_bundles"))


@pytest.fixture
def demo_cfg() -> dict:
    """The demo config as a plain dict (unvalidated), with the potentials folder made absolute."""
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg.setdefault("potentials", {})["directory"] = str(ROOT / "resources" / "potentials")
    return copy.deepcopy(cfg)


def snakemake_exe() -> str:
    exe = shutil.which("snakemake")
    assert exe, "snakemake is not installed in the test environment"
    return exe


def tiny_campaign() -> dict:
    """A whole campaign small enough to run end to end in a test: every stage, real physics, tiny sizes."""
    return {
        "campaign": {"name": "tiny", "seed": 7, "results": "results"},
        "potentials": {"directory": str(ROOT / "resources" / "potentials")},
        "families": {
            "nanoalloy": {
                "orderings": ["core-shell", "janus"],
                "samples_per_ordering": 2,
                "shard_size": 2,
                "structure": {"motifs": ["icosahedron"], "n_atoms": [40, 60], "vacuum_A": 4.0},
                "md": {"anneal_K": [400, 500], "anneal_ps": 0.05, "quench_ps": 0.1, "hold_ps": 0.05},
            },
            "cnt": {
                "chiralities": [[6, 0], [4, 4]],
                "samples_per_chirality": 4,
                "shard_size": 2,
                "structure": {"length_nm": 1.5, "vacuum_A": 4.0},
                "md": {"duration_ps": 0.05},
            },
            "amorphous": {
                "samples": 2,
                "shard_size": 2,
                "structure": {"box_nm": [1.2, 1.2, 0.6], "density_g_cm3": [2.0, 2.2]},
                "md": {
                    "melt_K": 5000,
                    "melt_ps": 0.02,
                    "melt_timestep_fs": 0.2,
                    "quench_ps": 0.02,
                    "hold_ps": 0.02,
                    "hold_timestep_fs": 0.5,
                },
            },
        },
        "imaging": {
            "views_per_structure": 1,
            "variants_per_view": 2,
            "sizes": [32],
            "families": {
                "nanoalloy": {"sampling_A": 0.2, "fov_nm": [1.0, 1.2]},
                "cnt": {"sampling_A": 0.2, "fov_nm": [1.0, 1.2]},
                "amorphous": {"sampling_A": 0.2, "fov_nm": [1.0, 1.2]},
            },
        },
        "learning": {
            "image_size": 32,
            "split": {"val": 0.25, "test": 0.25},
            "tasks": {
                "chirality": {"epochs": 1, "width": 4, "depth": 2, "batch_size": 4},
                "denoise": {"epochs": 1, "width": 4, "depth": 2, "batch_size": 4},
                "ordering": {"enabled": False},
                "aberrations": {"enabled": False},
                "structure": {"enabled": False},
            },
        },
    }


def run_snakemake(workdir: Path, cfg: dict, *extra: str, timeout: int = 900):
    """Run the repository's workflow in `workdir` with `cfg`; returns the CompletedProcess."""
    import subprocess

    path = workdir / "campaign.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = [
        snakemake_exe(),
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(path),
        "--cores",
        "2",
        *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def planned_jobs(workdir: Path, cfg: dict) -> dict[str, int]:
    """Jobs per rule that a dry run schedules ({} when there is nothing to do)."""
    import re

    res = run_snakemake(workdir, cfg, "--dry-run")
    assert res.returncode == 0, res.stderr[-3000:]
    if "Nothing to be done" in res.stdout + res.stderr:
        return {}
    stats = (res.stdout + res.stderr).split("Job stats:", 1)[1]
    jobs = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}
    jobs.pop("total", None)
    return jobs
