"""The multislice (abTEM) of one view, and the optics variants of its exit wave.

The multislice is the expensive part and is done once per view; `view_images` then makes
`variants_per_view` images of the exit wave (optics, detector, noise drawn per variant, see `optics`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ..core.errors import HrtemflowError
from . import optics
from .views import View, variant_rng


@contextlib.contextmanager
def abtem_settings(threads: int = 1) -> Iterator[None]:
    """Eager evaluation, no progress bars, deterministic FFT plans (FFTW_ESTIMATE: FFTW_MEASURE
    picks plans by timing, which can change the last bits between runs), `threads` FFT threads."""
    import abtem  # noqa: PLC0415

    with abtem.config.set(
        {
            "dask.lazy": False,
            "diagnostics.progress_bar": False,
            "fftw.planning_effort": "FFTW_ESTIMATE",
            "fftw.threads": int(threads),
            "precision": "float32",
        }
    ):
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
        atoms = abtem.FrozenPhonons(
            atoms, num_configs=n_configs, sigmas=float(physics["phonon_sigma_A"]), seed=view.phonon_seed
        )
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
        if view.film is not None:  # only where a share of the views is on a film
            params["support_film"] = float(view.film)
        out.append({"variant": variant, "params": params, "images": images})
    return out


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
            "install cupy-cuda12x (`pip install hrtemflow[gpu]`) on a machine with an NVIDIA GPU, or set "
            "imaging.device: cpu"
        ) from None
    if count < 1:
        raise HrtemflowError(
            "imaging.device is 'gpu' but CUDA reports no GPU; set imaging.device: cpu or run on a GPU node"
        )
