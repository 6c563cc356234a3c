"""Learning stage, models: every network builds, trains a step, and round-trips in safe mode.

On the installed backend (TensorFlow) in-process; on JAX and PyTorch in a subprocess when they are
installed (Keras picks its backend once per process).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

# TensorFlow tensors lack the numpy-2 `copy` keyword; Keras converts them many times a step
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

SIZE = 16

SCRIPT = textwrap.dedent(
    """
    import numpy as np, keras
    from hrtemflow.learn import models
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 16, 16, 1)).astype("float32")
    cases = [
        (models.classifier(16, 3, 4, 2), "sparse_categorical_crossentropy", np.array([0, 1, 2, 1])),
        (models.classifier(16, 3, 4, 2, spectral_width=2), "sparse_categorical_crossentropy", np.array([0, 1, 2, 1])),
        (models.regressor(16, 3, 4, 2), "mse", rng.normal(size=(4, 3)).astype("float32")),
        (models.regressor(16, 3, 4, 2, spectral_width=4), "mse", rng.normal(size=(4, 3)).astype("float32")),
        (models.structure_regressor(16, 4, 2), "mse", rng.normal(size=(4, 4)).astype("float32")),
        (
            models.classifier(16, 3, 4, 2, spectral_width=2, stem="patchify"),
            "sparse_categorical_crossentropy",
            np.array([0, 1, 2, 1]),
        ),
        (models.structure_regressor(16, 4, 2, stem="patchify"), "mse", rng.normal(size=(4, 4)).astype("float32")),
        (models.denoiser(16, 4, 2), "mse", x),
    ]
    for model, loss, y in cases:
        model.compile(keras.optimizers.Adam(1e-3), loss=loss)
        out = model.train_on_batch(x, y)
        loss_value = float(np.ravel(out)[0])
        assert np.isfinite(loss_value), (model.name, loss_value)
        assert model.predict(x, verbose=0).shape[0] == 4
    print("ok", keras.backend.backend())
    """
)


def _cases(models):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, SIZE, SIZE, 1)).astype("float32")
    return x, [
        (
            "classifier",
            models.classifier(SIZE, 3, 4, 2),
            "sparse_categorical_crossentropy",
            np.array([0, 1, 2, 1]),
            (3,),
        ),
        ("regressor", models.regressor(SIZE, 3, 4, 2), "mse", rng.normal(size=(4, 3)).astype("float32"), (3,)),
        (
            "spectral_regressor",
            models.regressor(SIZE, 3, 4, 2, name="spectral_regressor", spectral_width=4),
            "mse",
            rng.normal(size=(4, 3)).astype("float32"),
            (3,),
        ),
        (
            "structure_regressor",
            models.structure_regressor(SIZE, 4, 2),
            "mse",
            rng.normal(size=(4, 4)).astype("float32"),
            (4,),
        ),
        (
            "classifier",
            models.classifier(SIZE, 3, 4, 2, spectral_width=2, stem="patchify"),
            "sparse_categorical_crossentropy",
            np.array([0, 1, 2, 1]),
            (3,),
        ),
        (
            "structure_regressor",
            models.structure_regressor(SIZE, 4, 2, stem="patchify"),
            "mse",
            rng.normal(size=(4, 4)).astype("float32"),
            (4,),
        ),
        ("denoiser", models.denoiser(SIZE, 4, 2), "mse", x, (SIZE, SIZE, 1)),
    ]


def test_every_model_builds_trains_and_round_trips_in_safe_mode(tmp_path):
    import keras

    from hrtemflow.learn import models

    x, cases = _cases(models)
    for name, model, loss, y, out_shape in cases:
        assert model.name == name
        assert tuple(model.output_shape[1:]) == out_shape
        assert model.outputs[0].dtype == "float32"
        assert not any(isinstance(layer, keras.layers.Lambda) for layer in model.layers)
        model.compile(keras.optimizers.Adam(1e-3), loss=loss)
        before = model.evaluate(x, y, verbose=0)
        for _ in range(3):
            model.train_on_batch(x, y)
        assert np.isfinite(model.evaluate(x, y, verbose=0))
        path = tmp_path / f"{name}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
        np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
        assert np.isfinite(before)


def test_log_power_spectrum_layer_matches_numpy():
    """The aberration regressor's second input: log |FFT|² of the Hann-windowed image, centred, standardised."""
    from hrtemflow.learn import models

    x = np.random.default_rng(3).normal(size=(2, SIZE, SIZE, 1)).astype("float32")
    got = np.asarray(models.LogPowerSpectrum()(x))
    w = np.outer(np.hanning(SIZE), np.hanning(SIZE))
    p = np.log(np.abs(np.fft.fftshift(np.fft.fft2(x[..., 0] * w), axes=(1, 2))) ** 2 + 1e-3)
    p = (p - p.mean(axis=(1, 2), keepdims=True)) / (p.std(axis=(1, 2), keepdims=True) + 1e-6)
    np.testing.assert_allclose(got[..., 0], p, atol=2e-3)


