"""Objective lens, partial coherence, detector and noise: many cheap images from one exit wave.

The multislice exit wave of a view is computed once (`hrtemflow.imaging.multislice`); every optics variant is
then a product in Fourier space and a few small FFTs. All array work goes through one array module
`xp` (NumPy, or CuPy for `device: gpu`), so the GPU path is this same code.

Conventions (docs/data-products.md; tested in tests/test_optics.py):

- Units: lengths in Å, angles in rad (convergence in mrad, as abTEM), energy in eV, dose in e⁻/Å².
- Arrays are indexed [x, y] as in abTEM (first axis x); azimuths φ are measured from +x towards +y.
- Aberration phase (abTEM / Kirkland polar form, α = λk the scattering angle):
  χ(α, φ) = 2π/λ · [ ½α²(C10 + C12 cos 2(φ−φ12)) + ⅓α³(C21 cos(φ−φ21) + C23 cos 3(φ−φ23)) + ¼α⁴ C30 ],
  and the wave in the image plane is Ψ(k)·exp(−iχ)·E_t·E_s·A. Defocus is abTEM's `defocus` = −C10:
  **positive = underfocus** (Scherzer defocus is positive for positive Cs; atoms then image dark).
  C12 is two-fold astigmatism with angle φ12 of period π (learn C12·cos 2φ12, C12·sin 2φ12);
  φ21 has period 2π, φ23 period 2π/3.
- Partial coherence in the quasi-coherent approximation, as abTEM's CTF:
  temporal E_t = exp(−(½πλΔk²)²) with Δ = `focal_spread_A`, the 1/e width of the focal spread
  (= √2 × its standard deviation); spatial E_s = exp(−(θ/2)²|∇_α χ|²) with θ = `convergence_mrad`/1e3
  (abTEM's `angular_spread`). The clean target has neither (nor aberrations, nor aperture).
  An envelope on the wave is exact for a weak object's linear terms, but it also removes the electrons
  scattered where it is small, which a microscope without an aperture still records: for the negative-Cs
  bench's 2 nm Ag/Co particles the particle's deficit of electrons is ~7x the true one and the image is
  off by ~8 % of its contrast (RMS). `temporal_coherence: defocus_average` instead averages the
  images (intensities) over the Gaussian focal spread (`focal_nodes`): every electron is kept and
  the interference of every pair of beams is damped as the focal spread damps it; the spatial
  envelope stays quasi-coherent.
- Phase plate (`phase_plate_deg`, off by default): the unscattered beam, every |k| below
  PHASE_PLATE_CUTON (1/(15 nm): a Zernike plate's 1 µm hole or a Volta plate's charged spot at
  ordinary focal lengths), is multiplied by exp(iφ). A weak phase object's image then transfers
  cos χ (φ = +90°: I ≈ 1 + 2σV at focus, atoms bright) instead of sin χ, and so keeps the low spatial
  frequencies where a particle's total scattering, its mass, lies. Unitary: every electron is kept.
- Intensity: electron counts per pixel. The normalised intensity |ψ|² is 1 on vacuum; an image of
  `size` pixels over the field of view `fov` has pixel size fov/size and expected counts
  dose × pixel_size² × intensity, so on vacuum the mean is dose × pixel area and the noisy image is
  Poisson with variance = mean. Resampling is a Fourier crop of the intensity (band-limited, keeps
  the mean and so the total counts).
- Detector MTF(f) = 1/(1 + (f/c50)²), f = spatial frequency as a fraction of the Nyquist frequency
  of the output pixel; applied to the expected counts before the shot noise (so the noise is white).
- Gain and offsets, applied to the noisy and the noise-free image alike (μ = mean expected counts):
  y = brightness · (μ + contrast·(x − μ) + background·μ). The clean target stays in plain counts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from ..store.layout import SCALAR_PARAMS

#: where an envelope is smaller than this, the wave is cut off (the image changes by less)
ENVELOPE_CUTOFF = 1e-4

#: half-width of the focal average, in standard deviations of the focal spread: the Gaussian's weight
#: beyond it, exp(−4.3²/2), is 1e-4
FOCAL_RANGE = 4.3

#: |k| (1/Å) below which a phase plate shifts the wave: 1/(15 nm), the cut-on of a Zernike plate's 1 µm
#: hole at 200 kV and 2.7 mm focal length (r/(λf) = 0.0074/Å) or of a Volta plate's spot. For fields
#: under 15 nm that is the k = 0 beam alone.
PHASE_PLATE_CUTON = 1.0 / 150.0

#: the partial temporal coherence models (imaging.optics.temporal_coherence)
TEMPORAL_COHERENCE = ("envelope", "defocus_average")

#: parameter names `draw_variant` gives one image (the shard's params/* arrays but the view's energy and fov)
PARAM_NAMES = tuple(name for name in SCALAR_PARAMS if name not in ("energy_eV", "fov_A"))
PARAM_NAMES = (
    "defocus_A",
    "cs_A",
    "c12_A",
    "phi12_rad",
    "c21_A",
    "phi21_rad",
    "c23_A",
    "phi23_rad",
    "focal_spread_A",
    "convergence_mrad",
    "dose_e_per_A2",
    "brightness",
    "contrast",
    "background",
    "mtf_c50",
)


def wavelength_A(energy_eV: float) -> float:
    """Relativistic electron wavelength (Å)."""
    from abtem.core.energy import energy2wavelength  # noqa: PLC0415

    return float(energy2wavelength(energy_eV))


def get_xp(device: str) -> ModuleType:
    """The array module of a device ('cpu' -> NumPy, 'gpu' -> CuPy), as abTEM resolves it."""
    from abtem.core.backend import get_array_module  # noqa: PLC0415

    return get_array_module(device)


def to_host(array: Any) -> np.ndarray:
    """A NumPy copy of a NumPy or CuPy array."""
    return array.get() if hasattr(array, "get") else np.asarray(array)


def _fft2(a):
    from abtem.core.fft import fft2  # noqa: PLC0415  (FFTW on CPU, cuFFT on GPU)

    return fft2(a, overwrite_x=False)


def _ifft2(a):
    from abtem.core.fft import ifft2  # noqa: PLC0415

    return ifft2(a, overwrite_x=False)


# ---------------------------------------------------------------------------------------------
# random draws


def uniform(rng: np.random.Generator, lo_hi: Sequence[float]) -> float:
    """Uniform in [lo, hi]; always consumes one draw, so a fixed range does not shift later draws."""
    lo, hi = float(lo_hi[0]), float(lo_hi[1])
    return lo + (hi - lo) * float(rng.random())


def log_uniform(rng: np.random.Generator, lo_hi: Sequence[float]) -> float:
    """Log-uniform in [lo, hi] (lo > 0); one draw."""
    lo, hi = math.log(float(lo_hi[0])), math.log(float(lo_hi[1]))
    return float(math.exp(lo + (hi - lo) * float(rng.random())))


def draw_variant(rng: np.random.Generator, optics: Mapping, detector: Mapping, noise: Mapping) -> dict[str, float]:
    """One image's optics, detector and noise parameters (units of PARAM_NAMES), from the config ranges.

    Every value is drawn, in a fixed order, even where its range is a single value: widening a range
    later never shifts the other draws of the same image. The phase plate is drawn last and only
    when there is one, so images without one draw what they drew before the option existed.
    """
    p = {
        "defocus_A": 10.0 * uniform(rng, optics["defocus_nm"]),
        "cs_A": 1e4 * uniform(rng, optics["cs_um"]),
        "c12_A": 10.0 * uniform(rng, optics["c12_nm"]),
        "phi12_rad": float(rng.uniform(0.0, math.pi)),
        "c21_A": 10.0 * uniform(rng, optics["c21_nm"]),
        "phi21_rad": float(rng.uniform(0.0, 2.0 * math.pi)),
        "c23_A": 10.0 * uniform(rng, optics["c23_nm"]),
        "phi23_rad": float(rng.uniform(0.0, 2.0 * math.pi / 3.0)),
        "focal_spread_A": 10.0 * uniform(rng, optics["focal_spread_nm"]),
        "convergence_mrad": uniform(rng, optics["convergence_mrad"]),
        "dose_e_per_A2": log_uniform(rng, noise["dose_e_per_A2"]),
        "brightness": uniform(rng, noise["brightness"]),
        "contrast": uniform(rng, noise["contrast"]),
        "background": uniform(rng, noise["background"]),
        "mtf_c50": uniform(rng, detector["mtf_c50"]),
    }
    if any(optics.get("phase_plate_deg", (0.0, 0.0))):
        p["phase_plate_rad"] = math.radians(uniform(rng, optics["phase_plate_deg"]))
    if recorded_pixel(detector):
        p["recorded_pixel_scale"] = uniform(rng, detector["recorded_pixel_scale"])
    return p


def recorded_pixel(detector: Mapping) -> bool:
    """Whether images are detected at another pixel and resampled (`detector.recorded_pixel_scale` set)."""
    return [float(v) for v in detector.get("recorded_pixel_scale", (1.0, 1.0))] != [1.0, 1.0]


def recorded_size(size: int, scale: float) -> int:
    """Pixels of the camera grid over the image's field when the camera's pixel is `scale` x the image's."""
    return max(2, int(round(size / float(scale))))


