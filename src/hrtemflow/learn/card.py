"""The model card: what a bundle is, how it was trained and what its inputs must be. One type, checked once.

`card.json` beside `model.keras` is the contract between training and every later use of a bundle
(evaluation, `hrtemflow predict`, a user's own script). `ModelCard.from_json` validates a card as a
whole, naming the bundle and the key; `to_json` writes the same keys a card has always had, so
bundles trained before this type existed load unchanged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import HrtemflowError
from ..core.tasks import KINDS, TASKS
from .preprocess import NORMALISATION

CARD_VERSION = 1
CARD_FILE = "card.json"
MAX_CARD_BYTES = 16 * 2**20  # a card is a few kB; a larger file is not one
OUTPUT_DESCRIPTION = {
    "classification": "class probabilities (softmax; the layer 'logits' holds the pre-softmax values)",
    "regression": "scaled targets: physical value = offset + scale * output (per target, see targets)",
    "denoising": "clean image, normalised like the input (per-image mean 0, std 1)",
}
#: what a denoiser outputs, by its target (learning.tasks.denoise.target)
DENOISE_OUTPUT = {
    "clean": OUTPUT_DESCRIPTION["denoising"],
    "noise_free": "noise-free image with the input's aberrations, normalised like the input (per-image mean 0, std 1)",
}


@dataclass(frozen=True)
class ModelCard:
    """A bundle's card. Required: what a bundle must say to be used; the rest is its record."""

    task: str
    kind: str
    input_size: int
    pixel_size_A: float
    normalisation: dict
    dataset_sha256: str
    hyper: dict
    classes: list[str] | None = None
    #: regression: per target {name, unit, offset, scale}: physical value = offset + scale * output
    targets: list[dict] | None = None
    #: a fitted softmax temperature, where the training stage stored one (it does not yet: evaluate fits it)
    temperature: float | None = None
    card_version: int = CARD_VERSION
    output: str = ""
    input: dict = field(default_factory=dict)
    augmentation: dict | None = None
    #: what the training images were taken with, one entry per family / distinct conditions
    imaging: list | None = None
    spec_sha256: str | None = None
    split: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    epochs_run: int = 0
    best_epoch: int = 0
    stopped_early: bool = False
    history: dict = field(default_factory=dict)
    seed: int | None = None
    mixed_precision: bool = False
    dtype_policy: str = "float32"
    backend: str = ""
    n_params: int = 0
    versions: dict = field(default_factory=dict)

    # ------------------------------------------------------------------------------------ json
    def to_json(self) -> dict[str, Any]:
        """The card as card.json holds it (classes, targets and temperature only where they apply)."""
        out = asdict(self)
        for key in ("classes", "targets", "temperature"):
            if out[key] is None:
                out.pop(key)
        return out

    @classmethod
    def from_json(cls, obj: Any, where: str = "model bundle") -> ModelCard:
        """Validate a parsed card.json as a whole; HrtemflowError naming `where` and the first bad key."""
        return cls(**_checked(obj, where))

    @classmethod
    def read(cls, bundle_dir: str | Path) -> ModelCard:
        """Read and validate `card.json` of a bundle folder."""
        d = Path(bundle_dir)
        where = f"model bundle {d}"
        path = d / CARD_FILE
        try:
            size = path.stat().st_size
            if size > MAX_CARD_BYTES:
                raise HrtemflowError(
                    f"{where}: {CARD_FILE} is {size:,} bytes, not a model card (a few kB); retrain with `hrtemflow "
                    "train`"
                )
            obj = json.loads(path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            raise HrtemflowError(
                f"{where}: {CARD_FILE} is missing; run `hrtemflow train` for this task first"
            ) from None
        except UnicodeDecodeError as exc:
            raise HrtemflowError(
                f"{where}: {CARD_FILE} is not UTF-8 text (byte {exc.start}); retrain with `hrtemflow train`"
            ) from None
        except (OSError, ValueError, RecursionError) as exc:
            raise HrtemflowError(
                f"{where}: {CARD_FILE} is not readable JSON ({_short(exc)}); retrain with `hrtemflow train`"
            ) from None
        return cls.from_json(obj, where)

    # ------------------------------------------------------------------------------- use
    def scaling(self) -> tuple[np.ndarray, np.ndarray]:
        """(offset, scale) of a regressor's targets: raw = offset + scale · output."""
        targets = self.targets or []
        return np.array([t["offset"] for t in targets], dtype=np.float64), np.array(
            [t["scale"] for t in targets], dtype=np.float64
        )

    def check_model(self, model, where: str = "model bundle") -> None:
        """Refuse a model that does not match its card (a mixed-up or hand-edited bundle)."""
        size = self.input_size
        if tuple(model.input_shape[1:]) != (size, size, 1):
            raise HrtemflowError(
                f"{where}: model input {tuple(model.input_shape[1:])} does not match the card's input_size {size} "
                f"(expected ({size}, {size}, 1)); the files do not belong together, retrain"
            )
        out = tuple(model.output_shape[1:])
        if self.kind == "classification":
            expected: tuple = (len(self.classes or []),)
        elif self.kind == "regression":
            expected = (len(self.targets or []),)
        else:
            expected = (size, size, 1)
        if out != expected:
            raise HrtemflowError(
                f"{where}: model output {out} does not match the card ({self.kind}, expected {expected}); "
                "the files do not belong together, retrain"
            )
        if self.kind == "classification" and "logits" not in [layer.name for layer in model.layers]:
            raise HrtemflowError(
                f"{where}: the classifier has no layer named 'logits'; it was not made by hrtemflow.learn, retrain"
            )


def _short(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _checked(obj: Any, where: str) -> dict[str, Any]:
    """The keyword arguments of a ModelCard from a parsed card.json, or HrtemflowError."""
    retrain = "retrain with `hrtemflow train`"

    def bad(key: str, what: str) -> HrtemflowError:
        return HrtemflowError(f"{where}: card.json {key}: {what}; {retrain}")

    if not isinstance(obj, Mapping):
        raise HrtemflowError(f"{where}: card.json holds {type(obj).__name__}, not a JSON object; {retrain}")
    known = {f.name for f in fields(ModelCard)}
    kw = {k: v for k, v in obj.items() if k in known}
    for key in ("task", "kind", "input_size", "pixel_size_A", "normalisation", "dataset_sha256", "hyper"):
        if key not in kw:
            raise bad(key, "missing")
    task, kind = kw["task"], kw["kind"]
    if not isinstance(task, str) or task not in TASKS:
        raise bad("task", f"{_short(repr(task), 60)} is not a task of this hrtemflow ({', '.join(TASKS)})")
    if kind not in KINDS or TASKS[task].kind != kind:
        raise bad("kind", f"{_short(repr(kind), 60)} is not the kind of task {task!r} ({TASKS[task].kind})")
    size = kw["input_size"]
    if not (isinstance(size, int) and not isinstance(size, bool) and 8 <= size <= 4096):
        raise bad("input_size", f"{_short(repr(size), 60)} is not a window size in pixels (8-4096)")
    px = kw["pixel_size_A"]
    if not (_number(px) and 1e-3 <= px <= 1e3):
        raise bad("pixel_size_A", f"{_short(repr(px), 60)} is not a pixel size in Å (0.001-1000)")
    norm = kw["normalisation"]
    if not isinstance(norm, Mapping):
        raise bad("normalisation", "not an object")
    if norm.get("function") != NORMALISATION["function"] or norm.get("method") != NORMALISATION["method"]:
        version = (obj.get("versions") or {}).get("hrtemflow", "?") if isinstance(obj.get("versions"), Mapping) else "?"
        raise HrtemflowError(
            f"{where}: the bundle was trained with normalisation {_short(repr(norm.get('function')), 80)} "
            f"({_short(repr(norm.get('method')), 120)}); this hrtemflow applies {NORMALISATION['function']!r} "
            f"({NORMALISATION['method']!r}). Use the hrtemflow version the card names ({version}) or retrain"
        )
    for key in ("eps", "clip"):
        if not (_number(norm.get(key)) and norm[key] > 0):
            raise bad(f"normalisation.{key}", f"{_short(repr(norm.get(key)), 60)} is not a positive number")
    if not isinstance(kw["dataset_sha256"], str):
        raise bad("dataset_sha256", "not a string")
    hyper = kw["hyper"]
    if not isinstance(hyper, Mapping) or not (isinstance(hyper.get("batch_size"), int) and hyper["batch_size"] >= 1):
        raise bad("hyper", "not an object with a batch_size >= 1")
    if kind == "classification":
        classes = kw.get("classes")
        if not (
            isinstance(classes, list)
            and len(classes) >= 2
            and all(isinstance(c, str) and c for c in classes)
            and len(set(classes)) == len(classes)
        ):
            raise bad("classes", f"{_short(repr(classes), 80)} is not a list of 2 or more distinct class names")
    if kind == "regression":
        targets = kw.get("targets")
        names = (
            [t.get("name") for t in targets]
            if isinstance(targets, list) and all(isinstance(t, Mapping) for t in targets)
            else None
        )
        want = TASKS[task].target_names
        if names != want:
            raise bad(
                "targets",
                f"{_short(repr(names if names is not None else targets), 80)} are not the {task} targets {want}",
            )
        for t in targets:
            if not (_number(t.get("offset")) and _number(t.get("scale")) and t["scale"] != 0):
                raise bad(f"targets[{t['name']}]", "needs a finite offset and a finite, non-zero scale")
    temperature = kw.get("temperature")
    if temperature is not None and not (_number(temperature) and temperature > 0):
        raise bad("temperature", f"{_short(repr(temperature), 60)} is not a positive number")
    for key, kinds in (
        ("imaging", list),
        ("split", Mapping),
        ("metrics", Mapping),
        ("history", Mapping),
        ("versions", Mapping),
        ("input", Mapping),
        ("augmentation", Mapping),
    ):
        if kw.get(key) is not None and not isinstance(kw[key], kinds):
            raise bad(key, f"not {'a list' if kinds is list else 'an object'}")
    return kw