def test_spectrum_trunk_width_by_task_and_config():
    from hrtemflow.learn import models

    def spectrum_width(model):  # channels of the spectrum trunk's pooled features; 0 without one
        return (
            model.get_layer("spectrum_pool").output.shape[-1]
            if any(isinstance(layer, models.LogPowerSpectrum) for layer in model.layers)
            else 0
        )

    # left out of the config: aberrations as wide as the image trunk (4 * 2**1 pooled channels), the rest none
    assert spectrum_width(models.build("aberrations", "regression", SIZE, 3, 4, 2)) == 8
    assert spectrum_width(models.build("structure", "regression", SIZE, 4, 4, 2)) == 0
    assert spectrum_width(models.build("chirality", "classification", SIZE, 8, 4, 2)) == 0
    # set: any task but the denoiser gets one that wide, or none at 0
    assert spectrum_width(models.build("chirality", "classification", SIZE, 8, 4, 2, spectral_width=2)) == 4
    assert spectrum_width(models.build("aberrations", "regression", SIZE, 3, 4, 2, spectral_width=0)) == 0


def test_patchify_stem_halves_every_stage_and_ends_on_the_same_grid():
    """The patchify stem maps each 2x2 patch to `width` channels (stride 2), so stage k runs at half
    the full stem's resolution; the last stage is not pooled, so both end on size / 2**depth."""
    import keras

    from hrtemflow.learn import models

    def grids(model):  # spatial sizes of the residual stages' outputs (their Add layers), in order
        return [layer.output.shape[1] for layer in model.layers if isinstance(layer, keras.layers.Add)]

    full = models.build("ordering", "classification", 32, 3, 4, 3, spectral_width=2)
    patch = models.build("ordering", "classification", 32, 3, 4, 3, spectral_width=2, stem="patchify")
    assert sorted(grids(full)) == [8, 8, 16, 16, 32, 32] and sorted(grids(patch)) == [4, 4, 8, 8, 16, 16]  # both trunks
    stem = next(layer for layer in patch.layers if isinstance(layer, keras.layers.Conv2D))
    assert stem.kernel_size == (2, 2) and stem.strides == (2, 2) and stem.filters == 4
    for model in (full, patch):  # global pooling over the same 4x4 grid, the same features
        assert [
            layer.input.shape[1] for layer in model.layers if isinstance(layer, keras.layers.GlobalAveragePooling2D)
        ] == [4, 4]
    assert patch.output_shape == full.output_shape == (None, 3)
    # the denoiser keeps its full-resolution U-Net
    assert (
        models.build("denoise", "denoising", 32, 1, 4, 2, stem="patchify").count_params()
        == models.denoiser(32, 4, 2).count_params()
    )
    with pytest.raises(ValueError, match="stem 'strided' is not one of full, patchify"):
        models.build("ordering", "classification", 32, 3, 4, 3, stem="strided")


def test_cosine_schedule_decays_over_the_planned_epochs():
    from hrtemflow.learn.train import _optimizer

    hyper = {"learning_rate": 0.01, "epochs": 10, "lr_schedule": "cosine"}
    lr = _optimizer(hyper, steps_per_epoch=5).learning_rate  # the optimizer resolves the schedule at its step
    sched = _optimizer(hyper, 5)._learning_rate
    assert float(sched(0)) == pytest.approx(0.01) and float(sched(25)) == pytest.approx(
        0.01 * (0.02 + 0.98 * 0.5), rel=1e-4
    )
    assert float(sched(50)) == pytest.approx(0.0002, rel=1e-3) and float(sched(500)) == pytest.approx(0.0002, rel=1e-3)
    assert float(lr) == pytest.approx(0.01)
    assert float(_optimizer({**hyper, "lr_schedule": "constant"}, 5).learning_rate) == pytest.approx(0.01)


def test_classifier_exposes_logits_for_temperature_scaling():
    import keras

    from hrtemflow.learn import models

    model = models.classifier(SIZE, 5, 4, 2)
    logits = keras.Model(model.input, model.get_layer("logits").output)
    x = np.random.default_rng(1).normal(size=(3, SIZE, SIZE, 1)).astype("float32")
    z = logits.predict(x, verbose=0)
    p = model.predict(x, verbose=0)
    np.testing.assert_allclose(np.exp(z) / np.exp(z).sum(axis=1, keepdims=True), p, rtol=1e-4, atol=1e-6)


def test_models_build_under_mixed_precision_with_float32_outputs():
    import keras

    from hrtemflow.learn import models

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        for model in (models.classifier(SIZE, 3, 4, 2), models.denoiser(SIZE, 4, 2)):
            assert model.outputs[0].dtype == "float32"
    finally:
        keras.config.set_dtype_policy(previous)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_models_train_on_other_backends(backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(
            f"{backend} is not installed in this environment (the models use keras.ops only; install {backend} to run "
            "this)"
        )
    env = {**os.environ, "KERAS_BACKEND": backend}
    res = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"ok {backend}" in res.stdout
