"""What each regressor learns: its targets, units and which are centred.

Kept apart from `data` (which loads Keras) so that planning a campaign can name the targets in a
train spec cheaply: a change to a task's target list then retrains that task and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Target:
    """One regression target: its name, physical unit and whether its mean is removed.

    Astigmatism components keep offset 0 so that the sign flips of augmentation stay exact.
    """

    name: str
    unit: str
    centred: bool = True


REGRESSION_TARGETS: dict[str, tuple[Target, ...]] = {
    "aberrations": (
        Target("defocus_A", "Å"),
        Target("c12_cos2phi_A", "Å", centred=False),
        Target("c12_sin2phi_A", "Å", centred=False),
        # |C12| learned by its own output: the modulus of the components' conditional means is
        # biased toward 0 where they are uncertain (measured: |C12| MAE no better than the mean's)
        Target("c12_magnitude_A", "Å"),
    ),
    "structure": (
        Target("co_fraction", "1"),
        Target("log_n_atoms", "ln(atoms)"),
        Target("order_measure", "1"),
        Target("energy_per_atom_eV", "eV"),
    ),
}
#: columns of the aberration target that are (C12 cos 2φ, C12 sin 2φ)
ASTIG_COLUMNS = (1, 2)


def card_scaling(card: dict) -> tuple[np.ndarray, np.ndarray]:
    """(offset, scale) of a regression bundle's targets, from its card: raw = offset + scale · output."""
    return np.array([t["offset"] for t in card["targets"]]), np.array([t["scale"] for t in card["targets"]])


def physical(task: str, y: np.ndarray) -> dict[str, tuple[np.ndarray, str]]:
    """Reported quantities from raw targets (rows x REGRESSION_TARGETS[task]): name -> (values, unit),
    lengths in nm; |C12| from its own output, floored at 0. The one mapping evaluate and predict share."""
    if task == "aberrations":
        return {"defocus_nm": (y[:, 0] / 10, "nm"), "c12_cos2phi_nm": (y[:, 1] / 10, "nm"),
                "c12_sin2phi_nm": (y[:, 2] / 10, "nm"), "c12_magnitude_nm": (np.maximum(y[:, 3], 0.0) / 10, "nm")}
    return {"co_fraction": (y[:, 0], "1"), "n_atoms": (np.exp(y[:, 1]), "atoms"), "order_measure": (y[:, 2], "1"),
            "energy_per_atom_eV": (y[:, 3], "eV")}