def resample_periodic(image: np.ndarray, size: int) -> np.ndarray:
    """A periodic image band-limited-resampled to size x size (its spectrum cropped or zero-padded), mean kept:
    what `hrtemflow.apply.resample` does to a micrograph, on a field that is periodic as the multislice's is."""
    n = image.shape[-1]
    if n == size:
        return np.asarray(image, dtype=np.float64)
    spectrum = np.fft.fft2(np.asarray(image, dtype=np.complex128))
    return np.fft.ifft2(fourier_resize(spectrum, size)).real * ((size * size) / (n * n))


# ---------------------------------------------------------------------------------------------
# Fourier-space helpers


def nice_size(n: float, minimum: int = 2) -> int:
    """The smallest even integer >= n (and >= minimum) with no prime factor above 7 (fast FFTs)."""
    m = max(int(math.ceil(n - 1e-9)), minimum)
    m += m % 2
    while True:
        r = m
        for p in (2, 3, 5, 7):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 2


def fourier_resize(a, n: int):
    """Crop or zero-pad the last two (FFT-ordered) axes to n x n, keeping the lowest frequencies."""
    xp = _xp_of(a)
    m = a.shape[-1]
    if n == m:
        return a
    low = min(m, n)
    p, q = (low + 1) // 2, low // 2  # how many non-negative and negative frequencies are kept
    pairs = [(slice(0, p), slice(0, p))] + ([(slice(n - q, n), slice(m - q, m))] if q else [])
    out = xp.zeros(a.shape[:-2] + (n, n), dtype=a.dtype)
    for x_out, x_in in pairs:
        for y_out, y_in in pairs:
            out[..., x_out, y_out] = a[..., x_in, y_in]
    return out


