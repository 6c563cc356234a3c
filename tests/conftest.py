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
