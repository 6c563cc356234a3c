"""Training one task from its train spec into a model bundle (model.keras + card.json, `learn.bundle`).

A run checkpoints every epoch into <out>/checkpoint/ (model with optimizer state, best weights and a
small state file with the epoch, the early-stopping counters and the history), so a killed job picks
up where it stopped; raising `epochs` in the config continues a finished run rather than repeating it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ..core import runtime
from ..core.atomic import canonical_json, write_json_atomic
from ..core.errors import HrtemflowError
from ..core.tasks import TASKS, spectral_width_default
from ..store import layout
from ..store.splits import METHOD as SPLIT_METHOD
from . import models
from .bundle import save_bundle, save_model
from .card import DENOISE_OUTPUT, OUTPUT_DESCRIPTION, ModelCard
from .feed import ShardFeed, cache_budget_bytes
from .preprocess import NORMALISATION
from .table import Table, prepare, shot_noise

CHECKPOINT = "checkpoint"
#: best weights, as a .keras archive: Keras builds its HDF5 part in memory and Python writes the file,
#: so a full disk is a plain OSError (HDF5 writing a .weights.h5 itself crashed the process on ENOSPC)
BEST = "best.keras"


def task_seed(campaign_seed: int, task: str) -> int:
    """The seed of one task's training: same campaign, same weights init and batch order."""
    return (
        int.from_bytes(hashlib.sha256(f"hrtemflow-train:{campaign_seed}:{task}".encode()).digest()[:4], "little") >> 1
    )


