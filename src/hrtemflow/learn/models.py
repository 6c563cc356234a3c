"""The networks, one short function each (Keras 3 functional API, any backend).

Inputs are (size, size, 1) normalised images. Output layers are float32 whatever the dtype policy,
so mixed precision on a GPU never hands float16 logits to a loss. No Lambda layers: every model
loads with `safe_mode=True`.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from ..core.tasks import TASKS, spectral_width_default
from .table import STEMS


def _conv_bn_relu(x, filters: int):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.Activation("relu")(x)


def _residual_block(x, filters: int):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""
    shortcut = x if x.shape[-1] == filters else layers.Conv2D(filters, 1, use_bias=False)(x)
    y = _conv_bn_relu(x, filters)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
    y = layers.BatchNormalization()(y)
    return layers.Activation("relu")(layers.Add()([shortcut, y]))


def trunk(x, width: int, depth: int, pool_name: str | None = None, stem: str = "full"):
    """Residual CNN on a tensor: `depth` stages, channels doubling, each halving the image; global average pool.

    stem "full": a 3x3 convolution, and the first stage at the input's resolution. "patchify": a 2x2
    convolution of stride 2 (each non-overlapping 2x2 patch to `width` channels, a linear map that
    loses nothing, as ConvNeXt's stem), so every stage runs at half the resolution, and the last one
    is not pooled: the same 1/2^depth grid at the end, for about a quarter of the arithmetic
    (benchmarks/precision_speed.py measures both).
    """
    if stem == "patchify":
        x = layers.Conv2D(width, 2, strides=2, use_bias=False)(x)
        x = layers.Activation("relu")(layers.BatchNormalization()(x))
    elif stem == "full":
        x = _conv_bn_relu(x, width)
    else:
        raise ValueError(f"stem {stem!r} is not one of {', '.join(STEMS)}")
    for stage in range(depth):
        x = _residual_block(x, width * 2**stage)
        if stem == "full" or stage < depth - 1:
            x = layers.MaxPooling2D(2)(x)
    return layers.GlobalAveragePooling2D(name=pool_name)(x)


def _trunk(input_size: int, width: int, depth: int, stem: str = "full"):
    """The image input and the residual trunk on it."""
    inputs = keras.Input((input_size, input_size, 1), name="image")
    return inputs, trunk(inputs, width, depth, stem=stem)


def classifier(
    input_size: int, n_classes: int, width: int = 16, depth: int = 3, spectral_width: int = 0, stem: str = "full"
) -> keras.Model:
    """Class probabilities; the pre-softmax layer is named "logits" (temperature scaling uses it).

    `spectral_width` > 0 adds a trunk on the log power spectrum (CNT chirality: the graphene
    reflections' angles to the tube axis are the chiral angle, plain in the spectrum). `stem`: see `trunk`.
    """
    inputs, x = _trunk(input_size, width, depth, stem)
    x = _with_spectrum(inputs, x, spectral_width, depth, stem)
    x = layers.Dropout(0.2)(x)
    logits = layers.Dense(n_classes, dtype="float32", name="logits")(x)
    outputs = layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    return keras.Model(inputs, outputs, name="classifier")


@keras.saving.register_keras_serializable(package="hrtemflow")
class LogPowerSpectrum(layers.Layer):
    """log |FFT|^2 of the Hann-windowed image, centred and standardised per image.

    Defocus and astigmatism live in the Thon rings: their radii and ellipticity are plain to see in
    the power spectrum, while a CNN on the image alone must learn the Fourier transform first.
    Registered, not a Lambda, so bundles still load in safe mode; keras.ops only, so any backend.
    """

    def call(self, x):
        n = x.shape[1]
        hann = np.hanning(n).astype("float32")
        window = keras.ops.convert_to_tensor(np.outer(hann, hann)[None, :, :, None])
        img = keras.ops.cast(x, "float32") * window
        img = keras.ops.squeeze(img, -1)
        re, im = keras.ops.fft2((img, keras.ops.zeros_like(img)))
        power = keras.ops.log(re * re + im * im + 1e-3)
        power = keras.ops.roll(keras.ops.roll(power, n // 2, axis=1), n // 2, axis=2)
        power = power - keras.ops.mean(power, axis=(1, 2), keepdims=True)
        power = power / (keras.ops.std(power, axis=(1, 2), keepdims=True) + 1e-6)
        return keras.ops.expand_dims(power, -1)

    def compute_output_shape(self, input_shape):
        return input_shape


def _with_spectrum(inputs, features, spectral_width: int, depth: int, stem: str = "full"):
    """The image trunk's features, joined by those of a trunk `spectral_width` wide on the log power spectrum
    (0: none)."""
    if not spectral_width:
        return features
    spectrum = trunk(LogPowerSpectrum(name="log_power_spectrum")(inputs), spectral_width, depth, "spectrum_pool", stem)
    return layers.Concatenate()([features, spectrum])


def regressor(
    input_size: int,
    n_targets: int,
    width: int = 16,
    depth: int = 3,
    name: str = "regressor",
    spectral_width: int = 0,
    stem: str = "full",
) -> keras.Model:
    """Scaled targets (O(1)); the card holds each target's offset and scale.

    `spectral_width` > 0 adds a trunk on the image's log power spectrum (aberrations: the image trunk
    sees the sign of the contrast, the spectrum trunk the ring radii and ellipticity). `stem`: see `trunk`.
    """
    inputs, x = _trunk(input_size, width, depth, stem)
    x = _with_spectrum(inputs, x, spectral_width, depth, stem)
    x = layers.Dense(4 * width, activation="relu")(x)
    outputs = layers.Dense(n_targets, dtype="float32", name="targets")(x)
    return keras.Model(inputs, outputs, name=name)


def structure_regressor(
    input_size: int, width: int = 16, depth: int = 3, spectral_width: int = 0, stem: str = "full"
) -> keras.Model:
    """Ag/Co particle: co_fraction, log n_atoms, order_measure, energy per atom (scaled)."""
    return regressor(
        input_size,
        len(TASKS["structure"].targets),
        width,
        depth,
        name=TASKS["structure"].model_name,
        spectral_width=spectral_width,
        stem=stem,
    )


def denoiser(input_size: int, width: int = 16, depth: int = 3) -> keras.Model:
    """U-Net: noisy normalised image -> clean normalised image (skip connections keep detail)."""
    inputs = keras.Input((input_size, input_size, 1), name="image")
    x, skips = inputs, []
    for stage in range(depth):
        x = _conv_bn_relu(_conv_bn_relu(x, width * 2**stage), width * 2**stage)
        skips.append(x)
        x = layers.MaxPooling2D(2)(x)
    x = _conv_bn_relu(_conv_bn_relu(x, width * 2**depth), width * 2**depth)
    for stage in reversed(range(depth)):
        x = layers.Conv2DTranspose(width * 2**stage, 2, strides=2, padding="same")(x)
        x = layers.Concatenate()([x, skips[stage]])
        x = _conv_bn_relu(_conv_bn_relu(x, width * 2**stage), width * 2**stage)
    outputs = layers.Conv2D(1, 1, dtype="float32", name="clean")(x)
    return keras.Model(inputs, outputs, name="denoiser")


def build(
    task: str,
    kind: str,
    input_size: int,
    n_outputs: int,
    width: int,
    depth: int,
    spectral_width: int | None = None,
    stem: str = "full",
) -> keras.Model:
    """The model a task trains, by the kind of its registry entry (`n_outputs`: classes or targets;
    ignored for denoising, which has no spectrum trunk and keeps its full-resolution U-Net whatever
    `stem` is). A new task of an existing kind needs no change here; a new kind adds its function."""
    if spectral_width is None:
        spectral_width = spectral_width_default(task, width)
    if kind == "classification":
        return classifier(input_size, n_outputs, width, depth, spectral_width, stem)
    if kind == "denoising":
        return denoiser(input_size, width, depth)
    return regressor(
        input_size, n_outputs, width, depth, name=TASKS[task].model_name, spectral_width=spectral_width, stem=stem
    )
