"""Out-of-distribution statistics of a bundle (`ood.npz`) and the per-window OOD score and vacuum gate.

Per region `hrtemflow predict` reports:
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
The statistics live in the bundle as `ood.npz` (plain arrays, loaded without pickle), bound to its
model.keras by hash; `hrtemflow fit-ood` fits them (`learn.bundle.fit_bundle_ood`), as the
workflow's `ood` rule does after training.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.atomic import atomic_file
from ..core.errors import HrtemflowError
from .inference import Net, energy, make_net, run_net
from .preprocess import normalise

OOD_FILE = "ood.npz"
OOD_VERSION = 1
OOD_QUANTILE = 0.99
#: white noise gives a structure ratio of 1 with a spread of about 8/n on n x n windows
#: (0.25 at 32 px, 0.125 at 64 px: measured); the vacuum gate sits 3 spreads above 1
VACUUM_SIGMAS = 3.0
MAX_FIT_IMAGES = (
    5000  # per split: plenty for a covariance of a few hundred features, and it bounds the fit's time and memory
)


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


def _components(
    stats: Mapping[str, Any], outputs: np.ndarray, features: Sequence[np.ndarray], kind: str
) -> dict[str, np.ndarray]:
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


def fit_ood_stats(
    model,
    images: np.ndarray,
    val_images: np.ndarray | None = None,
    *,
    task: str = "",
    tta: bool = True,
    quantile: float = OOD_QUANTILE,
) -> dict[str, Any]:
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

    kind = "classification" if "logits" in [layer.name for layer in model.layers] else "regression"
    net = make_net(model, kind, task)
    if not net.feature_layers:
        raise HrtemflowError("fit_ood_stats: the model has no pooling layers to take features from")
    if len(images) < 2:
        raise HrtemflowError("fit_ood_stats: need at least 2 training images")
    val_images = images if val_images is None else val_images

    def norm(a: np.ndarray) -> np.ndarray:
        return normalise(np.asarray(a, dtype=np.float32), eps=net.eps, clip=net.clip)

    stats: dict[str, Any] = {
        "version": OOD_VERSION,
        "feature_layers": np.array(net.feature_layers),
        "tta": bool(tta),
        "quantile": quantile,
        "n_train": len(images),
        "n_val": len(val_images),
        "backend": keras.backend.backend(),
    }
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


def load_ood_stats(
    bundle_dir: str | Path, *, net: Net | None = None, missing_ok: bool = False
) -> dict[str, Any] | None:
    """Read `ood.npz` (allow_pickle=False); refuse one made for another model or version, or (given the
    bundle's `net`) for other feature layers."""
    d = Path(bundle_dir)
    path = d / OOD_FILE
    refit = f"refit it with `hrtemflow fit-ood SPEC --model-dir {d}`"
    if not path.is_file():
        if missing_ok:
            return None
        raise HrtemflowError(
            f"model bundle {d}: {OOD_FILE} is missing; fit it with `hrtemflow fit-ood SPEC --model-dir {d}`"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            stats = {k: (z[k].item() if z[k].ndim == 0 else z[k]) for k in z.files}
    except Exception as exc:  # noqa: BLE001 - zip/format errors of a damaged file
        raise HrtemflowError(
            f"model bundle {d}: {OOD_FILE} cannot be read ({type(exc).__name__}: {exc}); {refit}"
        ) from None
    need = ("version", "feature_layers", "score_q50", "score_q", "ratio_q01", "model_sha256")
    if missing := [k for k in need if k not in stats]:
        raise HrtemflowError(f"model bundle {d}: {OOD_FILE} lacks {', '.join(missing)}; {refit}")
    if int(stats["version"]) != OOD_VERSION:
        raise HrtemflowError(
            f"model bundle {d}: {OOD_FILE} is version {stats['version']}, this hrtemflow reads {OOD_VERSION}; {refit}"
        )
    if stats["model_sha256"] != _model_sha256(d):
        raise HrtemflowError(
            f"model bundle {d}: {OOD_FILE} was fitted for another model.keras (was the model retrained?); {refit}"
        )
    layers = tuple(str(x) for x in np.atleast_1d(stats["feature_layers"]))
    stats["feature_layers"] = layers
    if net is not None:
        dims = tuple(
            int(np.shape(stats.get(f"mean_{i}", ()))[0]) if f"mean_{i}" in stats else -1 for i in range(len(layers))
        )
        if layers != net.feature_layers or dims != net.n_features:
            raise HrtemflowError(
                f"model bundle {d}: {OOD_FILE} describes layers {list(layers)} with {list(dims)} features, the "
                f"model has {list(net.feature_layers)} with {list(net.n_features)}; {refit}"
            )
        if net.kind == "classification" and "energy_q90" not in stats:
            raise HrtemflowError(f"model bundle {d}: {OOD_FILE} has no energy statistics for this classifier; {refit}")
    return stats


def vacuum_gate(size: int, stats: Mapping[str, Any] | None) -> float:
    """Structure ratio below which a window is called vacuum: consistent with white noise (1 + 3 x
    its spread 8/size), lowered to the validation images' 1st percentile when the training images
    themselves are that featureless (then the gate would flag in-distribution data)."""
    white = 1.0 + VACUUM_SIGMAS * 8.0 / size
    return white if stats is None else min(white, float(stats["ratio_q01"]))


def ood_scores(
    stats: Mapping[str, Any] | None,
    kind: str,
    size: int,
    outputs: np.ndarray,
    features: Sequence[np.ndarray],
    ratio: np.ndarray,
) -> dict[str, np.ndarray]:
    """Per window: the OOD score (0 = validation median, 1 = its 99th percentile), its parts, and
    the flag: "vacuum", "ood", "" (in distribution) or "?" (the bundle has no OOD statistics `stats`)."""
    n = len(ratio)
    vacuum = ratio < vacuum_gate(size, stats)
    out: dict[str, np.ndarray] = {"structure_ratio": ratio, "vacuum": vacuum}
    if stats is None:
        out["score"] = np.full(n, np.nan)
        out["flag"] = np.where(vacuum, "vacuum", "?")
        return out
    out.update(_components(stats, outputs, features, kind))
    out["score"] = (out["combined"] - stats["score_q50"]) / max(stats["score_q"] - stats["score_q50"], 1e-9)
    out["flag"] = np.where(vacuum, "vacuum", np.where(out["score"] > 1.0, "ood", ""))
    return out


def majority_flag(flags: np.ndarray) -> str:
    """One flag for a group of windows (a region, a tube) from theirs: "vacuum" when most are vacuum, "ood" when
    most are vacuum or out of distribution, "?" when none could be checked, else "" (in distribution)."""
    flags = np.asarray(flags)
    n_vac, n_ood = int((flags == "vacuum").sum()), int((flags == "ood").sum())
    if 2 * n_vac > len(flags):
        return "vacuum"
    if 2 * (n_vac + n_ood) > len(flags):
        return "ood"
    return "?" if (flags == "?").all() else ""
