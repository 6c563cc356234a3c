"""Imaging throughput: our pipeline (one multislice per view, M optics variants per exit wave) vs the
naive loop (new potential, multislice and CTF for every image), on the same physics in one run.

    /work/main/.venv/bin/python benchmarks/imaging_throughput.py [--variants 4 16] [--sizes 128 256]

Also: multislice time vs its FFT-only cost (2 FFTs per slice on the same grid), and the same on a GPU
when CuPy and CUDA are present. Prints a markdown block for benchmarks/RESULTS.md. Single thread
(images per second per core); best of `--repeat` runs against noise from other processes.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _common import emit, header  # noqa: E402
from hrtemflow.imaging import optics  # noqa: E402
from hrtemflow.imaging.multislice import abtem_settings, exit_waves, view_images
from hrtemflow.imaging.views import make_view, variant_rng, view_rng

PHYSICS = {
    "energy_kV": 200,
    "sampling_A": 0.05,
    "slice_thickness_A": 2.0,
    "parametrization": "lobato",
    "fov_nm": [4.0, 6.0],
    "shift_fraction": 0.1,
    "tilt_deg": 10,
    "frozen_phonons": 0,
    "phonon_sigma_A": 0.08,
}
OPTICS = {
    "defocus_nm": [-50, 50],
    "cs_um": [-20, 20],
    "c12_nm": [0, 5],
    "c21_nm": [0, 0],
    "c23_nm": [0, 0],
    "focal_spread_nm": [2, 4],
    "convergence_mrad": [0.1, 0.3],
    "objective_aperture_mrad": 0,
}
DETECTOR = {"mtf_c50": [0.3, 0.6]}
NOISE = {"dose_e_per_A2": [50, 2000], "brightness": [0.9, 1.1], "contrast": [0.9, 1.1], "background": [0, 0.05]}


def structures() -> dict:
    """A (8,4) nanotube (periodic along z, 6 nm) and a 309-atom Ag-shell/Co-core icosahedron."""
    from ase.build import nanotube
    from ase.cluster import Icosahedron

    tube = nanotube(8, 4, length=1, bond=1.42)
    tube = tube.repeat((1, 1, math.ceil(60 / tube.cell[2][2])))
    tube.cell = [40.0, 40.0, tube.cell[2][2]]
    tube.pbc = [False, False, True]
    tube.center(axis=(0, 1))
    particle = Icosahedron("Ag", noshells=5, latticeconstant=4.09)
    r = np.linalg.norm(particle.positions - particle.positions.mean(axis=0), axis=1)
    symbols = np.array(particle.get_chemical_symbols())
    symbols[r < 6.0] = "Co"
    particle.set_chemical_symbols(symbols)
    particle.cell = [40.0, 40.0, 40.0]
    particle.center()
    return {"cnt (8,4)": ("cnt", tube), "Ag/Co 309": ("nanoalloy", particle)}


def spec_imaging(size: int, variants: int, device: str) -> dict:
    return {
        "device": device,
        "views_per_structure": 1,
        "variants_per_view": variants,
        "sizes": [size],
        "physics": PHYSICS,
        "optics": OPTICS,
        "detector": DETECTOR,
        "noise": NOISE,
    }


def sync(device: str) -> None:
    if device == "gpu":
        import cupy

        cupy.cuda.Device().synchronize()


def pipeline(atoms, family: str, size: int, views: int, variants: int, device: str = "cpu") -> tuple[float, int]:
    """Seconds and images for `views` views x `variants` variants, the way run_shard makes them."""
    spec = spec_imaging(size, variants, device)
    t0 = time.perf_counter()
    n = 0
    for v in range(views):
        view = make_view(atoms, family, PHYSICS, view_rng(1, v))
        wave = exit_waves(view, PHYSICS, device)
        n += len(view_images(wave, view, spec, 1, v))
    sync(device)
    return time.perf_counter() - t0, n


def naive(atoms, family: str, size: int, images: int, views: int, device: str = "cpu") -> tuple[float, int]:
    """Seconds for `images` images each with a new potential, multislice and abTEM CTF (then the same
    resampling, MTF and shot noise on the full grid); image i uses the pipeline's view i % views."""
    import abtem
    from abtem.core.fft import fft2, ifft2

    t0 = time.perf_counter()
    for i in range(images):
        view = make_view(atoms, family, PHYSICS, view_rng(1, i % views))
        rng = variant_rng(1, i % views, i // views)
        p = optics.draw_variant(rng, OPTICS, DETECTOR, NOISE)
        potential = abtem.Potential(
            view.atoms,
            gpts=view.gpts,
            slice_thickness=PHYSICS["slice_thickness_A"],
            parametrization=PHYSICS["parametrization"],
            device=device,
        )
        waves = abtem.PlaneWave(energy=PHYSICS["energy_kV"] * 1e3, device=device).multislice(potential)
        ctf = abtem.CTF(
            defocus=p["defocus_A"],
            Cs=p["cs_A"],
            C12=p["c12_A"],
            phi12=p["phi12_rad"],
            focal_spread=p["focal_spread_A"],
            angular_spread=p["convergence_mrad"],
        )
        intensity = waves.apply_ctf(ctf).intensity().compute().array
        xp = optics.get_xp(device)
        spec = optics.fourier_resize(fft2(intensity.astype(xp.complex64)), size) * ((size / view.gpts) ** 2)
        expected = optics.to_host(ifft2(spec * optics.detector_mtf(size, p["mtf_c50"], xp)).real)
        expected = expected * p["dose_e_per_A2"] * (view.fov_A / size) ** 2
        optics.apply_gain(rng.poisson(np.clip(expected, 0, None)).astype(float), expected, p)
    sync(device)
    return time.perf_counter() - t0, images


def coherence_models(atoms, family: str, size: int, views: int, variants: int, device: str, repeat: int) -> dict:
    """Images/s with the focal spread as an envelope on the wave and as an average of images over
    defocus, side by side on the same views; and how far apart their noise-free images are."""
    out: dict = {}
    for model in optics.TEMPORAL_COHERENCE:
        spec = spec_imaging(size, variants, device)
        spec["optics"] = dict(OPTICS, temporal_coherence=model)
        best, images = math.inf, []
        for _ in range(repeat):
            t0, imgs = time.perf_counter(), []
            for v in range(views):
                view = make_view(atoms, family, PHYSICS, view_rng(1, v))
                wave = exit_waves(view, PHYSICS, device)
                imgs += [item["images"][size]["noise_free"] for item in view_images(wave, view, spec, 1, v)]
            sync(device)
            best, images = min(best, time.perf_counter() - t0), imgs
        out[model] = (len(images) / best, np.array(images, dtype=np.float64))
    env, avg = out["envelope"][1], out["defocus_average"][1]
    rms = float(np.mean([(a - e).std() / a.std() for a, e in zip(avg, env, strict=True)]))
    deficit = float(np.mean([1.0 - e.mean() / a.mean() for a, e in zip(avg, env, strict=True)]))
    return {
        "envelope": out["envelope"][0],
        "defocus_average": out["defocus_average"][0],
        "rms": rms,
        "deficit": deficit,
    }


def run_coherence(device: str, args) -> list[str]:
    rows = []
    family, atoms = structures()["Ag/Co 309"]
    for size in args.sizes:
        r = coherence_models(atoms, family, size, args.views, 4, device, min(args.repeat, 2))
        rows.append(
            f"| {device} | Ag/Co 309 | {size}² | {r['envelope']:.2f} | {r['defocus_average']:.3f} | "
            f"{r['envelope'] / r['defocus_average']:.1f}x | {100 * r['rms']:.1f} % | {100 * r['deficit']:.2f} % |"
        )
        print(rows[-1], flush=True)
    return rows


def recorded_pixel_cost(atoms, family: str, size: int, variants: int, device: str, repeat: int) -> dict:
    """Optics variants per second from one exit wave, as the images are (detector.recorded_pixel_scale unset) and
    detected at a camera pixel of 0.6-1.8 x theirs then resampled: what the option adds to the per-variant work."""
    view = make_view(atoms, family, PHYSICS, view_rng(1, 0))
    wave = exit_waves(view, PHYSICS, device)
    out = {}
    for name, scale in (("plain", [1.0, 1.0]), ("recorded", [0.6, 1.8])):
        spec = spec_imaging(size, variants, device)
        spec["detector"] = dict(DETECTOR, recorded_pixel_scale=scale)
        best = math.inf
        for _ in range(repeat):
            t0 = time.perf_counter()
            view_images(wave, view, spec, 1, 0)
            sync(device)
            best = min(best, time.perf_counter() - t0)
        out[name] = variants / best
    return out


def run_recorded(device: str, args) -> list[str]:
    rows = []
    family, atoms = structures()["Ag/Co 309"]
    for size in args.sizes:
        r = recorded_pixel_cost(atoms, family, size, 16, device, args.repeat)
        rows.append(
            f"| {device} | Ag/Co 309 | {size}² | {r['plain']:.1f} | {r['recorded']:.1f} | "
            f"{r['plain'] / r['recorded']:.2f}x |"
        )
        print(rows[-1], flush=True)
    return rows


def fft_only(gpts: int, slices: int, device: str, repeat: int) -> float:
    """Seconds for 2 FFTs per slice on the multislice grid (the floor of a multislice)."""
    from abtem.core.fft import fft2, ifft2

    xp = optics.get_xp(device)
    a = xp.ones((gpts, gpts), xp.complex64)
    fft2(a), ifft2(a)
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(slices):
            a = ifft2(fft2(a, overwrite_x=True), overwrite_x=True)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def multislice_split(atoms, family: str, device: str, repeat: int) -> dict:
    """Multislice of one view: total (potential + propagation), propagation alone, FFT-only floor."""
    import abtem

    view = make_view(atoms, family, PHYSICS, view_rng(1, 0))
    exit_waves(view, PHYSICS, device)  # warm up plans
    total = min(_timed(lambda: exit_waves(view, PHYSICS, device), device) for _ in range(repeat))
    potential = abtem.Potential(
        view.atoms,
        gpts=view.gpts,
        slice_thickness=PHYSICS["slice_thickness_A"],
        parametrization=PHYSICS["parametrization"],
        device=device,
    ).build()
    slices = len(potential)
    wave = abtem.PlaneWave(energy=PHYSICS["energy_kV"] * 1e3, device=device)
    propagate = min(_timed(lambda: wave.multislice(potential).compute(), device) for _ in range(repeat))
    return {
        "gpts": view.gpts,
        "slices": slices,
        "total": total,
        "propagate": propagate,
        "fft": fft_only(view.gpts, slices, device, max(repeat, 7)),
    }


def _timed(fn, device: str) -> float:
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def gpu_available() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001
        return False


def run(device: str, args) -> list[str]:
    rows = []
    for name, (family, atoms) in structures().items():
        exit_waves(make_view(atoms, family, PHYSICS, view_rng(1, 0)), PHYSICS, device)  # warm-up
        for size in args.sizes:
            t_naive, n_naive = min(
                (naive(atoms, family, size, args.naive_images, args.views, device) for _ in range(args.repeat)),
                key=lambda r: r[0],
            )
            rate_naive = n_naive / t_naive
            for m in args.variants:
                t, n = min(
                    (pipeline(atoms, family, size, args.views, m, device) for _ in range(args.repeat)),
                    key=lambda r: r[0],
                )
                rate = n / t
                rows.append(
                    f"| {device} | {name} | {size}² | {m} | {rate:.2f} | {rate_naive:.3f} | {rate / rate_naive:.1f}x |"
                )
                print(rows[-1], flush=True)
    return rows


def run_split(device: str, args) -> list[str]:
    rows = []
    for name, (family, atoms) in structures().items():
        r = multislice_split(atoms, family, device, args.repeat)
        rows.append(
            f"| {device} | {name} | {r['gpts']}² x {r['slices']} | {r['total'] * 1e3:.0f} | {r['propagate'] * 1e3:.0f} "
            "| "
            f"{r['fft'] * 1e3:.0f} | {r['total'] / r['fft']:.2f} | {r['propagate'] / r['fft']:.2f} |"
        )
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--variants", type=int, nargs="+", default=[4, 16], help="M optics variants per exit wave")
    parser.add_argument("--views", type=int, default=2, help="views per structure in the pipeline run")
    parser.add_argument("--naive-images", type=int, default=2, help="images made by the naive loop")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--only-recorded",
        action="store_true",
        help="measure only the cost of detector.recorded_pixel_scale (optics variants from one exit wave)",
    )
    args = parser.parse_args(argv)
    t_start = time.perf_counter()
    devices = ["cpu"] + (["gpu"] if gpu_available() else [])
    with abtem_settings(threads=1):
        throughput, split, coherence, recorded = [], [], [], []
        for device in devices:
            recorded += run_recorded(device, args)
            if not args.only_recorded:
                throughput += run(device, args)
                split += run_split(device, args)
                coherence += run_coherence(device, args)
    recorded_lines = [
        "Optics variants per second from one exit wave (M = 16, the same wave and draws), images as they are and",
        "detected at a camera pixel of 0.6-1.8 x theirs, then resampled (`imaging.detector.recorded_pixel_scale`):",
        "",
        "| device | structure | output | plain (variants/s) | recorded and resampled (variants/s) | cost |",
        "|---|---|---|---|---|---|",
        *recorded,
        "",
    ]
    if args.only_recorded:
        print()
        emit(
            "\n".join(
                [
                    header(
                        "Imaging: the cost of recorded_pixel_scale (benchmarks/imaging_throughput.py --only-recorded)"
                    ),
                    "",
                    *recorded_lines,
                    f"(benchmark wall time {time.perf_counter() - t_start:.0f} s)",
                ]
            )
            + "\n",
            "imaging_recorded",
        )
        return 0
    lines = [
        header("Imaging throughput (benchmarks/imaging_throughput.py)"),
        f"1 thread; 200 kV, sampling 0.05 Å, slices 2 Å, fov 4-6 nm, envelopes + astigmatism + MTF + Poisson; "
        f"{args.views} views per structure; best of {args.repeat}. GPU: "
        f"{'yes' if 'gpu' in devices else 'no CuPy/CUDA here, not measured'}.",
        "",
        "Images per second (per core on cpu): our pipeline (one multislice per view, M variants per exit wave) "
        "vs the naive loop (new potential + multislice + abTEM CTF per image).",
        "",
        "| device | structure | output | M | ours (img/s) | naive (img/s) | speed-up |",
        "|---|---|---|---|---|---|---|",
        *throughput,
        "",
        "Multislice of one view vs its FFT-only floor (2 FFTs per slice on the same grid):",
        "",
        "| device | structure | grid x slices | multislice ms (incl. potential) | propagation ms (built potential) | 2 "
        "FFTs/slice ms | total/FFT | propagation/FFT |",
        "|---|---|---|---|---|---|---|---|",
        *split,
        "",
        "The focal spread as an envelope on the wave (abTEM's CTF, the default) or as an average of images over",
        "defocus (`imaging.optics.temporal_coherence: defocus_average`), M = 4 variants per view, same views: images/s",
        "and how far apart the two models' noise-free images are (RMS difference / the averaged image's std; the",
        "envelope image's deficit of electrons against the averaged image's mean):",
        "",
        "| device | structure | output | envelope (img/s) | defocus average (img/s) | cost | RMS difference "
        "| deficit |",
        "|---|---|---|---|---|---|---|---|",
        *coherence,
        "",
        *recorded_lines,
        "abTEM's multislice does per slice: the infinite-projection potential (FFT + inverse FFT per element),",
        "the band-limited transmission function exp(iσV) (FFT + inverse FFT) and the propagation (FFT + inverse",
        "FFT): 6 FFTs for carbon, 8 for Ag+Co, so 3x / 4x the 2-FFT floor is its minimum; propagation alone",
        "(built potential) does 4 (2x).",
        "",
        f"(benchmark wall time {time.perf_counter() - t_start:.0f} s)",
    ]
    print()
    emit("\n".join(lines) + "\n", "imaging_throughput")
    return 0


if __name__ == "__main__":
    sys.exit(main())
