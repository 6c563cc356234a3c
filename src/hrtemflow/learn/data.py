"""Dataset index over image shards, split by structure, and the Keras feed.

The shards are read directly per the contract in docs/data-products.md (Zarr v3, one group per
shard, chunks of one image), so this module depends on nothing but zarr and numpy (Keras for the
PyDataset base class, hrtemflow.optics for the counts behind a stored image). Labels are small and
read eagerly into a `Table`; images are read lazily, batch by batch, or cached in memory once when
the split fits a memory budget.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import zarr

from ..errors import HrtemflowError
from ..io import canonical_json
from ..optics import expected_counts, redraw_shot_noise
from ..store import split_structures
from .models import STEMS
from .targets import ASTIG_COLUMNS, REGRESSION_TARGETS, Target  # noqa: F401  (re-exported: data.REGRESSION_TARGETS)

#: what a task learns: a class, some numbers, or a clean image
TASK_KIND = {
    "chirality": "classification",
    "ordering": "classification",
    "aberrations": "regression",
    "structure": "regression",
    "denoise": "denoising",
}
#: the label array a classification task reads (strings, mapped onto the spec's classes)
CLASS_LABEL = {"chirality": "labels/chirality", "ordering": "labels/ordering"}

NORMALISATION = {
    "method": "per-image standardisation: (x - mean) / max(std, eps), then clipped to [-clip, clip]",
    "function": "hrtemflow.learn.data.normalise",
    "eps": 1e-6,
    "clip": 10.0,
}
DEFAULT_CACHE_MB = 2048
#: Zarr decodes this many chunks per batch of its codec pipeline; its default (1) makes reads of
#: one-image chunks ~1.6x slower on 2 cores (benchmarks/feed_throughput.py)
ZARR_READ_CONFIG = {"codec_pipeline.batch_size": 16}
#: HRTEMFLOW_FEED_READER: the codec pipeline the feed reads shards with. `zarrs` (PyPI `zarrs`, Rust)
#: reads one-image chunks 3-7x faster than zarr-python's own pipeline (benchmarks/feed_throughput.py);
#: `auto` uses it where it is installed.
FEED_READERS = ("auto", "zarrs", "zarr-python")
ZARRS_PIPELINE = "zarrs.ZarrsCodecPipeline"
#: zarr's config is process-global: one thread at a time opens an array under the zarrs pipeline
_OPEN_LOCK = threading.Lock()
SPLITS = ("train", "val", "test")
#: `learning.tasks.<task>.shot_noise`: train on the stored noisy images, or draw new shot noise for each
#: training image every time it is served, from its noise-free image at its own dose
SHOT_NOISE = ("stored", "fresh")
#: the gain of a stored image (optics.apply_gain), which fresh shot noise undoes to reach the counts
GAIN_PARAMS = ("params/brightness", "params/contrast", "params/background")


def normalise(x: np.ndarray, eps: float = NORMALISATION["eps"], clip: float = NORMALISATION["clip"], *, inplace: bool = False) -> np.ndarray:
    """Per-image standardisation of a (..., H, W) stack, as float32.

    Dose and gain differ between images and microscopes; the networks see only contrast. The std
    floor keeps a blank image finite; the clip stops a hot pixel from dominating a batch.
    `inplace` reuses a float32 array the caller owns (the feed's read buffer).
    """
    x = np.asarray(x, dtype=np.float32) if inplace else np.array(x, dtype=np.float32)
    x = np.ascontiguousarray(x)
    flat = x.reshape(-1, x.shape[-2] * x.shape[-1])  # a view: every step below works in place
    flat -= flat.mean(axis=1, keepdims=True)
    std = np.sqrt(np.einsum("ij,ij->i", flat, flat) / flat.shape[1])  # no (x - mean)**2 temporary
    flat /= np.maximum(std, eps)[:, None]
    return np.clip(x, -clip, clip, out=x)


# ----------------------------------------------------------------------------------------- spec


def check_spec(spec: Mapping[str, Any]) -> None:
    """Refuse a train spec that cannot work, before anything is opened; messages say what to fix."""
    if not isinstance(spec, Mapping) or spec.get("kind") != "train":
        raise HrtemflowError("not a train spec (kind must be 'train'); pass results/plan/train/<task>.json written by `hrtemflow plan`")
    missing = [k for k in ("task", "image_size", "split", "hyper", "shards", "campaign_seed") if k not in spec]
    if missing:
        raise HrtemflowError(f"train spec lacks {', '.join(missing)}; rerun `hrtemflow plan`")
    task = spec["task"]
    if task not in TASK_KIND:
        raise HrtemflowError(f"train spec: unknown task {task!r}; one of {', '.join(TASK_KIND)}")
    if TASK_KIND[task] == "classification" and len(spec.get("classes") or []) < 2:
        raise HrtemflowError(f"train spec: task {task!r} needs at least 2 classes, got {spec.get('classes')}")
    if "targets" in spec and task in REGRESSION_TARGETS and list(spec["targets"]) != [t.name for t in REGRESSION_TARGETS[task]]:
        raise HrtemflowError(f"train spec: targets {spec['targets']} are not what this hrtemflow learns for {task!r} "
                             f"({[t.name for t in REGRESSION_TARGETS[task]]}); rerun `hrtemflow plan` (snakemake does)")
    hyper = spec["hyper"]
    need = ("epochs", "batch_size", "learning_rate", "width", "depth", "patience", "augment")
    if missing := [k for k in need if k not in hyper]:
        raise HrtemflowError(f"train spec: hyper lacks {', '.join(missing)}; rerun `hrtemflow plan`")
    if hyper.get("stem", "full") not in STEMS:
        raise HrtemflowError(f"train spec: stem {hyper['stem']!r} is not one of {', '.join(STEMS)}; fix learning.tasks.{task}.stem")
    if shot_noise(spec) not in SHOT_NOISE:
        raise HrtemflowError(f"train spec: shot_noise {hyper['shot_noise']!r} is not one of {', '.join(SHOT_NOISE)}; "
                             f"fix learning.tasks.{task}.shot_noise")
    size = spec["image_size"]
    if size % (2 ** hyper["depth"]):
        raise HrtemflowError(f"train spec: image_size {size} is not divisible by 2**depth = {2 ** hyper['depth']}; lower learning.tasks.{task}.depth")
    if not spec["shards"]:
        raise HrtemflowError(f"train spec: task {task!r} has no image shards; enable its families ({', '.join(spec.get('families', []))})")


def image_key(size: int) -> str:
    return f"s{size}/image"


#: the denoiser's target arrays, by `learning.tasks.denoise.target`
DENOISE_TARGETS = ("clean", "noise_free")


def clean_key(size: int, target: str = "clean") -> str:
    if target not in DENOISE_TARGETS:
        raise HrtemflowError(f"denoise target {target!r} is not one of {', '.join(DENOISE_TARGETS)}; set learning.tasks.denoise.target")
    return f"s{size}/{target}"


def evenly_spaced(n: int, k: int) -> np.ndarray:
    """At most k indices spread evenly over range(n): a subset that samples every part of a split."""
    return np.unique(np.linspace(0, n - 1, min(n, k)).round().astype(int))


def shot_noise(spec: Mapping[str, Any]) -> str:
    """Where the training images' shot noise comes from (specs from before the option: `stored`)."""
    return spec.get("hyper", {}).get("shot_noise", "stored")


def denoise_target(spec: Mapping[str, Any]) -> str:
    """The array a denoiser learns to output (specs from before the option mean `clean`)."""
    return spec.get("hyper", {}).get("target", "clean")


def required_arrays(task: str, size: int, target: str = "clean", noise: str = "stored") -> list[str]:
    """Arrays a shard must hold for a task (checked before any training starts)."""
    need = ["sample_id", image_key(size), f"s{size}/pixel_size_A"]
    if noise == "fresh":
        need += [f"s{size}/noise_free", *GAIN_PARAMS]
    if task in CLASS_LABEL:
        need.append(CLASS_LABEL[task])
    elif task == "aberrations":
        need += ["params/defocus_A", "params/c12_A", "params/phi12_rad"]
    elif task == "structure":
        need += ["labels/co_fraction", "labels/n_atoms", "labels/order_measure", "labels/energy_per_atom_eV"]
    elif task == "denoise":
        need.append(clean_key(size, target))
    return need


# ---------------------------------------------------------------------------------------- table


@dataclass(frozen=True)
class Table:
    """One row per usable image: where it lives (shard, row), its structure, its target.

    `y` is an int class index (classification), raw physical targets (regression, one column per
    `REGRESSION_TARGETS[task]`), or None (denoising: the target is an image read like the input).
    """

    task: str
    paths: tuple[str, ...]
    shard: np.ndarray
    row: np.ndarray
    sample_id: np.ndarray
    y: np.ndarray | None
    pixel_size_A: np.ndarray
    info: dict = field(default_factory=dict)
    #: (N, 3) brightness, contrast, background of each image: read only for fresh shot noise
    gain: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.row)

    def take(self, mask_or_index: np.ndarray) -> Table:
        sel = np.asarray(mask_or_index)
        return Table(self.task, self.paths, self.shard[sel], self.row[sel], self.sample_id[sel],
                     None if self.y is None else self.y[sel], self.pixel_size_A[sel], self.info,
                     None if self.gain is None else self.gain[sel])

    def n_structures(self) -> int:
        return len(np.unique(self.sample_id))


