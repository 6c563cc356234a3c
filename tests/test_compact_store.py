"""The compact image store (`imaging.storage: compact`, hrtemflow.store.codec): the same shard imaged
with float32 and with compact storage reads back the same images (the noisy ones exactly, the noise-free
and clean ones to a sixteenth of the shot noise), through every reader, at a fraction of the bytes."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from hrtemflow.imaging.shard import check_spec, run_shard
from hrtemflow.store import codec, layout
from hrtemflow.store.dataset import open_dataset
from hrtemflow.store.reader import open_array, open_shard, read_rows
from test_imaging import make_spec, tubes, write_md_shard


def _bytes(store: Path, size: int) -> int:
    return sum(
        p.stat().st_size for kind in layout.IMAGE_KINDS for p in (store / f"s{size}" / kind).rglob("*") if p.is_file()
    )


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path, dict]:
    """One CNT shard imaged twice from the same spec and seeds: float32 and compact, with a real gain."""
    root = tmp_path_factory.mktemp("compact")
    md = write_md_shard(root / "md", "cnt", "cnt-8-4", tubes((8, 4), (10, 0)))
    spec = make_spec("cnt", "cnt-8-4", md, views=2, variants=3, sizes=(64, 128), noise={"dose_e_per_A2": [100, 3000]})
    compact = copy.deepcopy(spec)
    compact["imaging"]["storage"] = "compact"
    a, b = root / "f32.zarr", root / "compact.zarr"
    run_shard(spec, a, progress=False)
    run_shard(compact, b, progress=False)
    return a, b, spec


@pytest.mark.parametrize("size", [64, 128])
def test_compact_reads_back_the_float32_images(pair, size):
    a, b, _ = pair
    ga, gb = open_shard(a), open_shard(b)
    assert gb.attrs[layout.STORAGE] == "compact" and layout.STORAGE not in ga.attrs
    assert gb[layout.image_key(size)].dtype == np.dtype(codec.INT_DTYPE)
    n = ga[layout.SAMPLE_ID].shape[0]
    rows = np.arange(n)
    for kind in layout.IMAGE_KINDS:
        key = layout.image_key(size, kind)
        x, y = read_rows(open_array(a, key), rows), read_rows(open_array(b, key, "zarrs"), rows)
        assert y.dtype == np.float32 and y.shape == x.shape
        sigma = np.sqrt(np.maximum(np.asarray(gb[codec.encoding_key(size, "mean_counts")][:]), 1.0))[:, None, None]
        gain = (
            np.asarray(ga[layout.param_key("brightness")][:])[:, None, None]
            * np.asarray(ga[layout.param_key("contrast")][:])[:, None, None]
        )
        if kind == "image":  # the counts are integers: exact to float32 rounding
            np.testing.assert_allclose(y, x, rtol=2e-6, atol=1e-3)
        else:  # steps of sigma/16 (the clean target has no gain): at most half a step off
            scale = sigma * (gain if kind == "noise_free" else 1.0)
            assert np.all(np.abs(y - x) <= 0.5 * scale / codec.QUANTA_PER_SIGMA * 1.01 + 1e-3)
    # the dataset view (figures) and a permuted read (the feed) decode the same way
    ds = open_dataset([b], size)
    np.testing.assert_array_equal(
        ds.read([2, 0, 1], "image"), read_rows(open_array(b, layout.image_key(size)), np.array([2, 0, 1]))
    )


def test_compact_is_several_times_smaller(pair):
    """At 100-3000 e-/Å² on 12 images (benchmarks/store_size.py measures the demo and a bench: >= 4x)."""
    a, b, _ = pair
    for size in (64, 128):
        assert _bytes(a, size) / _bytes(b, size) >= 3.0, (size, _bytes(a, size), _bytes(b, size))


def test_storage_value_is_checked(pair):
    _, _, spec = pair
    bad = copy.deepcopy(spec)
    bad["imaging"]["storage"] = "jpeg"
    with pytest.raises(Exception, match="imaging.storage 'jpeg'"):
        check_spec(bad)


def test_codec_round_trip_on_synthetic_counts():
    rng = np.random.default_rng(3)
    lam = rng.uniform(5, 2000, (4, 1, 1)) * (1 + 0.3 * rng.standard_normal((4, 32, 32)))
    gain = np.stack([rng.uniform(0.8, 1.2, 4), rng.uniform(0.8, 1.2, 4), rng.uniform(0, 0.1, 4)], axis=1)
    b, c, bg = (gain[:, i, None, None] for i in range(3))
    mu = lam.mean(axis=(1, 2), keepdims=True)
    x = rng.poisson(np.clip(lam, 0, None)).astype(np.float64)
    images = {
        "image": b * (mu + c * (x - mu) + bg * mu),
        "noise_free": b * (mu + c * (lam - mu) + bg * mu),
        "clean": lam * 1.1,
    }
    encoded, params = codec.encode(images, gain)
    np.testing.assert_array_equal(encoded["image"], x.astype(np.int32))
    half_step = {
        "image": 0.0,
        "noise_free": 0.5 * params["step_noise_free"][:, None, None] * b * c,
        "clean": 0.5 * params["step_clean"][:, None, None],
    }
    for kind in layout.IMAGE_KINDS:
        back = codec.decode(kind, encoded[kind], gain, params).astype(np.float64)
        tolerance = half_step[kind] * 1.001 + 2e-6 * np.abs(images[kind]) + 1e-4  # + float32 rounding
        assert np.all(np.abs(back - images[kind]) <= tolerance), kind
