"""The registry of learning tasks: everything the stages need to know about a task, in one entry.

A task's entry says what it learns (kind), from which families' images, its classes (read from the
validated config) or its regression targets (units, how they are computed from a shard's arrays and
reported), which target columns turn with the image, and whether its network reads the power
spectrum by default. The plan, the config checks, the feed, training, evaluation and predict all read
this table; adding a task is one entry here plus its model function (see `learn.models.build`).

Kept free of Keras and Zarr so that planning a campaign can name a task's targets cheaply: a change
to a task's target list then retrains that task and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import HrtemflowError
from .families import ORDERINGS
from .ids import chirality_label

KINDS = ("classification", "regression", "denoising")


@dataclass(frozen=True)
class Target:
    """One regression target: its name, physical unit and whether its mean is removed.

    Astigmatism components keep offset 0 so that the sign flips of augmentation stay exact.
    """

    name: str
    unit: str
    centred: bool = True


Arrays = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Task:
    """One learning task (see the module docstring)."""

    name: str
    kind: str
    families: tuple[str, ...]
    description: str
    #: classification: the classes of a validated config, and where the config lists them
    classes: Callable[[Mapping[str, Any]], list[str]] | None = None
    classes_from: str = ""
    #: classification: the shard label (labels/<name>) holding each image's class
    class_label: str | None = None
    #: regression: the targets, the shard arrays they are computed from and how
    targets: tuple[Target, ...] = ()
    params: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    make_targets: Callable[[Arrays, Arrays], np.ndarray] | None = None
    #: regression: reported quantities (name -> (values, unit)) from raw targets (rows x targets)
    physical: Callable[[np.ndarray], dict[str, tuple[np.ndarray, str]]] | None = None
    #: target columns (C12 cos 2φ, C12 sin 2φ) that change sign when the image turns or flips
    sign_flips: tuple[int, int] | None = None
    #: the spectrum trunk is as wide as the image trunk unless the config says otherwise
    spectrum_by_default: bool = False
    #: the Keras model's name
    model_name: str = ""

    @property
    def target_names(self) -> list[str]:
        return [t.name for t in self.targets]


def _chiralities(cfg: Mapping[str, Any]) -> list[str]:
    return [chirality_label(n, m) for n, m in cfg["families"]["cnt"]["chiralities"]]


def _orderings(cfg: Mapping[str, Any]) -> list[str]:
    return [o for o in ORDERINGS if o in cfg["families"]["nanoalloy"]["orderings"]]


def _aberration_targets(params: Arrays, labels: Arrays) -> np.ndarray:
    c12, phi = params["c12_A"], params["phi12_rad"]
    return np.stack([params["defocus_A"], c12 * np.cos(2 * phi), c12 * np.sin(2 * phi), np.abs(c12)], axis=1)


def _aberration_physical(y: np.ndarray) -> dict[str, tuple[np.ndarray, str]]:
    """Lengths in nm; |C12| from its own output, floored at 0."""
    return {
        "defocus_nm": (y[:, 0] / 10, "nm"),
        "c12_cos2phi_nm": (y[:, 1] / 10, "nm"),
        "c12_sin2phi_nm": (y[:, 2] / 10, "nm"),
        "c12_magnitude_nm": (np.maximum(y[:, 3], 0.0) / 10, "nm"),
    }


def _structure_targets(params: Arrays, labels: Arrays) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.stack(
            [labels["co_fraction"], np.log(labels["n_atoms"]), labels["order_measure"], labels["energy_per_atom_eV"]],
            axis=1,
        )


def _structure_physical(y: np.ndarray) -> dict[str, tuple[np.ndarray, str]]:
    return {
        "co_fraction": (y[:, 0], "1"),
        "n_atoms": (np.exp(y[:, 1]), "atoms"),
        "order_measure": (y[:, 2], "1"),
        "energy_per_atom_eV": (y[:, 3], "eV"),
    }


TASKS: dict[str, Task] = {
    "chirality": Task(
        "chirality",
        "classification",
        ("cnt",),
        "CNT chirality (n, m) classifier",
        classes=_chiralities,
        classes_from="families.cnt.chiralities",
        class_label="chirality",
        model_name="classifier",
    ),
    "ordering": Task(
        "ordering",
        "classification",
        ("nanoalloy",),
        "Ag/Co nanoalloy chemical ordering classifier",
        classes=_orderings,
        classes_from="families.nanoalloy.orderings",
        class_label="ordering",
        model_name="classifier",
    ),
    "aberrations": Task(
        "aberrations",
        "regression",
        ("nanoalloy",),
        "defocus and two-fold astigmatism regressor",
        targets=(
            Target("defocus_A", "Å"),
            Target("c12_cos2phi_A", "Å", centred=False),
            Target("c12_sin2phi_A", "Å", centred=False),
            # |C12| learned by its own output: the modulus of the components' conditional means is
            # biased toward 0 where they are uncertain (measured: |C12| MAE no better than the mean's)
            Target("c12_magnitude_A", "Å"),
        ),
        params=("defocus_A", "c12_A", "phi12_rad"),
        make_targets=_aberration_targets,
        physical=_aberration_physical,
        sign_flips=(1, 2),
        spectrum_by_default=True,
        model_name="regressor",
    ),
    "denoise": Task(
        "denoise",
        "denoising",
        ("cnt", "amorphous"),
        "denoiser (U-Net) of CNT and amorphous-carbon images",
        model_name="denoiser",
    ),
    "structure": Task(
        "structure",
        "regression",
        ("nanoalloy",),
        "Ag/Co particle structure regressor",
        targets=(
            Target("co_fraction", "1"),
            Target("log_n_atoms", "ln(atoms)"),
            Target("order_measure", "1"),
            Target("energy_per_atom_eV", "eV"),
        ),
        labels=("co_fraction", "n_atoms", "order_measure", "energy_per_atom_eV"),
        make_targets=_structure_targets,
        physical=_structure_physical,
        model_name="structure_regressor",
    ),
}
#: Snakemake wildcard pattern of a task name
TASK_PATTERN = "|".join(TASKS)


def task(name: str) -> Task:
    """The registry entry of a task (HrtemflowError naming the known ones otherwise)."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise HrtemflowError(f"unknown task {name!r}; one of {', '.join(TASKS)}") from None


def spectral_width_default(name: str, width: int) -> int:
    """`learning.tasks.<task>.spectral_width` when left out: as wide as the image trunk where the task
    reads the power spectrum by default (aberrations: the Thon rings), none elsewhere."""
    return width if TASKS[name].spectrum_by_default else 0
