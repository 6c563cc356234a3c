"""The config: defaults, the shipped configs, and the CLI's validate command."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hrtemflow.campaign.config import config_hash, load_config, load_schema
from hrtemflow.core.errors import ConfigError


def test_shipped_configs_are_valid(repo_root):
    """Every committed config, the bench campaigns included, loads; no two share a results folder,
    where one bench's run would overwrite another's products."""
    paths = sorted((repo_root / "config").glob("*.yaml"))
    assert {"config.yaml", "campaign-seed.yaml", "bench-nanoalloy.yaml"} <= {p.name for p in paths}
    results = {}
    for path in paths:
        cfg = load_config(path, base=repo_root)
        assert cfg["campaign"]["name"], path.name
        results.setdefault(cfg["campaign"]["results"], []).append(path.name)
    shared = {k: v for k, v in results.items() if len(v) > 1}
    assert not shared, f"configs sharing a results folder: {shared}"


def test_defaults_fill_every_section(repo_root):
    cfg = load_config({"campaign": {}}, base=repo_root)
    assert cfg["campaign"]["seed"] == 2026
    assert cfg["families"]["cnt"]["md"]["timestep_fs"] == 0.5
    assert cfg["imaging"]["optics"]["defocus_nm"] == [-50.0, 50.0]
    assert cfg["learning"]["tasks"]["denoise"]["epochs"] == 10


def test_every_schema_key_has_a_description():
    missing = []

    def walk(schema, path):
        for name, sub in schema.get("properties", {}).items():
            if not sub.get("description"):
                missing.append(f"{path}{name}")
            walk(sub, f"{path}{name}.")

    walk(load_schema(), "")
    assert not missing, f"keys without a description: {missing}"


def test_seed_campaign_is_at_least_300000_samples(repo_root):
    from hrtemflow.campaign.plan import make_plan, summary_rows

    cfg = load_config(repo_root / "config" / "campaign-seed.yaml", base=repo_root)
    rows = summary_rows(make_plan(cfg))
    assert sum(r["samples"] for r in rows) >= 300_000
    assert {r["family"] for r in rows} == {"nanoalloy", "cnt", "amorphous"}


def test_hash_is_stable_and_sensitive(demo_cfg, repo_root):
    a = load_config(demo_cfg, base=repo_root)
    b = load_config(demo_cfg, base=repo_root)
    assert config_hash(a) == config_hash(b)
    demo_cfg["imaging"]["optics"]["defocus_nm"] = [-40, 40]
    assert config_hash(load_config(demo_cfg, base=repo_root)) != config_hash(a)


def test_yaml_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("campaign: {name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(listing)


def test_validate_command(repo_root, tmp_path):
    ok = subprocess.run(
        [sys.executable, "-m", "hrtemflow.cli", "validate", "config/config.yaml"],
        cwd=repo_root,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert "valid" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("campaign: {seed: -1}\nfamilies: {cnt: {chiralities: [[4, 8]]}}\n")
    res = subprocess.run(
        [sys.executable, "-m", "hrtemflow.cli", "validate", str(bad)], cwd=repo_root, capture_output=True, text=True
    )
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert "campaign.seed" in res.stderr