def _xp_of(a) -> ModuleType:
    from abtem.core.backend import get_array_module  # noqa: PLC0415

    return get_array_module(a)


def spatial_frequencies(n: int, extent: float, xp: ModuleType):
    """kx, ky (1/Å) of an n x n grid over extent x extent, broadcastable as [x, y]."""
    k = xp.fft.fftfreq(n, d=extent / n).astype(xp.float32)
    return k[:, None], k[None, :]


# ---------------------------------------------------------------------------------------------
# transfer function


def aberration_phase(kx, ky, wavelength: float, p: Mapping[str, float], xp: ModuleType):
    """χ(k) in radians for defocus, C12, C21, C23 and C30 (see the module docstring)."""
    alpha = wavelength * xp.sqrt(kx**2 + ky**2)
    phi = xp.arctan2(ky, kx)
    c10 = -p["defocus_A"]
    chi = 0.5 * alpha**2 * (c10 + p["c12_A"] * xp.cos(2.0 * (phi - p["phi12_rad"])))
    if p.get("c21_A", 0.0) or p.get("c23_A", 0.0):
        chi = chi + alpha**3 / 3.0 * (
            p["c21_A"] * xp.cos(phi - p["phi21_rad"]) + p["c23_A"] * xp.cos(3.0 * (phi - p["phi23_rad"]))
        )
    if p.get("cs_A", 0.0):
        chi = chi + 0.25 * alpha**4 * p["cs_A"]
    return (2.0 * math.pi / wavelength) * chi


