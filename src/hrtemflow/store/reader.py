"""Reading image shards: opening a complete store, its index arrays, rows of its images.

The learning feed reads through `open_array`, which can decode chunks with PyPI's `zarrs` (Rust):
3-7x zarr-python's own pipeline on one-image chunks (benchmarks/feed_throughput.py).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ..core.errors import HrtemflowError
from . import codec, layout

#: Zarr decodes this many chunks per batch of its codec pipeline; its default (1) makes reads of
#: one-image chunks ~1.6x slower on 2 cores (benchmarks/feed_throughput.py)
ZARR_READ_CONFIG = {"codec_pipeline.batch_size": 16}
#: HRTEMFLOW_FEED_READER: the codec pipeline the feed reads shards with. `zarrs` (PyPI `zarrs`, Rust)
#: reads one-image chunks 3-7x faster than zarr-python's own pipeline; `auto` uses it where installed.
FEED_READERS = ("auto", "zarrs", "zarr-python")
ZARRS_PIPELINE = "zarrs.ZarrsCodecPipeline"
#: zarr's config is process-global: one thread at a time opens an array under the zarrs pipeline
_OPEN_LOCK = threading.Lock()


def is_complete(path: Path) -> bool:
    """A store is complete iff it exists under its final name with attrs.complete = true."""
    path = Path(path)
    if not (path / "zarr.json").is_file():
        return False
    try:
        return bool(zarr.open_group(str(path), mode="r").attrs.get(layout.COMPLETE, False))
    except Exception:  # noqa: BLE001 (a damaged store is not complete)
        return False


def open_shard(path: Path):
    """The Zarr group of a complete shard (HrtemflowError otherwise)."""
    if not is_complete(path):
        raise HrtemflowError(f"image shard {path} is missing or incomplete; (re)run `hrtemflow image` for it")
    return zarr.open_group(str(path), mode="r")


def open_checked(path: str | Path, need: Sequence[str], why: str = "") -> zarr.Group:
    """A shard that exists, is complete and holds the arrays `need`; the message says what to rerun.
    `why` says what asked for them (e.g. "the training spec asks for image_size 64")."""
    p = Path(path)
    if not p.exists():
        raise HrtemflowError(f"image shard {path} does not exist; run the imaging stage (`snakemake {path}`) first")
    try:
        group = zarr.open_group(str(p), mode="r")
    except Exception as exc:  # noqa: BLE001 (zarr raises several types for a folder that is not a group)
        raise HrtemflowError(
            f"image shard {path} is not a readable Zarr group ({exc}); delete it and rerun its imaging job"
        ) from None
    if group.attrs.get(layout.COMPLETE) is False:  # the imaging stage sets it last
        raise HrtemflowError(f"image shard {path} is incomplete (attrs.complete is false); rerun its imaging job")
    missing = [k for k in need if k not in group]
    if missing:
        raise HrtemflowError(
            f"image shard {path} lacks {', '.join(missing)}; it was made by an older or different imaging "
            f"config; rerun its imaging job{f' ({why})' if why else ''}"
        )
    return group


def strings(arr) -> np.ndarray:
    """A string array as fixed-width unicode, whatever Zarr returns (StringDType, object, bytes)."""
    if arr.shape[0] == 0:
        return np.zeros((0,), dtype=str)
    values = np.asarray(arr[...])
    if values.dtype.kind == "S":
        values = np.char.decode(values, "utf-8")
    return np.array(values.tolist(), dtype=str)


def _is_text(arr) -> bool:
    return arr.dtype.kind in "TUOS" or str(arr.dtype).startswith("StringDType")


def column(group, key: str) -> np.ndarray:
    """One whole index array (ids, a param or a label) as NumPy, strings as str."""
    arr = group[key]
    return strings(arr) if _is_text(arr) else np.asarray(arr[...])


def read_arrays(group, prefix: str) -> dict[str, np.ndarray]:
    """All arrays under a subgroup (params or labels) as NumPy arrays (strings as str)."""
    if prefix not in group:
        return {}
    sub = group[prefix]
    return {name: column(sub, name) for name in sorted(sub.array_keys())}


def per_row(
    paths: Sequence[str | Path], shard: np.ndarray, row: np.ndarray, key: str, dtype: Any = np.float64
) -> np.ndarray:
    """Each image's entry of the per-row array `key` (e.g. params/dose_e_per_A2, image_id), for images
    given as (shard index into `paths`, row) pairs: one read per shard."""
    out = np.empty(len(row), dtype=dtype)
    for k, path in enumerate(paths):
        m = shard == k
        if m.any():
            out[m] = column(zarr.open_group(str(path), mode="r"), key)[row[m]]
    return out


def read_all(path: str | Path) -> dict[str, Any]:
    """Every array (as NumPy) and every group's attrs of a store, by name: for comparing stores."""
    out: dict[str, Any] = {}

    def walk(group, prefix: str) -> None:
        out[f"{prefix}@attrs"] = dict(group.attrs)
        for name, member in group.members():
            if isinstance(member, zarr.Group):
                walk(member, f"{prefix}{name}/")
            else:
                out[f"{prefix}{name}"] = np.asarray(member[...])

    walk(zarr.open_group(str(path), mode="r", zarr_format=3), "")
    return out


