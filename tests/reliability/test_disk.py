"""A full disk and a read-only results folder: one clear line, nothing half-written, old data intact.

The stages run as the real `hrtemflow` command writing into
- a small tmpfs filled up to a few pages before the command starts (disk full, ENOSPC), and
- a read-only bind mount of a folder (EROFS; root ignores permission bits, not a read-only mount).
Each must exit with status 2 and one `hrtemflow <cmd>: error: PATH: <reason>; <what to do>` line
(no traceback), leave nothing under the final output names and no temporaries, and leave a
complete output that was already there byte for byte as it was. After space is freed the same
command succeeds. Mounting needs root (CAP_SYS_ADMIN); without it the tests are skipped, saying why.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from tests.conftest import BIN, ROOT, tiny_campaign

HRTEMFLOW = str(BIN / "hrtemflow")
ENV = {k: v for k, v in os.environ.items() if k != "HRTEMFLOW_FAULT_FRACTION"}


# ------------------------------------------------------------------------------------------ mounts


def _mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True)


def _umount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture(scope="module")
def can_mount(tmp_path_factory) -> None:
    probe = tmp_path_factory.mktemp("probe")
    if shutil.which("mount") is None:
        pytest.skip("no `mount` command here: cannot make a small or read-only file system")
    res = _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe))
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {res.stderr.strip()}")
    _umount(probe)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    res = _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    assert res.returncode == 0, res.stderr
    try:
        yield path
    finally:
        _umount(path)


@contextlib.contextmanager
def read_only_view(source: Path, path: Path) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    res = _mount("--bind", str(source), str(path))
    assert res.returncode == 0, res.stderr
    try:
        res = _mount("-o", "remount,bind,ro", str(path))
        assert res.returncode == 0, res.stderr
        yield path
    finally:
        _umount(path)


def fill(mount: Path, leave: int = 0) -> Path:
    """Fill the file system up, then free `leave` bytes (whole pages on tmpfs)."""
    filler = mount / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


# ------------------------------------------------------------------------------------------ inputs


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([HRTEMFLOW, *args], env=ENV, capture_output=True, text=True, cwd=cwd)


def assert_clear_error(
    res: subprocess.CompletedProcess, command: str, path: Path, reason: str, one_line: bool = True
) -> None:
    err = res.stderr.strip()
    assert res.returncode == 2, (res.returncode, err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    last = err.splitlines()[-1]
    assert last.startswith(f"hrtemflow {command}: error: "), err[-3000:]
    assert str(path) in last and reason in last, last
    if one_line:
        assert len(err.splitlines()) == 1, err


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp" in p.name]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, can_mount) -> dict:
    """A tiny MD spec, its reference outputs, an imaging spec on them and its reference store, a config."""
    from hrtemflow.campaign.config import load_config
    from hrtemflow.campaign.plan import make_plan
    from hrtemflow.campaign.specs import image_spec, md_spec

    root = tmp_path_factory.mktemp("disk")
    raw = tiny_campaign()
    raw["families"]["cnt"].update(samples_per_chirality=2, shard_size=2)
    cfg = load_config(raw, base=ROOT)
    plan = make_plan(cfg)
    shard = next(s for s in plan.shards if s.family == "cnt")
    ref = root / "ref"
    (root / "md.json").write_text(json.dumps(md_spec(cfg, shard)))
    res = run(
        "md",
        str(root / "md.json"),
        "--structures",
        str(ref / "x.extxyz"),
        "--manifest",
        str(ref / "x.manifest.json"),
        "--no-progress",
    )
    assert res.returncode == 0, res.stderr
    img = {
        **image_spec(plan, shard),
        "md": {"structures": str(ref / "x.extxyz"), "manifest": str(ref / "x.manifest.json")},
    }
    (root / "image.json").write_text(json.dumps(img))
    res = run("image", str(root / "image.json"), "--out", str(ref / "x.zarr"), "--no-progress")
    assert res.returncode == 0, res.stderr
    (root / "campaign.yaml").write_text(yaml.safe_dump(raw))
    return {
        "root": root,
        "md": root / "md.json",
        "image": root / "image.json",
        "config": root / "campaign.yaml",
        "ref": ref,
        "cfg": cfg,
    }


def md_args(spec: Path, out: Path) -> list[str]:
    return [
        "md",
        str(spec),
        "--structures",
        str(out / "x.extxyz"),
        "--manifest",
        str(out / "x.manifest.json"),
        "--no-progress",
    ]


# ------------------------------------------------------------------------------------------ disk full


def test_md_on_a_full_disk(inputs, tmp_path):
    ref = snapshot(inputs["ref"])
    with tmpfs(tmp_path / "fs", "512k") as fs:
        shutil.copy(inputs["ref"] / "x.extxyz", fs / "x.extxyz")  # a complete output from before
        shutil.copy(inputs["ref"] / "x.manifest.json", fs / "x.manifest.json")
        filler = fill(fs, leave=4096)  # less than the structures file needs
        res = run(*md_args(inputs["md"], fs / "new"))
        assert_clear_error(res, "md", fs / "new" / "x.extxyz", "No space left on device")
        assert not (fs / "new" / "x.extxyz").exists() and not (fs / "new" / "x.manifest.json").exists()
        res = run(*md_args(inputs["md"], fs))  # the same names: the old pair must survive
        assert_clear_error(res, "md", fs / "x.extxyz", "No space left on device")
        assert (fs / "x.extxyz").read_bytes() == ref["x.extxyz"] and (fs / "x.manifest.json").read_bytes() == ref[
            "x.manifest.json"
        ]
        assert temporaries(fs) == []
        filler.unlink()  # space again: the same command goes through
        res = run(*md_args(inputs["md"], fs / "new"))
        assert res.returncode == 0, res.stderr
        assert (fs / "new" / "x.extxyz").read_bytes() == ref["x.extxyz"]


def test_image_on_a_full_disk(inputs, tmp_path):
    from hrtemflow.store.reader import is_complete

    ref = snapshot(inputs["ref"] / "x.zarr")
    with tmpfs(tmp_path / "fs", "4m") as fs:
        shutil.copytree(inputs["ref"] / "x.zarr", fs / "old.zarr")
        filler = fill(fs, leave=16 * 4096)  # the store gets part of the way
        res = run("image", str(inputs["image"]), "--out", str(fs / "new.zarr"), "--no-progress")
        assert_clear_error(res, "image", fs / "new.zarr", "No space left on device")
        assert not (fs / "new.zarr").exists()
        res = run("image", str(inputs["image"]), "--out", str(fs / "old.zarr"), "--no-progress")
        assert_clear_error(res, "image", fs / "old.zarr", "No space left on device")
        assert is_complete(fs / "old.zarr") and snapshot(fs / "old.zarr") == ref
        assert temporaries(fs) == []
        filler.unlink()
        res = run("image", str(inputs["image"]), "--out", str(fs / "new.zarr"), "--no-progress")
        assert res.returncode == 0, res.stderr
        assert is_complete(fs / "new.zarr")


def test_plan_on_a_full_disk(inputs, tmp_path):
    from hrtemflow.campaign.plan import make_plan
    from hrtemflow.campaign.specs import spec_texts

    texts = spec_texts(make_plan(inputs["cfg"]))
    with tmpfs(tmp_path / "fs", "256k") as fs:
        filler = fill(fs, leave=3 * 4096)  # room for a few spec files, not for all
        res = run("plan", str(inputs["config"]), "--base", str(fs))
        assert res.returncode == 2 and "No space left on device" in res.stderr, res.stderr
        assert_clear_error(res, "plan", fs / "results" / "plan", "No space left on device")
        written = [p for p in (fs / "results").rglob("*") if p.is_file()]
        for p in written:  # the specs that made it are whole
            assert p.read_text() == texts[str(p.relative_to(fs))], p
        assert temporaries(fs) == []
        filler.unlink()
        res = run("plan", str(inputs["config"]), "--base", str(fs))
        assert res.returncode == 0, res.stderr
        assert sorted(str(p.relative_to(fs)) for p in (fs / "results").rglob("*.json")) == sorted(texts)


def test_train_on_a_full_disk(inputs, tmp_path):
    from tests.test_learn_data import make_spec

    spec = make_spec(tmp_path, "chirality", samples_per_group=3, shard_size=3, views=1, variants=4, epochs=2, width=4)
    (tmp_path / "chirality.json").write_text(json.dumps(spec))
    with tmpfs(tmp_path / "fs", "256k") as fs:
        fill(fs, leave=4096)
        res = run(
            "train",
            str(tmp_path / "chirality.json"),
            "--out-dir",
            str(fs / "model"),
            "--base",
            str(tmp_path),
            "--quiet",
        )
        assert_clear_error(res, "train", fs / "model", "No space left on device", one_line=False)
        assert not (fs / "model" / "model.keras").exists() and not (fs / "model" / "card.json").exists()
        assert temporaries(fs) == []


# ------------------------------------------------------------------------------------------ read-only


@pytest.fixture
def read_only(inputs, tmp_path) -> Iterator[Path]:
    """A read-only view of a folder holding complete outputs from before."""
    src = tmp_path / "src"
    shutil.copytree(inputs["ref"], src)
    with read_only_view(src, tmp_path / "ro") as ro:
        yield ro


def test_read_only_results_folder(inputs, read_only, tmp_path):
    before = snapshot(read_only)
    res = run(*md_args(inputs["md"], read_only / "new"))
    assert_clear_error(res, "md", read_only / "new", "Read-only file system")
    res = run(*md_args(inputs["md"], read_only))
    assert_clear_error(res, "md", read_only / "x.manifest.json", "Read-only file system")
    res = run("image", str(inputs["image"]), "--out", str(read_only / "x.zarr"), "--no-progress")
    assert_clear_error(res, "image", read_only / "x.zarr", "Read-only file system")
    res = run("plan", str(inputs["config"]), "--base", str(read_only))
    assert_clear_error(res, "plan", read_only / "results", "Read-only file system")
    res = run(
        "summary",
        "--manifests",
        str(read_only / "x.manifest.json"),
        "--images",
        str(read_only / "x.zarr"),
        "--out",
        str(read_only / "summary.json"),
    )
    assert_clear_error(res, "summary", read_only / "summary.json", "Read-only file system", one_line=False)
    assert snapshot(read_only) == before  # nothing new, nothing changed


def test_train_into_a_read_only_folder(read_only, tmp_path):
    from tests.test_learn_data import make_spec

    spec = make_spec(tmp_path, "chirality", samples_per_group=3, shard_size=3, views=1, variants=4, epochs=1, width=4)
    (tmp_path / "chirality.json").write_text(json.dumps(spec))
    before = snapshot(read_only)
    res = run(
        "train",
        str(tmp_path / "chirality.json"),
        "--out-dir",
        str(read_only / "model"),
        "--base",
        str(tmp_path),
        "--quiet",
    )
    assert_clear_error(res, "train", read_only / "model", "Read-only file system", one_line=False)
    assert snapshot(read_only) == before


def test_permission_denied_is_one_clear_line_and_other_os_errors_are_not_hidden(tmp_path, monkeypatch, capsys):
    """EACCES (a folder of another user; root cannot be refused here, so it is raised by hand) reads like
    ENOSPC and EROFS; an OSError the user cannot fix is a bug and keeps its traceback."""
    from hrtemflow.cli import main
    from hrtemflow.core import atomic as io

    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"family": "cnt", "samples": []}))
    out = tmp_path / "locked" / "summary.json"

    def denied(path, text):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(io, "write_text_atomic", denied)
    assert main(["summary", "--manifests", str(manifest), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hrtemflow summary: error: ") and str(out) in err and "Permission denied" in err
    assert "writable" in err and len(err.splitlines()) == 1

    def reset(path, text):
        raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")

    monkeypatch.setattr(io, "write_text_atomic", reset)
    with pytest.raises(ConnectionResetError):
        main(["summary", "--manifests", str(manifest), "--out", str(out)])