def spatial_envelope(kx, ky, wavelength: float, p: Mapping[str, float], xp: ModuleType):
    """E_s = exp(−(θ/2)² |∇_α χ|²), the quasi-coherent partial spatial coherence (abTEM's form)."""
    theta = p.get("convergence_mrad", 0.0) * 1e-3
    if theta == 0.0:
        return None
    alpha = wavelength * xp.sqrt(kx**2 + ky**2)
    phi = xp.arctan2(ky, kx)
    c10 = -p["defocus_A"]
    c21, c23 = p.get("c21_A", 0.0), p.get("c23_A", 0.0)
    d_alpha = (
        alpha * (c10 + p["c12_A"] * xp.cos(2.0 * (phi - p["phi12_rad"])))
        + alpha**2 * (c21 * xp.cos(phi - p.get("phi21_rad", 0.0)) + c23 * xp.cos(3.0 * (phi - p.get("phi23_rad", 0.0))))
        + alpha**3 * p.get("cs_A", 0.0)
    )
    d_phi = -(
        alpha * p["c12_A"] * xp.sin(2.0 * (phi - p["phi12_rad"]))
        + alpha**2
        / 3.0
        * (c21 * xp.sin(phi - p.get("phi21_rad", 0.0)) + 3.0 * c23 * xp.sin(3.0 * (phi - p.get("phi23_rad", 0.0))))
    )
    scale = 2.0 * math.pi / wavelength
    return xp.exp(-((theta / 2.0) ** 2) * scale**2 * (d_alpha**2 + d_phi**2))


def temporal_envelope(kx, ky, wavelength: float, focal_spread_A: float, xp: ModuleType):
    """E_t = exp(−(½πλΔk²)²), Δ the 1/e focal spread (abTEM's `focal_spread`)."""
    if focal_spread_A == 0.0:
        return None
    k2 = kx**2 + ky**2
    return xp.exp(-((0.5 * math.pi * wavelength * focal_spread_A * k2) ** 2))


def transfer_function(kx, ky, wavelength: float, p: Mapping[str, float], aperture_mrad: float, xp: ModuleType):
    """The complex objective transfer exp(−iχ)·E_t·E_s·A on the given frequencies, times exp(iφ) of
    a phase plate below its cut-on."""
    t = xp.exp(-1j * aberration_phase(kx, ky, wavelength, p, xp).astype(xp.float32))
    if p.get("phase_plate_rad", 0.0):
        t = t * xp.where(
            kx**2 + ky**2 < PHASE_PLATE_CUTON**2, xp.complex64(np.exp(1j * p["phase_plate_rad"])), xp.complex64(1.0)
        )
    for env in (
        temporal_envelope(kx, ky, wavelength, p.get("focal_spread_A", 0.0), xp),
        spatial_envelope(kx, ky, wavelength, p, xp),
    ):
        if env is not None:
            t = t * env
    if aperture_mrad > 0.0:
        t = t * ((kx**2 + ky**2) * wavelength**2 <= (aperture_mrad * 1e-3) ** 2)
    return t.astype(xp.complex64)


def band_limit(wave_cutoff: float, wavelength: float, focal_spread_A: float = 0.0, aperture_mrad: float = 0.0) -> float:
    """Largest |k| (1/Å) the image wave carries: the exit wave's cutoff, the aperture, or where
    the temporal envelope falls below ENVELOPE_CUTOFF, whichever is smallest."""
    k = wave_cutoff
    if aperture_mrad > 0.0:
        k = min(k, aperture_mrad * 1e-3 / wavelength)
    if focal_spread_A > 0.0:
        k = min(
            k, math.sqrt(math.sqrt(math.log(1.0 / ENVELOPE_CUTOFF)) / (0.5 * math.pi * wavelength * focal_spread_A))
        )
    return k


