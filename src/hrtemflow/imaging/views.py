"""Views: how a structure sits in an image's field (orientation, position, zoom, support film).

Per structure the shard makes K = `views_per_structure` views, one multislice exit wave each
(`multislice`), then M = `variants_per_view` optics variants per exit wave.

Geometry (every draw from a generator seeded by (sample seed, view), see `view_rng`):
- the field of view (fov, Å) is drawn uniformly from `fov_nm`; the multislice grid covers exactly
  the fov (periodic, as abTEM), with gpts = the FFT-friendly size >= fov/sampling_A;
- orientation: rotation R = Rz(e0)·Ry(e1)·Rz(e2) about the structure's centroid, stored as
  `euler_rad` = (e0, e1, e2) (SciPy's intrinsic "ZYZ"); the beam runs along +z;
  nanoalloy: uniform over SO(3); amorphous film: in-plane only (e1 = e2 = 0), beam along the film
  normal; cnt: the tube axis (z of the MD cell) is spun about itself (e2 uniform), tilted out of the
  image plane by t uniform in ±tilt_deg (e1 = π/2 − t) and turned in-plane (e0 uniform);
- position: the centroid lands at fov/2 + shift, shift uniform in ±shift_fraction·fov per axis
  (`shift_A`);
- periodic structures (cnt along its axis, amorphous films in-plane) are tiled so the field has no
  gaps, then cut to the fov; atoms that the periodic cut brings closer than 0.75 × the structure's
  own nearest-neighbour distance across the cell edge are dropped (no overlapping atoms at seams);
- nanoalloy or cnt on a support film (`support_film`): a film drawn from the amorphous shards, turned and
  shifted in-plane, lies under the object (after it along the beam), 2 Å below; with a share (a number
  below 1) each view is on a film with that probability, drawn after the view's other draws so that
  `true` draws exactly what it drew before shares existed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.errors import HrtemflowError
from . import optics

_TAG_VIEW = 0x56494557  # "VIEW": separates imaging streams from the MD stage's use of the seed
_TAG_VARIANT = 0x4F505449  # "OPTI"
FILM_GAP_A = 2.0
Z_MARGIN_A = 1.0


# ---------------------------------------------------------------------------------------------
# seeds


def view_rng(sample_seed: int, view: int) -> np.random.Generator:
    """The generator of one view's geometry (and frozen-phonon seed)."""
    return np.random.default_rng(np.random.SeedSequence([int(sample_seed), _TAG_VIEW, int(view)]))


def variant_rng(sample_seed: int, view: int, variant: int) -> np.random.Generator:
    """The generator of one image's optics, detector and noise."""
    return np.random.default_rng(np.random.SeedSequence([int(sample_seed), _TAG_VARIANT, int(view), int(variant)]))


# ---------------------------------------------------------------------------------------------
# views


@dataclass
class View:
    """One placed structure: atoms inside the (fov, fov, height) cell, and how they got there."""

    atoms: Any  # ase.Atoms
    fov_A: float
    gpts: int
    euler_rad: tuple[float, float, float]
    shift_A: tuple[float, float]
    phonon_seed: int
    #: whether this view lies on a support film, where the share of views on a film is drawn (None: every view or none)
    film: bool | None = None

    @property
    def sampling_A(self) -> float:
        return self.fov_A / self.gpts


def rotation_matrix(euler_rad: Sequence[float]) -> np.ndarray:
    from scipy.spatial.transform import Rotation  # noqa: PLC0415

    return Rotation.from_euler("ZYZ", euler_rad).as_matrix()


def draw_orientation(family: str, physics: Mapping, rng: np.random.Generator) -> tuple[float, float, float]:
    """Euler angles (intrinsic ZYZ) of one view, by family (see the module docstring)."""
    if family == "nanoalloy":
        from scipy.spatial.transform import Rotation  # noqa: PLC0415

        return tuple(float(a) for a in Rotation.random(random_state=rng).as_euler("ZYZ"))
    if family == "amorphous":
        return (float(rng.uniform(0.0, 2.0 * math.pi)), 0.0, 0.0)
    if family == "cnt":
        tilt = math.radians(float(physics["tilt_deg"]))
        t = float(rng.uniform(-tilt, tilt))
        spin = float(rng.uniform(0.0, 2.0 * math.pi))
        direction = float(rng.uniform(0.0, 2.0 * math.pi))
        return (direction, 0.5 * math.pi - t, spin)
    raise HrtemflowError(f"unknown family {family!r}")


def _nearest_neighbour(positions: np.ndarray) -> float:
    from scipy.spatial import cKDTree  # noqa: PLC0415

    if len(positions) < 2:
        return 1.0
    d, _ = cKDTree(positions).query(positions, k=2)
    return float(np.min(d[:, 1]))


def _tile(atoms, reps: tuple[int, int, int]):
    """Periodic copies along the cell vectors (a structure periodic along them has no seams)."""
    return atoms.repeat(reps) if reps != (1, 1, 1) else atoms.copy()


def _drop_seam_overlaps(positions: np.ndarray, fov: float, height: float, d_min: float) -> np.ndarray:
    """Indices to keep: drop one atom of each pair that only the periodic cut of the fov brings
    closer than d_min (pairs that are close in the structure itself are kept)."""
    from scipy.spatial import cKDTree  # noqa: PLC0415

    if len(positions) < 2:
        return np.arange(len(positions))
    box = np.array([fov, fov, height + 4.0 * d_min + 1.0])
    wrapped = np.mod(positions, box)
    pairs = cKDTree(wrapped, boxsize=box).query_pairs(d_min, output_type="ndarray")
    keep = np.ones(len(positions), bool)
    for i, j in pairs:
        if keep[i] and keep[j] and np.linalg.norm(positions[i] - positions[j]) >= d_min:
            keep[max(i, j)] = False
    return np.flatnonzero(keep)


