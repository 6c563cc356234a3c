"""Fault injection: a campaign in which a chosen fraction of MD samples fails still completes, and
every count adds up downstream.

`campaign.fault_injection.fraction` (or HRTEMFLOW_FAULT_FRACTION) makes samples fail on purpose by
doing something physical to the simulation (an atom on top of another, an atom thrown out of the
box) that the MD checks must catch (src/hrtemflow/md.py). The tiny campaign runs with imaging on
and learning off; then:
- the workflow succeeds; every failed sample is in its manifest with status "failed", its fault and
  a reason naming the injected fault and what the checks detected;
- the extxyz holds exactly the ok samples, in order;
- each image shard images exactly the ok samples: n_samples + n_failed_skipped == manifest samples,
  its sample_id array repeats the ok ids views × variants times;
- the summary reports the failures per family with their reasons and says `consistent: true`.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from tests.conftest import BIN, ROOT, run_snakemake, tiny_campaign

pytestmark = pytest.mark.slow

FRACTION = 0.3


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    work = tmp_path_factory.mktemp("faults")
    cfg = tiny_campaign()
    cfg["campaign"]["fault_injection"] = {"fraction": FRACTION}
    cfg["learning"]["enabled"] = False
    os.environ.pop("HRTEMFLOW_FAULT_FRACTION", None)
    res = run_snakemake(work, cfg)
    assert res.returncode == 0, f"a campaign with injected faults must still complete:\n{res.stderr[-6000:]}"
    r = work / "results"
    manifests = {
        p.name.removesuffix(".manifest.json"): json.loads(p.read_text())
        for p in sorted((r / "md").rglob("*.manifest.json"))
    }
    return work, cfg, manifests


def test_failures_are_in_the_manifests_with_reasons(campaign):
    _, _, manifests = campaign
    samples = [s for m in manifests.values() for s in m["samples"]]
    failed = [s for s in samples if s["status"] == "failed"]
    assert len(samples) == 4 + 8 + 2
    assert 0 < len(failed) < len(samples), f"{len(failed)} of {len(samples)} failed at fraction {FRACTION}"
    for m in manifests.values():
        assert m["fault_injection"]["fraction"] == FRACTION and m["fault_injection"]["source"] == "spec"
        assert m["n_failed"] == sum(s["status"] == "failed" for s in m["samples"])
        assert m["n_ok"] + m["n_failed"] == m["n_samples"] == len(m["samples"])
    for s in failed:
        assert s["fault"] in ("nan", "lost_atoms"), s
        assert s["reason"].startswith(f"injected fault: {s['fault']}") and "detected:" in s["reason"], s["reason"]
        assert s["labels"] == {}
    for s in samples:
        if s["status"] == "ok":
            assert s["fault"] is None and s["reason"] is None and s["labels"]["n_atoms"] > 0


def test_structures_hold_exactly_the_ok_samples(campaign):
    from ase.io import read

    work, _, manifests = campaign
    for shard, m in manifests.items():
        path = work / "results" / "md" / m["group"] / f"{shard}.extxyz"
        frames = read(path, ":", format="extxyz") if path.stat().st_size else []
        assert [f.info["sample_id"] for f in frames] == [s["id"] for s in m["samples"] if s["status"] == "ok"], shard


def test_image_shards_count_what_they_skipped(campaign):
    from hrtemflow.store.reader import is_complete, open_shard

    work, cfg, manifests = campaign
    per = cfg["imaging"]["views_per_structure"] * cfg["imaging"]["variants_per_view"]
    for shard, m in manifests.items():
        path = work / "results" / "images" / m["group"] / f"{shard}.zarr"
        assert is_complete(path), shard
        g = open_shard(path)
        a = g.attrs
        ok = [s["id"] for s in m["samples"] if s["status"] == "ok"]
        assert a["n_samples"] + a["n_failed_skipped"] == len(m["samples"]), shard
        assert a["n_samples"] == len(ok) and a["n_failed_skipped"] == m["n_failed"], shard
        assert a["n_images"] == len(ok) * per == g["sample_id"].shape[0]
        assert g["sample_id"][...].tolist() == [i for i in ok for _ in range(per)]


def test_summary_reports_failures_per_family_and_is_consistent(campaign):
    work, _, manifests = campaign
    summary = json.loads((work / "results" / "summary" / "campaign.json").read_text())
    total_failed = 0
    for family, entry in summary["families"].items():
        mine = [m for m in manifests.values() if m["family"] == family]
        failed = sum(m["n_failed"] for m in mine)
        total_failed += failed
        md = entry["md"]
        assert (
            md["samples"] == sum(m["n_samples"] for m in mine)
            and md["failed"] == failed
            and md["ok"] == md["samples"] - failed
        )
        assert md["failure_rate"] == pytest.approx(failed / md["samples"], abs=1e-6)
        assert md["failure_reasons"] == ({"injected fault": failed} if failed else {}), md
        img = entry["images"]
        assert img["consistent"] is True
        assert img["structures_imaged"] == md["ok"] and img["structures_skipped"] == md["failed"]
    assert summary["total"]["failed"] == total_failed > 0
    assert summary["total"]["samples"] == 14


def test_environment_variable_overrides_the_spec(tmp_path):
    """HRTEMFLOW_FAULT_FRACTION=1 fails every sample of a spec that asks for none; a bad value is refused."""
    from hrtemflow.campaign.config import load_config
    from hrtemflow.campaign.plan import make_plan
    from hrtemflow.campaign.specs import md_spec

    cfg = load_config(tiny_campaign(), base=ROOT)
    shard = next(s for s in make_plan(cfg).shards if s.family == "cnt")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(md_spec(cfg, shard)))
    cmd = [
        str(BIN / "hrtemflow"),
        "md",
        str(spec),
        "--structures",
        str(tmp_path / "x.extxyz"),
        "--manifest",
        str(tmp_path / "x.manifest.json"),
        "--no-progress",
    ]
    env = {**os.environ, "HRTEMFLOW_FAULT_FRACTION": "1"}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "x.manifest.json").read_text())
    assert m["fault_injection"]["source"] == "env" and m["n_ok"] == 0 and m["n_failed"] == m["n_samples"] == 2
    assert (tmp_path / "x.extxyz").read_bytes() == b""  # no ok sample: an empty structures file, still complete

    env["HRTEMFLOW_FAULT_FRACTION"] = "lots"
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "HRTEMFLOW_FAULT_FRACTION" in res.stderr and len(res.stderr.strip().splitlines()) == 1