def exit_wave_cutoff(sampling_A: float) -> float:
    """The band limit (1/Å) of an abTEM exit wave: its antialias aperture (2/3 of Nyquist)."""
    from abtem.core import config  # noqa: PLC0415

    return float(config.get("antialias.cutoff")) / (2.0 * sampling_A)


# ---------------------------------------------------------------------------------------------
# images


def intensity_at_sizes(
    wave_fft,
    extent: float,
    sizes: Sequence[int],
    k_band: float,
    transfer=None,
) -> dict[int, Any]:
    """Normalised image intensity (1 on vacuum) resampled to each size, from the exit wave's FFT.

    `wave_fft` is (..., n, n): FFT of the exit wave(s); leading axes (frozen phonon configurations)
    are averaged in intensity. `transfer(kx, ky)` gives the objective transfer (None = ideal).

    Why it is cheap and exact: the image wave is band-limited to |k| <= k_band, so its intensity is
    band-limited to 2·k_band; on a grid whose Nyquist frequency exceeds k_band + k_out/2 the aliased
    part of |ψ|² falls outside the output band |k| <= k_out. The wave is cropped (or padded) to that
    grid, squared, and the intensity is Fourier-cropped to each output size: one small inverse FFT,
    one forward FFT, and one tiny inverse FFT per size.
    """
    xp = _xp_of(wave_fft)
    n = wave_fft.shape[-1]
    k_out = max(sizes) / (2.0 * extent)
    m = nice_size(2.0 * extent * (k_band + 0.5 * k_out), minimum=max(sizes))
    kx, ky = spatial_frequencies(m, extent, xp)
    w = fourier_resize(wave_fft, m) * xp.asarray((kx**2 + ky**2) <= k_band**2)
    if transfer is not None:
        w = w * transfer(kx, ky)
    psi = _ifft2(w.astype(xp.complex64)) * xp.float32((m * m) / (n * n))
    intensity = (psi.real**2 + psi.imag**2).astype(xp.float32)
    if intensity.ndim > 2:
        intensity = intensity.reshape((-1, m, m)).mean(axis=0)
    spectrum = _fft2(intensity.astype(xp.complex64))
    out = {}
    for s in sizes:
        out[s] = spectrum if s == m else fourier_resize(spectrum, s) * xp.float32((s * s) / (m * m))
    return out


def detector_mtf(size: int, c50: float, xp: ModuleType):
    """MTF(f) = 1/(1+(f/c50)²), f = |k| / k_Nyquist of the output pixel, on an FFT-ordered grid."""
    f = xp.fft.fftfreq(size).astype(xp.float32) * 2.0  # fraction of Nyquist
    f2 = f[:, None] ** 2 + f[None, :] ** 2
    return 1.0 / (1.0 + f2 / (c50 * c50))


def _real_image(spectrum, mtf=None):
    if mtf is not None:
        spectrum = spectrum * mtf
    return _ifft2(spectrum).real


def clean_images(wave_fft, extent: float, sizes: Sequence[int], sampling_A: float) -> dict[int, np.ndarray]:
    """The ideal image (no aberrations, envelopes, aperture, MTF or noise), normalised intensity (host)."""
    spectra = intensity_at_sizes(wave_fft, extent, sizes, exit_wave_cutoff(sampling_A))
    return {s: to_host(_real_image(spec)).astype(np.float64) for s, spec in spectra.items()}


def focal_nodes(focal_spread_A: float, max_phase: float) -> tuple[np.ndarray, np.ndarray]:
    """Defocus offsets (Å) and weights (summing to 1) that average images over a Gaussian focal spread
    of 1/e width `focal_spread_A` (σ = Δ/√2).

    A pair of beams k1, k2 interferes with the phase πλδ(|k1|² − |k2|²) at a defocus offset δ; over the
    focal spread that is a = πλσ(|k1|² − |k2|²) per σ, damped by exp(−a²/2) (for k2 = 0: E_t). Nodes
    spaced h = 2π/(max_phase + FOCAL_RANGE) σ apart over ±FOCAL_RANGE σ, weighted by the Gaussian,
    damp every pair up to `max_phase` to within ~1e-4 (the rule's first alias is at a = 2π/h, where
    the true damping is nil). Gauss–Hermite rules are not used: they alias back to full coherence at
    some a not far beyond their accurate range (16 nodes: |mean| = 0.997 at a = 8).
    """
    sigma = focal_spread_A / math.sqrt(2.0)
    h = 2.0 * math.pi / (max(max_phase, 0.0) + FOCAL_RANGE)
    j = math.floor(FOCAL_RANGE / h)
    x = h * np.arange(-j, j + 1, dtype=np.float64)
    w = np.exp(-0.5 * x * x)
    return sigma * x, w / w.sum()