# ----------------------------------------------------------------------------- rows of images


def _runs(rows: np.ndarray) -> list[tuple[int, int]]:
    """Sorted rows -> [(start, stop)] of contiguous runs."""
    if not len(rows):
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [len(rows)]])
    return [(int(rows[a]), int(rows[b - 1]) + 1) for a, b in zip(starts, stops)]


def read_rows(arr, rows: np.ndarray) -> np.ndarray:
    """Rows of a Zarr array in the given order, read as contiguous slices (one request per run)."""
    rows = np.asarray(rows)
    with zarr.config.set(ZARR_READ_CONFIG):
        if len(rows) and np.all(np.diff(rows) == 1):  # one run, in order: no reordering copy
            return np.asarray(arr[int(rows[0]) : int(rows[-1]) + 1])
        uniq, inverse = np.unique(rows, return_inverse=True)
        if len(uniq) > arr.shape[0] // 2:
            data = np.asarray(arr[:])[uniq]
        else:
            data = np.concatenate([np.asarray(arr[a:b]) for a, b in _runs(uniq)])
    return data[inverse]


def feed_reader() -> str:
    """'zarrs' or 'zarr-python': the reader HRTEMFLOW_FEED_READER asks for (auto: zarrs where installed)."""
    choice = os.environ.get("HRTEMFLOW_FEED_READER", "auto").strip().lower() or "auto"
    if choice not in FEED_READERS:
        raise HrtemflowError(
            f"HRTEMFLOW_FEED_READER={choice!r} is not one of {', '.join(FEED_READERS)}; unset it for auto"
        )
    if choice == "zarr-python":
        return choice
    try:
        import zarrs  # noqa: F401, PLC0415
    except ImportError:
        if choice == "zarrs":
            raise HrtemflowError(
                "HRTEMFLOW_FEED_READER=zarrs, but the zarrs package is not installed; "
                "`pip install --only-binary=:all: zarrs`, or unset HRTEMFLOW_FEED_READER"
            ) from None
        return "zarr-python"
    return "zarrs"


def open_array(path: str | Path, key: str, reader: str = "zarr-python"):
    """A read-only array of a shard, its chunks decoded by `reader` (see `feed_reader`); the images of
    a compact shard (`store.codec`) read as float32, like those of any other.

    The pipeline is bound when the array is opened, so the zarrs setting stays on this handle and
    never reaches arrays opened elsewhere in the process (the store's writers keep zarr-python's).
    A process that has read through zarrs must not fork: its children can hang on a lock held by
    zarrs' threads at the fork, which is why the feed's workers are threads.
    """
    if reader == "zarr-python":
        group = zarr.open_group(str(path), mode="r")
        return images_of(group, key) if _is_compact_image(group, key) else group[key]
    with _OPEN_LOCK, zarr.config.set({"codec_pipeline.path": ZARRS_PIPELINE}):
        group = zarr.open_group(str(path), mode="r")
        return images_of(group, key) if _is_compact_image(group, key) else group[key]


def _is_compact_image(group, key: str) -> bool:
    return group.attrs.get(layout.STORAGE) == "compact" and key.rsplit("/", 1)[-1] in layout.IMAGE_KINDS


def images_of(group, key: str):
    """The images under `key` (s<size>/<kind>) of an open shard, as float32 whatever the storage."""
    if not _is_compact_image(group, key):
        return group[key]
    size = int(key.split("/", 1)[0].removeprefix("s"))
    kind = key.rsplit("/", 1)[-1]
    gain = np.stack([np.asarray(group[layout.param_key(k)][...], np.float64) for k in layout.GAIN_PARAMS], axis=1)
    params = {name: np.asarray(group[codec.encoding_key(size, name)][...], np.float64) for name in codec.ENCODING}
    return codec.DecodedImages(group[key], kind, gain, params)
