"""Trained bundles applied to experimental micrographs: the `hrtemflow predict` stage.

Preprocessing is the training preprocessing, step for step: the micrograph is resampled to the
bundle's pixel size (card `pixel_size_A`) by a band-limited Fourier resampling, the operation by
which the imaging stage makes its images at each pixel size (the pixel size after rounding the
shape is recomputed from the shapes, so the calibration is kept exactly), cut into windows of the
card's `input_size` and normalised by the very function the training feed uses
(`hrtemflow.learn.data.normalise`, with the card's eps and clip).

Orientation: simulated arrays are indexed [x, y] (abTEM), a micrograph [row, col] = [y, x]. Each
window is transposed before the network, so angles (astigmatism φ12) come out as azimuths from +x
(columns, to the right) towards +y (rows, downwards) of the micrograph as displayed.

Per region the classifiers give the top-3 classes with probabilities (temperature-scaled when a
fitted temperature is found, see `find_temperature`), the regressors a value and a spread over the
8 flips/rotations of the window (test-time augmentation, the astigmatism components transformed as
in training), and every region gets an out-of-distribution check (`ood_scores`):
  - feature distances: the Mahalanobis distance (Ledoit-Wolf covariance) to the training
    features at each stage of the network (texture statistics of the early stages, the penultimate
    global-pooling features) and, for classifiers, the energy score -logsumexp(logits); each
    standardised on the bundle's validation images, combined by their maximum, and that maximum
    scaled so that 0 is its validation median and 1 its validation 99th percentile. A region
    scoring above 1 is flagged "ood";
  - a vacuum gate: the ratio of low- to high-frequency power of the (plane-subtracted, Hann-
    windowed) window; white noise gives ~1, any structure more. Below the white-noise bound (or
    the validation images' 1st percentile when the training images themselves are that noise-like,
    so the gate never flags in-distribution data) the region is flagged "vacuum".
The training statistics live in the bundle as `ood.npz` (`save_ood_stats`, loaded without pickle),
fitted by `fit_ood_stats` / `fit_bundle_ood` (`hrtemflow fit-ood`). A bundle without it is still
applied, with the feature check reported as unavailable.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import HrtemflowError
from .io import atomic_file, write_json_atomic, write_text_atomic
from .learn.targets import card_scaling, physical

OOD_FILE = "ood.npz"
OOD_VERSION = 1
OOD_QUANTILE = 0.99
#: white noise gives a structure ratio of 1 with a spread of about 8/n on n x n windows
#: (0.25 at 32 px, 0.125 at 64 px: measured); the vacuum gate sits 3 spreads above 1
VACUUM_SIGMAS = 3.0
DEFAULT_STRIDE = 0.5
TOP_K = 3
#: the 8 elements of the square's symmetry group as (quarter turns, flip), identity first
D4 = tuple((k, f) for f in (False, True) for k in range(4))
MAX_FIT_IMAGES = 5000  # per split: plenty for a covariance of a few hundred features, and it bounds the fit's time and memory
# input bytes per forward pass (all symmetry elements together): the activations, not the input, set the
# memory, and at 2**24 a 64² classifier with a spectrum trunk peaked at 10 GB (128 images x 8 symmetry elements);
# at 2**22 (32 x 8) it stays near 3 GB and is no slower on 2 cores (benchmarks/RESULTS.md)
_IMG_BYTES_PER_BATCH = 2**22
WINDOW_CHUNK = 4096  # windows cut, normalised and predicted at a time


# ------------------------------------------------------------------------------------ bundles


@dataclass
class Net:
    """One forward pass giving the task's raw output (logits or scaled targets) and the features:
    the outputs of `feature_layers`, pooled over space (none for the U-Net)."""

    forward: Any
    kind: str
    astig: tuple[int, int] | None
    feature_layers: tuple[str, ...]
    n_features: tuple[int, ...]
    eps: float
    clip: float


@dataclass
class Bundle:
    """A loaded model bundle and what predict needs beside the model (state: the loaded network)."""

    path: Path
    card: dict
    net: Net
    model: Any
    temperature: float | None = None
    temperature_source: str = ""
    ood: dict | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def task(self) -> str:
        return self.card["task"]

    @property
    def kind(self) -> str:
        return self.card["kind"]

    @property
    def size(self) -> int:
        return int(self.card["input_size"])

    @property
    def pixel_size_A(self) -> float:
        return float(self.card["pixel_size_A"])


def _feature_layers(model) -> list[Any]:
    """The layers the OOD distances are measured on: each resolution stage's output (MaxPooling2D;
    per channel its mean and standard deviation over space) and the last global pooling (the
    penultimate features). Early stages see texture (noise colour, contrast), the last one what the
    task separates: one Mahalanobis distance per layer (Lee et al. 2018) with texture statistics
    (as the Gram-matrix detector of Sastry & Oore 2020) catches vacuum and other materials that the
    penultimate layer alone maps close to a class. The last stage is left out when a global pooling
    follows it (its average is the pooling's output)."""
    import keras  # noqa: PLC0415

    stages = [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    pooled = [layer for layer in model.layers
              if isinstance(layer, (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D))]
    return (stages[:-1] + pooled[-1:]) if pooled else stages


def make_net(model, kind: str, task: str, normalisation: Mapping[str, Any] | None = None) -> Net:
    """Wrap a model so one call yields its raw output and its pooled features."""
    import keras  # noqa: PLC0415

    from .learn import data  # noqa: PLC0415

    norm = dict(normalisation or data.NORMALISATION)
    outputs = [model.get_layer("logits").output if kind == "classification" else model.output]
    layers = _feature_layers(model) if kind != "denoising" else []
    outputs += [layer.output for layer in layers]
    forward = keras.Model(model.input, outputs)
    astig = tuple(data.ASTIG_COLUMNS) if task == "aberrations" else None
    dims = tuple(int(layer.output.shape[-1]) * (2 if len(layer.output.shape) == 4 else 1) for layer in layers)
    return Net(forward, kind, astig, tuple(layer.name for layer in layers), dims, float(norm["eps"]), float(norm["clip"]))


def _check_card_extra(card: Mapping[str, Any], where: str) -> None:
    """What predict relies on beyond `train.check_card`: pixel size, normalisation, names."""
    from .learn import data  # noqa: PLC0415

    px = card.get("pixel_size_A")
    if not isinstance(px, (int, float)) or not math.isfinite(px) or px <= 0:
        raise HrtemflowError(f"{where}: card.json has no valid pixel_size_A ({px!r}); retrain with `hrtemflow train`")
    norm = card.get("normalisation") or {}
    if norm.get("function") != data.NORMALISATION["function"] or norm.get("method") != data.NORMALISATION["method"]:
        raise HrtemflowError(
            f"{where}: the bundle was trained with normalisation {norm.get('function')!r} ({norm.get('method')!r}); this "
            f"hrtemflow applies {data.NORMALISATION['function']!r} ({data.NORMALISATION['method']!r}). Use the hrtemflow "
            f"version the card names ({(card.get('versions') or {}).get('hrtemflow', '?')}) or retrain")
    for key in ("eps", "clip"):
        if not isinstance(norm.get(key), (int, float)):
            raise HrtemflowError(f"{where}: card.json normalisation lacks {key}; retrain with `hrtemflow train`")
    if card["task"] not in data.TASK_KIND or data.TASK_KIND[card["task"]] != card["kind"]:
        raise HrtemflowError(f"{where}: card.json task {card['task']!r} with kind {card['kind']!r} is not a known task; retrain")
    if card["kind"] == "regression":
        names = [t.get("name") for t in card["targets"]]
        want = [t.name for t in data.REGRESSION_TARGETS[card["task"]]]
        if names != want:
            raise HrtemflowError(f"{where}: card targets {names} are not the {card['task']} targets {want}; retrain")


def load_bundle(path: str | Path, *, temperature: float | None = None) -> Bundle:
    """Load a bundle (safe mode, card checked against the model), its OOD stats and temperature."""
    from .learn.train import load_bundle as load_checked  # noqa: PLC0415

    d = Path(path)
    model, card = load_checked(d)
    where = f"model bundle {d}"
    _check_card_extra(card, where)
    if card["kind"] == "classification":
        names = [layer.name for layer in model.layers]
        if "logits" not in names:
            raise HrtemflowError(f"{where}: the classifier has no layer named 'logits'; it was not made by hrtemflow.learn, retrain")
    net = make_net(model, card["kind"], card["task"], card["normalisation"])
    b = Bundle(d, card, net, model)
    if b.kind == "classification":
        b.temperature, b.temperature_source = find_temperature(d, card, temperature)
    if b.kind != "denoising":
        b.ood = load_ood_stats(d, model=b, missing_ok=True)
        if b.ood is None:
            b.notes.append(f"{where} has no {OOD_FILE}: regions are not checked against the training distribution "
                           f"(only the vacuum gate runs); fit it with `hrtemflow fit-ood SPEC --model-dir {d}`")
    return b


def find_temperature(bundle_dir: Path, card: Mapping[str, Any], override: float | None = None) -> tuple[float | None, str]:
    """The calibration temperature and where it came from.

    Order: `override` (--temperature); the card (`temperature` or `calibration.temperature`, if the
    training stage stores it); `metrics.json` in the bundle folder; `reports/<task>/metrics.json`
    of the same results folder (the layout `hrtemflow evaluate` writes). A metrics.json counts only
    if it names the bundle's task and dataset and is newer than model.keras (else it describes an
    older model). None: probabilities are the network's own softmax, reported as uncalibrated.
    """
    if override is not None:
        if not (math.isfinite(override) and override > 0):
            raise HrtemflowError(f"--temperature must be a positive number, got {override}")
        return float(override), "--temperature"
    for value in (card.get("temperature"), (card.get("calibration") or {}).get("temperature")):
        if isinstance(value, (int, float)) and math.isfinite(value) and value > 0:
            return float(value), "card.json"
    d = Path(bundle_dir)
    model_time = (d / "model.keras").stat().st_mtime
    for metrics in (d / "metrics.json", d.parent.parent / "reports" / str(card["task"]) / "metrics.json"):
        if not metrics.is_file():
            continue
        try:
            m = json.loads(metrics.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        t = m.get("temperature")
        if (m.get("task") == card["task"] and m.get("dataset_sha256") == card.get("dataset_sha256")
                and isinstance(t, (int, float)) and math.isfinite(t) and t > 0 and metrics.stat().st_mtime >= model_time):
            return float(t), str(metrics)
    return None, "none found (uncalibrated softmax)"


# ------------------------------------------------------------------------------ preprocessing


def resample(image: np.ndarray, pixel_A: float, target_A: float, *, method: str = "fourier") -> tuple[np.ndarray, tuple[float, float]]:
    """The image at `target_A` per pixel, and its exact pixel size (y, x) after rounding the shape.

    "fourier" (default): band-limited resampling, the operation by which the imaging stage makes
    its images at each pixel size (a Fourier crop, `hrtemflow.optics`): white shot noise stays
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
        out = resize(img.astype(np.float64), shape, order=1, mode="reflect", anti_aliasing=scale < 1.0,
                     anti_aliasing_sigma=sigma if scale < 1.0 else None, preserve_range=True)
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


def normalise_windows(windows: np.ndarray, net: Net) -> np.ndarray:
    """Training normalisation (the same function, the card's eps and clip), transposed to [x, y]."""
    from .learn.data import normalise  # noqa: PLC0415

    x = normalise(np.asarray(windows, dtype=np.float32), eps=net.eps, clip=net.clip)
    return np.ascontiguousarray(np.swapaxes(x, -1, -2))


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Window origins covering [0, length): every `stride`, the last one flush with the end."""
    if length < window:
        return []
    starts = list(range(0, length - window + 1, max(1, stride)))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def structure_ratio(windows: np.ndarray) -> np.ndarray:
    """Low- to high-frequency power of each window: ~1 for white noise (vacuum), larger with structure.

    A plane is subtracted (slow illumination gradients are not structure) and a Hann window applied;
    low band 2/n <= k < 0.25, high band 0.375 <= k <= 0.5 cycles per pixel.
    """
    w = np.asarray(windows, dtype=np.float64)
    n0, n1 = w.shape[-2:]
    yy, xx = np.mgrid[0:n0, 0:n1]
    a = np.stack([np.ones(n0 * n1), yy.ravel(), xx.ravel()], axis=1)
    flat = w.reshape(-1, n0 * n1)
    resid = flat - (flat @ np.linalg.pinv(a).T) @ a.T
    hann = np.outer(np.hanning(n0), np.hanning(n1)).ravel()
    p = np.abs(np.fft.fft2((resid * hann).reshape(-1, n0, n1))) ** 2
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(n0), np.fft.fftfreq(n1), indexing="ij"))
    low = (k >= 2.0 / min(n0, n1)) & (k < 0.25)
    high = (k >= 0.375) & (k <= 0.5)
    lo, hi = p[:, low].mean(axis=1), p[:, high].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(hi > 0, lo / np.where(hi > 0, hi, 1.0), np.where(lo > 0, np.inf, 0.0))
    return r.reshape(w.shape[:-2])


# -------------------------------------------------------------------------------- the network


def _d4(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Element (k, flip) on a (N, H, W) stack, as `hrtemflow.learn.data.dihedral` applies it."""
    x = np.rot90(x, k, axes=(1, 2))
    return x[:, ::-1, :] if flip else x


def _astig_signs(k: int, flip: bool) -> tuple[float, float]:
    """Sign change of (C12 cos 2φ, C12 sin 2φ) under element (k, flip); each is its own inverse."""
    rot = -1.0 if k % 2 else 1.0
    return rot, rot * (-1.0 if flip else 1.0)


def run_net(net: Net, x: np.ndarray, *, tta: bool = True, batch: int | None = None) -> dict[str, np.ndarray]:
    """Raw outputs per symmetry element (N, G, k), in the frame of the untransformed window, and
    per feature layer its features averaged over space and the elements (N, d). `x` is normalised,
    (N, H, W), in network order."""
    import keras  # noqa: PLC0415

    elements = D4 if tta else D4[:1]
    n, h, w = x.shape
    batch = batch or max(1, _IMG_BYTES_PER_BATCH // (4 * h * w * len(elements)))
    outs: list[np.ndarray] = []
    feats: list[list[np.ndarray]] = [[] for _ in net.feature_layers]
    for start in range(0, n, batch):
        xb = x[start:start + batch]
        stack = np.concatenate([_d4(xb, k, f) for k, f in elements])[..., None].astype(np.float32)
        res = net.forward(stack, training=False)
        res = res if isinstance(res, (list, tuple)) else [res]
        arrs = [keras.ops.convert_to_numpy(r).astype(np.float64) for r in res]
        o = arrs[0].reshape((len(elements), len(xb)) + arrs[0].shape[1:]).swapaxes(0, 1)
        if net.astig is not None:
            for g, (k, f) in enumerate(elements):
                sc, ss = _astig_signs(k, f)
                o[:, g, net.astig[0]] *= sc
                o[:, g, net.astig[1]] *= ss
        outs.append(o)
        for j, a in enumerate(arrs[1:]):
            if a.ndim == 4:  # a stage's feature map: per channel mean and std over space
                a = np.concatenate([a.mean(axis=(1, 2)), a.std(axis=(1, 2))], axis=-1)
            feats[j].append(a.reshape(len(elements), len(xb), -1).mean(axis=0))
    return {"outputs": np.concatenate(outs) if outs else np.zeros((0, len(elements))),
            "features": [np.concatenate(f) if f else np.zeros((0, d)) for f, d in zip(feats, net.n_features)]}


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def energy(logits: np.ndarray) -> np.ndarray:
    """-logsumexp(logits): high where the network has no strong response to any class (Liu 2020)."""
    m = logits.max(axis=-1)
    return -(m + np.log(np.exp(logits - m[..., None]).sum(axis=-1)))


# ---------------------------------------------------------------------------------- OOD stats


def _ledoit_wolf(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Shrunk covariance of centred rows x (Ledoit & Wolf 2004), and the shrinkage used."""
    n, d = x.shape
    x2 = x**2
    trace = x2.sum(axis=0) / n
    mu = trace.sum() / d
    delta_ = np.sum((x.T @ x) ** 2) / n**2
    beta = (np.sum(x2.T @ x2) / n - delta_) / (d * n)
    delta = (delta_ - 2.0 * mu * trace.sum() + d * mu**2) / d
    shrink = 0.0 if delta <= 0 else float(min(beta, delta) / delta)
    cov = (1.0 - shrink) * (x.T @ x) / n + shrink * mu * np.eye(d)
    return cov, shrink


def _standardise(value: np.ndarray, q50: float, q90: float) -> np.ndarray:
    """0 at the validation median, 1 at its 90th percentile (robust to a small validation set)."""
    return (np.asarray(value, dtype=np.float64) - q50) / max(q90 - q50, 1e-9 * max(abs(q50), 1.0))


def _whitening(features: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Mean, whitening matrix W (|W^T (f - mean)| is the Mahalanobis distance) and shrinkage."""
    mean = features.mean(axis=0)
    cov, shrink = _ledoit_wolf(features - mean)
    w, v = np.linalg.eigh(cov)
    w = np.maximum(w, 1e-12 * max(float(w.max()), 1e-30))
    return mean, v / np.sqrt(w), shrink


def _components(stats: Mapping[str, Any], outputs: np.ndarray, features: Sequence[np.ndarray], kind: str) -> dict[str, np.ndarray]:
    """Standardised component scores per window: one Mahalanobis distance per feature layer, and
    the energy score (classifiers); raw values too, for the report."""
    out: dict[str, np.ndarray] = {}
    zs = []
    for i, f in enumerate(features):
        d = np.linalg.norm((np.asarray(f, dtype=np.float64) - stats[f"mean_{i}"]) @ stats[f"whiten_{i}"], axis=1)
        out[f"mahalanobis_{i}"] = d
        zs.append(_standardise(d, stats[f"maha_q50_{i}"], stats[f"maha_q90_{i}"]))
    out["feature_z"] = np.max(np.stack(zs), axis=0)
    if kind == "classification":
        e = energy(outputs.mean(axis=1))
        out["energy"] = e
        out["energy_z"] = _standardise(e, stats["energy_q50"], stats["energy_q90"])
        zs.append(out["energy_z"])
    out["combined"] = np.max(np.stack(zs), axis=0)
    return out


def fit_ood_stats(model, images: np.ndarray, val_images: np.ndarray | None = None, *, task: str = "", tta: bool = True,
                  quantile: float = OOD_QUANTILE) -> dict[str, Any]:
    """Training-distribution statistics for the OOD score, from raw training images (N, H, W).

    Per feature layer (`_feature_layers`): mean and whitening (Ledoit-Wolf covariance) of the
    features of `images`, and the median and 90th percentile of the Mahalanobis distances of
    `val_images` (held out: distances of the training images themselves are too small). The same
    for the energy score of a classifier. Each component is standardised by those two numbers, the
    window's combined statistic is the largest, and its median and `quantile` over `val_images` set
    the final scale: score 1 = that quantile, so about 1 % of validation images score above 1.
    Also the 1st percentile of the vacuum statistic. Features are averaged over the 8 symmetry
    elements when `tta`, as `predict` does. Images are in the network's [x, y] order (the shards').
    """
    import keras  # noqa: PLC0415

    from .learn.data import normalise  # noqa: PLC0415

    kind = "classification" if "logits" in [layer.name for layer in model.layers] else "regression"
    net = make_net(model, kind, task)
    if not net.feature_layers:
        raise HrtemflowError("fit_ood_stats: the model has no pooling layers to take features from")
    if len(images) < 2:
        raise HrtemflowError("fit_ood_stats: need at least 2 training images")
    val_images = images if val_images is None else val_images

    def norm(a: np.ndarray) -> np.ndarray:
        return normalise(np.asarray(a, dtype=np.float32), eps=net.eps, clip=net.clip)

    stats: dict[str, Any] = {"version": OOD_VERSION, "feature_layers": np.array(net.feature_layers), "tta": bool(tta),
                             "quantile": quantile, "n_train": len(images), "n_val": len(val_images), "backend": keras.backend.backend()}
    train = run_net(net, norm(images), tta=tta)
    val = run_net(net, norm(val_images), tta=tta)
    for i, (ft, fv) in enumerate(zip(train["features"], val["features"])):
        stats[f"mean_{i}"], stats[f"whiten_{i}"], stats[f"shrinkage_{i}"] = _whitening(ft)
        d = np.linalg.norm((fv - stats[f"mean_{i}"]) @ stats[f"whiten_{i}"], axis=1)
        stats[f"maha_q50_{i}"], stats[f"maha_q90_{i}"] = (float(q) for q in np.quantile(d, [0.5, 0.9]))
    if kind == "classification":
        e = energy(val["outputs"].mean(axis=1))
        stats["energy_q50"], stats["energy_q90"] = (float(q) for q in np.quantile(e, [0.5, 0.9]))
    c = _components(stats, val["outputs"], val["features"], kind)["combined"]
    stats["score_q50"], stats["score_q"] = (float(q) for q in np.quantile(c, [0.5, quantile]))
    stats["ratio_q01"] = float(np.quantile(structure_ratio(val_images), 1.0 - quantile))
    return stats


def _model_sha256(bundle_dir: Path) -> str:
    h = hashlib.sha256()
    with open(bundle_dir / "model.keras", "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_ood_stats(stats: Mapping[str, Any], bundle_dir: str | Path) -> Path:
    """Write `ood.npz` into a bundle, bound to its model.keras by hash (plain arrays, no pickle)."""
    d = Path(bundle_dir)
    arrays = {k: np.asarray(v) for k, v in stats.items() if v is not None}
    arrays["model_sha256"] = np.asarray(_model_sha256(d))
    for k, a in arrays.items():
        if a.dtype.kind not in "biufU":
            raise HrtemflowError(f"save_ood_stats: {k} is not numeric or text ({a.dtype})")
    with atomic_file(d / OOD_FILE, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return d / OOD_FILE


def load_ood_stats(bundle_dir: str | Path, *, model: Bundle | None = None, missing_ok: bool = False) -> dict[str, Any] | None:
    """Read `ood.npz` (allow_pickle=False); refuse one made for another model or version."""
    d = Path(bundle_dir)
    path = d / OOD_FILE
    refit = f"refit it with `hrtemflow fit-ood SPEC --model-dir {d}`"
    if not path.is_file():
        if missing_ok:
            return None
        raise HrtemflowError(f"model bundle {d}: {OOD_FILE} is missing; fit it with `hrtemflow fit-ood SPEC --model-dir {d}`")
    try:
        with np.load(path, allow_pickle=False) as z:
            stats = {k: (z[k].item() if z[k].ndim == 0 else z[k]) for k in z.files}
    except Exception as exc:  # noqa: BLE001 - zip/format errors of a damaged file
        raise HrtemflowError(f"model bundle {d}: {OOD_FILE} cannot be read ({type(exc).__name__}: {exc}); {refit}") from None
    need = ("version", "feature_layers", "score_q50", "score_q", "ratio_q01", "model_sha256")
    if missing := [k for k in need if k not in stats]:
        raise HrtemflowError(f"model bundle {d}: {OOD_FILE} lacks {', '.join(missing)}; {refit}")
    if int(stats["version"]) != OOD_VERSION:
        raise HrtemflowError(f"model bundle {d}: {OOD_FILE} is version {stats['version']}, this hrtemflow reads {OOD_VERSION}; {refit}")
    if stats["model_sha256"] != _model_sha256(d):
        raise HrtemflowError(f"model bundle {d}: {OOD_FILE} was fitted for another model.keras (was the model retrained?); {refit}")
    layers = tuple(str(x) for x in np.atleast_1d(stats["feature_layers"]))
    stats["feature_layers"] = layers
    if model is not None:
        net = model.net
        dims = tuple(int(np.shape(stats.get(f"mean_{i}", ()))[0]) if f"mean_{i}" in stats else -1 for i in range(len(layers)))
        if layers != net.feature_layers or dims != net.n_features:
            raise HrtemflowError(f"model bundle {d}: {OOD_FILE} describes layers {list(layers)} with {list(dims)} features, the "
                                 f"model has {list(net.feature_layers)} with {list(net.n_features)}; {refit}")
        if model.kind == "classification" and "energy_q90" not in stats:
            raise HrtemflowError(f"model bundle {d}: {OOD_FILE} has no energy statistics for this classifier; {refit}")
    return stats


def _read_table_images(table, size: int, max_images: int) -> np.ndarray:
    """Raw images of a data.Table (an evenly spaced subset when it is larger than max_images)."""
    from .learn import data  # noqa: PLC0415

    reader = data.feed_reader()
    idx = data.evenly_spaced(len(table), max_images)
    out = np.empty((len(idx), size, size), dtype=np.float32)
    shards = table.shard[idx]
    for s in np.unique(shards):
        m = np.flatnonzero(shards == s)
        arr = data.open_array(table.paths[int(s)], data.image_key(size), reader)
        out[m] = data.read_rows(arr, table.row[idx[m]])
    return out


def fit_bundle_ood(spec: Mapping[str, Any], model_dir: str | Path, *, base: str | Path = ".",
                   max_images: int = MAX_FIT_IMAGES) -> dict[str, Any]:
    """Fit and save the OOD stats of a trained bundle from its train spec's train and val splits."""
    from .learn.train import load_bundle as load_checked  # noqa: PLC0415
    from .learn.train import prepare  # noqa: PLC0415

    d = Path(model_dir)
    model, card = load_checked(d)
    if card["kind"] == "denoising":
        raise HrtemflowError(f"model bundle {d} is a denoiser: it has no OOD statistics (only classifiers and regressors)")
    if card["task"] != spec.get("task") or card["input_size"] != spec.get("image_size"):
        raise HrtemflowError(f"model bundle {d} is for task {card['task']!r} at {card['input_size']} px, the spec for "
                             f"{spec.get('task')!r} at {spec.get('image_size')} px; pass the matching spec")
    table, splits = prepare(spec, base)
    if table.info["dataset_sha256"] != card.get("dataset_sha256"):
        raise HrtemflowError(f"model bundle {d} was trained on another dataset than the spec's shards now hold; retrain it first")
    size = card["input_size"]
    stats = fit_ood_stats(model, _read_table_images(splits["train"], size, max_images),
                          _read_table_images(splits["val"], size, max_images), task=card["task"])
    stats["dataset_sha256"] = card["dataset_sha256"]
    save_ood_stats(stats, d)
    return stats


def vacuum_gate(size: int, stats: Mapping[str, Any] | None) -> float:
    """Structure ratio below which a window is called vacuum: consistent with white noise (1 + 3 x
    its spread 8/size), lowered to the validation images' 1st percentile when the training images
    themselves are that featureless (then the gate would flag in-distribution data)."""
    white = 1.0 + VACUUM_SIGMAS * 8.0 / size
    return white if stats is None else min(white, float(stats["ratio_q01"]))


def ood_scores(bundle: Bundle, outputs: np.ndarray, features: Sequence[np.ndarray], ratio: np.ndarray) -> dict[str, np.ndarray]:
    """Per window: the OOD score (0 = validation median, 1 = its 99th percentile), its parts, and
    the flag: "vacuum", "ood", "" (in distribution) or "?" (the bundle has no OOD statistics)."""
    n = len(ratio)
    stats = bundle.ood
    vacuum = ratio < vacuum_gate(bundle.size, stats)
    out: dict[str, np.ndarray] = {"structure_ratio": ratio, "vacuum": vacuum}
    if stats is None:
        out["score"] = np.full(n, np.nan)
        out["flag"] = np.where(vacuum, "vacuum", "?")
        return out
    out.update(_components(stats, outputs, features, bundle.kind))
    out["score"] = (out["combined"] - stats["score_q50"]) / max(stats["score_q"] - stats["score_q50"], 1e-9)
    out["flag"] = np.where(vacuum, "vacuum", np.where(out["score"] > 1.0, "ood", ""))
    return out


# ------------------------------------------------------------------------------------- regions


@dataclass(frozen=True)
class Region:
    """A box [x0, x1) x [y0, y1) in pixels of the original micrograph (x: column, y: row)."""

    name: str
    x0: int
    y0: int
    x1: int
    y1: int
    label: str = ""

    def check(self, shape: tuple[int, int], where: str) -> None:
        ny, nx = shape
        if not (0 <= self.x0 < self.x1 <= nx and 0 <= self.y0 < self.y1 <= ny):
            raise HrtemflowError(f"{where}: region {self.name} ({self.x0},{self.y0},{self.x1},{self.y1}) is not inside the image "
                                 f"of {nx} x {ny} px (x0 < x1 <= {nx}, y0 < y1 <= {ny}, in pixels of the original image)")


def parse_box(text: str, name: str = "box") -> Region:
    """'x0,y0,x1,y1' (pixels of the original image) -> Region."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        x0, y0, x1, y1 = (int(round(float(p))) for p in parts)
    except ValueError:
        raise HrtemflowError(f"--box {text!r}: expected four numbers x0,y0,x1,y1 (pixels of the original image)") from None
    if x1 <= x0 or y1 <= y0:
        raise HrtemflowError(f"--box {text!r}: needs x0 < x1 and y0 < y1")
    return Region(name, x0, y0, x1, y1)


def read_regions_csv(path: str | Path) -> list[Region]:
    """Regions from a CSV with columns x0,y0,x1,y1 (pixels of the original image) and optional label."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise HrtemflowError(f"--regions {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HrtemflowError(f"--regions {p} cannot be read as text ({exc})") from None
    reader = csv.DictReader(text.splitlines())
    cols = [c.strip().lower() for c in (reader.fieldnames or [])]
    missing = [c for c in ("x0", "y0", "x1", "y1") if c not in cols]
    if missing:
        raise HrtemflowError(f"--regions {p}: columns {', '.join(missing)} are missing; the header must name x0,y0,x1,y1 "
                             "(and optionally label)")
    regions = []
    for i, row in enumerate(reader, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        if not any(row.values()):
            continue
        try:
            x0, y0, x1, y1 = (int(round(float(row[c]))) for c in ("x0", "y0", "x1", "y1"))
        except ValueError:
            raise HrtemflowError(f"--regions {p}, line {i}: x0,y0,x1,y1 must be numbers, got "
                                 f"{[row[c] for c in ('x0', 'y0', 'x1', 'y1')]}") from None
        if x1 <= x0 or y1 <= y0:
            raise HrtemflowError(f"--regions {p}, line {i}: needs x0 < x1 and y0 < y1")
        regions.append(Region(f"r{len(regions):03d}", x0, y0, x1, y1, row.get("label", "")))
    if not regions:
        raise HrtemflowError(f"--regions {p} holds no region")
    return regions


def sliding_regions(shape: tuple[int, int], window: int, stride: int) -> list[Region]:
    ny, nx = shape
    return [Region(f"w{i:03d}", x, y, x + window, y + window)
            for i, (y, x) in enumerate((y, x) for y in window_starts(ny, window, stride) for x in window_starts(nx, window, stride))]


def _windows_in(lo: float, hi: float, length: int, window: int, stride: int) -> list[int]:
    """Window origins along one axis of the resampled image for a region [lo, hi): tiled inside it
    when it holds a window, else one window centred on it (clamped to the image)."""
    a, b = int(round(lo)), int(round(hi))
    if b - a >= window:
        return [a + s for s in window_starts(b - a, window, stride)]
    return [int(min(max(round(0.5 * (lo + hi) - 0.5 * window), 0), length - window))]


# ----------------------------------------------------------------------------------- analysis


def _check_fits(shape: tuple[int, int], pixel_A: float, rshape: tuple[int, int], b: Bundle, source: str) -> None:
    if min(rshape) < b.size:
        raise HrtemflowError(
            f"{source}: the image is {shape[1]} x {shape[0]} px at {pixel_A / 10:.4g} nm/px, i.e. {rshape[1]} x {rshape[0]} px at "
            f"the {b.task} model's {b.pixel_size_A / 10:.4g} nm/px: smaller than one {b.size} x {b.size} px window "
            f"({b.size * b.pixel_size_A / 10:.2f} nm). Pass a larger image or check --pixel-size")


def _predict_regions(b: Bundle, image: np.ndarray, pixel_yx: tuple[float, float], regions: Sequence[Region],
                     orig_pixel_A: float, stride_fraction: float, tta: bool) -> list[dict[str, Any]]:
    """One result dict per region for a classifier or regressor."""
    w = b.size
    stride = max(1, int(round(stride_fraction * w)))
    sy, sx = orig_pixel_A / pixel_yx[0], orig_pixel_A / pixel_yx[1]
    starts, owner = [], []
    for i, r in enumerate(regions):
        for y in _windows_in(r.y0 * sy, r.y1 * sy, image.shape[0], w, stride):
            for x in _windows_in(r.x0 * sx, r.x1 * sx, image.shape[1], w, stride):
                starts.append((y, x))
                owner.append(i)
    outputs, features, ratio = [], [], []
    for c in range(0, len(starts), WINDOW_CHUNK):  # bounded memory on large micrographs
        raw = np.stack([image[y:y + w, x:x + w] for y, x in starts[c:c + WINDOW_CHUNK]])
        res = run_net(b.net, normalise_windows(raw, b.net), tta=tta)
        outputs.append(res["outputs"])
        features.append(res["features"])
        ratio.append(structure_ratio(raw))
    res = {"outputs": np.concatenate(outputs), "features": [np.concatenate(f) for f in zip(*features)]}
    ood = ood_scores(b, res["outputs"], res["features"], np.concatenate(ratio))
    owner_arr = np.array(owner)
    results = []
    for i in range(len(regions)):
        m = np.flatnonzero(owner_arr == i)
        out: dict[str, Any] = {"windows": len(m)}
        flags = ood["flag"][m]
        n_vac, n_ood = int((flags == "vacuum").sum()), int((flags == "ood").sum())
        out["ood"] = ("vacuum" if n_vac * 2 > len(m) else "ood" if (n_vac + n_ood) * 2 > len(m)
                      else "?" if (flags == "?").all() else "")
        out["ood_score"] = _f(np.median(ood["score"][m]))
        for key in ("feature_z", "energy_z", "structure_ratio"):
            if key in ood:
                out[key] = _f(np.median(ood[key][m]))
        outputs = res["outputs"][m]  # (windows, G, k)
        if b.kind == "classification":
            t = b.temperature or 1.0
            probs = softmax(outputs / t).mean(axis=(0, 1))
            order = np.argsort(-probs)[:TOP_K]
            out["top"] = [(b.card["classes"][j], float(probs[j])) for j in order]
            out["probabilities"] = {c: float(p) for c, p in zip(b.card["classes"], probs)}
        else:
            out["values"] = _regression_values(b, outputs)
        results.append(out)
    return results


def _regression_values(b: Bundle, outputs: np.ndarray) -> dict[str, tuple[float, float, str]]:
    """Physical estimates (mean, spread, unit) from scaled outputs (windows, G, k): the spread is the
    standard deviation over symmetry elements and windows (TTA disagreement, not a calibrated error)."""
    offset, scale = card_scaling(b.card)
    y = (offset + scale * outputs).reshape(-1, len(offset))  # samples x targets
    samples = {("c12_nm" if k == "c12_magnitude_nm" else k): v for k, v in physical(b.task, y).items()}  # predict's name for |C12|
    out = {k: (_f(v.mean()), _f(v.std()), u) for k, (v, u) in samples.items()}
    if b.task == "aberrations":
        c, s = y[:, 1], y[:, 2]
        two_phi = np.arctan2(s.mean(), c.mean())
        resultant = abs(np.exp(1j * np.arctan2(s, c)).mean())  # circular spread of 2 phi12
        spread = np.sqrt(max(0.0, -2.0 * np.log(max(resultant, 1e-12))))
        out["phi12_deg"] = (_f(np.degrees(two_phi / 2) % 180), _f(np.degrees(spread / 2)), "deg")
    return out


def _f(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def denoise(b: Bundle, image: np.ndarray, stride_fraction: float = 0.5) -> np.ndarray:
    """The denoiser over overlapping tiles, blended with sin^2 weights (a partition of unity at half
    overlap). Each tile's output (normalised) is mapped back to the input's intensity units by the
    least-squares gain and offset onto the input tile: noise is uncorrelated with the output, so the
    fit recovers the clean signal's scale."""
    import keras  # noqa: PLC0415

    w = b.size
    stride = max(1, int(round(stride_fraction * w)))
    starts = [(y, x) for y in window_starts(image.shape[0], w, stride) for x in window_starts(image.shape[1], w, stride)]
    ramp = np.sin(np.pi * (np.arange(w) + 0.5) / w) ** 2
    weight = np.outer(ramp, ramp)
    acc = np.zeros(image.shape, dtype=np.float64)
    norm = np.zeros(image.shape, dtype=np.float64)
    for c in range(0, len(starts), WINDOW_CHUNK):
        chunk = starts[c:c + WINDOW_CHUNK]
        raw = np.stack([image[y:y + w, x:x + w] for y, x in chunk]).astype(np.float64)
        x = normalise_windows(raw, b.net)[..., None]
        batch = max(1, _IMG_BYTES_PER_BATCH // (4 * w * w))
        pred = np.concatenate([keras.ops.convert_to_numpy(b.model(x[i:i + batch], training=False))[..., 0]
                               for i in range(0, len(x), batch)]).astype(np.float64)
        pred = np.swapaxes(pred, -1, -2)  # back to [row, col]
        for (y, x0), p, r in zip(chunk, pred, raw):
            a = np.stack([p.ravel(), np.ones(p.size)], axis=1)
            coef, *_ = np.linalg.lstsq(a, r.ravel(), rcond=None)
            acc[y:y + w, x0:x0 + w] += weight * (coef[0] * p + coef[1])
            norm[y:y + w, x0:x0 + w] += weight
    return (acc / norm).astype(np.float32)


# ------------------------------------------------------------------------------------- outputs


def write_calibrated_tiff(path: Path, image: np.ndarray, pixel_yx_A: tuple[float, float]) -> None:
    """float32 ImageJ TIFF with resolution in pixels per nm and unit 'nm' (hrtemflow.readers reads it)."""
    import tifffile  # noqa: PLC0415

    py, px = pixel_yx_A[0] / 10.0, pixel_yx_A[1] / 10.0
    with atomic_file(path, suffix=".tif") as tmp:
        tifffile.imwrite(tmp, np.asarray(image, dtype=np.float32), imagej=True, resolution=(1.0 / px, 1.0 / py),
                         metadata={"unit": "nm"})


def _display_range(image: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(image, [0.5, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1.0)


def write_preview(path: Path, image: np.ndarray) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    lo, hi = _display_range(image)
    with atomic_file(path, suffix=".png") as tmp:
        plt.imsave(tmp, image, cmap="gray", vmin=lo, vmax=hi, format="png")


def write_overlay(path: Path, image: np.ndarray, regions: Sequence[Region], results: Sequence[Mapping[str, Any]], task: str,
                  cells: Sequence[tuple[int, int, int, int]] | None = None) -> None:
    """The micrograph with each region's top-1 label; OOD regions grey and hatched, vacuum dotted.

    `cells` (sliding windows): draw each window's central stride cell instead of the overlapping boxes.
    """
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.patches import Patch, Rectangle  # noqa: PLC0415

    lo, hi = _display_range(image)
    ny, nx = image.shape
    inches = float(np.clip(max(ny, nx) / 64, 3, 8))
    fig = plt.figure(figsize=(inches * nx / max(ny, nx) + 2, inches * ny / max(ny, nx) + 0.5), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi)
    labels = [_top1(r) for r in results]
    names = sorted({lab for lab, _ in labels if lab})
    colours = {n: plt.get_cmap("tab10")(i % 10) for i, n in enumerate(names)}
    text = len(regions) <= 60
    for i, (reg, (lab, txt)) in enumerate(zip(regions, labels)):
        x0, y0, x1, y1 = cells[i] if cells else (reg.x0, reg.y0, reg.x1, reg.y1)
        flag = results[i].get("ood", "")
        if flag in ("ood", "vacuum"):
            style = {"edgecolor": "0.6", "facecolor": (0.5, 0.5, 0.5, 0.25 if cells else 0.0),
                     "hatch": "xx" if flag == "ood" else "..", "linestyle": "--", "linewidth": 0.8}
        else:
            c = colours.get(lab, (1, 1, 0, 1))
            style = {"edgecolor": c, "facecolor": (*c[:3], 0.3 if cells else 0.0), "linewidth": 1.2}
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, **style))
        if text:
            shown = flag.upper() if flag in ("ood", "vacuum") else txt
            ax.text(x0 + 1, y0 + 1, f"{reg.name}: {shown}", fontsize=6, va="top", color="white",
                    bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "linewidth": 0})
    handles = [Patch(facecolor=colours[n], label=n) for n in names]
    handles += [Patch(facecolor="0.7", hatch="xx", label="out of distribution"), Patch(facecolor="0.7", hatch="..", label="vacuum")]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, title=task)
    ax.set_title(f"{task}: top-1 per region")
    ax.set_axis_off()
    with atomic_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _top1(result: Mapping[str, Any]) -> tuple[str, str]:
    if "top" in result:
        c, p = result["top"][0]
        return c, f"{c} {p:.2f}"
    name, (v, s, u) = next(iter(result["values"].items()))
    return "", f"{name} {v:.3g}" if v is not None else name


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:.4g}"
    return str(v)


def table_rows(regions: Sequence[Region], per_task: Mapping[str, Sequence[Mapping[str, Any]]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the terminal table: region, top-3 with probabilities, OOD flag, regressions."""
    header = ["region"]
    rows = [[r.name + (f" ({r.label})" if r.label else "")] for r in regions]
    for task, results in per_task.items():
        if "top" in results[0]:
            k = len(results[0]["top"])
            header += [h for j in range(1, k + 1) for h in (f"{task} {j}", f"p{j}")]
            for row, res in zip(rows, results):
                row += [s for c, p in res["top"] for s in (c, f"{p:.2f}")]
        else:
            header += list(res_name for res_name in results[0]["values"])
            for row, res in zip(rows, results):
                row += [f"{_fmt(v)}±{_fmt(s, 2)}" for v, s, _ in res["values"].values()]
        header.append(f"{task} OOD" if len(per_task) > 1 else "OOD")
        for row, res in zip(rows, results):
            row.append(res["ood"] or "no")
    return header, rows


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], max_rows: int | None = None) -> str:
    shown = rows if max_rows is None or len(rows) <= max_rows else rows[:max_rows]
    widths = [max(len(h), *(len(r[i]) for r in shown)) if shown else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in shown]
    if len(shown) < len(rows):
        lines.append(f"... {len(rows) - len(shown)} more rows in predictions.csv")
    return "\n".join(lines)


def _csv_rows(regions: Sequence[Region], per_task: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for i, r in enumerate(regions):
        row: dict[str, Any] = {"region": r.name, "label": r.label, "x0": r.x0, "y0": r.y0, "x1": r.x1, "y1": r.y1}
        for task, results in per_task.items():
            res = results[i]
            if "top" in res:
                for j, (c, p) in enumerate(res["top"], start=1):
                    row[f"{task}_{j}"], row[f"{task}_p{j}"] = c, round(p, 6)
            else:
                for name, (v, s, _u) in res["values"].items():
                    row[f"{task}_{name}"], row[f"{task}_{name}_std"] = v, s
            row[f"{task}_ood"] = res["ood"]
            for key in ("ood_score", "feature_z", "energy_z", "structure_ratio"):
                if key in res:
                    row[f"{task}_{key}"] = res[key]
        out.append(row)
    return out


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    import io  # noqa: PLC0415

    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r.get(k) for k in cols})
    write_text_atomic(path, buf.getvalue())


# ------------------------------------------------------------------------------------- driver


@dataclass(frozen=True)
class Options:
    """What `hrtemflow predict` was asked to do, besides inputs and bundles."""

    pixel_size_nm: float | None = None
    frames: str = "refuse"
    regions: tuple[Region, ...] | None = None
    window_px: int | None = None
    stride_fraction: float = DEFAULT_STRIDE
    tta: bool = True
    table_rows: int = 40


def check_options(opt: Options) -> None:
    if not (0 < opt.stride_fraction <= 1):
        raise HrtemflowError(f"--stride-fraction must be in (0, 1], got {opt.stride_fraction}")
    if opt.window_px is not None and opt.window_px < 8:
        raise HrtemflowError(f"--window-px must be at least 8, got {opt.window_px}")


def analyse_micrograph(mic, bundles: Sequence[Bundle], opt: Options, out_dir: Path, *, echo=print) -> dict[str, Any]:
    """Predict every region of one micrograph with every bundle; write its outputs into out_dir."""
    source = mic.source + (f" (frame {mic.frame})" if mic.frame is not None else "")
    image, px = mic.data, float(mic.pixel_size_A)
    resampled: dict[float, tuple[np.ndarray, tuple[float, float]]] = {}
    for b in bundles:
        if b.pixel_size_A not in resampled:
            resampled[b.pixel_size_A] = resample(image, px, b.pixel_size_A)
        _check_fits(image.shape, px, resampled[b.pixel_size_A][0].shape, b, source)
    predictors = [b for b in bundles if b.kind != "denoising"]
    cells = None
    if opt.regions is not None:
        regions = list(opt.regions)
        for r in regions:
            r.check(image.shape, source)
    elif predictors:
        ref = max(predictors, key=lambda b: (opt.window_px or b.size) * b.pixel_size_A)
        window = max(1, int(round((opt.window_px or ref.size) * ref.pixel_size_A / px)))
        window = min(window, *image.shape)
        stride = max(1, int(round(opt.stride_fraction * window)))
        regions = sliding_regions(image.shape, window, stride)
        half = 0.5 * min(stride, window)
        cells = [(int(round((r.x0 + r.x1) / 2 - half)), int(round((r.y0 + r.y1) / 2 - half)),
                  int(round((r.x0 + r.x1) / 2 + half)), int(round((r.y0 + r.y1) / 2 + half))) for r in regions]
    else:
        regions = []
    out_dir.mkdir(parents=True, exist_ok=True)
    per_task: dict[str, list[dict[str, Any]]] = {}
    record: dict[str, Any] = {"source": mic.source, "frame": mic.frame, "out_dir": str(out_dir), "pixel_size_nm": px / 10,
                              "shape": list(image.shape), "calibration": mic.metadata.get("calibration"), "tasks": {}}
    for b in predictors:
        img_b, pyx = resampled[b.pixel_size_A]
        key = _task_key(b, bundles)
        per_task[key] = _predict_regions(b, img_b, pyx, regions, px, opt.stride_fraction, opt.tta)
        record["tasks"][key] = _task_summary(b, per_task[key], pyx)
        write_overlay(out_dir / f"overlay_{key}.png", image, regions, per_task[key], key, cells)
    for b in bundles:
        if b.kind != "denoising":
            continue
        img_b, pyx = resampled[b.pixel_size_A]
        key = _task_key(b, bundles)
        stem = "denoised" if sum(x.kind == "denoising" for x in bundles) == 1 else f"denoised_{key}"
        den = denoise(b, img_b, opt.stride_fraction)
        write_calibrated_tiff(out_dir / f"{stem}.tif", den, pyx)
        write_preview(out_dir / f"{stem}.png", den)
        record["tasks"][key] = {"kind": "denoising", "bundle": str(b.path), "tiff": str(out_dir / f"{stem}.tif"),
                                "pixel_size_nm": [pyx[0] / 10, pyx[1] / 10], "shape": list(den.shape)}
    if per_task:
        rows = _csv_rows(regions, per_task)
        _write_csv(out_dir / "predictions.csv", rows)
        write_json_atomic(out_dir / "predictions.json", _clean_json({
            "source": mic.source, "frame": mic.frame, "pixel_size_nm": px / 10, "regions_from": "user" if opt.regions else "sliding window",
            "orientation": "x = column (to the right), y = row (downwards); angles from +x towards +y",
            "bundles": {_task_key(b, bundles): _bundle_info(b) for b in predictors},
            "regions": [{"region": r.name, "label": r.label, "box_xyxy": [r.x0, r.y0, r.x1, r.y1],
                         **{k: _jsonable(per_task[k][i]) for k in per_task}} for i, r in enumerate(regions)]}))
        header, trows = table_rows(regions, per_task)
        echo(f"\n{source}: {len(regions)} region(s) at {px / 10:.4g} nm/px")
        echo(format_table(header, trows, opt.table_rows))
    record["n_regions"] = len(regions)
    record["status"] = "ok"
    return record


def _task_key(b: Bundle, bundles: Sequence[Bundle]) -> str:
    """The task name, or task@folder when two bundles share a task."""
    return b.task if sum(x.task == b.task for x in bundles) == 1 else f"{b.task}@{b.path.name}"


def _bundle_info(b: Bundle) -> dict[str, Any]:
    info: dict[str, Any] = {"path": str(b.path), "task": b.task, "kind": b.kind, "input_size": b.size,
                            "pixel_size_nm": b.pixel_size_A / 10, "dataset_sha256": b.card.get("dataset_sha256"),
                            "ood_stats": b.ood is not None,
                            # what its training images were taken with: the micrographs it is for (None: an older card)
                            "trained_on": b.card.get("imaging")}
    if b.kind == "classification":
        info["temperature"], info["temperature_source"] = b.temperature, b.temperature_source
    if b.ood is not None:
        info["ood_threshold"] = "score > 1: beyond the validation images' 99th percentile"
    if b.kind != "denoising":
        info["vacuum_gate"] = vacuum_gate(b.size, b.ood)
    return info


def _jsonable(res: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(res)
    if "top" in out:
        out["top"] = [{"class": c, "probability": p} for c, p in out["top"]]
    if "values" in out:
        out["values"] = {k: {"value": v, "std": s, "unit": u} for k, (v, s, u) in out["values"].items()}
    return out


def _task_summary(b: Bundle, results: Sequence[Mapping[str, Any]], pyx: tuple[float, float]) -> dict[str, Any]:
    flags = [r["ood"] for r in results]
    keep = [r for r in results if r["ood"] == ""]
    s: dict[str, Any] = {"kind": b.kind, "bundle": str(b.path), "n_ood": flags.count("ood"), "n_vacuum": flags.count("vacuum"),
                         "n_unchecked": flags.count("?"), "n_in_distribution": len(keep), "pixel_size_nm": [pyx[0] / 10, pyx[1] / 10]}
    if b.kind == "classification":
        counts: dict[str, int] = {}
        for r in keep:
            counts[r["top"][0][0]] = counts.get(r["top"][0][0], 0) + 1
        s["top1_counts_in_distribution"] = counts
        s["majority"] = max(counts, key=counts.get) if counts else None
    else:
        names = list(results[0]["values"]) if results else []
        s["mean_in_distribution"] = {n: _f(np.mean([r["values"][n][0] for r in keep])) if keep else None for n in names}
    return s


def output_names(files: Sequence[Path]) -> dict[Path, str]:
    """Output folder name per input file: its stem, with the extension added when two stems clash."""
    stems = [f.stem for f in files]
    return {f: (f.stem if stems.count(f.stem) == 1 else f"{f.stem}_{f.suffix.lstrip('.').lower()}") for f in files}


def predict_path(inputs: str | Path, bundle_dirs: Sequence[str | Path], out: str | Path, opt: Options, *,
                 temperatures: Mapping[str, float] | None = None, progress: bool = True, echo=print) -> dict[str, Any]:
    """Run every bundle on a micrograph file or on every supported file of a folder.

    Writes <out>/<stem>/ per micrograph and <out>/summary.json + summary.csv. A single file's error
    is raised; in a folder, a file that fails is recorded in the summary and the others go on
    (raised only if every file failed).
    """
    from tqdm import tqdm  # noqa: PLC0415

    from .readers import list_micrographs, read_micrograph  # noqa: PLC0415

    check_options(opt)
    src = Path(inputs)
    if not src.exists():
        raise HrtemflowError(f"{src} does not exist: pass a micrograph file or a folder of them")
    files = list_micrographs(src) if src.is_dir() else [src]
    if not files:
        raise HrtemflowError(f"{src} holds no supported micrograph (extensions: .dm3 .dm4 .emd .ser .emi .mrc .tif .tiff .png .npy)")
    temps = dict(temperatures or {})
    bundles = []
    for d in bundle_dirs:
        card_task = _peek_task(Path(d))
        bundles.append(load_bundle(d, temperature=temps.get(card_task, temps.get("*"))))
    for b in bundles:
        for note in b.notes:
            echo(f"warning: {note}", file=sys.stderr)
    out = Path(out)
    names = output_names(files)
    records = []
    bar = tqdm(files, desc="predict", unit="file", disable=not progress or len(files) < 2, file=sys.stderr)
    for f in bar:
        try:
            mics = read_micrograph(f, pixel_size_nm=opt.pixel_size_nm, frames=opt.frames)
            for mic in mics:
                sub = names[f] if mic.frame is None else f"{names[f]}_f{mic.frame:03d}"
                records.append(analyse_micrograph(mic, bundles, opt, out / sub, echo=echo))
        except HrtemflowError as exc:
            if not src.is_dir():
                raise
            echo(f"warning: file skipped: {exc}", file=sys.stderr)
            records.append({"source": str(f), "frame": None, "status": "failed", "reason": str(exc)})
    summary = {"input": str(src), "n_files": len(files), "n_micrographs": sum(r["status"] == "ok" for r in records),
               "n_failed": sum(r["status"] == "failed" for r in records),
               "bundles": {_task_key(b, bundles): _bundle_info(b) for b in bundles}, "micrographs": records}
    write_json_atomic(out / "summary.json", _clean_json(summary))
    _write_csv(out / "summary.csv", [_summary_row(r) for r in records])
    if summary["n_micrographs"] == 0:
        raise HrtemflowError(f"no micrograph of {src} could be analysed ({summary['n_failed']} failed; reasons in {out / 'summary.json'})")
    return summary


def _peek_task(d: Path) -> str | None:
    try:
        return json.loads((d / "card.json").read_text(encoding="utf-8")).get("task")
    except (OSError, ValueError, AttributeError):
        return None


def _summary_row(r: Mapping[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {k: r.get(k) for k in ("source", "frame", "status", "reason", "out_dir", "pixel_size_nm", "n_regions")}
    for task, s in (r.get("tasks") or {}).items():
        if s["kind"] == "classification":
            row[f"{task}_majority"] = s["majority"]
        elif s["kind"] == "regression":
            row.update({f"{task}_{k}": v for k, v in s["mean_in_distribution"].items()})
        if s["kind"] != "denoising":
            row[f"{task}_n_ood"], row[f"{task}_n_vacuum"] = s["n_ood"], s["n_vacuum"]
        else:
            row[f"{task}_tiff"] = s["tiff"]
    return row


def _clean_json(x: Any) -> Any:
    """Strict JSON: NaN/inf to None, numpy scalars to Python."""
    if isinstance(x, dict):
        return {str(k): _clean_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean_json(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
