"""What training and prediction do to an image before the network, shared so they cannot drift apart.

`normalise` is the per-image standardisation of the feed and of `hrtemflow predict`; the D4
elements (flips and 90° rotations of the square) are the feed's augmentation and predict's
test-time augmentation, with the sign changes they make to the astigmatism targets.
"""

from __future__ import annotations

import numpy as np

NORMALISATION = {
    "method": "per-image standardisation: (x - mean) / max(std, eps), then clipped to [-clip, clip]",
    # a contract name, compared as a string by every bundle's card: the function as it was first
    # published (hrtemflow.learn.data, now hrtemflow.learn.preprocess.normalise); never change it
    # without changing what the function does
    "function": "hrtemflow.learn.data.normalise",
    "eps": 1e-6,
    "clip": 10.0,
}
#: the 8 elements of the square's symmetry group as (quarter turns, flip), identity first
D4 = tuple((k, f) for f in (False, True) for k in range(4))


def normalise(
    x: np.ndarray, eps: float = NORMALISATION["eps"], clip: float = NORMALISATION["clip"], *, inplace: bool = False
) -> np.ndarray:
    """Per-image standardisation of a (..., H, W) stack, as float32.

    Dose and gain differ between images and microscopes; the networks see only contrast. The std
    floor keeps a blank image finite; the clip stops a hot pixel from dominating a batch.
    `inplace` reuses a float32 array the caller owns (the feed's read buffer).
    """
    x = np.asarray(x, dtype=np.float32) if inplace else np.array(x, dtype=np.float32)
    x = np.ascontiguousarray(x)
    flat = x.reshape(-1, x.shape[-2] * x.shape[-1])  # a view: every step below works in place
    flat -= flat.mean(axis=1, keepdims=True)
    std = np.sqrt(np.einsum("ij,ij->i", flat, flat) / flat.shape[1])  # no (x - mean)**2 temporary
    flat /= np.maximum(std, eps)[:, None]
    return np.clip(x, -clip, clip, out=x)


def d4(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Element (k quarter turns, flip) of the square's symmetry group on a (N, H, W) stack."""
    x = np.rot90(x, k, axes=(1, 2))
    return x[:, ::-1, :] if flip else x


def astig_signs(k: int, flip: bool) -> tuple[float, float]:
    """Sign change of (C12 cos 2φ, C12 sin 2φ) under element (k, flip); each element is its own inverse
    on them. A 90° rotation maps 2φ to 2φ + π (both change sign); a flip about either axis maps φ to
    -φ (or π - φ), changing the sign of the sin component."""
    rot = -1.0 if k % 2 else 1.0
    return rot, rot * (-1.0 if flip else 1.0)
