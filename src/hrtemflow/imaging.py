"""Views and multislice exit waves: one abTEM multislice per view, many optics variants per wave.

Per structure the shard makes K = `views_per_structure` views (orientation, position, zoom), one
multislice exit wave each, then M = `variants_per_view` optics/detector/noise variants per exit wave
(`hrtemflow.optics`): the multislice is the expensive part and is done once per view.

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
- nanoalloy on a support film (`support_film`): a film drawn from the amorphous shards, turned and
  shifted in-plane, lies under the particle (after it along the beam), 2 Å below.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import optics
from .errors import HrtemflowError
from .io import canonical_json

SCHEMA_VERSION = 1
_TAG_VIEW = 0x56494557  # "VIEW": separates imaging streams from the MD stage's use of the seed
_TAG_VARIANT = 0x4F505449  # "OPTI"
FILM_GAP_A = 2.0
Z_MARGIN_A = 1.0

CONVENTIONS = {
    "defocus": "abTEM defocus = -C10 (Å); positive = underfocus",
    "astigmatism": "C12 (Å) with angle phi12 of period pi; learn (C12 cos 2phi12, C12 sin 2phi12)",
    "aberration_phase": "chi = 2pi/lambda [a^2/2 (C10 + C12 cos2(phi-phi12)) + a^3/3 (C21 cos(phi-phi21) + C23 cos3(phi-phi23)) + a^4/4 C30], a = lambda k; phi21 period 2pi, phi23 period 2pi/3",
    "focal_spread": "abTEM focal_spread: 1/e width (= sqrt(2) sigma), E_t = exp(-(pi lambda D k^2 / 2)^2) on the wave; with optics.temporal_coherence defocus_average, images averaged over defocus ~ N(defocus, sigma^2) instead (every electron kept)",
    "convergence": "abTEM angular_spread (mrad), E_s = exp(-(theta/2)^2 |grad_a chi|^2), quasi-coherent",
    "phase_plate": "params phase_plate_rad (only with optics.phase_plate_deg): the wave below |k| = 1/(15 nm) times exp(i phase), after exp(-i chi); +pi/2 images a weak phase object as 1 + 2 sigma V at focus",
    "intensity": "electron counts per pixel; on vacuum mean = dose x pixel area; image is Poisson at that dose before gain",
    "gain": "y = brightness (mu + contrast (x - mu) + background mu), mu = mean expected counts; clean has no gain",
    "mtf": "MTF = 1/(1+(f/c50)^2), f = fraction of the output pixel's Nyquist frequency; applied before shot noise",
    "clean": "same view, no aberrations, envelopes, aperture, MTF, noise or gain; counts at the image's dose",
    "axes": "arrays indexed [x, y] as abTEM (first axis x); azimuths from +x towards +y",
    "euler": "euler_rad (e0,e1,e2): R = Rz(e0) Ry(e1) Rz(e2) about the centroid (scipy intrinsic ZYZ), beam along +z",
    "pixel_size": "pixel_size_A = fov_A / size",
    "units": "Å, eV, e-/Å^2, rad (convergence in mrad)",
}


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


def make_view(
    atoms,
    family: str,
    physics: Mapping,
    rng: np.random.Generator,
    films: Sequence[Any] = (),
):
    """Place one structure for one view (orientation, position, zoom), with a support film if given."""
    from ase import Atoms  # noqa: PLC0415

    fov = 10.0 * optics.uniform(rng, physics["fov_nm"])
    euler = draw_orientation(family, physics, rng)
    frac = float(physics["shift_fraction"])
    shift = rng.uniform(-frac, frac, size=2) * fov
    phonon_seed = int(rng.integers(0, 2**31 - 1))
    if family == "cnt":
        length = float(atoms.cell.lengths()[2])
        tilt = abs(0.5 * math.pi - euler[1])
        need = _cover_length(fov, shift, 10.0) / max(math.cos(tilt), 0.05)
        obj = _place(_tile(atoms, (1, 1, max(1, math.ceil(need / length)))), euler, fov / 2.0 + shift, fov, periodic=True)
    elif family == "amorphous":
        reps = _film_reps(atoms.cell.lengths(), _cover_length(fov, shift, 4.0))
        obj = _place(_tile(atoms, reps), euler, fov / 2.0 + shift, fov, periodic=True)
    else:
        obj = _place(atoms, euler, fov / 2.0 + shift, fov, periodic=False)
    height = float(obj.positions[:, 2].max()) if len(obj) else 0.0
    if films:
        film = films[int(rng.integers(len(films)))]
        layer, _, _ = _film_layer(film, fov, frac, rng)
        if len(layer):
            layer.positions[:, 2] += height + FILM_GAP_A
            height = float(layer.positions[:, 2].max())
            obj = obj + layer
    obj.positions[:, 2] += Z_MARGIN_A
    placed = Atoms(numbers=obj.numbers, positions=obj.positions, cell=[fov, fov, height + 2.0 * Z_MARGIN_A], pbc=True)
    gpts = optics.nice_size(fov / float(physics["sampling_A"]))
    return View(placed, fov, gpts, tuple(float(e) for e in euler), (float(shift[0]), float(shift[1])), phonon_seed)


# ---------------------------------------------------------------------------------------------
# multislice


@contextlib.contextmanager
def abtem_settings(threads: int = 1) -> Iterator[None]:
    """Eager evaluation, no progress bars, deterministic FFT plans (FFTW_ESTIMATE: FFTW_MEASURE
    picks plans by timing, which can change the last bits between runs), `threads` FFT threads."""
    import abtem  # noqa: PLC0415

    with abtem.config.set({
        "dask.lazy": False,
        "diagnostics.progress_bar": False,
        "fftw.planning_effort": "FFTW_ESTIMATE",
        "fftw.threads": int(threads),
        "precision": "float32",
    }):
        yield


def exit_waves(view: View, physics: Mapping, device: str = "cpu"):
    """Exit wave(s) of one view, (configurations, n, n) complex64 on the device (abTEM multislice).

    Frozen phonons (if `frozen_phonons` > 0) give one exit wave per configuration; the images
    average their intensities.
    """
    import abtem  # noqa: PLC0415

    atoms: Any = view.atoms
    n_configs = int(physics.get("frozen_phonons", 0) or 0)
    if n_configs > 0 and len(atoms):
        atoms = abtem.FrozenPhonons(atoms, num_configs=n_configs, sigmas=float(physics["phonon_sigma_A"]), seed=view.phonon_seed)
    potential = abtem.Potential(
        atoms,
        gpts=view.gpts,
        slice_thickness=float(physics["slice_thickness_A"]),
        parametrization=physics["parametrization"],
        projection="infinite",
        device=device,
    )
    waves = abtem.PlaneWave(energy=1e3 * float(physics["energy_kV"]), device=device).multislice(potential)
    array = waves.compute().array if hasattr(waves, "compute") else waves.array
    return array.reshape((-1, view.gpts, view.gpts))


# ---------------------------------------------------------------------------------------------
# one view -> images


def view_images(
    wave,
    view: View,
    spec_imaging: Mapping,
    sample_seed: int,
    view_index: int,
) -> list[dict[str, Any]]:
    """All optics variants of one exit wave: per variant its parameters and images per size."""
    from abtem.core.fft import fft2  # noqa: PLC0415

    physics, sizes = spec_imaging["physics"], list(spec_imaging["sizes"])
    energy = 1e3 * float(physics["energy_kV"])
    aperture = float(spec_imaging["optics"].get("objective_aperture_mrad", 0.0) or 0.0)
    coherence = str(spec_imaging["optics"].get("temporal_coherence", "envelope"))
    wave_fft = fft2(wave, overwrite_x=False)
    clean = optics.clean_images(wave_fft, view.fov_A, sizes, view.sampling_A)
    out = []
    for variant in range(int(spec_imaging["variants_per_view"])):
        rng = variant_rng(sample_seed, view_index, variant)
        p = optics.draw_variant(rng, spec_imaging["optics"], spec_imaging["detector"], spec_imaging["noise"])
        imgs = optics.variant_images(wave_fft, view.fov_A, energy, view.sampling_A, sizes, p, rng, aperture, coherence)
        images = {}
        for s in sizes:
            noisy, noise_free = imgs[s]
            px = view.fov_A / s
            images[s] = {
                "image": noisy,
                "noise_free": noise_free,
                "clean": optics.counts(clean[s], p["dose_e_per_A2"], px).astype(np.float32),
                "pixel_size_A": px,
            }
        params = dict(p, energy_eV=energy, fov_A=view.fov_A, euler_rad=view.euler_rad, shift_A=view.shift_A)
        out.append({"variant": variant, "params": params, "images": images})
    return out


# ---------------------------------------------------------------------------------------------
# spec and inputs


def require_device(device: str) -> None:
    """Fail before any work when a GPU is asked for and CuPy/CUDA cannot give one."""
    if device != "gpu":
        return
    try:
        import cupy  # noqa: PLC0415

        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:  # noqa: BLE001 (ImportError, CUDARuntimeError, missing driver...)
        raise HrtemflowError(
            f"imaging.device is 'gpu' but CuPy/CUDA is not usable here ({type(exc).__name__}: {exc}); "
            "install cupy-cuda12x (`pip install hrtemflow[gpu]`) on a machine with an NVIDIA GPU, or set imaging.device: cpu"
        ) from None
    if count < 1:
        raise HrtemflowError("imaging.device is 'gpu' but CUDA reports no GPU; set imaging.device: cpu or run on a GPU node")


_SPEC_KEYS = ("kind", "spec_version", "family", "group", "shard", "md", "imaging")
_IMAGING_KEYS = ("device", "views_per_structure", "variants_per_view", "sizes", "physics", "optics", "detector", "noise")


def check_spec(spec: Mapping, base: Path = Path(".")) -> None:
    """Raise HrtemflowError listing every problem of an imaging spec and its input files."""
    problems = []
    if not isinstance(spec, Mapping):
        raise HrtemflowError("the imaging spec must be a JSON object (written by `hrtemflow plan`)")
    for key in _SPEC_KEYS:
        if key not in spec:
            problems.append(f"missing key {key!r}")
    if problems:
        raise HrtemflowError("imaging spec is invalid: " + "; ".join(problems) + " (regenerate it with `hrtemflow plan`)")
    if spec["kind"] != "images":
        problems.append(f"kind is {spec['kind']!r}, expected 'images' (is this an MD spec?)")
    if spec["spec_version"] != SCHEMA_VERSION:
        problems.append(f"spec_version {spec['spec_version']} is not {SCHEMA_VERSION}; regenerate the plan with this hrtemflow")
    if spec["family"] not in ("nanoalloy", "cnt", "amorphous"):
        problems.append(f"family {spec['family']!r} is not one of nanoalloy, cnt, amorphous")
    img = spec["imaging"]
    for key in _IMAGING_KEYS:
        if key not in img:
            problems.append(f"imaging.{key} is missing")
    if not problems:
        if img["device"] not in ("cpu", "gpu"):
            problems.append(f"imaging.device {img['device']!r} is not 'cpu' or 'gpu'")
        sizes = img["sizes"]
        if not sizes or any((not isinstance(s, int)) or s < 2 for s in sizes):
            problems.append(f"imaging.sizes {sizes} must be pixel counts >= 2")
        phys = img["physics"]
        for key in ("energy_kV", "sampling_A", "slice_thickness_A", "parametrization", "fov_nm", "shift_fraction", "tilt_deg"):
            if key not in phys:
                problems.append(f"imaging.physics.{key} is missing")
        if "sampling_A" in phys and "fov_nm" in phys and sizes:
            # the image (band limit 2 x 1/(3 sampling)) must fill the output band (Nyquist size/(2 fov))
            fov_min = 10.0 * float(phys["fov_nm"][0])
            if fov_min / float(phys["sampling_A"]) < 0.75 * max(sizes):
                problems.append(
                    f"imaging.physics.sampling_A {phys['sampling_A']} Å is too coarse for {max(sizes)} px over {fov_min:g} Å: "
                    f"the multislice grid needs at least 3/4 of the output pixels (sampling <= {fov_min / (0.75 * max(sizes)):.3f} Å)"
                )
    md = spec["md"]
    for key in ("structures", "manifest"):
        if not isinstance(md, Mapping) or key not in md:
            problems.append(f"md.{key} is missing")
    if not problems:
        manifest = base / md["manifest"]
        if not manifest.is_file():
            problems.append(f"MD manifest {md['manifest']} does not exist; run the MD stage first (`hrtemflow md`)")
        else:
            try:
                records = json.loads(manifest.read_text(encoding="utf-8"))["samples"]
                if any(r["status"] == "ok" for r in records) and not (base / md["structures"]).is_file():
                    problems.append(f"MD structures {md['structures']} do not exist but the manifest lists ok samples")
            except (ValueError, KeyError, TypeError) as exc:
                problems.append(f"MD manifest {md['manifest']} is not a valid md-manifest ({exc})")
        support = spec.get("support")
        if support:
            for path in support.get("structures", []):
                if not (base / path).is_file():
                    problems.append(f"support film structures {path} do not exist; run the amorphous MD shards first")
    if problems:
        raise HrtemflowError("imaging spec " + str(spec.get("shard", "?")) + " cannot run:\n  - " + "\n  - ".join(problems))
    require_device(img["device"])


def read_frames(path: Path) -> list:
    """All frames of an extxyz file ([] for an empty file: a shard whose samples all failed)."""
    import ase.io  # noqa: PLC0415

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return []
    return list(ase.io.read(path, index=":", format="extxyz"))


def read_md(spec: Mapping, base: Path = Path(".")) -> tuple[list[dict], list, int]:
    """(ok manifest records, their structures in the same order, number of failed samples)."""
    manifest = json.loads((base / spec["md"]["manifest"]).read_text(encoding="utf-8"))
    records = manifest["samples"]
    ok = [r for r in records if r.get("status") == "ok"]
    failed = len(records) - len(ok)
    frames = {f.info.get("sample_id"): f for f in read_frames(base / spec["md"]["structures"])} if ok else {}
    missing = [r["id"] for r in ok if r["id"] not in frames]
    if missing:
        raise HrtemflowError(f"{spec['md']['structures']}: no structure for ok sample(s) {', '.join(missing[:5])}; the MD shard is inconsistent, rerun it")
    return ok, [frames[r["id"]] for r in ok], failed


def read_films(spec: Mapping, base: Path = Path(".")) -> list:
    """Support films (amorphous structures) for a nanoalloy shard, or []."""
    support = spec.get("support")
    if spec["family"] != "nanoalloy" or not support or not spec["imaging"]["physics"].get("support_film", False):
        return []
    films = [f for path in support.get("structures", []) for f in read_frames(base / path)]
    if not films:
        raise HrtemflowError("support_film is on but the amorphous shards hold no ok structure; rerun them or set imaging.families.nanoalloy.support_film: false")
    return films


def spec_sha256(spec: Mapping) -> str:
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# the shard


def run_shard(spec: dict, out: Path, threads: int = 1, progress: bool = True, base: Path = Path(".")) -> dict:
    """Make one image shard from an imaging spec: read the MD shard, skip failed samples, write the
    Zarr store atomically (`hrtemflow.store`). Returns counts and the wall time."""
    from tqdm import tqdm  # noqa: PLC0415

    from . import store  # noqa: PLC0415
    from .runtime import versions  # noqa: PLC0415

    t0 = time.perf_counter()
    check_spec(spec, base)
    img = spec["imaging"]
    family = spec["family"]
    records, structures, n_failed = read_md(spec, base)
    films = read_films(spec, base)
    n_views, n_variants, sizes = int(img["views_per_structure"]), int(img["variants_per_view"]), sorted(img["sizes"])
    per_sample = n_views * n_variants
    n = len(records) * per_sample
    attrs = {
        "schema_version": SCHEMA_VERSION,
        "kind": "images",
        "family": family,
        "group": spec["group"],
        "shard": spec["shard"],
        "spec_sha256": spec_sha256(spec),
        "versions": versions(),
        "sizes": sizes,
        "n_samples": len(records),
        "n_failed_skipped": n_failed,
        "n_images": n,
        "views_per_structure": n_views,
        "variants_per_view": n_variants,
        "device": img["device"],
        "imaging": copy.deepcopy(dict(img)),
        "conventions": CONVENTIONS,
    }
    sample_ids = np.repeat(np.array([r["id"] for r in records], dtype=str), per_sample)
    image_ids = np.array(
        [f"{r['id']}-v{v:02d}-o{o:02d}" for r in records for v in range(n_views) for o in range(n_variants)], dtype=str
    )
    params: dict[str, list] = {}
    with store.shard_writer(Path(out), n, sizes, rows_per_block=per_sample, attrs=attrs) as writer, abtem_settings(threads):
        bar = tqdm(list(zip(records, structures, strict=True)), desc=spec["shard"], unit="structure", disable=not progress)
        for i, (record, atoms) in enumerate(bar):
            block: dict[int, dict[str, list]] = {s: {"image": [], "noise_free": [], "clean": [], "pixel_size_A": []} for s in sizes}
            for v in range(n_views):
                view = make_view(atoms, family, img["physics"], view_rng(record["seed"], v), films)
                wave = exit_waves(view, img["physics"], img["device"])
                for item in view_images(wave, view, img, record["seed"], v):
                    for name, value in item["params"].items():
                        params.setdefault(name, []).append(value)
                    for s in sizes:
                        for name, value in item["images"][s].items():
                            block[s][name].append(value)
            writer.write_block(i * per_sample, {s: {k: np.asarray(v) for k, v in d.items()} for s, d in block.items()})
        writer.write_index(
            sample_ids,
            image_ids,
            {k: np.asarray(v, dtype=np.float64) for k, v in params.items()} if n else store.empty_params(),
            store.labels_to_arrays([r.get("labels", {}) for r in records], per_sample),
        )
    return {"shard": spec["shard"], "n_samples": len(records), "n_failed_skipped": n_failed, "n_images": n, "wall_s": round(time.perf_counter() - t0, 3)}