def _open_shard(path: str, need: Sequence[str]) -> zarr.Group:
    p = Path(path)
    if not p.exists():
        raise HrtemflowError(f"image shard {path} does not exist; run the imaging stage (`snakemake {path}`) first")
    try:
        group = zarr.open_group(str(p), mode="r")
    except Exception as exc:  # zarr raises several types for a folder that is not a group
        raise HrtemflowError(f"image shard {path} is not a readable Zarr group ({exc}); delete it and rerun its imaging job") from None
    if group.attrs.get("complete") is False:  # the imaging stage sets it last
        raise HrtemflowError(f"image shard {path} is incomplete (attrs.complete is false); rerun its imaging job")
    missing = [k for k in need if k not in group]
    if missing:
        raise HrtemflowError(f"image shard {path} lacks {', '.join(missing)}; it was made by an older or different imaging "
                             f"config; rerun its imaging job (the training spec asks for image_size {need[1].split('/')[0][1:]})")
    return group


def _strings(arr) -> np.ndarray:
    """A string array as fixed-width unicode, whatever Zarr returns (StringDType, object, bytes)."""
    values = np.asarray(arr[:])
    if values.dtype.kind == "S":
        values = np.char.decode(values, "utf-8")
    return np.array(values.tolist(), dtype=str)


