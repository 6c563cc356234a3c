"""The Keras feed: batches of normalised images and targets over a `Table`, with augmentation.

Images are read lazily from the shards (`hrtemflow.store.reader`), batch by batch, or cached in
memory once when the split fits a memory budget. Augmentation draws one of the square's 8 symmetry
elements per image (`preprocess.d4`) and a contrast jitter; fresh shot noise (`shot_noise: fresh`)
draws new Poisson noise each time an image is served (`hrtemflow.imaging.optics`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import keras
import numpy as np

from ..core.errors import HrtemflowError
from ..core.tasks import TASKS
from ..imaging.optics import expected_counts, redraw_shot_noise
from ..store import layout
from ..store.reader import FEED_READERS, feed_reader, open_array, read_rows
from .preprocess import d4, normalise
from .table import SHOT_NOISE, Table, clean_key

DEFAULT_CACHE_MB = 2048


# ----------------------------------------------------------------------------------- augmentation


def dihedral(
    x: np.ndarray,
    rng: np.random.Generator,
    *,
    y: np.ndarray | None = None,
    y_is_image: bool = False,
    astig: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Random flips and 90° rotations per image of a (B, H, W) stack, vectorised over the 8 elements.

    Labels are invariant (chirality: the n-m label names both enantiomers; ordering; structure)
    except two-fold astigmatism, whose angle φ12 turns with the image: a 90° rotation maps 2φ to
    2φ + π, flipping the sign of both (C12 cos 2φ, C12 sin 2φ); a flip about either axis maps φ to
    -φ (or π - φ), flipping the sign of the sin component. `astig` names those two columns of y.
    `y_is_image` transforms a (B, H, W) target (the denoiser's clean image) with its input.
    """
    b = len(x)
    k = rng.integers(0, 4, size=b)
    flip = rng.integers(0, 2, size=b).astype(bool)
    x = x.copy()
    y = None if y is None else y.copy()
    for kk in range(4):
        for ff in (False, True):
            m = np.flatnonzero((k == kk) & (flip == ff))
            if not len(m) or (kk == 0 and not ff):
                continue
            x[m] = d4(x[m], kk, ff)
            if y is not None and y_is_image:
                y[m] = d4(y[m], kk, ff)
    if y is not None and astig is not None:
        c, s = astig
        sign_rot = np.where(k % 2 == 1, -1.0, 1.0)
        y[:, c] *= sign_rot
        y[:, s] *= sign_rot * np.where(flip, -1.0, 1.0)
    return x, y


