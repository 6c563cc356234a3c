"""Writing an image shard: one process, into a temporary sibling folder renamed into place when complete.

A shard's attrs carry `complete = true`, written last (`hrtemflow.core.atomic.atomic_dir` does the
rename). Image arrays are chunked one image per chunk, and the chunks of one structure (views ×
variants rows) are packed into one shard file with Zarr's sharding codec, so a campaign does not make
millions of tiny files while a reader still fetches single images.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.atomic import atomic_dir
from ..core.errors import HrtemflowError
from . import codec, layout


def _image_codec():
    from zarr.codecs import BloscCodec  # noqa: PLC0415

    return BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")


def empty_params() -> dict[str, np.ndarray]:
    """The params/* arrays of a shard with no image."""
    out = {k: np.zeros((0,), np.float64) for k in layout.SCALAR_PARAMS}
    out.update({k: np.zeros((0, d), np.float64) for k, d in layout.VECTOR_PARAMS.items()})
    return out


def _flatten(labels: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in labels.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}_"))
        else:
            out[name] = value
    return out


def labels_to_arrays(labels: Sequence[Mapping[str, Any]], repeat: int = 1) -> dict[str, np.ndarray]:
    """One array per label over samples (each repeated `repeat` times, one per image).

    Nested mappings are flattened with '_' (composition {"Ag": 90, "Co": 30} -> composition_Ag,
    composition_Co). Types: all bool -> bool; all int -> int64; numbers -> float64 (missing = NaN);
    otherwise str (missing = "").
    """
    flat = [_flatten(lab) for lab in labels]
    names = sorted({k for f in flat for k in f})
    out = {}
    for name in names:
        values = [f.get(name) for f in flat]
        present = [v for v in values if v is not None]
        if present and all(isinstance(v, (bool, np.bool_)) for v in present) and len(present) == len(values):
            arr = np.array(values, dtype=bool)
        elif (
            present
            and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in present)
            and len(present) == len(values)
        ):
            arr = np.array(values, dtype=np.int64)
        elif present and all(
            isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in present
        ):
            arr = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
        else:
            arr = np.array(["" if v is None else str(v) for v in values], dtype=str)
        out[name] = np.repeat(arr, repeat)
    return out


class ShardWriter:
    """Fills the arrays of one shard being built (see `shard_writer`). `storage` "compact" stores the
    images as integers (`store.codec`); every reader decodes them back to float32."""

    def __init__(self, group, n: int, sizes: Sequence[int], rows_per_block: int, storage: str = "float32"):
        if storage not in codec.STORAGES:
            raise HrtemflowError(f"image storage {storage!r} is not one of {', '.join(codec.STORAGES)}")
        self.group, self.n, self.sizes, self.storage = group, n, list(sizes), storage
        self.pixel_size = {s: np.full(n, np.nan) for s in self.sizes}
        self.encoding = {s: {k: np.full(n, np.nan) for k in codec.ENCODING} for s in self.sizes}
        self.index_written = False
        block = max(1, min(rows_per_block, max(n, 1)))
        compact = storage == "compact"
        for s in self.sizes:
            for kind in layout.IMAGE_KINDS:
                group.create_array(
                    layout.image_key(s, kind),
                    shape=(n, s, s),
                    dtype=codec.INT_DTYPE if compact else "float32",
                    chunks=(1, s, s),
                    shards=(block, s, s),
                    compressors=_image_codec(),
                    fill_value=0 if compact else np.nan,
                )

    def write_block(self, start: int, block: Mapping[int, Mapping[str, np.ndarray]]) -> None:
        """Rows start.. of every size: {size: {"image", "noise_free", "clean": (r,s,s), "pixel_size_A": (r,)}},
        and for compact storage "gain": (r, 3) brightness, contrast and background of those rows."""
        for s in self.sizes:
            rows = len(block[s]["image"])
            if self.storage == "compact":
                encoded, params = codec.encode(block[s], block[s]["gain"])
                for name, values in params.items():
                    self.encoding[s][name][start : start + rows] = values
            else:
                encoded = {kind: np.asarray(block[s][kind], np.float32) for kind in layout.IMAGE_KINDS}
            for kind in layout.IMAGE_KINDS:
                self.group[layout.image_key(s, kind)][start : start + rows] = encoded[kind]
            self.pixel_size[s][start : start + rows] = block[s]["pixel_size_A"]

    def write_index(
        self,
        sample_ids: np.ndarray,
        image_ids: np.ndarray,
        params: Mapping[str, np.ndarray],
        labels: Mapping[str, np.ndarray],
    ) -> None:
        """The per-image ids, parameters and labels (all first axes N)."""
        n = self.n
        g = self.group
        for name, values in ((layout.SAMPLE_ID, sample_ids), (layout.IMAGE_ID, image_ids)):
            _write_small(g, name, np.asarray(values, dtype=str), n)
        missing = set(layout.SCALAR_PARAMS) | set(layout.VECTOR_PARAMS)
        for name, values in params.items():
            _write_small(g, layout.param_key(name), np.asarray(values, dtype=np.float64), n)
            missing.discard(name)
        if missing:
            raise HrtemflowError(f"image shard is missing params {sorted(missing)}")
        g.require_group(layout.LABELS)
        for name, values in labels.items():
            _write_small(g, layout.label_key(name), np.asarray(values), n)
        for s in self.sizes:
            _write_small(g, layout.pixel_size_key(s), self.pixel_size[s], n)
            if self.storage == "compact":
                for name, values in self.encoding[s].items():
                    _write_small(g, codec.encoding_key(s, name), values, n)
        self.index_written = True


def _write_small(group, name: str, values: np.ndarray, n: int) -> None:
    if len(values) != n:
        raise HrtemflowError(f"image shard array {name} has {len(values)} rows, expected {n}")
    kwargs: dict[str, Any] = {"dtype": str} if values.dtype.kind in "UTO" else {"dtype": values.dtype}
    arr = group.create_array(name, shape=values.shape, chunks=(max(n, 1),) + values.shape[1:], **kwargs)
    if n:
        arr[...] = values


@contextlib.contextmanager
def shard_writer(
    out: Path, n: int, sizes: Sequence[int], rows_per_block: int, attrs: Mapping[str, Any], storage: str = "float32"
) -> Iterator[ShardWriter]:
    """Build a shard in a temporary sibling folder; on success mark it complete (last) and rename
    it to `out`. On any error nothing appears under `out` (an older complete store stays)."""
    import zarr  # noqa: PLC0415

    with atomic_dir(Path(out)) as tmp:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        writer = ShardWriter(group, n, sizes, rows_per_block, storage)
        yield writer
        if not writer.index_written:
            raise HrtemflowError(f"image shard {out}: the index (ids, params, labels) was never written")
        storage_attr = {layout.STORAGE: storage} if storage != "float32" else {}  # float32 shards as before
        group.attrs.update({**dict(attrs), **storage_attr, layout.COMPLETE: False})
        group.attrs[layout.COMPLETE] = True  # last: a store is complete iff this is set


def write_image_shard(out: Path, arrays: Mapping[str, Any], attrs: Mapping[str, Any]) -> None:
    """Write a whole shard from in-memory arrays named as in the layout.

    `arrays`: "sample_id", "image_id", "params" {name: array}, "labels" {name: array}, and per size
    "s<size>" {"image", "noise_free", "clean", "pixel_size_A"}. `attrs` must hold "sizes".
    """
    sizes = list(attrs[layout.SIZES])
    n = len(arrays[layout.SAMPLE_ID])
    storage = attrs.get(layout.STORAGE, "float32")
    with shard_writer(out, n, sizes, rows_per_block=max(n, 1), attrs=attrs, storage=storage) as writer:
        if n:
            gain = np.stack([np.asarray(arrays[layout.PARAMS][k], np.float64) for k in layout.GAIN_PARAMS], axis=1)
            writer.write_block(0, {s: {**arrays[layout.size_group(s)], "gain": gain} for s in sizes})
        writer.write_index(
            arrays[layout.SAMPLE_ID], arrays[layout.IMAGE_ID], arrays[layout.PARAMS], arrays.get(layout.LABELS, {})
        )
