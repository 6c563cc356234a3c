"""A dataset view over many image shards at one size: a small in-memory index, images read on demand."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import HrtemflowError
from . import layout
from .reader import column, images_of, open_shard, read_arrays, read_rows
from .splits import split_structures


class ImageDataset:
    """Images of one size over many shards.

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
            if self.size not in list(g.attrs[layout.SIZES]):
                raise HrtemflowError(
                    f"image shard {path} has sizes {g.attrs[layout.SIZES]}, not {self.size}; add {self.size} to "
                    "imaging.sizes"
                )
            n = g[layout.SAMPLE_ID].shape[0]
            shard.append(np.full(n, k, np.int64))
            row.append(np.arange(n, dtype=np.int64))
            sids.append(column(g, layout.SAMPLE_ID))
            iids.append(column(g, layout.IMAGE_ID))
            px.append(np.asarray(g[layout.pixel_size_key(self.size)][...]))
            labels.append(read_arrays(g, layout.LABELS))
            params.append(read_arrays(g, layout.PARAMS))
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
            self._groups[k] = open_shard(self.paths[k])
        return self._groups[k]

    def read(self, indices: Sequence[int] | np.ndarray | slice, kind: str = "image") -> np.ndarray:
        """Images (len, size, size) float32 of `kind` ('image', 'noise_free' or 'clean')."""
        if kind not in layout.IMAGE_KINDS:
            raise HrtemflowError(f"image kind {kind!r} is not one of {', '.join(layout.IMAGE_KINDS)}")
        idx = (
            np.arange(len(self))[indices]
            if isinstance(indices, slice)
            else np.asarray(indices, dtype=np.int64).reshape(-1)
        )
        out = np.empty((len(idx), self.size, self.size), np.float32)
        for k in np.unique(self.shard[idx]):
            where = np.flatnonzero(self.shard[idx] == k)
            rows = self.row[idx[where]]
            out[where] = read_rows(images_of(self._group(int(k)), layout.image_key(self.size, kind)), rows)
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