def view_of(image_ids: np.ndarray) -> np.ndarray:
    """Each image's view ("<sample>-v02-o05" -> "<sample>-v02", the id hrtemflow.imaging writes): the
    optics variants of a view share the structure's orientation and position."""
    return np.array([i.rsplit("-o", 1)[0] for i in image_ids])


def _task_targets(group: zarr.Group, task: str, classes: Sequence[str] | None) -> tuple[np.ndarray | None, np.ndarray, list[str]]:
    """(targets, usable mask, unknown labels) of one shard."""
    n = group["sample_id"].shape[0]
    if task in CLASS_LABEL:
        labels = _strings(group[CLASS_LABEL[task]])
        index = {c: i for i, c in enumerate(classes or [])}
        y = np.array([index.get(s, -1) for s in labels], dtype=np.int64)
        return y, y >= 0, sorted(set(labels[y < 0]))
    if task == "aberrations":
        c12 = np.asarray(group["params/c12_A"][:], dtype=np.float64)
        phi = np.asarray(group["params/phi12_rad"][:], dtype=np.float64)
        y = np.stack([np.asarray(group["params/defocus_A"][:], dtype=np.float64), c12 * np.cos(2 * phi), c12 * np.sin(2 * phi), np.abs(c12)], axis=1)
    elif task == "structure":
        lab = {k: np.asarray(group[f"labels/{k}"][:], dtype=np.float64) for k in ("co_fraction", "n_atoms", "order_measure", "energy_per_atom_eV")}
        with np.errstate(divide="ignore", invalid="ignore"):
            y = np.stack([lab["co_fraction"], np.log(lab["n_atoms"]), lab["order_measure"], lab["energy_per_atom_eV"]], axis=1)
    else:
        return None, np.ones(n, bool), []
    return y, np.isfinite(y).all(axis=1), []


def _gain(group: zarr.Group, path: str, rows: np.ndarray, task: str) -> np.ndarray:
    """(len(rows), 3) gain of those images; refuses a gain that cannot be undone (no counts to draw noise from)."""
    gain = np.stack([np.asarray(group[k][:], dtype=np.float64)[rows] for k in GAIN_PARAMS], axis=1)
    bad = ~((gain[:, 0] > 0) & (gain[:, 1] > 0) & (gain[:, 2] > -1))
    if bad.any():
        b, c, bg = gain[np.flatnonzero(bad)[0]]
        raise HrtemflowError(f"image shard {path}: {int(bad.sum())} image(s) have a gain that fresh shot noise cannot undo "
                             f"(e.g. brightness {b:g}, contrast {c:g}, background {bg:g}; it needs brightness > 0, contrast > 0 "
                             f"and background > -1); narrow imaging.noise ranges, or set learning.tasks.{task}.shot_noise: stored")
    return gain


def dataset_fingerprint(entries: list[dict]) -> str:
    return hashlib.sha256(canonical_json(entries).encode()).hexdigest()


