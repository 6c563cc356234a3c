"""Learning stage, data side: shard index, split by structure, feed, augmentation, normalisation.

The image shards used here are TEST DATA for the learning code, not physics: small Zarr v3 stores in
the contract layout of docs/data-products.md whose images are lattice fringes with Poisson noise and
the imaging stage's gain. The class sets the fringe frequency, the fringe direction is the astigmatism
angle φ12, and defocus blurs the noise-free image, so the tasks are learnable and every label/geometry
rule can be checked.
`write_fringe_shard` and `make_spec` are imported by the other test_learn_* modules and by
benchmarks/feed_throughput.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from scipy.ndimage import gaussian_filter
from zarr.codecs import BloscCodec

from hrtemflow.imaging.optics import apply_gain
from hrtemflow.store import layout

CNT_CLASSES = ["10-0", "8-4", "7-5", "9-3"]
ORDERINGS = ["core-shell", "janus", "disordered"]
#: fringe frequency (cycles per field of view) of class k
FREQS = (3.0, 4.5, 6.5, 9.0)
TASK_GROUPS = {
    "chirality": [("cnt", f"cnt-{c}") for c in CNT_CLASSES],
    "ordering": [("nanoalloy", f"nanoalloy-{o}") for o in ORDERINGS],
    "aberrations": [("nanoalloy", f"nanoalloy-{o}") for o in ORDERINGS],
    "structure": [("nanoalloy", f"nanoalloy-{o}") for o in ORDERINGS],
    "denoise": [("cnt", f"cnt-{c}") for c in CNT_CLASSES[:2]] + [("amorphous", "amorphous")],
}
PARAMS = layout.SCALAR_PARAMS  # the shard layout's params, from its owner


def fringes(size: int, freq: float, theta: float, phase: float, contrast: float = 0.35) -> np.ndarray:
    """Mean-1 cosine fringes, wave vector at angle theta from the column (x) axis towards rows (y)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    return 1 + contrast * np.cos(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + phase)


def fringe_angle(image: np.ndarray) -> float:
    """Direction (mod π) of the strongest Fourier peak: the fringe wave vector angle."""
    f = np.abs(np.fft.fft2(image - image.mean()))
    f[0, 0] = 0
    ky, kx = np.unravel_index(np.argmax(f), f.shape)
    n = image.shape[0]
    ky, kx = np.fft.fftfreq(n)[ky], np.fft.fftfreq(n)[kx]
    return float(np.arctan2(ky, kx) % np.pi)


def _labels(family: str, group: str, rng: np.random.Generator) -> dict:
    n_atoms = int(rng.integers(80, 200))
    out = {"n_atoms": n_atoms, "energy_per_atom_eV": float(rng.uniform(-4, -3))}
    if family == "cnt":
        n, m = map(int, group.split("-")[1:])
        out.update(
            n=n,
            m=m,
            chirality=f"{n}-{m}",
            diameter_A=0.783 * np.sqrt(n * n + n * m + m * m),
            chiral_angle_deg=0.0,
            length_A=50.0,
            vacancies=0,
            stone_wales=0,
        )
    elif family == "nanoalloy":
        ordering = group.removeprefix("nanoalloy-")
        out.update(
            co_fraction=float(rng.uniform(0.25, 0.5)),
            motif="icosahedron",
            ordering_intent=ordering,
            ordering=ordering,
            com_offset_A=float(rng.uniform(0, 1)),
            surface_ag_fraction=float(rng.uniform(0.5, 1)),
            core_co_fraction=float(rng.uniform(0.5, 1)),
            order_measure=float(rng.uniform(0, 1)),
            radius_A=10.0,
        )
    else:
        out.update(
            density_g_cm3=float(rng.uniform(1.8, 2.4)),
            sp_fraction=0.05,
            sp2_fraction=0.6,
            sp3_fraction=0.35,
            thickness_A=10.0,
        )
    return out