def target_scaling(task: str, y_train: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(offset, scale, card entries): targets scaled to O(1) from the training split.

    Centred targets use mean and std; the astigmatism components keep offset 0 and use their RMS,
    so the sign flips of augmentation act on the scaled values exactly as on the physical ones.
    """
    offset, scale, entries = [], [], []
    for j, t in enumerate(TASKS[task].targets):
        col = y_train[:, j]
        o = float(col.mean()) if t.centred else 0.0
        s = float(np.sqrt(np.mean((col - o) ** 2)))
        s = s if s > 1e-12 * max(1.0, abs(o)) else 1.0
        offset.append(o)
        scale.append(s)
        entries.append({"name": t.name, "unit": t.unit, "offset": o, "scale": s})
    return np.array(offset), np.array(scale), entries


def has_gpu() -> bool:
    """Whether the active Keras backend sees a GPU (mixed precision is used only there)."""
    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf  # noqa: PLC0415 (the active backend's own module only)

            return bool(tf.config.list_physical_devices("GPU"))
        if backend == "jax":
            import jax  # noqa: PLC0415 (the active backend's own module only)

            return any(d.platform == "gpu" for d in jax.devices())
        if backend == "torch":
            import torch  # noqa: PLC0415 (the active backend's own module only)

            return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 (a broken GPU stack means: train on CPU)
        return False
    return False


def dtype_policy(precision: str) -> str:
    """The Keras dtype policy of a training run from `learning.tasks.<task>.precision`.

    auto: mixed_float16 on a GPU (tensor cores), float32 on a CPU, where float16 is emulated. An
    explicit mixed_bfloat16 is for CPUs with AMX tiles, and for GPUs that do bfloat16.
    """
    if precision == "auto":
        return "mixed_float16" if has_gpu() else "float32"
    if precision not in ("float32", "mixed_bfloat16"):
        raise HrtemflowError(
            f"train: precision {precision!r} is not one of auto, float32, mixed_bfloat16; fix "
            "learning.tasks.<task>.precision"
        )
    return precision


def _limit_threads() -> None:
    """Keep TensorFlow to the cores the job was given (Snakemake {threads}, SLURM), when told."""
    n = runtime.threads(0)
    if not n or keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf  # noqa: PLC0415 (only under the TensorFlow backend)

    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(min(n, 2))
    except RuntimeError:  # TensorFlow already started in this process (tests, notebooks): keep its pools
        pass


def _fingerprint(spec: Mapping, dataset_sha256: str) -> str:
    """What a checkpoint must match to be resumed: the spec and data, but not patience, nor epochs
    under a constant rate. A cosine schedule spans the planned epochs, so a checkpoint of a shorter
    run has already decayed where a longer one would still be learning: it is not that run's start."""
    free = (
        ("epochs", "patience", "enabled")
        if spec["hyper"].get("lr_schedule", "constant") == "constant"
        else ("patience", "enabled")
    )
    hyper = {k: v for k, v in spec["hyper"].items() if k not in free}
    keep = {k: v for k, v in spec.items() if k not in ("hyper", "shards")}
    what = {"spec": keep, "hyper": hyper, "data": dataset_sha256, "backend": keras.backend.backend()}
    return hashlib.sha256(canonical_json(what).encode()).hexdigest()


class _Checkpoint(keras.callbacks.Callback):
    """Saves model + optimizer every epoch, the best weights, and resumable early-stopping state."""

    def __init__(self, folder: Path, state: dict, patience: int) -> None:
        super().__init__()
        self.folder, self.state, self.patience = folder, state, patience

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        st = self.state
        for key, value in (logs or {}).items():
            st["history"].setdefault(key, []).append(float(value))
        st["epoch"] = epoch + 1
        val = (logs or {}).get("val_loss")
        if val is not None and np.isfinite(val) and (st["best_val_loss"] is None or val < st["best_val_loss"]):
            st.update(best_val_loss=float(val), best_epoch=epoch + 1, wait=0)
            save_model(self.model, self.folder / BEST)
        else:
            st["wait"] += 1
        if st["wait"] >= self.patience:
            st["stopped"] = True
            self.model.stop_training = True
        save_model(self.model, self.folder / "last.keras")
        write_json_atomic(self.folder / "state.json", st)  # last: it vouches for the files above


def _optimizer(hyper: Mapping[str, Any], steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """Adam, its rate constant or decayed along a cosine to 2 % over the planned epochs.

    The schedule counts optimizer steps, which the checkpoint keeps, so a resumed run continues on
    the same curve.
    """
    lr: Any = float(hyper["learning_rate"])
    if hyper.get("lr_schedule", "constant") == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(
            lr, decay_steps=max(1, int(hyper["epochs"]) * steps_per_epoch), alpha=0.02
        )
    return keras.optimizers.Adam(lr)


def _compile(model: keras.Model, kind: str, optimizer: keras.optimizers.Optimizer) -> None:
    if kind == "classification":
        model.compile(optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    else:
        model.compile(optimizer, loss="mse", metrics=["mae"])


def _stop_epoch(val_losses: list[float], patience: int) -> int | None:
    """The epoch (1-based) at which early stopping with `patience` ends a run with these val losses."""
    best, wait = None, 0
    for epoch, val in enumerate(val_losses, start=1):
        if np.isfinite(val) and (best is None or val < best):
            best, wait = val, 0
        else:
            wait += 1
        if wait >= patience:
            return epoch
    return None


def _resume_state(folder: Path, fingerprint: str, resume: bool, epochs: int, patience: int) -> dict | None:
    """The checkpoint state to continue from, if it is the beginning of the run now asked for.

    Same spec and data (patience aside, and epochs under a constant rate), no more epochs done than now allowed, and no
    early stop under the new patience before its last epoch: then continuing gives the run a fresh
    start would (up to dropout draws); anything else starts over.
    """
    state_path = folder / "state.json"
    if not (resume and state_path.is_file() and (folder / "last.keras").is_file()):
        return None
    try:
        state = json.loads(state_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    stop = _stop_epoch(state.get("history", {}).get("val_loss", []), patience)
    if state.get("best_val_loss") is not None and not (folder / BEST).is_file():
        print(f"train: checkpoint in {folder} has no {BEST} (an older layout); starting over", flush=True)
        return None
    if (
        state.get("fingerprint") != fingerprint
        or state["epoch"] > epochs
        or (stop is not None and stop < state["epoch"])
    ):
        print(
            f"train: checkpoint in {folder} is not the start of this run (other spec, data, epochs or patience); "
            "starting over",
            flush=True,
        )
        return None
    state["stopped"] = stop is not None
    return state


def train(
    spec: Mapping[str, Any],
    out_dir: Path,
    *,
    resume: bool = True,
    progress: bool = True,
    base: str | Path = ".",
    workers: int | None = None,
    cache_bytes: int | None = None,
    prepared: tuple[Table, dict[str, Table]] | None = None,
) -> ModelCard:
    """Train the spec's task into `out_dir` (model.keras + card.json); returns the card.

    `workers` > 1 reads batches ahead in that many threads when the data does not fit the feed's
    memory cache, or draws their fresh shot noise (never processes: see `store.reader.open_array`;
    benchmarks/feed_throughput.py). `cache_bytes` overrides the cache budget (HRTEMFLOW_FEED_CACHE_MB).
    `prepared` is `prepare(spec, base)`'s result when the caller already checked the data.
    """
    out_dir = Path(out_dir)
    table, splits = prepared or prepare(spec, base)
    task, size, hyper = spec["task"], spec["image_size"], spec["hyper"]
    kind = TASKS[task].kind
    spectral_width = (
        None if kind == "denoising" else hyper.get("spectral_width", spectral_width_default(task, hyper["width"]))
    )
    stem = hyper.get("stem", "full")  # specs planned before the option: the full-resolution stem they were built with
    seed = task_seed(spec["campaign_seed"], task)
    keras.utils.set_random_seed(seed)
    _limit_threads()

    scale, targets = None, None
    if kind == "regression":
        offset, s, targets = target_scaling(task, splits["train"].y)
        scale = (offset, s)
    n_outputs = len(spec["classes"]) if kind == "classification" else (len(targets) if targets else 1)

    folder = out_dir / CHECKPOINT
    fingerprint = _fingerprint(spec, table.info["dataset_sha256"])
    state = _resume_state(folder, fingerprint, resume, hyper["epochs"], hyper["patience"])
    policy = dtype_policy(hyper.get("precision", "auto"))
    flags = runtime.cpu_flags()  # None where the system does not say: then nothing to warn about
    if policy == "mixed_bfloat16" and flags is not None and "amx_bf16" not in flags and not has_gpu():
        print(
            f"train: {task}: precision mixed_bfloat16 on a CPU without AMX (no amx_bf16 flag): bfloat16 is not "
            "multiplied in hardware here and trains slower than float32 (benchmarks/precision_speed.py); "
            f"learning.tasks.{task}.precision: auto trains in float32",
            flush=True,
        )
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        if state is not None:
            try:
                model = keras.saving.load_model(folder / "last.keras", safe_mode=True)
            except Exception as exc:  # noqa: BLE001 (damaged, or not ours: never fatal, start over)
                print(
                    f"train: {task}: checkpoint {folder / 'last.keras'} cannot be loaded in safe mode "
                    f"({type(exc).__name__}); starting over",
                    flush=True,
                )
                state = None
            else:
                print(f"train: {task}: resuming after epoch {state['epoch']} from {folder}", flush=True)
        if state is None:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            state = {
                "fingerprint": fingerprint,
                "epoch": 0,
                "best_val_loss": None,
                "best_epoch": 0,
                "wait": 0,
                "stopped": False,
                "history": {},
            }
            model = models.build(task, kind, size, n_outputs, hyper["width"], hyper["depth"], spectral_width, stem)
            steps = max(1, len(splits["train"]) // int(hyper["batch_size"]))  # the feed drops the last partial batch
            _compile(model, kind, _optimizer(hyper, steps))

        budget = cache_budget_bytes() if cache_bytes is None else cache_bytes  # shared by the two feeds
        feed_args = {"batch_size": hyper["batch_size"], "target_scale": scale, "seed": seed}
        train_feed = ShardFeed(
            splits["train"],
            size,
            shuffle=True,
            augment=bool(hyper["augment"]),
            epoch=state["epoch"],
            cache_bytes=budget,
            shot_noise=shot_noise(spec),
            **feed_args,
        )
        val_feed = ShardFeed(
            splits["val"], size, cache_bytes=budget - train_feed.image_bytes * train_feed.cached, **feed_args
        )
        feeds = {"train": train_feed, "val": val_feed}
        for feed in feeds.values():
            if (
                (not feed.cached or feed.fresh_noise) and workers and workers > 1
            ):  # reads or noise draws (both free the GIL) in threads
                feed.workers = workers
        if streamed := [
            name for name, feed in feeds.items() if not feed.cached
        ]:  # say how, since the reader decides the feed's speed
            held = [name for name, feed in feeds.items() if feed.cached]
            print(
                f"train: {task}: {' and '.join(streamed)} streamed from the shards ({train_feed.reader} reader, "
                f"{max(1, workers or 1)} reading thread(s)){f'; {held[0]} cached in memory' if held else ''}",
                flush=True,
            )

        if not state["stopped"] and state["epoch"] < hyper["epochs"]:
            model.fit(
                train_feed,
                validation_data=val_feed,
                epochs=hyper["epochs"],
                initial_epoch=state["epoch"],
                shuffle=False,
                callbacks=[_Checkpoint(folder, state, hyper["patience"])],
                verbose=1 if progress else 2,
            )
        if state["best_val_loss"] is None:
            raise HrtemflowError(
                f"train: {task}: validation loss never became finite (training diverged); lower "
                f"learning.tasks.{task}.learning_rate"
            )
        model.load_weights(folder / BEST)
        val_metrics = {k: float(v) for k, v in model.evaluate(val_feed, return_dict=True, verbose=0).items()}
    finally:
        keras.config.set_dtype_policy(previous_policy)

    # The bundle is for inference anywhere: float32 (CPU included), and uncompiled, so it carries no
    # optimizer. A compiled model saves its optimizer's class, and under PyTorch that class lives in
    # keras.src.backend.torch: loading it under TensorFlow would then import torch, or fail without it.
    bundle_model = models.build(task, kind, size, n_outputs, hyper["width"], hyper["depth"], spectral_width, stem)
    bundle_model.set_weights(model.get_weights())

    card = ModelCard(
        task=task,
        kind=kind,
        output=DENOISE_OUTPUT[table.info["target"]] if kind == "denoising" else OUTPUT_DESCRIPTION[kind],
        input_size=size,
        input={"array": layout.image_key(size), "layout": "NHWC", "channels": 1, "dtype": "float32"},
        pixel_size_A=float(np.median(table.pixel_size_A)),
        normalisation=dict(NORMALISATION),
        augmentation=_augmentation_card(task, hyper["augment"], shot_noise(spec)),
        dataset_sha256=table.info["dataset_sha256"],
        imaging=table.info["imaging"],  # one entry per family / distinct conditions among the shards
        spec_sha256=hashlib.sha256(canonical_json(dict(spec)).encode()).hexdigest(),
        split=_split_card(spec, splits, table),
        metrics={"val": val_metrics},
        epochs_run=state["epoch"],
        best_epoch=state["best_epoch"],
        stopped_early=state["stopped"],
        history=state["history"],
        hyper={
            **hyper,
            **({"spectral_width": spectral_width} if spectral_width is not None else {}),
            **({"stem": stem} if kind != "denoising" else {}),
        },  # resolved: the card says what was built
        seed=seed,
        mixed_precision=policy != "float32",
        dtype_policy=policy,
        backend=keras.backend.backend(),
        n_params=int(bundle_model.count_params()),
        versions={**runtime.versions(), "keras_backend": keras.backend.backend()},
        classes=list(spec["classes"]) if kind == "classification" else None,
        targets=targets if kind == "regression" else None,
    )
    save_bundle(bundle_model, card, out_dir)
    return card


def _augmentation_card(task: str, augment: bool, shot_noise: str) -> dict | None:
    out = {}
    if augment:
        out = {
            "geometric": "random flip and 90-degree rotation per image (8 elements of the square's symmetry group)",
            "intensity": "contrast gain and offset in [1-0.1, 1+0.1] and [-0.1, 0.1] on the normalised image",
        }
        if TASKS[task].sign_flips:
            out["targets"] = (
                "astigmatism components transformed with the image: 90-degree rotation negates both, a flip negates "
                "C12 sin 2phi"
            )
    if shot_noise == "fresh":
        out["shot_noise"] = (
            "new Poisson noise each time a training image is served, drawn from its noise-free image's expected "
            "counts (its own dose, MTF and optics; gain undone); validation and test keep their stored images"
        )
    return out or None


def _split_card(spec: Mapping, splits: dict[str, Table], table: Table) -> dict:
    test_ids = sorted(set(splits["test"].sample_id.tolist()))
    return {
        "val": spec["split"]["val"],
        "test": spec["split"]["test"],
        "method": SPLIT_METHOD,
        "structures": {k: t.n_structures() for k, t in splits.items()},
        "images": {k: len(t) for k, t in splits.items()},
        "test_ids_sha256": hashlib.sha256("\n".join(test_ids).encode()).hexdigest(),
        "dropped_rows": table.info["dropped_rows"],
        "unknown_labels": table.info["unknown_labels"],
    }
