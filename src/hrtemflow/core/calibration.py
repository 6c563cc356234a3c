"""Expected calibration error, and what it would read on the same test set if the answer were calibrated.

Why the second: ECE over a finite test set is biased upwards. Each confidence bin's accuracy is a
binomial estimate, so even an answer whose probabilities are exactly right reads an ECE of the order
of sqrt(p(1-p)/n_bin) per bin. Per window (thousands of images) this floor is a fraction of a percent;
per tube or per micrograph (tens to hundreds) it is several percent: 142 tubes with top-1
probabilities around 0.9 read about 5 % when perfectly calibrated. A measured ECE is therefore
reported with this floor, the ECE a calibrated answer with the same top-1 probabilities would read on
the same number of samples (consistency resampling, Bröcker & Smith 2007: the correctness of each
sample is redrawn as a coin with its own top-1 probability), and the share of such redraws that read
at least the measured ECE (a p-value: small means miscalibrated beyond what the sample size explains).

In `core`, not `learn`: the evaluation, predict's per-tube calibration, the benchmarks and the independent
scorer (which must import no stage) all report this one ECE; numpy only, no network loaded.
"""

from __future__ import annotations

import numpy as np

ECE_BINS = 15
#: redraws of the calibrated null (the p-value's resolution is 1 / NULL_RESAMPLES)
NULL_RESAMPLES = 2000


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> tuple[float, dict]:
    """ECE over equal-width confidence bins, and the reliability table for the diagram."""
    probs = np.asarray(probs, dtype=np.float64)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == np.asarray(labels)).astype(float)
    ece, table = _binned(conf, correct, bins)
    return ece, table


def top1_ece(conf: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """The same ECE from top-1 probabilities and whether each top-1 was right (NaN when empty)."""
    conf = np.asarray(conf, dtype=np.float64)
    if conf.size == 0:
        return float("nan")
    return _binned(conf, np.asarray(correct, dtype=float), bins)[0]


def _binned(conf: np.ndarray, correct: np.ndarray, bins: int) -> tuple[float, dict]:
    which = np.minimum((conf * bins).astype(int), bins - 1)
    count = np.bincount(which, minlength=bins)
    acc = np.bincount(which, weights=correct, minlength=bins)
    mean_conf = np.bincount(which, weights=conf, minlength=bins)
    nz = count > 0
    acc[nz] /= count[nz]
    mean_conf[nz] /= count[nz]
    ece = float(np.sum(count[nz] / len(conf) * np.abs(acc[nz] - mean_conf[nz])))
    return ece, {"count": count.tolist(), "accuracy": acc.tolist(), "confidence": mean_conf.tolist()}


def calibrated_ece_draws(
    conf: np.ndarray, bins: int = ECE_BINS, *, resamples: int = NULL_RESAMPLES, seed: int = 0
) -> np.ndarray:
    """ECEs that an answer with exactly these top-1 probabilities, and calibrated, reads on this many
    samples: each draw redraws every sample's correctness as a coin of its own probability."""
    conf = np.asarray(conf, dtype=np.float64)
    if conf.size == 0:
        return np.full(resamples, np.nan)
    rng = np.random.default_rng(seed)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    conf_sum = np.bincount(which, weights=conf, minlength=bins)
    onehot = np.zeros((conf.size, bins))
    onehot[np.arange(conf.size), which] = 1.0
    out = np.empty(resamples)
    block = max(1, 2_000_000 // conf.size)
    for start in range(0, resamples, block):
        k = min(block, resamples - start)
        hits = (rng.random((k, conf.size)) < conf).astype(float) @ onehot  # (k, bins) right answers per bin
        out[start : start + k] = np.abs(hits - conf_sum).sum(axis=1) / conf.size
    return out


def calibration_check(
    conf: np.ndarray,
    correct: np.ndarray,
    bins: int = ECE_BINS,
    *,
    resamples: int = NULL_RESAMPLES,
    seed: int = 0,
) -> dict[str, float | int | None]:
    """The measured ECE with its calibrated floor on the same samples: the mean and 95th percentile of
    `calibrated_ece_draws`, and the share of those draws at or above the measured ECE (p-value)."""
    conf = np.asarray(conf, dtype=np.float64)
    if conf.size == 0:
        return {"n": 0, "ece": None, "ece_if_calibrated": None, "ece_if_calibrated_p95": None, "p_value": None}
    measured = top1_ece(conf, correct, bins)
    null = calibrated_ece_draws(conf, bins, resamples=resamples, seed=seed)
    return {
        "n": int(conf.size),
        "ece": measured,
        "ece_if_calibrated": float(null.mean()),
        "ece_if_calibrated_p95": float(np.percentile(null, 95)),
        "p_value": float((null >= measured - 1e-12).mean()),
    }