def imaging_conditions(attrs: dict) -> dict:
    """What a shard's images were taken with (energy, optics, detector and noise ranges, from its attrs),
    for a bundle's card: a network is for micrographs taken the same way (a phase plate, negative Cs)."""
    img = attrs.get("imaging") or {}
    return {"family": attrs.get("family"), "energy_kV": (img.get("physics") or {}).get("energy_kV"),
            **{k: img.get(k) for k in ("optics", "detector", "noise")}}


def load_table(spec: Mapping[str, Any], base: str | os.PathLike = ".") -> Table:
    """Open every shard of a train spec, check it holds what the task needs, and index its images."""
    check_spec(spec)
    task, size = spec["task"], spec["image_size"]
    target = denoise_target(spec) if task == "denoise" else "clean"
    noise = shot_noise(spec)
    need = required_arrays(task, size, target, noise)
    shard, row, sid, ys, px, gains, entries = [], [], [], [], [], [], []
    conditions: list[dict] = []
    unknown: set[str] = set()
    dropped = 0
    paths = tuple(str(Path(base) / p) for p in spec["shards"])
    for k, (rel, path) in enumerate(zip(spec["shards"], paths)):
        group = _open_shard(path, need)
        n = group["sample_id"].shape[0]
        for key in need[1:]:
            if group[key].shape[0] != n:
                raise HrtemflowError(f"image shard {path}: {key} has {group[key].shape[0]} rows, sample_id {n}; "
                                     "the shard is corrupt, rerun its imaging job")
        if group[image_key(size)].shape[1:] != (size, size):
            raise HrtemflowError(f"image shard {path}: {image_key(size)} has shape {group[image_key(size)].shape}, expected (N, {size}, {size})")
        y, ok, bad = _task_targets(group, task, spec.get("classes"))
        unknown.update(bad)
        dropped += int((~ok).sum())
        attrs = dict(group.attrs)
        entries.append({"shard": rel, "spec_sha256": attrs.get("spec_sha256"), "schema_version": attrs.get("schema_version"),
                        "n_images": int(n), "n_samples": attrs.get("n_samples")})
        if (c := imaging_conditions(attrs)) not in conditions:
            conditions.append(c)
        idx = np.flatnonzero(ok)
        shard.append(np.full(len(idx), k, dtype=np.int32))
        row.append(idx.astype(np.int64))
        sid.append(_strings(group["sample_id"])[idx])
        px.append(np.asarray(group[f"s{size}/pixel_size_A"][:], dtype=np.float64)[idx])
        if y is not None:
            ys.append(y[idx])
        if noise == "fresh":
            gains.append(_gain(group, path, idx, task))
    table = Table(
        task=task, paths=paths, shard=np.concatenate(shard), row=np.concatenate(row), sample_id=np.concatenate(sid),
        y=np.concatenate(ys) if ys else None, pixel_size_A=np.concatenate(px),
        info={"dataset_sha256": dataset_fingerprint([{"task": task, "image_size": size, **({"target": target} if target != "clean" else {})}, *entries]),
              "n_shards": len(paths), "dropped_rows": dropped, "unknown_labels": sorted(unknown), "imaging": conditions,
              **({"target": target} if task == "denoise" else {})},
        gain=np.concatenate(gains) if gains else None,
    )
    if len(table) == 0:
        why = f" (labels {sorted(unknown)} are not among the classes {spec.get('classes')})" if unknown else ""
        raise HrtemflowError(f"task {task!r}: the {len(paths)} shard(s) hold no usable image{why}")
    return table


# ---------------------------------------------------------------------------------------- split


def split_table(table: Table, split: Mapping[str, float], *, min_structures: int = 2) -> dict[str, Table]:
    """Train/val/test tables, disjoint by structure; refuse a split too small to mean anything."""
    side = split_structures(table.sample_id, split["val"], split["test"])
    sides = np.array([side[s] for s in table.sample_id])
    out = {name: table.take(sides == name) for name in SPLITS}
    counts = {name: t.n_structures() for name, t in out.items()}
    small = [f"{name}: {counts[name]}" for name in SPLITS if counts[name] < min_structures]
    if small:
        raise HrtemflowError(
            f"task {table.task!r}: too few structures to split ({table.n_structures()} in all; per split {', '.join(small)}; "
            f"need >= {min_structures} in each of train, val and test); add samples to the families of this task "
            f"(samples_per_* in the config) or raise learning.split fractions")
    return out


# ----------------------------------------------------------------------------------- augmentation


