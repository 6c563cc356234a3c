"""Classical denoisers the network must beat: Gaussian filter, non-local means, BM3D.

All act on one normalised 2-D image (mean 0, std 1) and return an image of the same shape. Their
noise level comes from the image itself (`estimate_sigma`, wavelet MAD), as it would on a real
micrograph; only the Gaussian's width is tuned, on the validation split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter
from skimage.restoration import denoise_nl_means, estimate_sigma

GAUSSIAN_SIGMAS = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


def gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    return gaussian_filter(np.asarray(image, dtype=np.float64), sigma=sigma, mode="reflect")


def nl_means(image: np.ndarray) -> np.ndarray:
    """skimage non-local means, h = 0.8 sigma (skimage's recommended setting with fast_mode)."""
    image = np.asarray(image, dtype=np.float64)
    sigma = float(estimate_sigma(image))
    return denoise_nl_means(image, h=0.8 * sigma, sigma=sigma, patch_size=5, patch_distance=6, fast_mode=True)


def bm3d(image: np.ndarray) -> np.ndarray:
    """BM3D (PyPI `bm3d`) with the white-noise PSD estimated from the image."""
    import bm3d as _bm3d  # noqa: PLC0415 (a slow import that only the denoiser's evaluation needs)

    image = np.asarray(image, dtype=np.float64)
    sigma = max(float(estimate_sigma(image)), 1e-3)
    return np.asarray(_bm3d.bm3d(image, sigma_psd=sigma), dtype=np.float64)


def tune_gaussian(
    noisy: Sequence[np.ndarray],
    clean: Sequence[np.ndarray],
    score: Callable[[np.ndarray, np.ndarray], float],
    sigmas: Sequence[float] = GAUSSIAN_SIGMAS,
) -> float:
    """The filter width (px) with the best mean score on (noisy, clean) pairs of the validation split."""
    means = [np.mean([score(gaussian(n, s), c) for n, c in zip(noisy, clean)]) for s in sigmas]
    return float(sigmas[int(np.argmax(means))])


def match_affine(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """pred mapped by the least-squares gain and offset onto ref (the CARE protocol, Weigert 2018).

    Networks and filters return different intensity scales; matching each one the same way makes
    PSNR/SSIM compare structure, not an arbitrary scale.
    """
    a = np.stack([pred.ravel(), np.ones(pred.size)], axis=1)
    coef, *_ = np.linalg.lstsq(a, ref.ravel(), rcond=None)
    return pred * coef[0] + coef[1]


def wiener_oracle(noisy: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Wiener filter given the target's ring-averaged power spectrum and the true noise power.

    Not a competitor: it reads the answer. It is the reference for how much any denoiser can gain
    on a nearly Gaussian, isotropic texture such as thin amorphous carbon, where the best estimate
    is close to linear; a network short of a target but near this filter is limited by the data
    (dose, contrast), not by its training. The noise is what remains of `noisy` after the
    least-squares gain and offset of `target` are removed.
    """
    x = np.asarray(noisy, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    signal = match_affine(t, x)
    noise_power = float(((x - signal) ** 2).mean()) * x.size  # E|FFT(n)|^2 of white noise
    spectrum = np.abs(np.fft.fft2(signal - signal.mean())) ** 2
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(x.shape[0]), np.fft.fftfreq(x.shape[1]), indexing="ij"))
    ring = np.rint(k * max(x.shape)).astype(int)
    radial = np.bincount(ring.ravel(), spectrum.ravel()) / np.maximum(np.bincount(ring.ravel()), 1)
    s = radial[ring]
    gain = s / (s + noise_power) if noise_power > 0 else np.ones_like(s)
    return np.real(np.fft.ifft2(gain * np.fft.fft2(x - x.mean()))) + x.mean()