#: the ranges write_fringe_shard draws its parameters from, as the imaging stage records them in attrs
FRINGE_IMAGING = {
    "physics": {"energy_kV": 80},
    "optics": {"defocus_nm": [-50, 50], "c12_nm": [0, 5], "cs_um": [-20, -20]},
    "noise": {"dose_e_per_A2": [20, 200], "brightness": [0.9, 1.1], "contrast": [0.9, 1.1], "background": [0, 0.05]},
}


def write_fringe_shard(
    path: Path,
    *,
    family: str,
    group: str,
    indices: range,
    freq: float,
    views: int = 2,
    variants: int = 4,
    sizes: tuple[int, ...] = (16, 32),
    seed: int = 0,
    override_labels: dict | None = None,
) -> Path:
    """One image shard in the contract layout (test data: fringes, not physics)."""
    rng = np.random.default_rng([seed, int(hashlib.sha256(group.encode()).hexdigest()[:8], 16), indices.start])
    gain_rng = np.random.default_rng([seed, int(hashlib.sha256(group.encode()).hexdigest()[:8], 16), indices.start, 1])
    rows = {
        "sample_id": [],
        "image_id": [],
        "params": {k: [] for k in PARAMS},
        "euler_rad": [],
        "shift_A": [],
        "labels": {},
    }
    images = {s: {"image": [], "noise_free": [], "clean": [], "pixel_size_A": []} for s in sizes}
    for index in indices:
        sid = f"{group}-{index:07d}"
        labels = {**_labels(family, group, rng), **(override_labels or {})}
        f_sample = freq * rng.uniform(0.97, 1.03)
        for v in range(views):
            for o in range(variants):
                rows["sample_id"].append(sid)
                rows["image_id"].append(f"{sid}-v{v:02d}-o{o:02d}")
                p = {k: 0.0 for k in PARAMS}
                p.update(
                    defocus_A=rng.uniform(-500, 500),
                    c12_A=rng.uniform(0, 50),
                    phi12_rad=rng.uniform(0, np.pi),
                    dose_e_per_A2=rng.uniform(20, 200),
                    fov_A=rng.uniform(30, 40),
                    energy_eV=80e3,
                    cs_A=-2e5,
                )
                p.update(
                    brightness=gain_rng.uniform(0.9, 1.1),
                    contrast=gain_rng.uniform(0.9, 1.1),
                    background=gain_rng.uniform(0, 0.05),
                )
                for k in PARAMS:
                    rows["params"][k].append(p[k])
                rows["euler_rad"].append(rng.uniform(0, 2 * np.pi, 3))
                rows["shift_A"].append(rng.uniform(-1, 1, 2))
                for k, val in labels.items():
                    rows["labels"].setdefault(k, []).append(val)
                phase = rng.uniform(0, 2 * np.pi)
                for s in sizes:
                    px = p["fov_A"] / s
                    counts = p["dose_e_per_A2"] * px * px
                    clean = counts * fringes(s, f_sample, p["phi12_rad"], phase)
                    noise_free = counts * gaussian_filter(
                        fringes(s, f_sample, p["phi12_rad"], phase), 0.2 + abs(p["defocus_A"]) / 500 * s / 32
                    )
                    images[s]["clean"].append(clean)
                    images[s]["noise_free"].append(
                        apply_gain(noise_free, noise_free, p)
                    )  # gained as the imaging stage does
                    images[s]["image"].append(apply_gain(rng.poisson(noise_free), noise_free, p).astype(np.float32))
                    images[s]["pixel_size_A"].append(px)
    n = len(rows["sample_id"])
    g = zarr.open_group(str(path), mode="w", zarr_format=3)
    g.attrs.update(
        schema_version=1,
        kind="images",
        family=family,
        group=group,
        shard=path.name.removesuffix(".zarr"),
        spec_sha256=hashlib.sha256(f"{group}:{indices}:{seed}:{sizes}".encode()).hexdigest(),
        versions={"test": "fringes"},
        sizes=list(sizes),
        n_samples=len(indices),
        n_failed_skipped=0,
        conventions={},
        complete=False,
        imaging=FRINGE_IMAGING,
        synthetic="lattice fringes with Poisson noise: test data for the learning code, not physics",
    )

    def put(name: str, values, dtype=None, image=False):
        arr = np.asarray(values) if dtype is None else np.asarray(values, dtype=dtype)
        if arr.dtype.kind in "OU":
            a = g.create_array(name, shape=arr.shape, dtype=str)
        elif image:  # as the imaging stage stores them: one image per chunk, one structure per shard file, Blosc zstd
            a = g.create_array(
                name,
                shape=arr.shape,
                dtype=arr.dtype,
                chunks=(1, *arr.shape[1:]),
                shards=(views * variants, *arr.shape[1:]),
                compressors=BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"),
                fill_value=np.nan,
            )
        else:
            a = g.create_array(name, shape=arr.shape, dtype=arr.dtype, chunks=arr.shape)
        a[...] = arr

    put("sample_id", rows["sample_id"])
    put("image_id", rows["image_id"])
    for k, vals in rows["params"].items():
        put(f"params/{k}", vals, np.float64)
    put("params/euler_rad", rows["euler_rad"], np.float64)
    put("params/shift_A", rows["shift_A"], np.float64)
    for k, vals in rows["labels"].items():
        put(f"labels/{k}", vals)
    for s in sizes:
        for k in ("image", "noise_free", "clean"):
            put(f"s{s}/{k}", images[s][k], np.float32, image=True)
        put(f"s{s}/pixel_size_A", images[s]["pixel_size_A"], np.float64)
    assert g["sample_id"].shape == (n,)
    g.attrs["complete"] = True  # last, as the imaging stage does
    return path


