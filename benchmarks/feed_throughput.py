"""Feed throughput: images/s of 128x128 training batches from image shards in the contract layout.

    python benchmarks/feed_throughput.py [--images 2048] [--batch 128] [--seconds 8] [--rounds 3]

Writes (once) Zarr v3 shards in the layout of docs/data-products.md with the test-data writer of
tests/test_learn_data.py (lattice fringes with Poisson noise; chunks of one image, zstd), under
benchmarks/out/feed_shards/, then times `hrtemflow.learn.feed.ShardFeed` with augmentation on,
with each installed reader side by side (zarr-python's own codec pipeline and, where PyPI `zarrs`
is installed, its Rust pipeline): streamed from the shards (blocks of contiguous rows; in the
calling thread, and 2 worker threads through Keras' own PyDataset adapter) and from the in-memory
cache (which the feed uses when the split fits HRTEMFLOW_FEED_CACHE_MB, default 2048 MiB), there also
with new shot noise drawn for every image (`shot_noise: fresh`, 1 and 2 threads). The
shards were just written, so "streamed" reads come from the OS page cache: decompression and Zarr
overhead, not disk speed. Prints a markdown block for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import zarr

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the contract-layout test-data writer

from hrtemflow.learn.feed import ShardFeed, cache_budget_bytes
from hrtemflow.learn.table import Table, load_table
from hrtemflow.store.reader import feed_reader
from test_learn_data import FREQS, write_fringe_shard  # noqa: E402

SIZE = 128


def make_shards(folder: Path, n_images: int, shard_images: int = 256) -> list[str]:
    """Shards of `shard_images` images (32 structures x 2 views x 4 variants), written once."""
    paths = []
    per_sample = 8
    for k in range(-(-n_images // shard_images)):
        group = f"cnt-{8 + k % 4}-{k % 4}"
        path = folder / f"{group}-s{k:05d}.zarr"
        if not path.exists():
            start = k * (shard_images // per_sample)
            write_fringe_shard(
                path,
                family="cnt",
                group=group,
                indices=range(start, start + shard_images // per_sample),
                freq=FREQS[k % 4],
                sizes=(SIZE,),
                seed=k,
            )
        paths.append(str(path))
    return paths


def table_of(paths: list[str]) -> Table:
    spec = {
        "kind": "train",
        "task": "denoise",
        "campaign_seed": 1,
        "image_size": SIZE,
        "split": {"val": 0.15, "test": 0.15},
        "hyper": {
            "epochs": 1,
            "batch_size": 32,
            "learning_rate": 1e-3,
            "width": 8,
            "depth": 2,
            "patience": 1,
            "augment": True,
            "shot_noise": "fresh",
        },  # reads each image's gain too, for the fresh-noise feed
        "shards": paths,
        "classes": None,
        "families": ["cnt"],
    }
    table = load_table(spec)
    return Table(
        "chirality",
        table.paths,
        table.shard,
        table.row,
        table.sample_id,
        np.zeros(len(table), np.int64),
        table.pixel_size_A,
        table.info,
        table.gain,
    )  # class targets: image reads only


def rate(feed: ShardFeed, seconds: float, via_keras: bool = False) -> tuple[float, int]:
    """Images/s over whole epochs (at least one, until `seconds` passed)."""
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    n, t0 = 0, time.perf_counter()
    while True:
        if via_keras:
            adapter = PyDatasetAdapter(feed, shuffle=False)
            adapter.on_epoch_begin()
            for x, _ in adapter.get_numpy_iterator():
                n += len(x)
            adapter.on_epoch_end()
        else:
            for i in range(len(feed)):
                n += len(feed[i][0])
            feed.on_epoch_end()
        if time.perf_counter() - t0 > seconds:
            return n / (time.perf_counter() - t0), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--block", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3, help="times each feed is timed, the readers alternating")
    args = ap.parse_args()

    folder = HERE / "out" / "feed_shards"
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    paths = make_shards(folder, args.images)
    table = table_of(paths)
    prep = time.perf_counter() - t0
    n = len(table)
    common = {"batch_size": args.batch, "shuffle": True, "augment": True, "seed": 0, "block": args.block}
    rows = []

    readers = ["zarr-python"] + (["zarrs"] if feed_reader() == "zarrs" else [])
    fills = {}
    for _ in range(args.rounds):  # the readers alternate, so drifting machine load hits both alike
        for reader in readers:
            streamed = ShardFeed(table, SIZE, cache_bytes=0, reader=reader, **common)
            rows.append((f"streamed, {reader}, 1 thread", *rate(streamed, args.seconds)))
            threads = ShardFeed(table, SIZE, cache_bytes=0, workers=2, reader=reader, **common)
            rows.append(
                (f"streamed, {reader}, 2 worker threads (Keras adapter)", *rate(threads, args.seconds, via_keras=True))
            )
            t0 = time.perf_counter()
            cached = ShardFeed(table, SIZE, reader=reader, **common)
            fills.setdefault(reader, []).append(time.perf_counter() - t0)
            assert cached.cached
            rows.append((f"in-memory cache (filled by {reader})", *rate(cached, args.seconds)))
        fresh = ShardFeed(table, SIZE, shot_noise="fresh", **common)  # the reader only fills the cache
        rows.append(("in-memory cache, fresh shot noise, 1 thread", *rate(fresh, args.seconds)))
        fresh = ShardFeed(table, SIZE, shot_noise="fresh", workers=2, **common)
        rows.append(
            (
                "in-memory cache, fresh shot noise, 2 worker threads (Keras adapter)",
                *rate(fresh, args.seconds, via_keras=True),
            )
        )
    cached_rate = float(np.median([r for name, r, _ in rows if name.startswith("in-memory cache (")]))

    disk = sum(f.stat().st_size for p in paths for f in Path(p).rglob("*") if f.is_file())
    print(f"<!-- feed_throughput.py: {n} images in {len(paths)} shards written/indexed in {prep:.1f} s -->")
    print("### Learning feed throughput (`benchmarks/feed_throughput.py`)\n")
    print(
        f"{n} images of {SIZE}x{SIZE} px float32 in {len(paths)} Zarr v3 image shards of the contract layout "
        "(synthetic "
        f"fringe test data; one image per chunk, the 8 images of a structure in one Zarr shard file, Blosc-zstd, as "
        f"hrtemflow.store writes them; {disk / 2**20:.0f} MiB on disk); batches of {args.batch}, shuffled, "
        "flip/rot90 + contrast-jitter augmentation, per-image normalisation; streamed feeds read blocks of "
        f"{args.block} "
        f"contiguous rows. {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}; load average "
        f"{os.getloadavg()[0]:.1f} at the end: the cores were shared), numpy {np.__version__}, zarr "
        f"{zarr.__version__}. "
        f"Shards were just written, so streamed reads hit the OS page cache (decompression + Zarr overhead, not disk). "
        f"Target: >= 5,000 images/s.\n"
    )
    names = list(dict.fromkeys(name for name, _, _ in rows))
    print(f"Each feed timed {args.rounds} times, the readers alternating; the range over those runs:\n")
    print("| feed | images/s | images timed | >= 5,000 images/s |")
    print("|---|---:|---:|---|")
    for name in names:
        r = [x for nm, x, _ in rows if nm == name]
        count = sum(c for nm, _, c in rows if nm == name)
        span = f"{min(r):,.0f}" if len(r) == 1 else f"{min(r):,.0f}–{max(r):,.0f}"
        print(f"| {name} | {span} | {count:,} | {'yes' if min(r) >= 5000 else 'in part' if max(r) >= 5000 else 'no'} |")
    for reader in readers:
        fill = float(np.median(fills[reader]))
        print(
            f"\nCache fill by {reader} (read + normalise every image once): {fill:.2f} s ({n / fill:,.0f} images/s), "
            "so the "
            f"first epoch runs at ~{n / (fill + n / cached_rate):,.0f} images/s and later ones at the cached rate.",
            end="",
        )
    if "zarrs" not in readers:
        print(
            "\n\nzarrs is not installed here, so only zarr-python's reader was timed (`pip install --only-binary=:all: "
            "zarrs`).",
            end="",
        )
    print(
        "\n\nThe feed reads with zarrs where it is installed (HRTEMFLOW_FEED_READER) and caches automatically when a "
        "split fits "
        f"the memory budget ({cache_budget_bytes() / 2**20:.0f} MiB here: about "
        f"{cache_budget_bytes() // (SIZE * SIZE * 4):,} images of {SIZE}² px)."
    )


if __name__ == "__main__":
    main()