def focal_phase_spread(focal_spread_A: float, wavelength: float, k_band: float, k_out: float) -> float:
    """The largest πλσ(|k1|² − |k2|²) among pairs of beams inside the wave's band |k| <= k_band whose
    interference lands in the output (|k1 − k2| <= √2·k_out, the corner of the square output grid)."""
    q = min(math.sqrt(2.0) * k_out, 2.0 * k_band)
    spread = q * (2.0 * k_band - q) if q <= k_band else k_band * k_band
    return math.pi * wavelength * focal_spread_A / math.sqrt(2.0) * spread


def image_spectra(
    wave_fft,
    extent: float,
    lam: float,
    sampling_A: float,
    sizes: Sequence[int],
    p: Mapping[str, float],
    aperture_mrad: float = 0.0,
    temporal_coherence: str = "envelope",
) -> dict[int, Any]:
    """Spectra of the normalised image intensity at each size, through the objective (`p`'s aberrations,
    envelopes and the aperture), with the focal spread as an envelope or as an average of images."""
    if temporal_coherence not in TEMPORAL_COHERENCE:
        raise ValueError(f"temporal_coherence {temporal_coherence!r}: use one of {', '.join(TEMPORAL_COHERENCE)}")
    xp = _xp_of(wave_fft)
    if temporal_coherence == "envelope" or p.get("focal_spread_A", 0.0) == 0.0:
        k_band = band_limit(exit_wave_cutoff(sampling_A), lam, p.get("focal_spread_A", 0.0), aperture_mrad)
        return intensity_at_sizes(
            wave_fft,
            extent,
            sizes,
            k_band,
            transfer=lambda kx, ky: transfer_function(kx, ky, lam, p, aperture_mrad, xp),
        )
    k_band = band_limit(exit_wave_cutoff(sampling_A), lam, 0.0, aperture_mrad)
    max_phase = focal_phase_spread(p["focal_spread_A"], lam, k_band, max(sizes) / (2.0 * extent))
    total: dict[int, Any] = {}
    for offset, weight in zip(*focal_nodes(p["focal_spread_A"], max_phase), strict=True):
        node = dict(p, focal_spread_A=0.0, defocus_A=p["defocus_A"] + float(offset))
        spectra = intensity_at_sizes(
            wave_fft,
            extent,
            sizes,
            k_band,
            transfer=lambda kx, ky, q=node: transfer_function(kx, ky, lam, q, aperture_mrad, xp),
        )
        for s, spec in spectra.items():
            total[s] = spec * xp.float32(weight) if s not in total else total[s] + spec * xp.float32(weight)
    return total