def make_spec(
    root: Path,
    task: str,
    *,
    samples_per_group: int = 6,
    shard_size: int = 3,
    image_size: int = 32,
    views: int = 2,
    variants: int = 4,
    split: dict | None = None,
    seed: int = 7,
    **hyper,
) -> dict:
    """Write (once) the shards of a task under root/results/images and return its train spec (paths relative
    to root)."""
    shards = []
    for family, group in TASK_GROUPS[task]:
        k_class = (
            CNT_CLASSES.index(group[4:])
            if family == "cnt"
            else (ORDERINGS.index(group[10:]) if family == "nanoalloy" else 0)
        )
        for k in range(-(-samples_per_group // shard_size)):
            rel = f"results/images/{group}/{group}-s{k:05d}.zarr"
            if not (root / rel).exists():
                idx = range(k * shard_size, min((k + 1) * shard_size, samples_per_group))
                write_fringe_shard(
                    root / rel,
                    family=family,
                    group=group,
                    indices=idx,
                    freq=FREQS[k_class],
                    views=views,
                    variants=variants,
                )
            shards.append(rel)
    classes = CNT_CLASSES if task == "chirality" else (ORDERINGS if task == "ordering" else None)
    h = {
        "enabled": True,
        "epochs": 2,
        "batch_size": 16,
        "learning_rate": 3e-3,
        "width": 8,
        "depth": 2,
        "patience": 5,
        "augment": True,
    }
    h.update(hyper)
    return {
        "kind": "train",
        "spec_version": 1,
        "campaign_seed": seed,
        "task": task,
        "families": sorted({f for f, _ in TASK_GROUPS[task]}),
        "classes": classes,
        "image_size": image_size,
        "split": split or {"val": 0.2, "test": 0.2},
        "hyper": h,
        "shards": shards,
    }


# ------------------------------------------------------------------------------------------ tests

from hrtemflow.core.errors import HrtemflowError  # noqa: E402
from hrtemflow.core.tasks import TASKS
from hrtemflow.learn.feed import ShardFeed, dihedral
from hrtemflow.learn.preprocess import NORMALISATION, normalise
from hrtemflow.learn.table import check_spec as check_train_spec
from hrtemflow.learn.table import load_table, split_table
from hrtemflow.store.layout import image_key
from hrtemflow.store.reader import feed_reader, strings
from hrtemflow.store.splits import split_structures


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("learn-data")


def test_table_reads_contract_shards(root):
    spec = make_spec(root, "chirality")
    table = load_table(spec, root)
    assert len(table) == 4 * 6 * 8 and table.n_structures() == 24
    assert table.y.dtype == np.int64 and set(table.y) == {0, 1, 2, 3}
    assert all(s.startswith(f"cnt-{CNT_CLASSES[y]}-") for s, y in zip(table.sample_id, table.y))
    assert len(table.info["dataset_sha256"]) == 64 and table.info["dropped_rows"] == 0
    assert load_table(spec, root).info["dataset_sha256"] == table.info["dataset_sha256"]


def test_split_is_disjoint_by_structure_and_stable(root):
    spec = make_spec(root, "chirality")
    splits = split_table(load_table(spec, root), spec["split"])
    ids = {k: set(t.sample_id) for k, t in splits.items()}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    assert sum(len(t) for t in splits.values()) == 192
    # every class on every side (1 of 6 structures per group to val and to test)
    for t in splits.values():
        assert set(t.y) == {0, 1, 2, 3}
    assert {k: t.n_structures() for k, t in splits.items()} == {"train": 16, "val": 4, "test": 4}
    # stable: a structure's side depends only on its id and group, not on row order
    side = split_structures(list(splits["train"].sample_id)[::-1] + list(ids["val"]) + list(ids["test"]), 0.2, 0.2)
    assert {s for s, v in side.items() if v == "test"} == ids["test"]


def test_split_refuses_too_few_structures(root):
    spec = make_spec(root, "chirality")
    table = load_table(spec, root)
    tiny = table.take(np.isin(table.sample_id, np.unique(table.sample_id)[:2]))
    with pytest.raises(HrtemflowError, match="too few structures"):
        split_table(tiny, spec["split"])


def test_missing_shard_array_and_bad_spec_are_refused(root):
    spec = make_spec(root, "chirality")
    with pytest.raises(HrtemflowError, match="does not exist"):
        load_table({**spec, "shards": spec["shards"] + ["results/images/nope.zarr"]}, root)
    with pytest.raises(HrtemflowError, match="lacks s64/image"):
        load_table({**spec, "image_size": 64}, root)
    with pytest.raises(HrtemflowError, match="unknown task"):
        check_train_spec({**spec, "task": "colour"})
    with pytest.raises(HrtemflowError, match="divisible"):
        check_train_spec({**spec, "hyper": {**spec["hyper"], "depth": 6}})


def test_unknown_measured_class_is_dropped_and_counted(root):
    path = write_fringe_shard(
        root / "odd.zarr",
        family="nanoalloy",
        group="nanoalloy-janus",
        indices=range(100, 102),
        freq=4.5,
        override_labels={"ordering": "onion"},
    )
    spec = make_spec(root, "ordering")
    table = load_table({**spec, "shards": spec["shards"] + [str(path)]}, root)
    assert table.info["unknown_labels"] == ["onion"] and table.info["dropped_rows"] == 16


def test_feed_shapes_dtypes_and_per_epoch_shuffle(root):
    spec = make_spec(root, "chirality")
    train = split_table(load_table(spec, root), spec["split"])["train"]
    for cache in (None, 0):  # in memory, and streamed from the shards
        feed = ShardFeed(train, 32, batch_size=16, shuffle=True, seed=3, cache_bytes=cache, block=4)
        assert feed.cached is (cache is None) and len(feed) == len(train) // 16
        x, y = feed[0]
        assert x.shape == (16, 32, 32, 1) and x.dtype == np.float32 and y.shape == (16,) and y.dtype == np.int32
        np.testing.assert_allclose(x.mean(axis=(1, 2, 3)), 0, atol=1e-4)
        first = np.concatenate([feed.indices(i) for i in range(len(feed))])
        assert len(set(first)) == len(first)  # no row twice in an epoch
        np.testing.assert_array_equal(feed[0][1], train.y[feed.indices(0)])  # labels follow their images
        feed.on_epoch_end()
        second = np.concatenate([feed.indices(i) for i in range(len(feed))])
        assert not np.array_equal(first, second)
        again = ShardFeed(train, 32, batch_size=16, shuffle=True, seed=3, cache_bytes=cache, block=4, epoch=1)
        np.testing.assert_array_equal(
            np.concatenate([again.indices(i) for i in range(len(again))]), second
        )  # resumable order


def test_streamed_and_cached_batches_agree(root):
    spec = make_spec(root, "denoise")
    test = split_table(load_table(spec, root), spec["split"])["test"]
    a = ShardFeed(test, 32, batch_size=8)
    b = ShardFeed(test, 32, batch_size=8, cache_bytes=0)
    for i in range(len(a)):
        for u, v in zip(a[i], b[i]):
            np.testing.assert_array_equal(u, v)
    x, y = a[0]
    assert x.shape == y.shape == (8, 32, 32, 1)


@pytest.mark.parametrize("cache", [None, 0], ids=["cached", "streamed"])
def test_fresh_shot_noise_is_new_each_epoch_at_the_images_own_level(root, cache):
    """shot_noise fresh: each training image comes with new Poisson noise every epoch (the same again
    for the same seed and epoch, so a resumed run sees what an uninterrupted one would), as strong as
    its stored noise: the residual about the noise-free image has the stored image's variance."""
    spec = make_spec(root, "ordering", shot_noise="fresh")
    train = split_table(load_table(spec, root), spec["split"])["train"]
    assert train.gain.shape == (len(train), 3)
    stored = ShardFeed(train, 32, batch_size=64, cache_bytes=cache)
    fresh = ShardFeed(train, 32, batch_size=64, cache_bytes=cache, shot_noise="fresh", seed=5)
    rows = fresh.indices(0)
    clean = normalise(
        np.stack(
            [
                zarr.open_group(train.paths[k], mode="r")["s32/noise_free"][int(r)]
                for k, r in zip(train.shard[rows], train.row[rows])
            ]
        )
    )
    x0, y0 = fresh[0]
    np.testing.assert_array_equal(y0, train.y[rows])

    def residual(x):  # noise about the noise-free image, both standardised
        return np.var(x[..., 0] - clean, axis=(1, 2))

    ratio = residual(x0) / residual(stored[0][0])
    assert 0.8 < np.median(ratio) < 1.25
    assert not np.allclose(x0, stored[0][0], atol=1e-3)  # not the stored draw
    again = ShardFeed(train, 32, batch_size=64, cache_bytes=cache, shot_noise="fresh", seed=5)
    np.testing.assert_array_equal(again[0][0], x0)  # reproducible by (seed, epoch, batch)
    again.epoch = 1
    assert not np.allclose(again[0][0], x0, atol=1e-3)  # a new draw next epoch


def test_fresh_shot_noise_refuses_a_gain_it_cannot_undo(root):
    spec = make_spec(root, "ordering")
    with pytest.raises(
        HrtemflowError, match="shot_noise 'always' is not one of stored, fresh; fix learning.tasks.ordering.shot_noise"
    ):
        check_train_spec({**spec, "hyper": {**spec["hyper"], "shot_noise": "always"}})
    path = write_fringe_shard(
        root / "dark.zarr", family="nanoalloy", group="nanoalloy-janus", indices=range(200, 202), freq=4.5
    )
    zarr.open_group(str(path), mode="r+")["params/contrast"][3] = 0.0
    fresh = {**spec, "hyper": {**spec["hyper"], "shot_noise": "fresh"}, "shards": spec["shards"] + [str(path)]}
    with pytest.raises(
        HrtemflowError, match=r"1 image\(s\) have a gain that fresh shot noise cannot undo.*shot_noise: stored"
    ):
        load_table(fresh, root)
    load_table({**fresh, "hyper": spec["hyper"]}, root)  # the stored noise needs no gain


def test_feed_with_worker_threads(root):
    """Keras reads the feed in 2 worker threads, never forked processes: same batches, same order."""
    import keras

    spec = make_spec(root, "chirality")
    val = split_table(load_table(spec, root), spec["split"])["val"]
    feed = ShardFeed(val, 32, batch_size=8, cache_bytes=0, workers=2)
    assert feed.workers == 2 and feed.use_multiprocessing is False
    probe = keras.Sequential([keras.Input((32, 32, 1)), keras.layers.Flatten()])
    np.testing.assert_allclose(
        probe.predict(feed, verbose=0), np.concatenate([feed[i][0] for i in range(len(feed))]).reshape(len(val), -1)
    )


def test_zarrs_reader_gives_the_same_batches(root):
    """The zarrs pipeline is bound to the feed's own handles only: same batches, and zarr's global
    config (which the store's writers use) is left as it was."""
    pytest.importorskip(
        "zarrs", reason="zarrs (the fast reader) is not installed: pip install --only-binary=:all: zarrs"
    )
    spec = make_spec(root, "denoise")
    test = split_table(load_table(spec, root), spec["split"])["test"]
    before = zarr.config.get("codec_pipeline.path")
    fast = ShardFeed(test, 32, batch_size=8, cache_bytes=0, reader="zarrs", shuffle=True, augment=True, seed=3)
    plain = ShardFeed(test, 32, batch_size=8, cache_bytes=0, reader="zarr-python", shuffle=True, augment=True, seed=3)
    for i in range(len(fast)):
        for u, v in zip(fast[i], plain[i]):
            np.testing.assert_array_equal(u, v)
    assert type(fast._array(0, image_key(32))._async_array.codec_pipeline).__name__ == "ZarrsCodecPipeline"
    assert type(plain._array(0, image_key(32))._async_array.codec_pipeline).__name__ != "ZarrsCodecPipeline"
    assert zarr.config.get("codec_pipeline.path") == before


def test_feed_reader_choice_is_checked(monkeypatch):
    import importlib.util
    import sys

    monkeypatch.setenv("HRTEMFLOW_FEED_READER", "fast")
    with pytest.raises(HrtemflowError, match="HRTEMFLOW_FEED_READER='fast' is not one of auto, zarrs, zarr-python"):
        feed_reader()
    monkeypatch.setenv("HRTEMFLOW_FEED_READER", "zarr-python")
    assert feed_reader() == "zarr-python"
    monkeypatch.setenv("HRTEMFLOW_FEED_READER", "auto")
    assert feed_reader() == ("zarrs" if importlib.util.find_spec("zarrs") else "zarr-python")
    monkeypatch.setitem(sys.modules, "zarrs", None)  # as if not installed
    assert feed_reader() == "zarr-python"
    monkeypatch.setenv("HRTEMFLOW_FEED_READER", "zarrs")
    with pytest.raises(HrtemflowError, match="zarrs package is not installed"):
        feed_reader()


def test_normalise_is_per_image_and_robust():
    x = np.stack([np.full((8, 8), 5.0), np.arange(64.0).reshape(8, 8) * 1000])
    x[1, 0, 0] = 1e9  # a hot pixel
    out = normalise(x)
    assert out.dtype == np.float32 and np.all(np.isfinite(out))
    np.testing.assert_array_equal(out[0], 0)
    assert out.max() <= NORMALISATION["clip"]


def test_augmentation_preserves_class_labels(root):
    spec = make_spec(root, "chirality")
    train = split_table(load_table(spec, root), spec["split"])["train"]
    plain = ShardFeed(train, 32, batch_size=16, shuffle=True, seed=1)
    aug = ShardFeed(train, 32, batch_size=16, shuffle=True, seed=1, augment=True)
    (x0, y0), (x1, y1) = plain[0], aug[0]
    np.testing.assert_array_equal(y0, y1)
    assert not np.allclose(x0, x1)
    # the fringe frequency, which is the class, is unchanged by every transform (and by the contrast jitter)
    for a, b in zip(x0[..., 0], x1[..., 0]):
        assert _peak_radius(a) == pytest.approx(_peak_radius(b))


def _peak_radius(image: np.ndarray) -> float:
    f = np.abs(np.fft.fft2(image - image.mean()))
    f[0, 0] = 0
    ky, kx = np.unravel_index(np.argmax(f), f.shape)
    k = np.fft.fftfreq(image.shape[0])
    return float(np.hypot(k[ky], k[kx]))


def test_augmentation_turns_astigmatism_with_the_image():
    """Fringes along φ12: after a random flip/rotation the transformed (C12 cos 2φ, C12 sin 2φ) names the new
    direction."""
    rng = np.random.default_rng(0)
    n, size = 64, 64
    theta = rng.uniform(0, np.pi, n)
    c12 = rng.uniform(5, 50, n)
    x = np.stack([fringes(size, 10.0, t, 0.3) for t in theta]).astype(np.float32)
    y = np.stack([rng.normal(size=n), c12 * np.cos(2 * theta), c12 * np.sin(2 * theta), c12], axis=1)
    xa, ya = dihedral(x, np.random.default_rng(5), y=y, astig=TASKS["aberrations"].sign_flips)
    np.testing.assert_array_equal(ya[:, [0, 3]], y[:, [0, 3]])  # defocus and the |C12| target invariant
    np.testing.assert_allclose(np.hypot(ya[:, 1], ya[:, 2]), c12)  # magnitude invariant
    changed = 0
    for img, target, t0 in zip(xa, ya, theta):
        measured = fringe_angle(img)
        implied = 0.5 * np.arctan2(target[2], target[1]) % np.pi
        d = (measured - implied + np.pi / 2) % np.pi - np.pi / 2
        assert abs(np.rad2deg(d)) < 6, (measured, implied)
        changed += abs((implied - t0 + np.pi / 2) % np.pi - np.pi / 2) > 0.1
    assert changed > n // 2  # most images were really turned


def test_denoise_augmentation_moves_target_with_input():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 8, 8)).astype(np.float32)
    xa, ya = dihedral(x, rng, y=x.copy(), y_is_image=True)
    np.testing.assert_array_equal(xa, ya)


