"""Zarr v3 image shards (docs/data-products.md), dataset views over shards, splits by structure.

A shard is written by one process into a temporary sibling folder and renamed into place only when
complete (`hrtemflow.io.atomic_dir`); its attrs carry `complete = true`, written last. Image arrays
are chunked one image per chunk, and the chunks of one structure (views × variants rows) are packed
into one shard file with Zarr's sharding codec, so a campaign does not make millions of tiny files
while a reader still fetches single images.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import HrtemflowError
from .io import atomic_dir

IMAGE_KINDS = ("image", "noise_free", "clean")
#: params/* arrays of shape (N,) (besides euler_rad (N,3) and shift_A (N,2))
SCALAR_PARAMS = (
    "defocus_A", "cs_A", "c12_A", "phi12_rad", "c21_A", "phi21_rad", "c23_A", "phi23_rad",
    "focal_spread_A", "convergence_mrad", "dose_e_per_A2", "energy_eV", "fov_A",
    "brightness", "contrast", "background", "mtf_c50",
)
VECTOR_PARAMS = {"euler_rad": 3, "shift_A": 2}


def _image_codec():
    from zarr.codecs import BloscCodec  # noqa: PLC0415

    return BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")


def empty_params() -> dict[str, np.ndarray]:
    """The params/* arrays of a shard with no image."""
    out = {k: np.zeros((0,), np.float64) for k in SCALAR_PARAMS}
    out.update({k: np.zeros((0, d), np.float64) for k, d in VECTOR_PARAMS.items()})
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
        elif present and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in present) and len(present) == len(values):
            arr = np.array(values, dtype=np.int64)
        elif present and all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in present):
            arr = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
        else:
            arr = np.array(["" if v is None else str(v) for v in values], dtype=str)
        out[name] = np.repeat(arr, repeat)
    return out


class ShardWriter:
    """Fills the arrays of one shard being built (see `shard_writer`)."""

    def __init__(self, group, n: int, sizes: Sequence[int], rows_per_block: int):
        self.group, self.n, self.sizes = group, n, list(sizes)
        self.pixel_size = {s: np.full(n, np.nan) for s in self.sizes}
        self.index_written = False
        block = max(1, min(rows_per_block, max(n, 1)))
        for s in self.sizes:
            for kind in IMAGE_KINDS:
                group.create_array(
                    f"s{s}/{kind}", shape=(n, s, s), dtype="float32", chunks=(1, s, s), shards=(block, s, s),
                    compressors=_image_codec(), fill_value=np.nan,
                )

    def write_block(self, start: int, block: Mapping[int, Mapping[str, np.ndarray]]) -> None:
        """Rows start.. of every size: {size: {"image", "noise_free", "clean": (r,s,s), "pixel_size_A": (r,)}}."""
        for s in self.sizes:
            rows = len(block[s]["image"])
            for kind in IMAGE_KINDS:
                self.group[f"s{s}/{kind}"][start : start + rows] = np.asarray(block[s][kind], np.float32)
            self.pixel_size[s][start : start + rows] = block[s]["pixel_size_A"]

    def write_index(self, sample_ids: np.ndarray, image_ids: np.ndarray, params: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]) -> None:
        """The per-image ids, parameters and labels (all first axes N)."""
        n = self.n
        g = self.group
        for name, values in (("sample_id", sample_ids), ("image_id", image_ids)):
            _write_small(g, name, np.asarray(values, dtype=str), n)
        missing = set(SCALAR_PARAMS) | set(VECTOR_PARAMS)
        for name, values in params.items():
            _write_small(g, f"params/{name}", np.asarray(values, dtype=np.float64), n)
            missing.discard(name)
        if missing:
            raise HrtemflowError(f"image shard is missing params {sorted(missing)}")
        g.require_group("labels")
        for name, values in labels.items():
            _write_small(g, f"labels/{name}", np.asarray(values), n)
        for s in self.sizes:
            _write_small(g, f"s{s}/pixel_size_A", self.pixel_size[s], n)
        self.index_written = True


def _write_small(group, name: str, values: np.ndarray, n: int) -> None:
    if len(values) != n:
        raise HrtemflowError(f"image shard array {name} has {len(values)} rows, expected {n}")
    kwargs: dict[str, Any] = {"dtype": str} if values.dtype.kind in "UTO" else {"dtype": values.dtype}
    arr = group.create_array(name, shape=values.shape, chunks=(max(n, 1),) + values.shape[1:], **kwargs)
    if n:
        arr[...] = values


@contextlib.contextmanager
def shard_writer(out: Path, n: int, sizes: Sequence[int], rows_per_block: int, attrs: Mapping[str, Any]) -> Iterator[ShardWriter]:
    """Build a shard in a temporary sibling folder; on success mark it complete (last) and rename
    it to `out`. On any error nothing appears under `out` (an older complete store stays)."""
    import zarr  # noqa: PLC0415

    with atomic_dir(Path(out)) as tmp:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        writer = ShardWriter(group, n, sizes, rows_per_block)
        yield writer
        if not writer.index_written:
            raise HrtemflowError(f"image shard {out}: the index (ids, params, labels) was never written")
        group.attrs.update({**dict(attrs), "complete": False})
        group.attrs["complete"] = True  # last: a store is complete iff this is set


def write_image_shard(out: Path, arrays: Mapping[str, Any], attrs: Mapping[str, Any]) -> None:
    """Write a whole shard from in-memory arrays named as in the layout.

    `arrays`: "sample_id", "image_id", "params" {name: array}, "labels" {name: array}, and per size
    "s<size>" {"image", "noise_free", "clean", "pixel_size_A"}. `attrs` must hold "sizes".
    """
    sizes = list(attrs["sizes"])
    n = len(arrays["sample_id"])
    with shard_writer(out, n, sizes, rows_per_block=max(n, 1), attrs=attrs) as writer:
        if n:
            writer.write_block(0, {s: arrays[f"s{s}"] for s in sizes})
        writer.write_index(arrays["sample_id"], arrays["image_id"], arrays["params"], arrays.get("labels", {}))


def is_complete(path: Path) -> bool:
    """A store is complete iff it exists under its final name with attrs.complete = true."""
    path = Path(path)
    if not (path / "zarr.json").is_file():
        return False
    import zarr  # noqa: PLC0415

    try:
        return bool(zarr.open_group(str(path), mode="r").attrs.get("complete", False))
    except Exception:  # noqa: BLE001 (a damaged store is not complete)
        return False


def open_shard(path: Path):
    """The Zarr group of a complete shard (HrtemflowError otherwise)."""
    import zarr  # noqa: PLC0415

    if not is_complete(path):
        raise HrtemflowError(f"image shard {path} is missing or incomplete; (re)run `hrtemflow image` for it")
    return zarr.open_group(str(path), mode="r")


def _strings(arr) -> np.ndarray:
    return np.array(arr[...].tolist(), dtype=str) if arr.shape[0] else np.zeros((0,), dtype=str)


def read_arrays(group, prefix: str) -> dict[str, np.ndarray]:
    """All arrays under a subgroup (params or labels) as NumPy arrays (strings as str)."""
    if prefix not in group:
        return {}
    sub = group[prefix]
    out = {}
    for name in sorted(sub.array_keys()):
        arr = sub[name]
        out[name] = _strings(arr) if arr.dtype.kind in "TUO" or str(arr.dtype).startswith("StringDType") else np.asarray(arr[...])
    return out


# ---------------------------------------------------------------------------------------------
# splits and datasets


def _structure_hash(sample_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"hrtemflow-split:{sample_id}".encode()).digest()[:8], "little")


def _group_of(sample_id: str) -> str:
    return sample_id.rsplit("-", 1)[0]


def split_structures(sample_ids: Sequence[str], val: float, test: float) -> dict[str, str]:
    """Map each structure (sample id) to train, val or test.

    Within each group (a chirality, an ordering, amorphous) structures are ranked by a stable hash of
    their id and the lowest go to test, the next to val: fractions are met exactly per group, every
    class is on every side even in a demo of 4 structures per class (a group of >= 3 gives at least
    one to val and test), and a structure's side depends only on its id and its group's membership.
    """
    by_group: dict[str, list[str]] = {}
    for s in sorted(set(map(str, sample_ids))):
        by_group.setdefault(_group_of(s), []).append(s)
    side = {}
    for members in by_group.values():
        members.sort(key=_structure_hash)
        n = len(members)
        n_test, n_val = round(n * test), round(n * val)
        if n >= 3:
            n_test, n_val = max(1, n_test), max(1, n_val)
        while n_test + n_val >= n and n_test + n_val > 0:  # always keep one for training
            if n_val >= n_test and n_val > 0:
                n_val -= 1
            else:
                n_test -= 1
        for i, s in enumerate(members):
            side[s] = "test" if i < n_test else ("val" if i < n_test + n_val else "train")
    return side


class ImageDataset:
    """Images of one size over many shards: a small in-memory index, images read on demand.

    index arrays (first axis = image): `shard` (which path), `row` (its row there), `sample_id`,
    `image_id`, `labels[name]`, `params[name]`, `pixel_size_A`. `read(indices, kind)` fetches whole
    chunks (one image each) from the shards that hold them.
    """

    def __init__(self, paths: Sequence[Path], size: int):
        self.paths = [Path(p) for p in paths]
        self.size = int(size)
        self._groups: dict[int, Any] = {}
        shard, row, sids, iids, px = [], [], [], [], []
        labels: list[dict[str, np.ndarray]] = []
        params: list[dict[str, np.ndarray]] = []
        for k, path in enumerate(self.paths):
            g = open_shard(path)
            if self.size not in list(g.attrs["sizes"]):
                raise HrtemflowError(f"image shard {path} has sizes {g.attrs['sizes']}, not {self.size}; add {self.size} to imaging.sizes")
            n = g["sample_id"].shape[0]
            shard.append(np.full(n, k, np.int64))
            row.append(np.arange(n, dtype=np.int64))
            sids.append(_strings(g["sample_id"]))
            iids.append(_strings(g["image_id"]))
            px.append(np.asarray(g[f"s{self.size}/pixel_size_A"][...]))
            labels.append(read_arrays(g, "labels"))
            params.append(read_arrays(g, "params"))
        self.shard = np.concatenate(shard) if shard else np.zeros(0, np.int64)
        self.row = np.concatenate(row) if row else np.zeros(0, np.int64)
        self.sample_id = np.concatenate(sids) if sids else np.zeros(0, str)
        self.image_id = np.concatenate(iids) if iids else np.zeros(0, str)
        self.pixel_size_A = np.concatenate(px) if px else np.zeros(0)
        counts = [len(s) for s in sids]
        self.labels = _join(labels, counts)
        self.params = _join(params, counts)

    def __len__(self) -> int:
        return len(self.row)

    def _group(self, k: int):
        if k not in self._groups:
            import zarr  # noqa: PLC0415

            self._groups[k] = zarr.open_group(str(self.paths[k]), mode="r")
        return self._groups[k]

    def read(self, indices: Sequence[int] | np.ndarray | slice, kind: str = "image") -> np.ndarray:
        """Images (len, size, size) float32 of `kind` ('image', 'noise_free' or 'clean')."""
        if kind not in IMAGE_KINDS:
            raise HrtemflowError(f"image kind {kind!r} is not one of {', '.join(IMAGE_KINDS)}")
        idx = np.arange(len(self))[indices] if isinstance(indices, slice) else np.asarray(indices, dtype=np.int64).reshape(-1)
        out = np.empty((len(idx), self.size, self.size), np.float32)
        for k in np.unique(self.shard[idx]):
            where = np.flatnonzero(self.shard[idx] == k)
            rows = self.row[idx[where]]
            uniq, inverse = np.unique(rows, return_inverse=True)
            data = self._group(int(k))[f"s{self.size}/{kind}"].get_orthogonal_selection((uniq, slice(None), slice(None)))
            out[where] = data[inverse]
        return out

    def split(self, val: float, test: float) -> np.ndarray:
        """'train' / 'val' / 'test' per image, by structure (split_structures)."""
        side = split_structures(self.sample_id, val, test)
        return np.array([side[str(s)] for s in self.sample_id])


def _join(parts: list[dict[str, np.ndarray]], counts: list[int]) -> dict[str, np.ndarray]:
    """Concatenate per-shard arrays; a name missing in a shard is filled (NaN, "" or False)."""
    names = sorted({k for p in parts for k in p})
    out = {}
    for name in names:
        pieces = []
        ref = next(p[name] for p in parts if name in p)
        for p, n in zip(parts, counts, strict=True):
            if name in p:
                pieces.append(p[name])
            elif ref.dtype.kind in "U":
                pieces.append(np.full((n,) + ref.shape[1:], "", dtype=str))
            elif ref.dtype.kind == "b":
                pieces.append(np.zeros((n,) + ref.shape[1:], dtype=bool))
            else:
                pieces.append(np.full((n,) + ref.shape[1:], np.nan))
        kinds = {x.dtype.kind for x in pieces if len(x)}
        if "U" in kinds and len(kinds) > 1:
            pieces = [x.astype(str) for x in pieces]
        out[name] = np.concatenate(pieces) if pieces else ref
    return out


def open_dataset(shard_paths: Sequence[Path], size: int) -> ImageDataset:
    """A dataset view over image shards at one image size (see ImageDataset)."""
    return ImageDataset(shard_paths, size)


def read_all(path: str | Path) -> dict[str, Any]:
    """Every array (as NumPy) and every group's attrs of a store, by name: for comparing stores."""
    import zarr

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
