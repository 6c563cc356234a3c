"""A whole-tube micrograph from an MD tube, with the imaging stage's own physics.

Why: the chirality classifier is trained on 2.4 nm windows of tubes centred in their field, but a
microscope images 10-20 nm of tube in a larger field, with one orientation and one set of optics per
micrograph. A test of what users get (`hrtemflow predict` on whole micrographs, scored per tube) needs
such micrographs, made by the same physics as the training images, so that the only difference
between the two is the geometry of the field: the same placement (`views`), multislice (`multislice`),
optics, partial coherence, detector, dose and noise (`optics`), the same draw functions from the same
campaign ranges. Nothing here is a second copy of that physics.

Geometry (every draw from `views.view_rng(seed, 0)`, the optics from `views.variant_rng(seed, 0, 0)`):
- the MD tube (periodic along its cell's z) is tiled along z and cut to a length L (Å, drawn uniformly
  from `length_nm` or given): the cut ends are open;
- it is oriented as the imaging stage orients a tube (`views.draw_orientation`): spun about its axis,
  tilted out of the image plane by t uniform in ±tilt_deg, turned in-plane;
- its centroid lands at the field's centre plus a shift drawn uniformly among those that keep both
  end points and the walls at least `edge_nm` inside the field;
- the field is square, `field_nm` (default L + 2·margin_nm) rounded up to an FFT-friendly number of
  detector pixels of `pixel_size_A`; the multislice grid samples it at <= the campaign's `sampling_A`;
- with `films` (the campaign's support films, `imaging.shard.read_films`) and `support_film` in the physics,
  the tube lies on a film as a training view does (`views.lay_on_film`, FILM_GAP_A after the tube along the
  beam): on every micrograph when `support_film` is true, with that probability when it is a share; those
  draws come after all the others, so a micrograph without films is the one it was before films existed.

Axes: abTEM arrays are [x, y]; the returned image is [row, col] = [y, x] (`hrtemflow.apply.predict`'s
orientation), and the end points in the label are x = column, y = row in pixels, pixel j's centre at
x = j·pixel_size (the grid abTEM samples).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..core.ids import group_of
from . import optics
from .multislice import abtem_settings, exit_waves, view_images
from .views import View, _place, _tile, draw_orientation, in_cell, lay_on_film, rotation_matrix, view_rng

#: the training windows' detector pixel of the chirality benches (2.4 nm over 64 px)
PIXEL_SIZE_A = 0.375


def _length_A(rng: np.random.Generator, length_nm: float | Sequence[float]) -> float:
    lo_hi = (length_nm, length_nm) if isinstance(length_nm, int | float) else length_nm
    return 10.0 * optics.uniform(rng, lo_hi)


def _cut_tube(atoms: Any, length_A: float) -> tuple[Any, np.ndarray]:
    """The periodic tube tiled along z and cut to length_A; returns it and its two axis end points (Å)."""
    period = float(atoms.cell.lengths()[2])
    reps = max(1, math.ceil(length_A / period) + 1)
    long = _tile(atoms, (1, 1, reps))
    z0 = 0.5 * (reps * period - length_A)
    z = long.positions[:, 2]
    tube = long[np.flatnonzero((z >= z0) & (z < z0 + length_A))]
    cx, cy = atoms.get_positions()[:, :2].mean(axis=0)
    return tube, np.array([[cx, cy, z0], [cx, cy, z0 + length_A]])


def _free_shift(ends_xy: np.ndarray, radius: float, fov: float, edge: float, rng: np.random.Generator) -> np.ndarray:
    """A shift of the centroid, uniform per axis among those keeping the end points (and the walls, `radius`)
    `edge` inside the field; ends_xy are relative to the centroid. Two draws, always."""
    half = 0.5 * fov - edge - radius
    lo, hi = -half - ends_xy.min(axis=0), half - ends_xy.max(axis=0)
    u = rng.random(2)
    return np.where(lo <= hi, lo + u * (hi - lo), 0.5 * (lo + hi))


def tube_micrograph(
    atoms: Any,
    spec_imaging: Mapping[str, Any],
    seed: int,
    *,
    length_nm: float | Sequence[float] = (10.0, 20.0),
    field_nm: float | None = None,
    margin_nm: float = 2.0,
    edge_nm: float = 1.0,
    pixel_size_A: float = PIXEL_SIZE_A,
    sampling_A: float | None = None,
    tilt_deg: float | None = None,
    chirality: str | None = None,
    device: str | None = None,
    threads: int = 1,
    films: Sequence[Any] = (),
) -> tuple[np.ndarray, dict[str, Any]]:
    """One micrograph of a whole tube as a microscope takes it, and its label (see the module docstring).

    `atoms`: an MD frame of a tube (ase.Atoms, periodic along z; `info["sample_id"]` names it);
    `spec_imaging`: the `imaging` section of the campaign's image spec for the tube's shard (physics,
    optics, detector, noise: the ranges the training images were drawn from); `seed`: the micrograph's
    seed (geometry, optics, noise). `sampling_A` and `tilt_deg` default to the campaign's.

    Returns the noisy detector image (float32, [row, col], counts with the drawn gain, as the imaging
    stage stores its images) and a dict: chirality "n-m", end points x0, y0, x1, y1 (px; x = column,
    y = row), pixel size, field, tube length (3-D and projected), tilt and in-plane direction, the
    drawn optics and dose, the structure id and the seed.
    """
    physics = dict(spec_imaging["physics"])
    if sampling_A is not None:
        physics["sampling_A"] = float(sampling_A)
    if tilt_deg is not None:
        physics["tilt_deg"] = float(tilt_deg)
    rng = view_rng(seed, 0)
    length = _length_A(rng, length_nm)
    euler = draw_orientation("cnt", physics, rng)
    field = 10.0 * field_nm if field_nm is not None else length + 20.0 * margin_nm
    size = optics.nice_size(field / pixel_size_A)
    fov = size * pixel_size_A

    tube, axis_ends = _cut_tube(atoms, length)
    centroid = tube.get_positions().mean(axis=0)
    ends = ((axis_ends - centroid) @ rotation_matrix(euler).T)[:, :2]
    radius = float(np.max(np.hypot(*(tube.get_positions()[:, :2] - axis_ends[0, :2]).T)))
    shift = _free_shift(ends, radius, fov, 10.0 * edge_nm, rng)
    phonon_seed = int(rng.integers(0, 2**31 - 1))
    placed = _place(tube, euler, fov / 2.0 + shift, fov, periodic=False)
    height = float(placed.positions[:, 2].max()) if len(placed) else 0.0
    n_tube = len(placed)
    placed, height, on_film = lay_on_film(placed, height, physics, films, fov, rng)
    gpts = optics.nice_size(fov / float(physics["sampling_A"]))
    view = View(in_cell(placed, fov, height), fov, gpts, euler, (float(shift[0]), float(shift[1])), phonon_seed)

    spec = dict(spec_imaging, physics=physics, sizes=[size], variants_per_view=1)
    with abtem_settings(threads):
        wave = exit_waves(view, physics, device or str(spec_imaging.get("device", "cpu")))
        item = view_images(wave, view, spec, seed, 0)[0]
    image = np.ascontiguousarray(item["images"][size]["image"].T)  # abTEM [x, y] -> [row, col]

    p = item["params"]
    x0, y0 = (ends[0] + fov / 2.0 + shift) / pixel_size_A
    x1, y1 = (ends[1] + fov / 2.0 + shift) / pixel_size_A
    sample = str(atoms.info.get("sample_id", ""))
    if chirality is None and sample:
        chirality = group_of(sample).split("-", 1)[1]
    tilt = 0.5 * math.pi - euler[1]
    label = {
        "chirality": chirality,
        "x0": float(x0),
        "y0": float(y0),
        "x1": float(x1),
        "y1": float(y1),
        "pixel_size_A": float(pixel_size_A),
        "pixel_size_nm": float(pixel_size_A) / 10.0,
        "size_px": int(size),
        "field_nm": fov / 10.0,
        "length_nm": length / 10.0,
        "projected_length_nm": length * math.cos(tilt) / 10.0,
        "tilt_deg": math.degrees(tilt),
        "direction_deg": math.degrees(euler[0]) % 360.0,
        "defocus_nm": p["defocus_A"] / 10.0,
        "cs_um": p["cs_A"] / 1e4,
        "c12_nm": p["c12_A"] / 10.0,
        "dose_e_per_A2": p["dose_e_per_A2"],
        "energy_kV": float(physics["energy_kV"]),
        "sampling_A": view.sampling_A,
        "n_atoms": n_tube,
        "support_film": int(on_film),
        "film_atoms": len(placed) - n_tube,
        "structure": sample,
        "seed": int(seed),
        "optics": {k: float(v) for k, v in p.items() if k in optics.PARAM_NAMES or k == "phase_plate_rad"},
    }
    return image.astype(np.float32, copy=False), label