def variant_images(
    wave_fft,
    extent: float,
    energy_eV: float,
    sampling_A: float,
    sizes: Sequence[int],
    p: Mapping[str, float],
    rng: np.random.Generator,
    aperture_mrad: float = 0.0,
    temporal_coherence: str = "envelope",
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Noisy and noise-free detector images (counts per pixel, float32, host) of one optics variant.

    The shot noise is drawn on the host with `rng` (NumPy), so CPU and GPU runs draw the same noise.
    """
    xp = _xp_of(wave_fft)
    lam = wavelength_A(energy_eV)
    scale = p.get("recorded_pixel_scale")
    grid = {s: s if scale is None else recorded_size(s, scale) for s in sizes}  # the camera's pixels per size
    spectra = image_spectra(
        wave_fft, extent, lam, sampling_A, sorted(set(grid.values())), p, aperture_mrad, temporal_coherence
    )
    out = {}
    for s in sizes:
        n = grid[s]
        expected = to_host(_real_image(spectra[n], detector_mtf(n, p["mtf_c50"], xp))).astype(np.float64)
        expected *= p["dose_e_per_A2"] * (extent / n) ** 2
        noisy = rng.poisson(np.clip(expected, 0.0, None)).astype(np.float64)
        if n != s:  # detected at the camera's pixel, resampled to the image's as predict resamples a micrograph
            expected, noisy = resample_periodic(expected, s), resample_periodic(noisy, s)
        out[s] = (
            apply_gain(noisy, expected, p).astype(np.float32),
            apply_gain(expected, expected, p).astype(np.float32),
        )
    return out


def apply_gain(x: np.ndarray, expected: np.ndarray, p: Mapping[str, float]) -> np.ndarray:
    """y = brightness·(μ + contrast·(x − μ) + background·μ), μ the mean expected counts."""
    mu = float(expected.mean())
    return p["brightness"] * (mu + p["contrast"] * (x - mu) + p["background"] * mu)


def expected_counts(y: np.ndarray, brightness, contrast, background) -> np.ndarray:
    """The expected counts behind gained noise-free images (apply_gain's inverse), per image of a (B, H, W) stack.

    So that training can draw new shot noise for a stored image at its own dose: mean(y) = b·μ·(1 + bg)
    gives μ, then x = μ + (y/b − μ·(1 + bg))/c. Needs b > 0, c > 0 and bg > −1 (checked by the caller).
    """
    y = np.asarray(y, dtype=np.float64)
    b, c, bg = (np.asarray(v, dtype=np.float64).reshape(-1, 1, 1) for v in (brightness, contrast, background))
    mu = y.mean(axis=(-2, -1), keepdims=True) / (b * (1.0 + bg))
    return mu + (y / b - mu * (1.0 + bg)) / c


#: expected counts per pixel from which `redraw_shot_noise` uses the normal approximation N(λ, λ)
#: (rounded) instead of an exact Poisson draw: there the Poisson skewness is below 0.15, and the normal
#: draw of a batch of 64 images of 128² px at 100-1,000 counts takes 2.4-4x less time (measured 2026-12-02)
POISSON_EXACT_BELOW = 50.0


def redraw_shot_noise(expected: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """New electron counts (float32) for expected counts: exact Poisson below POISSON_EXACT_BELOW per
    pixel, its rounded normal approximation above. For the training feed, which draws noise for
    every image it serves; the imaging stage's stored images are drawn exactly (`variant_images`)."""
    lam = np.clip(np.asarray(expected, dtype=np.float32), 0.0, None)
    out = rng.standard_normal(lam.shape, dtype=np.float32)
    out *= np.sqrt(lam)
    out += lam
    np.rint(out, out=out)
    np.maximum(out, 0.0, out=out)
    low = lam < POISSON_EXACT_BELOW
    if low.any():
        out[low] = rng.poisson(lam[low])
    return out


def counts(intensity: np.ndarray, dose_e_per_A2: float, pixel_size_A: float) -> np.ndarray:
    """Normalised intensity -> expected electron counts per pixel."""
    return intensity * (dose_e_per_A2 * pixel_size_A**2)


def weak_phase_transfer(p: Mapping[str, float], size: int, fov: float) -> np.ndarray:
    """The weak-phase transfer of one image from its stored parameters, on the (size, size) grid of its
    fov: I(k) = 2σV(k)·H(k) with H = 2 sin(χ + φ) · E_t · E_s · MTF (χ even in k: no C21 or C23; φ a
    phase plate's shift of the unscattered beam, 0 without one). What the imaging stage's optics does
    to a weak object, in the linear approximation (NumPy, CPU)."""
    lam = wavelength_A(p["energy_eV"])
    kx, ky = spatial_frequencies(size, fov, np)
    h = 2.0 * np.sin(aberration_phase(kx, ky, lam, p, np) + p.get("phase_plate_rad", 0.0))
    for env in (temporal_envelope(kx, ky, lam, p["focal_spread_A"], np), spatial_envelope(kx, ky, lam, p, np)):
        if env is not None:
            h = h * env
    return h * detector_mtf(size, p["mtf_c50"], np)
