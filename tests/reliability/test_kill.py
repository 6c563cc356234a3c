"""kill -9 at seeded random moments: MD, imaging, training and the whole workflow.

Each stage runs as the real `hrtemflow` command in a subprocess on a tiny input and is SIGKILLed
after a delay drawn from a seeded generator. After every kill:
- a final output name either does not exist or holds a complete output equal to an uninterrupted
  run's (a kill never leaves something that looks complete but is not);
- anything else left beside it is a hidden temporary `.NAME.*.tmp*` sibling;
- a rerun over those leftovers finishes and gives the same bytes (MD: extxyz identical, manifest
  identical without its timing fields; imaging: every array and attribute identical).
Training is killed after its first checkpoint and must resume from it (epoch > 0), not start over.
The workflow test kills the whole snakemake process tree mid-run, recovers the way Snakemake says
(`--unlock` for the lock a SIGKILL leaves, then `--rerun-incomplete`), and checks that the
summary's counts add up.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import BIN, ROOT, planned_jobs, run_snakemake, snakemake_exe, tiny_campaign

HRTEMFLOW = str(BIN / "hrtemflow")
SEED = 20260511
ENV = {k: v for k, v in os.environ.items() if k != "HRTEMFLOW_FAULT_FRACTION"}


# ------------------------------------------------------------------------------------------ helpers


def start(cmd: list[str], cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def kill(proc: subprocess.Popen) -> bool:
    """SIGKILL `proc` (no cleanup handler runs); True if it was still running."""
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    return alive


def is_hidden_tmp(entry: str, finals: list[str]) -> bool:
    """`.NAME.<random>.tmp`, `.NAME.<random>.tmp.<suffix>` or `.NAME.<random>.old.tmp` of a final NAME."""
    return any(entry.startswith(f".{name}.") and ".tmp" in entry[len(name) + 2 :] for name in finals)


def check_leftovers(folder: Path, finals: list[str]) -> list[str]:
    """Everything in `folder` is a final name or a hidden temporary of one; returns the temporaries."""
    if not folder.exists():
        return []
    entries = sorted(os.listdir(folder))
    stray = [e for e in entries if e not in finals and not is_hidden_tmp(e, finals)]
    assert not stray, f"a kill left files that are neither outputs nor hidden temporaries: {stray}"
    return [e for e in entries if e not in finals]


def strip_timing(manifest: dict) -> dict:
    from hrtemflow.atomistic.md_shard import strip_timing as strip

    return strip(manifest)


def zarr_contents(path: Path) -> dict:
    from hrtemflow.store.reader import read_all

    return read_all(path)


def assert_same_store(a: Path, b: Path) -> None:
    ca, cb = zarr_contents(a), zarr_contents(b)
    assert sorted(ca) == sorted(cb)
    for key in ca:
        if key.endswith("@attrs"):
            assert ca[key] == cb[key], key
        else:
            x, y = ca[key], cb[key]
            assert x.dtype == y.dtype and x.shape == y.shape, key
            if x.dtype.kind == "f":
                np.testing.assert_array_equal(x, y, err_msg=key)  # NaN equals NaN here, bit for bit otherwise
            else:
                assert (x == y).all(), key


# ------------------------------------------------------------------------------------------ inputs


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kill")


@pytest.fixture(scope="module")
def specs(root) -> dict:
    """One CNT MD shard of 4 samples (about a second of LAMMPS, some injected failures) and its imaging spec."""
    from hrtemflow.campaign.config import load_config
    from hrtemflow.campaign.plan import make_plan
    from hrtemflow.campaign.specs import image_spec, md_spec

    raw = tiny_campaign()
    raw["campaign"]["fault_injection"] = {"fraction": 0.3}
    cnt = raw["families"]["cnt"]
    cnt.update(samples_per_chirality=4, shard_size=4)
    cnt["md"]["duration_ps"] = 1.0
    cfg = load_config(raw, base=ROOT)
    plan = make_plan(cfg)
    shard = next(s for s in plan.shards if s.family == "cnt")
    md = md_spec(cfg, shard)
    img = image_spec(plan, shard)
    ref = root / "ref"
    img["md"] = {"structures": str(ref / "md.extxyz"), "manifest": str(ref / "md.manifest.json")}
    (root / "md.json").write_text(json.dumps(md))
    (root / "image.json").write_text(json.dumps(img))
    return {"md": root / "md.json", "image": root / "image.json", "ref": ref}


def md_cmd(spec: Path, out: Path) -> list[str]:
    return [
        HRTEMFLOW,
        "md",
        str(spec),
        "--structures",
        str(out / "md.extxyz"),
        "--manifest",
        str(out / "md.manifest.json"),
        "--threads",
        "1",
        "--no-progress",
    ]


@pytest.fixture(scope="module")
def md_reference(specs) -> float:
    """The uninterrupted MD run (the reference bytes, also the imaging stage's input); its wall time."""
    t0 = time.perf_counter()
    res = subprocess.run(md_cmd(specs["md"], specs["ref"]), env=ENV, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    manifest = json.loads((specs["ref"] / "md.manifest.json").read_text())
    assert manifest["n_ok"] >= 2, "the reference shard needs ok samples to image"
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------------------ MD


def check_md_state(out: Path, ref: Path) -> None:
    """Each final name is absent or complete and equal to the reference; the manifest vouches for the pair."""
    xyz, man = out / "md.extxyz", out / "md.manifest.json"
    if man.exists():
        assert xyz.exists(), "a manifest without its structures file"
        assert strip_timing(json.loads(man.read_text())) == strip_timing(
            json.loads((ref / "md.manifest.json").read_text())
        )
    if xyz.exists():
        assert xyz.read_bytes() == (ref / "md.extxyz").read_bytes(), "a structures file that is not the complete one"
    check_leftovers(out, ["md.extxyz", "md.manifest.json"])


def test_md_killed_at_random_points_then_rerun_gives_the_same_bytes(specs, md_reference, root):
    rng = random.Random(SEED)
    out = root / "md-killed"
    interrupted = 0
    for _ in range(3):  # killed at random moments, each over the leftovers of the one before
        proc = start(md_cmd(specs["md"], out))
        time.sleep(rng.uniform(0.1, 0.9) * md_reference)
        interrupted += kill(proc)
        check_md_state(out, specs["ref"])
    # once more, killed the moment a temporary output appears: in the middle of writing
    proc = start(md_cmd(specs["md"], out))
    seen = set(os.listdir(out)) if out.exists() else set()
    deadline = time.monotonic() + 10 * md_reference
    while proc.poll() is None and time.monotonic() < deadline:
        if out.exists() and any(
            is_hidden_tmp(e, ["md.extxyz", "md.manifest.json"]) for e in set(os.listdir(out)) - seen
        ):
            break
    interrupted += kill(proc)
    check_md_state(out, specs["ref"])
    assert interrupted >= 1, "the kills came too late to interrupt anything; lengthen the MD of the spec"

    res = subprocess.run(md_cmd(specs["md"], out), env=ENV, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (out / "md.extxyz").read_bytes() == (specs["ref"] / "md.extxyz").read_bytes()
    check_md_state(out, specs["ref"])


# ------------------------------------------------------------------------------------------ imaging


def image_cmd(spec: Path, out: Path) -> list[str]:
    return [HRTEMFLOW, "image", str(spec), "--out", str(out), "--threads", "1", "--no-progress"]


def test_image_killed_while_writing_then_rerun_gives_the_same_arrays(specs, md_reference, root):
    from hrtemflow.store.reader import is_complete

    rng = random.Random(SEED + 1)
    ref = root / "img-ref" / "shard.zarr"
    t0 = time.perf_counter()
    res = subprocess.run(image_cmd(specs["image"], ref), env=ENV, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    assert res.returncode == 0 and is_complete(ref), res.stdout + res.stderr

    out = root / "img-killed" / "shard.zarr"
    interrupted = 0
    for trial in range(4):
        proc = start(image_cmd(specs["image"], out))
        if trial < 2:  # at a random moment of the whole run
            time.sleep(rng.uniform(0.1, 0.9) * wall)
        else:  # at a random moment after the store being built has appeared (the Zarr write runs throughout)
            deadline = time.monotonic() + 5 * wall
            while (
                proc.poll() is None
                and time.monotonic() < deadline
                and not any(
                    is_hidden_tmp(e, [out.name]) for e in (os.listdir(out.parent) if out.parent.exists() else [])
                )
            ):
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.5) * wall)
        interrupted += kill(proc)
        if out.exists():
            assert is_complete(out), "a killed imaging job left an incomplete store under the final name"
            assert_same_store(out, ref)
        check_leftovers(out.parent, [out.name])
    assert interrupted >= 1, "the kills came too late to interrupt anything; make the imaging spec larger"

    res = subprocess.run(image_cmd(specs["image"], out), env=ENV, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert is_complete(out)
    assert_same_store(out, ref)

    # a rerun over an existing complete store, killed at a random moment: old or new, never half
    proc = start(image_cmd(specs["image"], out))
    time.sleep(rng.uniform(0.3, 1.0) * wall)
    kill(proc)
    assert is_complete(out)
    assert_same_store(out, ref)
    check_leftovers(out.parent, [out.name])


def test_replacing_a_store_is_atomic_even_when_killed_while_the_old_one_is_removed(tmp_path, monkeypatch):
    """Replacing `final` must never delete it file by file in place: a kill would leave half a store
    whose zarr.json still says complete. The old one is renamed aside first, then removed."""
    import shutil

    from hrtemflow.core import atomic as io
    from hrtemflow.store import layout
    from hrtemflow.store.reader import is_complete
    from hrtemflow.store.writer import write_image_shard

    def shard(value: float) -> dict:
        img = np.full((2, 8, 8), value, np.float32)
        params = {k: np.zeros(2) for k in layout.SCALAR_PARAMS}
        params.update(euler_rad=np.zeros((2, 3)), shift_A=np.zeros((2, 2)))
        return {
            "sample_id": np.array(["a-0000000", "a-0000001"]),
            "image_id": np.array(["x", "y"]),
            "params": params,
            "labels": {},
            "s8": {"image": img, "noise_free": img, "clean": img, "pixel_size_A": np.ones(2)},
        }

    final = tmp_path / "s.zarr"
    write_image_shard(final, shard(1.0), {"sizes": [8]})
    real_rmtree = shutil.rmtree
    removed = []

    def killed_halfway(path, *args, **kwargs):
        if Path(path).resolve() == final.resolve() or (
            Path(path).name.startswith(".s.zarr.") and Path(path).name.endswith(".old.tmp")
        ):
            victims = sorted(p for p in Path(path).rglob("*") if p.is_file() and p.name != "zarr.json")
            for p in victims[: len(victims) // 2]:
                p.unlink()
            removed.append(path)
            raise KeyboardInterrupt("killed while removing the old store")
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(io.shutil, "rmtree", killed_halfway)
    with pytest.raises(KeyboardInterrupt):
        write_image_shard(final, shard(2.0), {"sizes": [8]})
    monkeypatch.undo()
    assert removed, "the old store was never removed"
    assert is_complete(final)
    import zarr

    assert float(zarr.open_group(str(final), mode="r")["s8/image"][0, 0, 0]) == 2.0  # the new store, whole
    for key, value in zarr_contents(final).items():
        assert not (isinstance(value, np.ndarray) and value.dtype.kind == "f" and np.isnan(value).any()), key


# ------------------------------------------------------------------------------------------ training


def test_train_killed_after_a_checkpoint_resumes_from_it(root):
    from tests.test_learn_data import make_spec

    from hrtemflow.learn.bundle import load_checked as load_bundle

    rng = random.Random(SEED + 2)
    base = root / "learn"
    spec = make_spec(base, "chirality", epochs=5, patience=10, width=4)
    spec_path = base / "chirality.json"
    spec_path.write_text(json.dumps(spec))
    out = base / "model"
    cmd = [HRTEMFLOW, "train", str(spec_path), "--out-dir", str(out), "--base", str(base), "--quiet"]
    proc = start(cmd)
    state_path = out / "checkpoint" / "state.json"
    deadline = time.monotonic() + 300
    while proc.poll() is None and not state_path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(rng.uniform(0.0, 0.3))
    assert kill(proc), "training finished before it could be killed; give it more epochs"
    state = json.loads(state_path.read_text())  # written atomically, last of the checkpoint's files
    assert state["epoch"] >= 1
    assert not (out / "model.keras").exists() and not (out / "card.json").exists()
    check_leftovers(out, ["checkpoint"])
    check_leftovers(out / "checkpoint", ["state.json", "last.keras", "best.keras"])

    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert f"resuming after epoch {state['epoch']}" in res.stdout, res.stdout[-3000:]
    model, card = load_bundle(out)
    assert card.epochs_run == 5 and len(card.history["loss"]) == 5
    assert card.history["loss"][: state["epoch"]] == state["history"]["loss"]  # those epochs were not run again
    assert model.output_shape == (None, len(spec["classes"]))


# ------------------------------------------------------------------------------------------ workflow


def kill_tree(pid: int) -> int:
    """Stop the whole process tree under `pid` (so nothing forks away), then SIGKILL every process."""
    import psutil

    try:
        top = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return 0
    stopped: dict[int, psutil.Process] = {}
    while True:
        try:
            tree = [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        new = [p for p in tree if p.pid not in stopped]
        if not new:
            break
        for p in new:
            try:
                p.send_signal(signal.SIGSTOP)
            except psutil.NoSuchProcess:
                pass
            stopped[p.pid] = p
    for p in stopped.values():
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    return len(stopped)


@pytest.mark.slow
def test_workflow_killed_mid_run_then_rerun_incomplete_completes(tmp_path):
    import yaml

    from hrtemflow.store.reader import is_complete

    rng = random.Random(SEED + 3)
    cfg = tiny_campaign()
    cfg["learning"]["enabled"] = False  # training is killed on its own above; this keeps the test short
    cfg["families"]["cnt"]["samples_per_chirality"] = 2
    (tmp_path / "campaign.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [
        snakemake_exe(),
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--configfile",
        str(tmp_path / "campaign.yaml"),
        "--cores",
        "2",
    ]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    r = tmp_path / "results"
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline and not list((r / "md").rglob("*.manifest.json")):
        time.sleep(0.1)
    time.sleep(rng.uniform(1.0, 8.0))  # somewhere among the MD and imaging jobs
    assert proc.poll() is None, "the campaign finished before it was killed"
    n_killed = kill_tree(proc.pid)
    proc.wait()
    assert n_killed >= 2  # snakemake and at least one job

    # whatever exists under a final name is complete
    for manifest in r.rglob("*.manifest.json"):
        json.loads(manifest.read_text())
    for store in r.rglob("*.zarr"):
        if not store.name.startswith("."):
            assert is_complete(store), f"{store} exists but is incomplete after the kill"

    # a SIGKILLed snakemake leaves its lock: the rerun says so and how to remove it, then the
    # documented recovery (--unlock, then --rerun-incomplete) finishes the campaign
    res = run_snakemake(tmp_path, cfg, "--rerun-incomplete")
    if res.returncode != 0:
        assert "--unlock" in res.stderr, res.stderr[-5000:]
        unlock = run_snakemake(tmp_path, cfg, "--unlock")
        assert unlock.returncode == 0, unlock.stderr[-3000:]
        res = run_snakemake(tmp_path, cfg, "--rerun-incomplete")
    assert res.returncode == 0, res.stderr[-5000:]

    summary = json.loads((r / "summary" / "campaign.json").read_text())
    manifests = [json.loads(p.read_text()) for p in sorted((r / "md").rglob("*.manifest.json"))]
    assert summary["total"]["samples"] == sum(len(m["samples"]) for m in manifests) == 4 + 4 + 2
    for family, entry in summary["families"].items():
        mine = [m for m in manifests if m["family"] == family]
        assert entry["md"]["samples"] == sum(m["n_samples"] for m in mine)
        assert entry["md"]["ok"] == sum(m["n_ok"] for m in mine)
        assert entry["images"]["consistent"], entry
        assert entry["images"]["shards"] == entry["md"]["shards"] == len(mine)
    assert planned_jobs(tmp_path, cfg) == {}
