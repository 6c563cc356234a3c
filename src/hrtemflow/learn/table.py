"""A train spec's images as a table: which shard and row, which structure, what target; and its split.

Labels are small and read eagerly; images are read later by the feed (`learn.feed`). Every refusal
of a spec or of its shards happens here, before anything trains.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.atomic import canonical_json
from ..core.errors import HrtemflowError
from ..core.tasks import TASKS
from ..store import layout
from ..store.reader import column, open_checked, per_row
from ..store.splits import split_structures

#: the network's first layers (`learn.models` builds them); named here so a spec is checked without Keras
STEMS = ("full", "patchify")

SPLITS = ("train", "val", "test")
#: `learning.tasks.<task>.shot_noise`: train on the stored noisy images, or draw new shot noise for each
#: training image every time it is served, from its noise-free image at its own dose
SHOT_NOISE = ("stored", "fresh")
#: the denoiser's target arrays, by `learning.tasks.denoise.target`
DENOISE_TARGETS = ("clean", "noise_free")
HYPER_KEYS = ("epochs", "batch_size", "learning_rate", "width", "depth", "patience", "augment")


def check_spec(spec: Mapping[str, Any]) -> None:
    """Refuse a train spec that cannot work, before anything is opened; messages say what to fix."""
    if not isinstance(spec, Mapping) or spec.get("kind") != "train":
        raise HrtemflowError(
            "not a train spec (kind must be 'train'); pass results/plan/train/<task>.json written by `hrtemflow plan`"
        )
    missing = [k for k in ("task", "image_size", "split", "hyper", "shards", "campaign_seed") if k not in spec]
    if missing:
        raise HrtemflowError(f"train spec lacks {', '.join(missing)}; rerun `hrtemflow plan`")
    name = spec["task"]
    if name not in TASKS:
        raise HrtemflowError(f"train spec: unknown task {name!r}; one of {', '.join(TASKS)}")
    task = TASKS[name]
    if task.kind == "classification" and len(spec.get("classes") or []) < 2:
        raise HrtemflowError(f"train spec: task {name!r} needs at least 2 classes, got {spec.get('classes')}")
    if "targets" in spec and task.targets and list(spec["targets"]) != task.target_names:
        raise HrtemflowError(
            f"train spec: targets {spec['targets']} are not what this hrtemflow learns for {name!r} "
            f"({task.target_names}); rerun `hrtemflow plan` (snakemake does)"
        )
    hyper = spec["hyper"]
    if missing := [k for k in HYPER_KEYS if k not in hyper]:
        raise HrtemflowError(f"train spec: hyper lacks {', '.join(missing)}; rerun `hrtemflow plan`")
    if hyper.get("stem", "full") not in STEMS:
        raise HrtemflowError(
            f"train spec: stem {hyper['stem']!r} is not one of {', '.join(STEMS)}; fix learning.tasks.{name}.stem"
        )
    if shot_noise(spec) not in SHOT_NOISE:
        raise HrtemflowError(
            f"train spec: shot_noise {hyper['shot_noise']!r} is not one of {', '.join(SHOT_NOISE)}; "
            f"fix learning.tasks.{name}.shot_noise"
        )
    size = spec["image_size"]
    if size % (2 ** hyper["depth"]):
        raise HrtemflowError(
            f"train spec: image_size {size} is not divisible by 2**depth = {2 ** hyper['depth']}; lower "
            f"learning.tasks.{name}.depth"
        )
    if not spec["shards"]:
        raise HrtemflowError(
            f"train spec: task {name!r} has no image shards; enable its families "
            f"({', '.join(spec.get('families', []))})"
        )


def clean_key(size: int, target: str = "clean") -> str:
    """The array a denoiser learns to output."""
    if target not in DENOISE_TARGETS:
        raise HrtemflowError(
            f"denoise target {target!r} is not one of {', '.join(DENOISE_TARGETS)}; set learning.tasks.denoise.target"
        )
    return layout.image_key(size, target)


def evenly_spaced(n: int, k: int) -> np.ndarray:
    """At most k indices spread evenly over range(n): a subset that samples every part of a split."""
    return np.unique(np.linspace(0, n - 1, min(n, k)).round().astype(int))


def shot_noise(spec: Mapping[str, Any]) -> str:
    """Where the training images' shot noise comes from (specs from before the option: `stored`)."""
    return spec.get("hyper", {}).get("shot_noise", "stored")


