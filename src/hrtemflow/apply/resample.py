"""Resampling a micrograph to a bundle's pixel size, the way the imaging stage makes its images."""

from __future__ import annotations

import numpy as np

from ..core.errors import HrtemflowError


def resample(
    image: np.ndarray, pixel_A: float, target_A: float, *, method: str = "fourier"
) -> tuple[np.ndarray, tuple[float, float]]:
    """The image at `target_A` per pixel, and its exact pixel size (y, x) after rounding the shape.

    "fourier" (default): band-limited resampling, the operation by which the imaging stage makes
    its images at each pixel size (a Fourier crop, `hrtemflow.imaging.optics`): white shot noise stays
    white, as in every training image, and a band-limited image survives a round trip unchanged.
    "skimage": `skimage.transform.resize`, bilinear with Gaussian anti-aliasing when shrinking,
    which smooths: the noise texture the network and the OOD check see then differs from training.
    """
    scale = float(pixel_A) / float(target_A)
    img = np.asarray(image, dtype=np.float32)
    if abs(scale - 1.0) < 1e-9:
        return img.copy(), (float(pixel_A), float(pixel_A))
    shape = (max(1, int(round(img.shape[0] * scale))), max(1, int(round(img.shape[1] * scale))))
    if method == "fourier":
        out = img
        for axis in (0, 1):
            out = _fourier_axis(out, shape[axis], axis)
    elif method == "skimage":
        from skimage.transform import resize  # noqa: PLC0415

        sigma = [max(0.0, (n / m - 1) / 2) for n, m in zip(img.shape, shape)]
        out = resize(
            img.astype(np.float64),
            shape,
            order=1,
            mode="reflect",
            anti_aliasing=scale < 1.0,
            anti_aliasing_sigma=sigma if scale < 1.0 else None,
            preserve_range=True,
        )
    else:
        raise HrtemflowError(f"resample: unknown method {method!r} (fourier or skimage)")
    return out.astype(np.float32), (float(pixel_A * img.shape[0] / shape[0]), float(pixel_A * img.shape[1] / shape[1]))


def _fourier_axis(a: np.ndarray, m: int, axis: int) -> np.ndarray:
    """Band-limited resampling of one axis to m samples.

    The image is mirrored to a periodic field of twice its length (no wrap-around edge to ring),
    its spectrum cropped or zero-padded, and shifted so that pixel centres keep the area
    convention: output pixel j covers [j, j+1) x the new pixel size. The mean is kept.
    """
    import scipy.fft  # noqa: PLC0415

    n = a.shape[axis]
    ext = np.concatenate([a, np.flip(a, axis=axis)], axis=axis)
    spec = scipy.fft.rfft(ext, axis=axis)
    shape = [1] * a.ndim
    shape[axis] = -1
    k = np.arange(spec.shape[axis]) / (2.0 * n)  # cycles per input pixel
    delta = 0.5 * (n / m - 1.0)  # output pixel centre (j + 1/2) n/m - 1/2, in input pixels
    spec = spec * np.exp(2j * np.pi * k * delta).astype(spec.dtype).reshape(shape)
    keep = min(n, m) + 1
    spec = np.take(spec, np.arange(keep), axis=axis)
    out = scipy.fft.irfft(spec, n=2 * m, axis=axis) * (m / n)
    return np.take(out, np.arange(m), axis=axis).astype(np.float32)
