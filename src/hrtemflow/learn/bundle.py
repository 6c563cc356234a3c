"""A model bundle: `model.keras`, `card.json` and (classifiers and regressors) `ood.npz` in one folder.

The one place bundles are saved and loaded: training saves them (`save_bundle`), evaluation and
`hrtemflow predict` load them (`load_checked` checks the model against its card; `load_bundle` adds
what predict needs: the forward pass, the temperature and the OOD statistics), and
`fit_bundle_ood` writes the OOD statistics from the train spec's splits.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.atomic import atomic_file, write_json_atomic
from ..core.errors import HrtemflowError
from ..store import layout
from ..store.reader import feed_reader, open_array, read_rows
from . import ood
from .card import CARD_FILE, ModelCard
from .inference import Net, make_net
from .table import Table, evenly_spaced, prepare

MODEL_FILE = "model.keras"


@dataclass
class Bundle:
    """A loaded bundle and what predict needs beside the model (state: the loaded network)."""

    path: Path
    card: ModelCard
    net: Net
    model: Any
    temperature: float | None = None
    temperature_source: str = ""
    ood: dict | None = None
    notes: list[str] = field(default_factory=list)
    #: per-tube answers only (`apply.tube_calibration.TubeCalibration`): the pool and exponent combining a
    #: tube's windows and the lattice angle's weighing (or None), and where they came from
    tube_calibration: tuple[str, float, dict | None] | None = None
    tube_calibration_source: str = ""

    @property
    def task(self) -> str:
        return self.card.task

    @property
    def kind(self) -> str:
        return self.card.kind

    @property
    def size(self) -> int:
        return self.card.input_size

    @property
    def pixel_size_A(self) -> float:
        return self.card.pixel_size_A


def save_model(model, path: Path) -> None:
    """A .keras archive written atomically: Keras builds its HDF5 part in memory and Python writes the
    file, so a full disk is a plain OSError."""
    with atomic_file(Path(path), suffix=".keras") as tmp:
        model.save(tmp)


def save_bundle(model, card: ModelCard, out_dir: str | Path) -> None:
    """model.keras, then card.json (last: a card vouches for the model beside it)."""
    out = Path(out_dir)
    save_model(model, out / MODEL_FILE)
    write_json_atomic(out / CARD_FILE, card.to_json())


def load_checked(model_dir: str | Path) -> tuple[Any, ModelCard]:
    """model.keras in safe mode (no arbitrary code, never pickle) and its card, checked against each other."""
    import keras  # noqa: PLC0415

    d = Path(model_dir)
    where = f"model bundle {d}"
    if not d.is_dir():
        raise HrtemflowError(
            f"{where} is not a folder; pass a folder written by `hrtemflow train` (model.keras + card.json)"
        )
    if not (d / MODEL_FILE).is_file():
        raise HrtemflowError(f"{where}: {MODEL_FILE} is missing; run `hrtemflow train` for this task first")
    card = ModelCard.read(d)
    from . import models  # noqa: F401, PLC0415 (registers the custom layers a saved model names)

    try:
        model = keras.saving.load_model(d / MODEL_FILE, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 (Keras raises ValueError/OSError/zipfile errors for a bad file)
        raise HrtemflowError(
            f"{where}: {MODEL_FILE} cannot be loaded in safe mode ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:300]}); retrain"
        ) from None
    card.check_model(model, where)
    return model, card


def load_bundle(path: str | Path, *, temperature: float | None = None) -> Bundle:
    """Load a bundle for prediction: model and card, forward pass, OOD statistics and temperature."""
    d = Path(path)
    model, card = load_checked(d)
    net = make_net(model, card.kind, card.task, card.normalisation)
    b = Bundle(d, card, net, model)
    if b.kind == "classification":
        b.temperature, b.temperature_source = find_temperature(d, card, temperature)
    if b.kind != "denoising":
        b.ood = ood.load_ood_stats(d, net=net, missing_ok=True)
        if b.ood is None:
            b.notes.append(
                f"model bundle {d} has no {ood.OOD_FILE}: regions are not checked against the training distribution "
                f"(only the vacuum gate runs); fit it with `hrtemflow fit-ood SPEC --model-dir {d}`"
            )
    return b


def find_temperature(bundle_dir: Path, card: ModelCard, override: float | None = None) -> tuple[float | None, str]:
    """The calibration temperature and where it came from.

    Order: `override` (--temperature); the card's `temperature`, where the training stage stored one;
    `metrics.json` in the bundle folder; `reports/<task>/metrics.json` of the same results folder
    (the layout `hrtemflow evaluate` writes). A metrics.json counts only if it names the bundle's
    task and dataset and is newer than model.keras (else it describes an older model). None:
    probabilities are the network's own softmax, reported as uncalibrated.
    """
    if override is not None:
        if not (math.isfinite(override) and override > 0):
            raise HrtemflowError(f"--temperature must be a positive number, got {override}")
        return float(override), "--temperature"
    if card.temperature is not None:
        return float(card.temperature), CARD_FILE
    d = Path(bundle_dir)
    model_time = (d / MODEL_FILE).stat().st_mtime
    for metrics in (d / "metrics.json", d.parent.parent / "reports" / card.task / "metrics.json"):
        if not metrics.is_file():
            continue
        try:
            m = json.loads(metrics.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            continue
        if not isinstance(m, Mapping):
            continue
        t = m.get("temperature")
        if (
            m.get("task") == card.task
            and m.get("dataset_sha256") == card.dataset_sha256
            and isinstance(t, (int, float))
            and math.isfinite(t)
            and t > 0
            and metrics.stat().st_mtime >= model_time
        ):
            return float(t), str(metrics)
    return None, "none found (uncalibrated softmax)"


def _table_images(table: Table, size: int, max_images: int) -> np.ndarray:
    """Raw images of a table (an evenly spaced subset when it is larger than max_images)."""
    reader = feed_reader()
    idx = evenly_spaced(len(table), max_images)
    out = np.empty((len(idx), size, size), dtype=np.float32)
    shards = table.shard[idx]
    for s in np.unique(shards):
        m = np.flatnonzero(shards == s)
        arr = open_array(table.paths[int(s)], layout.image_key(size), reader)
        out[m] = read_rows(arr, table.row[idx[m]])
    return out


def fit_bundle_ood(
    spec: Mapping[str, Any], model_dir: str | Path, *, base: str | Path = ".", max_images: int = ood.MAX_FIT_IMAGES
) -> dict[str, Any]:
    """Fit and save the OOD stats of a trained bundle from its train spec's train and val splits."""
    d = Path(model_dir)
    model, card = load_checked(d)
    if card.kind == "denoising":
        raise HrtemflowError(
            f"model bundle {d} is a denoiser: it has no OOD statistics (only classifiers and regressors)"
        )
    if card.task != spec.get("task") or card.input_size != spec.get("image_size"):
        raise HrtemflowError(
            f"model bundle {d} is for task {card.task!r} at {card.input_size} px, the spec for "
            f"{spec.get('task')!r} at {spec.get('image_size')} px; pass the matching spec"
        )
    table, splits = prepare(spec, base)
    if table.info["dataset_sha256"] != card.dataset_sha256:
        raise HrtemflowError(
            f"model bundle {d} was trained on another dataset than the spec's shards now hold; retrain it first"
        )
    size = card.input_size
    stats = ood.fit_ood_stats(
        model,
        _table_images(splits["train"], size, max_images),
        _table_images(splits["val"], size, max_images),
        task=card.task,
    )
    stats["dataset_sha256"] = card.dataset_sha256
    ood.save_ood_stats(stats, d)
    return stats