def _place(atoms, euler: Sequence[float], centre_xy: np.ndarray, fov: float, periodic: bool):
    """Rotate about the centroid, put the centroid at centre_xy, cut to the fov; returns Atoms
    with z starting at 0 (cell not yet set)."""
    pos = atoms.get_positions()
    d_nn = _nearest_neighbour(atoms.get_positions()[: min(len(atoms), 4000)])
    pos = (pos - pos.mean(axis=0)) @ rotation_matrix(euler).T
    pos[:, :2] += centre_xy
    inside = (pos[:, 0] >= 0) & (pos[:, 0] < fov) & (pos[:, 1] >= 0) & (pos[:, 1] < fov)
    out = atoms[np.flatnonzero(inside)]
    pos = pos[inside]
    if len(pos):
        pos[:, 2] -= pos[:, 2].min()
        if periodic:
            keep = _drop_seam_overlaps(pos, fov, float(pos[:, 2].max()), 0.75 * d_nn)
            out, pos = out[keep], pos[keep]
    out.set_positions(pos)
    return out


def _cover_length(fov: float, shift: np.ndarray, margin: float) -> float:
    """Length of a block centred at fov/2 + shift that covers the fov in any in-plane direction:
    twice the farthest fov corner from its centre, plus a margin."""
    return 2.0 * (fov / math.sqrt(2.0) + float(np.hypot(*shift))) + margin


def _film_reps(cell_lengths: np.ndarray, length: float) -> tuple[int, int, int]:
    return (max(1, math.ceil(length / cell_lengths[0])), max(1, math.ceil(length / cell_lengths[1])), 1)


def _film_layer(film, fov: float, shift_fraction: float, rng: np.random.Generator):
    """An amorphous film turned and shifted in-plane, tiled to cover the fov and cut to it."""
    angle = float(rng.uniform(0.0, 2.0 * math.pi))
    shift = rng.uniform(-shift_fraction, shift_fraction, size=2) * fov
    cell = film.cell.lengths()
    reps = _film_reps(cell, _cover_length(fov, shift, 4.0))
    return _place(_tile(film, reps), (angle, 0.0, 0.0), fov / 2.0 + shift, fov, periodic=True), angle, shift


def lay_on_film(obj, height: float, physics: Mapping, films: Sequence[Any], fov: float, rng: np.random.Generator):
    """The placed object on one of `films`, FILM_GAP_A after its highest atom along the beam, when
    `support_film` says so (true: always; a share: one draw); its new height and whether it lies on a film.
    The draws come after all of the caller's, so an image without films keeps the draws it had before."""
    if not films:
        return obj, height, False
    share = physics.get("support_film", False)
    if share is not True and float(share) < 1.0 and not rng.random() < float(share):
        return obj, height, False
    layer, _, _ = _film_layer(films[int(rng.integers(len(films)))], fov, float(physics["shift_fraction"]), rng)
    if len(layer):
        layer.positions[:, 2] += height + FILM_GAP_A
        height = float(layer.positions[:, 2].max())
        obj = obj + layer
    return obj, height, True


def make_view(
    atoms,
    family: str,
    physics: Mapping,
    rng: np.random.Generator,
    films: Sequence[Any] = (),
):
    """Place one structure for one view (orientation, position, zoom), with a support film if given."""
    fov = 10.0 * optics.uniform(rng, physics["fov_nm"])
    euler = draw_orientation(family, physics, rng)
    frac = float(physics["shift_fraction"])
    shift = rng.uniform(-frac, frac, size=2) * fov
    phonon_seed = int(rng.integers(0, 2**31 - 1))
    if family == "cnt":
        length = float(atoms.cell.lengths()[2])
        tilt = abs(0.5 * math.pi - euler[1])
        need = _cover_length(fov, shift, 10.0) / max(math.cos(tilt), 0.05)
        obj = _place(
            _tile(atoms, (1, 1, max(1, math.ceil(need / length)))), euler, fov / 2.0 + shift, fov, periodic=True
        )
    elif family == "amorphous":
        reps = _film_reps(atoms.cell.lengths(), _cover_length(fov, shift, 4.0))
        obj = _place(_tile(atoms, reps), euler, fov / 2.0 + shift, fov, periodic=True)
    else:
        obj = _place(atoms, euler, fov / 2.0 + shift, fov, periodic=False)
    height = float(obj.positions[:, 2].max()) if len(obj) else 0.0
    obj, height, on_film = lay_on_film(obj, height, physics, films, fov, rng)
    share = physics.get("support_film", False)
    drawn = bool(films) and share is not True and float(share) < 1.0  # View.film: None unless a share was drawn
    gpts = optics.nice_size(fov / float(physics["sampling_A"]))
    return View(
        in_cell(obj, fov, height),
        fov,
        gpts,
        tuple(float(e) for e in euler),
        (float(shift[0]), float(shift[1])),
        phonon_seed,
        on_film if drawn else None,
    )


def in_cell(obj, fov: float, height: float):
    """Placed atoms (z from 0 to `height`) in the multislice cell: (fov, fov, height + 2 margins), periodic,
    with Z_MARGIN_A of vacuum above and below."""
    from ase import Atoms  # noqa: PLC0415

    pos = obj.get_positions()
    pos[:, 2] += Z_MARGIN_A
    return Atoms(numbers=obj.numbers, positions=pos, cell=[fov, fov, height + 2.0 * Z_MARGIN_A], pbc=True)
