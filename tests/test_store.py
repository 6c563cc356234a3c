"""Image shard layout (docs/data-products.md), atomic writes, completeness, dataset views, splits."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("abtem")
zarr = pytest.importorskip("zarr")

sys.path.insert(0, str(Path(__file__).parent))
import test_imaging as ti  # noqa: E402  (real structures and MD shards in the contract format)
from hrtemflow.core.errors import HrtemflowError  # noqa: E402
from hrtemflow.imaging.shard import run_shard as run_image_shard
from hrtemflow.store import layout
from hrtemflow.store.dataset import open_dataset
from hrtemflow.store.reader import is_complete, read_arrays, strings
from hrtemflow.store.splits import split_structures
from hrtemflow.store.writer import labels_to_arrays, shard_writer, write_image_shard

SCALARS = layout.SCALAR_PARAMS  # the shard layout's params, from its owner
ATTRS = (
    "schema_version",
    "kind",
    "family",
    "group",
    "shard",
    "spec_sha256",
    "versions",
    "sizes",
    "n_samples",
    "n_failed_skipped",
    "conventions",
    "complete",
)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> list[Path]:
    """Two real shards: (8,4) tubes and (10,0) tubes."""
    root = tmp_path_factory.mktemp("store")
    out = []
    for n, m in ((8, 4), (10, 0)):
        group = f"cnt-{n}-{m}"
        md = ti.write_md_shard(root / "md" / group, "cnt", group, ti.tubes((n, m), (n, m)))
        spec = ti.make_spec("cnt", group, md, views=2, variants=2, sizes=[32, 64])
        run_image_shard(spec, root / f"{group}.zarr", progress=False)
        out.append(root / f"{group}.zarr")
    return out


def test_layout_matches_the_contract(shards):
    g = zarr.open_group(str(shards[0]), mode="r")
    n = 2 * 2 * 2
    for key in ATTRS:
        assert key in g.attrs, key
    assert g.attrs["schema_version"] == 1 and g.attrs["kind"] == "images" and g.attrs["sizes"] == [32, 64]
    assert g["sample_id"].shape == (n,) and g["image_id"].shape == (n,)
    for name in SCALARS:
        assert g[f"params/{name}"].shape == (n,) and g[f"params/{name}"].dtype == np.float64, name
    assert g["params/euler_rad"].shape == (n, 3) and g["params/shift_A"].shape == (n, 2)
    assert g["labels/chirality"][...].tolist() == ["8-4"] * n and g["labels/n"].dtype == np.int64
    for s in (32, 64):
        for kind in ("image", "noise_free", "clean"):
            arr = g[f"s{s}/{kind}"]
            assert arr.shape == (n, s, s) and arr.dtype == np.float32 and arr.chunks == (1, s, s)
            assert arr.compressors, "compressed"
        px = g[f"s{s}/pixel_size_A"][...]
        assert np.allclose(px, g["params/fov_A"][...] / s)


def test_round_trip_through_write_image_shard(shards, tmp_path):
    """Arrays read from a shard, written again with write_image_shard, read back identical."""
    src = zarr.open_group(str(shards[0]), mode="r")
    sizes = list(src.attrs["sizes"])
    arrays = {
        "sample_id": strings(src["sample_id"]),
        "image_id": strings(src["image_id"]),
        "params": read_arrays(src, "params"),
        "labels": read_arrays(src, "labels"),
    }
    for s in sizes:
        arrays[f"s{s}"] = {k: src[f"s{s}/{k}"][...] for k in ("image", "noise_free", "clean", "pixel_size_A")}
    write_image_shard(tmp_path / "copy.zarr", arrays, dict(src.attrs))
    assert is_complete(tmp_path / "copy.zarr")
    a, b = open_dataset([shards[0]], 64), open_dataset([tmp_path / "copy.zarr"], 64)
    assert np.array_equal(a.sample_id, b.sample_id) and np.array_equal(a.image_id, b.image_id)
    for kind in ("image", "noise_free", "clean"):
        assert np.array_equal(a.read(range(len(a)), kind), b.read(range(len(b)), kind))
    for name in a.params:
        assert np.array_equal(a.params[name], b.params[name])
    for name in a.labels:
        assert np.array_equal(a.labels[name], b.labels[name])


def test_failure_mid_write_leaves_no_store(tmp_path):
    final = tmp_path / "x.zarr"
    block = {
        32: {
            "image": np.ones((2, 32, 32)),
            "noise_free": np.ones((2, 32, 32)),
            "clean": np.ones((2, 32, 32)),
            "pixel_size_A": [1.0, 1.0],
        }
    }
    with pytest.raises(RuntimeError, match="killed"):
        with shard_writer(final, 4, [32], rows_per_block=2, attrs={"sizes": [32]}) as w:
            w.write_block(0, block)
            raise RuntimeError("killed mid-write")
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary folder left either
    # an index that was never written is a failure too
    with pytest.raises(HrtemflowError, match="never written"):
        with shard_writer(final, 2, [32], rows_per_block=2, attrs={"sizes": [32]}) as w:
            w.write_block(0, block)
    assert not final.exists() and not is_complete(final)


def test_failed_rewrite_keeps_the_old_complete_store(shards, tmp_path):
    import shutil

    final = tmp_path / "s.zarr"
    shutil.copytree(shards[0], final)
    before = open_dataset([final], 32).read([0])
    with pytest.raises(RuntimeError):
        with shard_writer(final, 1, [32], rows_per_block=1, attrs={"sizes": [32]}):
            raise RuntimeError("boom")
    assert is_complete(final)
    assert np.array_equal(open_dataset([final], 32).read([0]), before)


def test_is_complete(tmp_path, shards):
    assert is_complete(shards[0])
    assert not is_complete(tmp_path / "absent.zarr")
    g = zarr.open_group(str(tmp_path / "half.zarr"), mode="w", zarr_format=3)
    g.attrs["complete"] = False
    assert not is_complete(tmp_path / "half.zarr")
    with pytest.raises(HrtemflowError, match="incomplete"):
        open_dataset([tmp_path / "half.zarr"], 32)


def test_dataset_joins_shards_and_reads_on_demand(shards):
    ds = open_dataset(shards, 64)
    assert len(ds) == 16 and set(np.unique(ds.shard)) == {0, 1}
    assert set(ds.labels["chirality"]) == {"8-4", "10-0"}
    idx = [15, 0, 9, 3, 9]
    images = ds.read(idx, "clean")
    for j, i in enumerate(idx):
        direct = zarr.open_group(str(shards[ds.shard[i]]), mode="r")["s64/clean"][ds.row[i]]
        assert np.array_equal(images[j], direct)
    assert ds.read(slice(2, 5)).shape == (3, 64, 64)
    with pytest.raises(HrtemflowError, match="sizes"):
        open_dataset(shards, 128)


def test_split_by_structure_is_stable_and_disjoint(shards):
    ids = [f"cnt-8-4-{i:07d}" for i in range(3000)] + [f"cnt-10-0-{i:07d}" for i in range(4)]
    side = split_structures(ids, 0.1, 0.2)
    big = np.array([side[i] for i in ids[:3000]])
    assert abs(np.mean(big == "val") - 0.1) < 0.002 and abs(np.mean(big == "test") - 0.2) < 0.002
    # every side gets a structure even from a group of 4, and one always stays for training
    small = [side[i] for i in ids[3000:]]
    assert sorted(set(small)) == ["test", "train", "val"]
    # stable: the same id gets the same side whatever the order of the list
    again = split_structures(ids[::-1], 0.1, 0.2)
    assert again == side
    # disjoint by structure on a real dataset: all images of a sample on one side
    ds = open_dataset(shards, 32)
    sides = ds.split(0.3, 0.3)
    for sid in np.unique(ds.sample_id):
        assert len(set(sides[ds.sample_id == sid])) == 1


def test_labels_to_arrays_types():
    arrays = labels_to_arrays(
        [
            {"n": 8, "x": 1.5, "ok": True, "name": "a", "composition": {"Ag": 3, "Co": 1}, "maybe": None},
            {"n": 9, "x": 2, "ok": False, "name": "b", "composition": {"Ag": 2, "Co": 2}, "maybe": 0.5},
        ],
        repeat=2,
    )
    assert arrays["n"].dtype == np.int64 and arrays["n"].tolist() == [8, 8, 9, 9]
    assert arrays["x"].dtype == np.float64 and arrays["ok"].dtype == bool
    assert arrays["name"].tolist() == ["a", "a", "b", "b"] and arrays["composition_Co"].tolist() == [1, 1, 2, 2]
    assert np.isnan(arrays["maybe"][0]) and arrays["maybe"][2] == 0.5