def denoise_target(spec: Mapping[str, Any]) -> str:
    """The array a denoiser learns to output (specs from before the option mean `clean`)."""
    return spec.get("hyper", {}).get("target", "clean")


def required_arrays(name: str, size: int, target: str = "clean", noise: str = "stored") -> list[str]:
    """Arrays a shard must hold for a task (checked before any training starts)."""
    task = TASKS[name]
    need = [layout.SAMPLE_ID, layout.image_key(size), layout.pixel_size_key(size)]
    if noise == "fresh":
        need += [layout.image_key(size, "noise_free"), *map(layout.param_key, layout.GAIN_PARAMS)]
    if task.class_label:
        need.append(layout.label_key(task.class_label))
    need += [layout.param_key(p) for p in task.params] + [layout.label_key(lab) for lab in task.labels]
    if task.kind == "denoising":
        need.append(clean_key(size, target))
    return need


@dataclass(frozen=True)
class Table:
    """One row per usable image: where it lives (shard, row), its structure, its target.

    `y` is an int class index (classification), raw physical targets (regression, one column per
    target of the task's registry entry), or None (denoising: the target is an image read like the input).
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
        return Table(
            self.task,
            self.paths,
            self.shard[sel],
            self.row[sel],
            self.sample_id[sel],
            None if self.y is None else self.y[sel],
            self.pixel_size_A[sel],
            self.info,
            None if self.gain is None else self.gain[sel],
        )

    def n_structures(self) -> int:
        return len(np.unique(self.sample_id))

    def column(self, key: str, dtype: Any = np.float64) -> np.ndarray:
        """Each image's entry of a per-row shard array (`store.layout` names: params/..., image_id)."""
        return per_row(self.paths, self.shard, self.row, key, dtype)


def _task_targets(group, name: str, classes: Sequence[str] | None) -> tuple[np.ndarray | None, np.ndarray, list[str]]:
    """(targets, usable mask, unknown labels) of one shard."""
    task = TASKS[name]
    n = group[layout.SAMPLE_ID].shape[0]
    if task.class_label:
        labels = column(group, layout.label_key(task.class_label))
        index = {c: i for i, c in enumerate(classes or [])}
        y = np.array([index.get(s, -1) for s in labels], dtype=np.int64)
        return y, y >= 0, sorted(set(labels[y < 0]))
    if task.make_targets is None:
        return None, np.ones(n, bool), []
    params = {p: np.asarray(group[layout.param_key(p)][:], dtype=np.float64) for p in task.params}
    labels = {lab: np.asarray(group[layout.label_key(lab)][:], dtype=np.float64) for lab in task.labels}
    y = task.make_targets(params, labels)
    return y, np.isfinite(y).all(axis=1), []


def _gain(group, path: str, rows: np.ndarray, task: str) -> np.ndarray:
    """(len(rows), 3) gain of those images; refuses a gain that cannot be undone (no counts to draw noise from)."""
    gain = np.stack(
        [np.asarray(group[layout.param_key(k)][:], dtype=np.float64)[rows] for k in layout.GAIN_PARAMS], axis=1
    )
    bad = ~((gain[:, 0] > 0) & (gain[:, 1] > 0) & (gain[:, 2] > -1))
    if bad.any():
        b, c, bg = gain[np.flatnonzero(bad)[0]]
        raise HrtemflowError(
            f"image shard {path}: {int(bad.sum())} image(s) have a gain that fresh shot noise cannot undo "
            f"(e.g. brightness {b:g}, contrast {c:g}, background {bg:g}; it needs brightness > 0, contrast > 0 "
            f"and background > -1); narrow imaging.noise ranges, or set learning.tasks.{task}.shot_noise: stored"
        )
    return gain


def dataset_fingerprint(entries: list[dict]) -> str:
    return hashlib.sha256(canonical_json(entries).encode()).hexdigest()


def imaging_conditions(attrs: dict) -> dict:
    """What a shard's images were taken with (energy, optics, detector and noise ranges, from its attrs),
    for a bundle's card: a network is for micrographs taken the same way (a phase plate, negative Cs)."""
    img = attrs.get("imaging") or {}
    physics = img.get("physics") or {}
    # the tubes' largest out-of-plane tilt (the schema's "CNT only"): predict's lattice check reads it
    tilt = {"tilt_deg": physics["tilt_deg"]} if attrs.get("family") == "cnt" and "tilt_deg" in physics else {}
    return {
        "family": attrs.get("family"),
        "energy_kV": physics.get("energy_kV"),
        **tilt,
        **{k: img.get(k) for k in ("optics", "detector", "noise")},
    }