def dihedral(x: np.ndarray, rng: np.random.Generator, *, y: np.ndarray | None = None, y_is_image: bool = False,
             astig: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
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
            x[m] = _d4(x[m], kk, ff)
            if y is not None and y_is_image:
                y[m] = _d4(y[m], kk, ff)
    if y is not None and astig is not None:
        c, s = astig
        sign_rot = np.where(k % 2 == 1, -1.0, 1.0)
        y[:, c] *= sign_rot
        y[:, s] *= sign_rot * np.where(flip, -1.0, 1.0)
    return x, y


def _d4(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
    x = np.rot90(x, k, axes=(1, 2))
    return x[:, ::-1, :] if flip else x


def jitter(x: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Contrast gain and offset on normalised images: robustness to normalisation off real data."""
    b = len(x)
    gain = rng.uniform(1 - amount, 1 + amount, size=(b, 1, 1)).astype(np.float32)
    offset = rng.uniform(-amount, amount, size=(b, 1, 1)).astype(np.float32)
    return x * gain + offset


# ------------------------------------------------------------------------------------------- feed


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
            return np.asarray(arr[int(rows[0]):int(rows[-1]) + 1])
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
        raise HrtemflowError(f"HRTEMFLOW_FEED_READER={choice!r} is not one of {', '.join(FEED_READERS)}; unset it for auto")
    if choice == "zarr-python":
        return choice
    try:
        import zarrs  # noqa: F401, PLC0415
    except ImportError:
        if choice == "zarrs":
            raise HrtemflowError("HRTEMFLOW_FEED_READER=zarrs, but the zarrs package is not installed; "
                                 "`pip install --only-binary=:all: zarrs`, or unset HRTEMFLOW_FEED_READER") from None
        return "zarr-python"
    return "zarrs"


def open_array(path: str, key: str, reader: str = "zarr-python"):
    """A read-only Zarr array of a shard, decoded by `reader` (see `feed_reader`).

    The pipeline is bound when the array is opened, so the zarrs setting stays on this handle and
    never reaches arrays opened elsewhere in the process (the store's writers keep zarr-python's).
    A process that has read through zarrs must not fork: its children can hang on a lock held by
    zarrs' threads at the fork, which is why the feed's workers are threads.
    """
    if reader == "zarr-python":
        return zarr.open_group(path, mode="r")[key]
    with _OPEN_LOCK, zarr.config.set({"codec_pipeline.path": ZARRS_PIPELINE}):
        return zarr.open_group(path, mode="r")[key]


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

    def __init__(self, table: Table, size: int, *, batch_size: int = 32, shuffle: bool = False,
                 augment: bool = False, jitter_amount: float = 0.1, seed: int = 0, epoch: int = 0,
                 target_scale: tuple[np.ndarray, np.ndarray] | None = None, block: int = 8,
                 cache_bytes: int | None = None, workers: int = 1, max_queue_size: int = 10,
                 reader: str | None = None, shot_noise: str = "stored") -> None:
        # threads, never processes: Zarr reads release the GIL, and a process that read through zarrs must not fork
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=max_queue_size)
        self.reader = feed_reader() if reader is None else reader
        if self.reader not in FEED_READERS[1:]:
            raise HrtemflowError(f"feed reader {self.reader!r} is not one of {', '.join(FEED_READERS[1:])}")
        self.table, self.size, self.batch_size = table, size, int(batch_size)
        self.shuffle, self.augment, self.jitter_amount = shuffle, augment, jitter_amount
        self.seed, self.epoch, self.block = int(seed), int(epoch), max(1, int(block))
        self.denoise = TASK_KIND[table.task] == "denoising"
        if shot_noise not in SHOT_NOISE:
            raise HrtemflowError(f"shot_noise {shot_noise!r} is not one of {', '.join(SHOT_NOISE)}")
        if shot_noise == "fresh" and table.gain is None:
            raise HrtemflowError("fresh shot noise needs each image's gain: load the table from a spec with shot_noise: fresh")
        self.fresh_noise = shot_noise == "fresh"
        self.target_key = clean_key(size, table.info.get("target", "clean")) if self.denoise else None
        self.astig = ASTIG_COLUMNS if table.task == "aberrations" else None
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
        if TASK_KIND[self.table.task] == "classification":
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
                out[m[0]:m[-1] + 1] = rows
            else:
                out[m] = rows
        return normalise(out, inplace=True) if normalised else out

    def _inputs(self, idx: np.ndarray) -> np.ndarray:
        """Network inputs of table rows idx, or with fresh shot noise their expected counts (float32)."""
        if not self.fresh_noise:
            return self._read(idx, image_key(self.size))
        y = self._read(idx, f"s{self.size}/noise_free", normalised=False)
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
        return self._order()[i * self.batch_size:(i + 1) * self.batch_size]

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