def jitter(x: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Contrast gain and offset on normalised images: robustness to normalisation off real data."""
    b = len(x)
    gain = rng.uniform(1 - amount, 1 + amount, size=(b, 1, 1)).astype(np.float32)
    offset = rng.uniform(-amount, amount, size=(b, 1, 1)).astype(np.float32)
    return x * gain + offset


# ------------------------------------------------------------------------------------------- feed


def cache_budget_bytes() -> int:
    """Memory a feed may use to hold its images (env HRTEMFLOW_FEED_CACHE_MB, default 2048 MiB)."""
    return int(float(os.environ.get("HRTEMFLOW_FEED_CACHE_MB", DEFAULT_CACHE_MB)) * 2**20)


class ShardFeed(keras.utils.PyDataset):
    """Batches (normalised image[..., None], target) over a `Table`, for any Keras backend.

    State is real here (epoch, open handles, the cache), hence a class. The order of epoch e is a
    permutation seeded by (seed, e), so a resumed run sees the batches an uninterrupted one would.
    When the images fit `cache_bytes` they are read once (whole shards / contiguous runs) and
    batches are fully random; otherwise batches are built from shuffled blocks of `block`
    contiguous rows (one Zarr request per block), which trades some randomness for throughput.
    `reader` is the codec pipeline of the reads (`feed_reader()` by default); `workers` > 1 reads
    batches ahead in threads. `shot_noise="fresh"` serves each image with new Poisson noise drawn
    from its expected counts (its noise-free image with the gain undone, `optics.expected_counts`;
    drawn by `optics.redraw_shot_noise`) every time, seeded by (seed, epoch, batch): over the epochs
    the network never sees the same noise twice, as it would not in the microscope. The gain itself
    drops out in `normalise`.
    """

    def __init__(
        self,
        table: Table,
        size: int,
        *,
        batch_size: int = 32,
        shuffle: bool = False,
        augment: bool = False,
        jitter_amount: float = 0.1,
        seed: int = 0,
        epoch: int = 0,
        target_scale: tuple[np.ndarray, np.ndarray] | None = None,
        block: int = 8,
        cache_bytes: int | None = None,
        workers: int = 1,
        max_queue_size: int = 10,
        reader: str | None = None,
        shot_noise: str = "stored",
    ) -> None:
        # threads, never processes: Zarr reads release the GIL, and a process that read through zarrs must not fork
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=max_queue_size)
        self.reader = feed_reader() if reader is None else reader
        if self.reader not in FEED_READERS[1:]:
            raise HrtemflowError(f"feed reader {self.reader!r} is not one of {', '.join(FEED_READERS[1:])}")
        self.table, self.size, self.batch_size = table, size, int(batch_size)
        self.shuffle, self.augment, self.jitter_amount = shuffle, augment, jitter_amount
        self.seed, self.epoch, self.block = int(seed), int(epoch), max(1, int(block))
        task = TASKS[table.task]
        self.denoise = task.kind == "denoising"
        if shot_noise not in SHOT_NOISE:
            raise HrtemflowError(f"shot_noise {shot_noise!r} is not one of {', '.join(SHOT_NOISE)}")
        if shot_noise == "fresh" and table.gain is None:
            raise HrtemflowError(
                "fresh shot noise needs each image's gain: load the table from a spec with shot_noise: fresh"
            )
        self.fresh_noise = shot_noise == "fresh"
        self.target_key = clean_key(size, table.info.get("target", "clean")) if self.denoise else None
        self.astig = task.sign_flips
        self.y = self._scaled_targets(target_scale)
        self.drop_remainder = shuffle and len(table) >= self.batch_size
        self._handles: dict = {}
        self._order_cache: tuple[int, np.ndarray] | None = None
        budget = cache_budget_bytes() if cache_bytes is None else cache_bytes
        self.cached = self.image_bytes <= budget
        self.cache = self._fill_cache() if self.cached else None

    @property
    def image_bytes(self) -> int:
        """Memory the images (and clean targets) of this feed take when cached."""
        return len(self.table) * self.size * self.size * 4 * (2 if self.denoise else 1)

    def _scaled_targets(self, scale) -> np.ndarray | None:
        if self.table.y is None:
            return None
        if TASKS[self.table.task].kind == "classification":
            return self.table.y.astype(np.int32)
        offset, s = scale if scale is not None else (0.0, 1.0)
        return ((self.table.y - offset) / s).astype(np.float32)

    # -- reading
    def _array(self, shard: int, key: str):
        if (shard, key) not in self._handles:
            self._handles[(shard, key)] = open_array(self.table.paths[shard], key, self.reader)
        return self._handles[(shard, key)]

    def _read(self, idx: np.ndarray, key: str, *, normalised: bool = True) -> np.ndarray:
        out = np.empty((len(idx), self.size, self.size), dtype=np.float32)
        shards = self.table.shard[idx]
        for s in np.unique(shards):
            m = np.flatnonzero(shards == s)
            rows = read_rows(self._array(int(s), key), self.table.row[idx[m]])
            if m[-1] - m[0] + 1 == len(m):  # a contiguous stretch (the cache fill): plain copy, no scatter
                out[m[0] : m[-1] + 1] = rows
            else:
                out[m] = rows
        return normalise(out, inplace=True) if normalised else out

    def _inputs(self, idx: np.ndarray) -> np.ndarray:
        """Network inputs of table rows idx, or with fresh shot noise their expected counts (float32)."""
        if not self.fresh_noise:
            return self._read(idx, layout.image_key(self.size))
        y = self._read(idx, layout.image_key(self.size, "noise_free"), normalised=False)
        return expected_counts(y, *self.table.gain[idx].T).astype(np.float32)

    def _noisy(self, counts: np.ndarray, i: int) -> np.ndarray:
        return normalise(redraw_shot_noise(counts, np.random.default_rng([self.seed, self.epoch, i, 2])), inplace=True)

    def _fill_cache(self) -> dict[str, np.ndarray]:
        idx = np.arange(len(self.table))
        cache = {"x": self._inputs(idx)}
        if self.denoise:
            cache["y"] = self._read(idx, self.target_key)
        return cache

    # -- order
    def _order(self) -> np.ndarray:
        if self._order_cache and self._order_cache[0] == self.epoch:
            return self._order_cache[1]
        n = len(self.table)
        if not self.shuffle:
            order = np.arange(n)
        else:
            rng = np.random.default_rng([self.seed, self.epoch])
            if self.cached or self.block == 1:
                order = rng.permutation(n)
            else:  # whole blocks of contiguous rows of one shard, blocks in random order
                by_place = np.lexsort((self.table.row, self.table.shard))
                cut = np.flatnonzero(np.diff(self.table.shard[by_place]) != 0) + 1
                blocks = [b for seg in np.split(by_place, cut) for b in np.array_split(seg, -(-len(seg) // self.block))]
                order = np.concatenate([blocks[i] for i in rng.permutation(len(blocks))])
        self._order_cache = (self.epoch, order)
        return order

    def __len__(self) -> int:
        n = len(self.table)
        return n // self.batch_size if self.drop_remainder else -(-n // self.batch_size)

    def indices(self, i: int) -> np.ndarray:
        """Table rows of batch i of the current epoch."""
        return self._order()[i * self.batch_size : (i + 1) * self.batch_size]

    def __getitem__(self, i: int):
        if i >= len(self):
            raise IndexError(f"batch {i} of {len(self)}")
        idx = self.indices(i)
        if self.cached:
            x = self.cache["x"][idx]
            y = self.cache["y"][idx] if self.denoise else self.y[idx]
        else:
            x = self._inputs(idx)
            y = self._read(idx, self.target_key) if self.denoise else self.y[idx]
        if self.fresh_noise:
            x = self._noisy(x, i)
        if self.augment:
            rng = np.random.default_rng([self.seed, self.epoch, i, 1])
            x, y = dihedral(x, rng, y=y, y_is_image=self.denoise, astig=self.astig)
            if self.jitter_amount:
                x = jitter(x, rng, self.jitter_amount)
        x = np.ascontiguousarray(x[..., None])
        if self.denoise:
            y = np.ascontiguousarray(y[..., None])
        return x, y

    def on_epoch_end(self) -> None:
        self.epoch += 1