def load_table(spec: Mapping[str, Any], base: str | os.PathLike = ".") -> Table:
    """Open every shard of a train spec, check it holds what the task needs, and index its images."""
    check_spec(spec)
    task, size = spec["task"], spec["image_size"]
    denoiser = TASKS[task].kind == "denoising"
    target = denoise_target(spec) if denoiser else "clean"
    noise = shot_noise(spec)
    need = required_arrays(task, size, target, noise)
    shard, row, sid, ys, px, gains, entries = [], [], [], [], [], [], []
    conditions: list[dict] = []
    unknown: set[str] = set()
    dropped = 0
    paths = tuple(str(Path(base) / p) for p in spec["shards"])
    for k, (rel, path) in enumerate(zip(spec["shards"], paths)):
        group = open_checked(path, need, f"the training spec asks for image_size {size}")
        n = group[layout.SAMPLE_ID].shape[0]
        for key in need[1:]:
            if group[key].shape[0] != n:
                raise HrtemflowError(
                    f"image shard {path}: {key} has {group[key].shape[0]} rows, sample_id {n}; "
                    "the shard is corrupt, rerun its imaging job"
                )
        images = group[layout.image_key(size)]
        if images.shape[1:] != (size, size):
            raise HrtemflowError(
                f"image shard {path}: {layout.image_key(size)} has shape {images.shape}, expected (N, {size}, {size})"
            )
        y, ok, bad = _task_targets(group, task, spec.get("classes"))
        unknown.update(bad)
        dropped += int((~ok).sum())
        attrs = dict(group.attrs)
        entries.append(
            {
                "shard": rel,
                "spec_sha256": attrs.get("spec_sha256"),
                "schema_version": attrs.get("schema_version"),
                "n_images": int(n),
                "n_samples": attrs.get("n_samples"),
            }
        )
        if (c := imaging_conditions(attrs)) not in conditions:
            conditions.append(c)
        idx = np.flatnonzero(ok)
        shard.append(np.full(len(idx), k, dtype=np.int32))
        row.append(idx.astype(np.int64))
        sid.append(column(group, layout.SAMPLE_ID)[idx])
        px.append(np.asarray(group[layout.pixel_size_key(size)][:], dtype=np.float64)[idx])
        if y is not None:
            ys.append(y[idx])
        if noise == "fresh":
            gains.append(_gain(group, path, idx, task))
    table = Table(
        task=task,
        paths=paths,
        shard=np.concatenate(shard),
        row=np.concatenate(row),
        sample_id=np.concatenate(sid),
        y=np.concatenate(ys) if ys else None,
        pixel_size_A=np.concatenate(px),
        info={
            "dataset_sha256": dataset_fingerprint(
                [{"task": task, "image_size": size, **({"target": target} if target != "clean" else {})}, *entries]
            ),
            "n_shards": len(paths),
            "dropped_rows": dropped,
            "unknown_labels": sorted(unknown),
            "imaging": conditions,
            **({"target": target} if denoiser else {}),
        },
        gain=np.concatenate(gains) if gains else None,
    )
    if len(table) == 0:
        why = f" (labels {sorted(unknown)} are not among the classes {spec.get('classes')})" if unknown else ""
        raise HrtemflowError(f"task {task!r}: the {len(paths)} shard(s) hold no usable image{why}")
    return table


def prepare(spec: Mapping[str, Any], base: str | os.PathLike = ".") -> tuple[Table, dict[str, Table]]:
    """Check the spec, open the shards and split by structure: every refusal happens here, cheaply."""
    table = load_table(spec, base)
    return table, split_table(table, spec["split"])


def split_table(table: Table, split: Mapping[str, float], *, min_structures: int = 2) -> dict[str, Table]:
    """Train/val/test tables, disjoint by structure; refuse a split too small to mean anything."""
    side = split_structures(table.sample_id, split["val"], split["test"])
    sides = np.array([side[s] for s in table.sample_id])
    out = {name: table.take(sides == name) for name in SPLITS}
    counts = {name: t.n_structures() for name, t in out.items()}
    small = [f"{name}: {counts[name]}" for name in SPLITS if counts[name] < min_structures]
    if small:
        raise HrtemflowError(
            f"task {table.task!r}: too few structures to split ({table.n_structures()} in all; per split "
            f"{', '.join(small)}; "
            f"need >= {min_structures} in each of train, val and test); add samples to the families of this task "
            f"(samples_per_* in the config) or raise learning.split fractions"
        )
    return out