def test_json_of_table_info_is_strict(root):
    spec = make_spec(root, "structure")
    table = load_table(spec, root)
    json.dumps(table.info, allow_nan=False)
    assert table.y.shape[1] == 4 and np.all(np.isfinite(table.y))


def test_reads_shards_written_by_the_imaging_stores_writer(root):
    """The same arrays written by the imaging stage's writer (hrtemflow.store.writer) read back identically."""
    from hrtemflow.store import writer as store

    mine = write_fringe_shard(
        root / "compat" / "cnt-8-4-s00000.zarr", family="cnt", group="cnt-8-4", indices=range(3), freq=4.5
    )
    g = zarr.open_group(str(mine), mode="r")

    def read(name):
        return (
            strings(g[name])
            if g[name].dtype.kind in "TUO" or "String" in str(g[name].dtype)
            else np.asarray(g[name][:])
        )

    arrays = {
        "sample_id": read("sample_id"),
        "image_id": read("image_id"),
        "params": {k: read(f"params/{k}") for k in g["params"].array_keys()},
        "labels": {k: read(f"labels/{k}") for k in g["labels"].array_keys()},
        **{f"s{s}": {k: read(f"s{s}/{k}") for k in ("image", "noise_free", "clean", "pixel_size_A")} for s in (16, 32)},
    }
    theirs = root / "compat" / "theirs.zarr"
    store.write_image_shard(theirs, arrays, dict(g.attrs))
    spec = make_spec(root, "chirality")
    a = load_table({**spec, "shards": [str(mine)]})
    b = load_table({**spec, "shards": [str(theirs)]})
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.sample_id, b.sample_id)
    for x, y in zip(
        ShardFeed(a, 32, batch_size=24, cache_bytes=0)[0], ShardFeed(b, 32, batch_size=24, cache_bytes=0)[0]
    ):
        np.testing.assert_array_equal(x, y)
