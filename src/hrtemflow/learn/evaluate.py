"""Evaluation of a model bundle on the test split: metrics.json in a report folder, figures in its figures/.

Classification: accuracy, top-3, per-class recall, confusion matrix, expected calibration error
before and after temperature scaling (T fitted on the validation split), accuracy by dose, defocus
and astigmatism, and accuracy over a view's or a structure's images combined. Regression: MAE and
RMSE per target in physical units, and the MAE by the same conditions. Denoising: PSNR and SSIM of
the network against three classical baselines run in the same process on the same test images.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ..core.atomic import write_json_atomic
from ..core.calibration import ECE_BINS, expected_calibration_error
from ..core.errors import HrtemflowError
from ..core.ids import families_of, parse_chirality, views_of
from ..core.tasks import TASKS
from ..core.tubes import chirality_difference
from ..store import layout
from . import baselines
from .baselines import match_affine
from .bundle import load_checked
from .card import ModelCard
from .evaluate_figures import (
    FIGURE_DIR,
    FIGURES,
    calibration_figure,
    conditions_figure,
    confusion_figure,
    denoise_figure,
    scatter_figure,
)
from .feed import ShardFeed
from .inference import feed_outputs, fit_temperature, make_net, nll, probabilities
from .table import Table, evenly_spaced, prepare

CI_HOW = "95 % percentile interval, test structures resampled with replacement (all images of a structure together)"
CI_RESAMPLES = 2000
#: imaging conditions a report breaks its accuracy (or a regressor's error) down by:
#: shard parameter, label, conversion to that unit
CONDITIONS = {
    "dose": ("dose_e_per_A2", "dose (e-/Å²)", lambda v: v),
    "defocus": ("defocus_A", "|defocus| (nm)", lambda v: np.abs(v) / 10.0),
    "c12": ("c12_A", "C12 (nm)", lambda v: np.abs(v) / 10.0),
}
CONDITION_BINS = 4


def structure_ci(
    values: np.ndarray, sample_id: np.ndarray, stat=np.mean, *, resamples: int = CI_RESAMPLES, seed: int = 0
) -> list[float]:
    """95 % percentile interval of `stat` over images, bootstrapped by structure.

    The images of one structure (its views and optics variants) share their errors, so resampling
    images would make a test split of 144 tubes look like one of 2,304 independent draws and the
    interval far too narrow: whole structures are drawn with replacement instead.
    """
    values = np.asarray(values, dtype=np.float64)
    _, inverse = np.unique(np.asarray(sample_id), return_inverse=True)
    members = np.split(np.argsort(inverse, kind="stable"), np.cumsum(np.bincount(inverse))[:-1])
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(members), size=(resamples, len(members)))
    stats = np.array([stat(values[np.concatenate([members[j] for j in d])]) for d in draws])
    return [_num(np.percentile(stats, 2.5)), _num(np.percentile(stats, 97.5))]


def _num(x: Any) -> float | None:
    """A JSON-safe float (None for NaN/inf: metrics.json is strict JSON)."""
    x = float(x)
    return x if np.isfinite(x) else None


# ------------------------------------------------------------------------------ classification


def _outputs(model, card: ModelCard, feed: ShardFeed) -> np.ndarray:
    """Raw outputs (logits or scaled targets) per test image and symmetry element, (N, 8, k), through
    the same forward pass as `hrtemflow predict` (element 0 is the image as it is)."""
    return feed_outputs(make_net(model, card.kind, card.task, card.normalisation), feed)


def topk_hits(probs: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Per image: whether the true class is among the k most probable."""
    return (np.argsort(-probs, axis=1)[:, :k] == y[:, None]).any(axis=1)


def _class_metrics(logits: np.ndarray, y: np.ndarray, t: float, n: int) -> tuple[dict, np.ndarray, tuple[dict, dict]]:
    """Metrics of (averaged) logits at temperature t; also the predictions and the reliability tables."""
    before, after = probabilities(logits), probabilities(logits, t)
    k = min(3, n)
    ece_before, rel_before = expected_calibration_error(before, y)
    ece_after, rel_after = expected_calibration_error(after, y)
    metrics = {
        "accuracy": _num((before.argmax(axis=1) == y).mean()),
        f"top{k}_accuracy": _num(topk_hits(before, y, k).mean()),
        "temperature": _num(t),
        "ece_before": _num(ece_before),
        "ece_after": _num(ece_after),
        "nll_before": _num(nll(logits, y)),
        "nll_after": _num(nll(logits, y, t)),
    }
    return metrics, before.argmax(axis=1), (rel_before, rel_after)


def _condition_bins(table: Table) -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
    """Per condition: its label, the quartile edges over the test images and each image's bin."""
    out = {}
    for key, (param, label, to_unit) in CONDITIONS.items():
        v = to_unit(shard_param(table, param))
        edges = np.unique(np.quantile(v, np.linspace(0, 1, CONDITION_BINS + 1)))
        if len(edges) < 2:  # one value for every image (a fixed dose, say): a single bin
            edges = np.array([v.min(), v.max()])
        out[key] = (label, edges, np.clip(np.searchsorted(edges, v, side="right") - 1, 0, len(edges) - 2))
    return out


def by_condition(values: np.ndarray, table: Table, metric: str = "accuracy", conditions: dict | None = None) -> dict:
    """The mean of per-image `values` (right or wrong; an absolute error) in quartiles of dose,
    |defocus| and C12 over the test images, each bin with its interval, stored under `metric`.
    `conditions` (from `_condition_bins`) saves reading the shards again for another target.

    One number hides where a network can be trusted; a microscopist chooses the dose and the
    focus, so the report says how accuracy or error moves with them.
    """
    values = np.asarray(values, dtype=np.float64)
    out = {}
    for key, (label, edges, which) in (conditions or _condition_bins(table)).items():
        bins = []
        for b in range(len(edges) - 1):
            m = which == b
            if m.any():
                bins.append(
                    {
                        "range": [_num(edges[b]), _num(edges[b + 1])],
                        "n_images": int(m.sum()),
                        "n_structures": int(len(np.unique(table.sample_id[m]))),
                        metric: _num(values[m].mean()),
                        "ci95": structure_ci(values[m], table.sample_id[m]),
                    }
                )
        out[key] = {"label": label, "bins": bins}
    out["how"] = (
        f"test images in {CONDITION_BINS} quantile bins of each condition (8-fold test-time augmentation); "
        "intervals resample whole structures within the bin"
    )
    return out


def _combined(probs: np.ndarray, y: np.ndarray, group: np.ndarray, how: str) -> dict:
    """Accuracy when the test images of each group are combined by summing log-probabilities (after
    temperature scaling): what a series of exposures of one object gives, beside the single-image
    figure the targets are judged on."""
    ids, inverse = np.unique(group, return_inverse=True)
    log_p = np.zeros((len(ids), probs.shape[1]))
    np.add.at(log_p, inverse, np.log(np.clip(probs, 1e-12, None)))
    truth = np.zeros(len(ids), dtype=np.int64)
    truth[inverse] = y
    return {
        "accuracy": _num((log_p.argmax(axis=1) == truth).mean()),
        "n_groups": len(ids),
        "images_per_group": _num(np.median(np.bincount(inverse))),
        "how": how,
    }


def _averaged(pred: np.ndarray, true: np.ndarray, group: np.ndarray, sample_id: np.ndarray, how: str) -> dict | None:
    """MAE when the predictions for each group's images are averaged: what a series of exposures of
    one object gives for a property of the object, with its interval from resampling whole structures.
    None where the truth differs within a group (a defocus is a property of the exposure, not of the
    particle)."""
    ids, first, inverse = np.unique(group, return_index=True, return_inverse=True)
    counts = np.bincount(inverse)
    truth = np.asarray(true)[first]
    if not np.allclose(true, truth[inverse], rtol=1e-6, atol=1e-9):
        return None
    err = np.abs(np.bincount(inverse, weights=pred) / counts - truth)
    return {
        "mae": _num(err.mean()),
        "mae_ci95": structure_ci(err, np.asarray(sample_id)[first]),
        "n_groups": len(ids),
        "images_per_group": _num(np.median(counts)),
        "how": how,
    }


def view_ids(table: Table) -> np.ndarray:
    """Each image's view ("<sample>-v02-o05" -> "<sample>-v02"): its optics variants share the
    structure's orientation and position, and differ in defocus, aberrations, dose and detector."""
    return views_of(table.column(layout.IMAGE_ID, object))


#: confused pairs listed in a chirality report, most frequent first
MAX_PAIRS = 25


def chirality_confusions(confusion: np.ndarray, classes: list[str]) -> dict | None:
    """Which neighbours a chirality classifier confuses and how far apart they are: every off-diagonal
    pair with its count, its share of the true class, and the pair's diameter and chiral-angle
    differences; and the errors' share by those differences. None for classes that are not (n, m)."""
    try:
        nm = [parse_chirality(c) for c in classes]
    except (ValueError, HrtemflowError):
        return None
    pairs = []
    for i, j in zip(*np.nonzero(confusion)):
        if i != j:
            dd, dt = chirality_difference(nm[i], nm[j])
            pairs.append((int(confusion[i, j]), i, j, dd, dt))
    pairs.sort(key=lambda p: -p[0])
    errors = sum(p[0] for p in pairs)
    support = confusion.sum(axis=1)

    def share(cond) -> float | None:
        return _num(sum(c for c, _, _, dd, dt in pairs if cond(abs(dd), abs(dt))) / errors) if errors else None

    return {
        "errors": int(errors),
        "pairs": [
            {
                "true": classes[i],
                "predicted": classes[j],
                "count": c,
                "share_of_true": _num(c / support[i]),
                "delta_diameter_nm": round(dd, 4),
                "delta_angle_deg": round(dt, 2),
            }
            for c, i, j, dd, dt in pairs[:MAX_PAIRS]
        ],
        "share_of_errors": {
            "diameter within 0.01 nm": share(lambda dd, dt: dd < 0.01),
            "diameter within 0.03 nm": share(lambda dd, dt: dd < 0.03),
            "angle within 5 deg": share(lambda dd, dt: dt < 5),
            "diameter within 0.03 nm and angle within 5 deg": share(lambda dd, dt: dd < 0.03 and dt < 5),
        },
    }


def _classification(model, card, splits, spec, figures: Path, feed_args: dict) -> dict:
    """Metrics of what `hrtemflow predict` reports (8-fold test-time augmentation, temperature fitted
    the same way on the validation split), and of a single forward pass beside them."""
    classes = card.classes
    n = len(classes)
    val, test = (ShardFeed(splits[k], spec["image_size"], **feed_args) for k in ("val", "test"))
    val_z, test_z = _outputs(model, card, val), _outputs(model, card, test)
    y_val, y_test = splits["val"].y, splits["test"].y
    tta, pred, (rel_before, rel_after) = _class_metrics(test_z, y_test, fit_temperature(val_z, y_val), n)
    single, _, _ = _class_metrics(test_z[:, 0], y_test, fit_temperature(val_z[:, 0], y_val), n)
    confusion = np.zeros((n, n), dtype=int)
    np.add.at(confusion, (y_test, pred), 1)
    sample_id = splits["test"].sample_id
    calibrated = probabilities(test_z, tta["temperature"])
    per_structure = _combined(
        calibrated, y_test, sample_id, "all test images of a structure (its views and their variants)"
    )
    per_view = _combined(
        calibrated,
        y_test,
        view_ids(splits["test"]),
        "all exposures of one view (one orientation; defocus, aberrations and dose differ between them, "
        "as in a focal series)",
    )
    intervals = {
        "accuracy": structure_ci(pred == y_test, sample_id),
        f"top{min(3, n)}_accuracy": structure_ci(topk_hits(probabilities(test_z), y_test, min(3, n)), sample_id),
    }
    support = confusion.sum(axis=1)
    recall = {c: (_num(confusion[i, i] / support[i]) if support[i] else None) for i, c in enumerate(classes)}
    conditions = by_condition(pred == y_test, splits["test"])
    confusion_figure(confusion, classes, figures / "confusion.png")
    calibration_figure(
        rel_before,
        rel_after,
        tta["ece_before"],
        tta["ece_after"],
        tta["temperature"],
        figures / "calibration.png",
        ECE_BINS,
    )
    conditions_figure(
        [("accuracy", conditions, tta["accuracy"], "accuracy")],
        figures / "conditions.png",
        "test accuracy by imaging condition",
    )
    return {
        **tta,
        "test_time_augmentation": "8 symmetry elements (flips, 90° rotations), softmaxes averaged, as `hrtemflow "
        "predict` does",
        "ci95": {**intervals, "how": CI_HOW},
        "single_pass": single,
        "per_structure": per_structure,
        "per_view": per_view,
        "per_class_recall": recall,
        "per_class_support": {c: int(s) for c, s in zip(classes, support)},
        "by_condition": conditions,
        "confusion_matrix": {
            "rows": "true class",
            "columns": "predicted class",
            "classes": classes,
            "counts": confusion.tolist(),
        },
        "confused_pairs": chirality_confusions(confusion, classes) if card.task == "chirality" else None,
        "ece_bins": ECE_BINS,
        "chance_accuracy": _num(np.bincount(y_test, minlength=n).max() / len(y_test)),
    }


# ---------------------------------------------------------------------------------- regression


def _regression(model, card, splits, spec, figures: Path, feed_args: dict) -> dict:
    task = card.task
    physical = TASKS[task].physical
    offset, scale = card.scaling()
    test = ShardFeed(splits["test"], spec["image_size"], **feed_args)
    outputs = _outputs(model, card, test).astype(np.float64)  # (N, 8, k), astigmatism signs already undone
    pred_raw = offset + scale * outputs.mean(axis=1)  # as `hrtemflow predict` averages them
    true, pred = physical(splits["test"].y), physical(pred_raw)
    single = physical(offset + scale * outputs[:, 0])
    train_mean = physical(splits["train"].y)
    sample_id = splits["test"].sample_id
    views = view_ids(splits["test"])
    conditions = _condition_bins(splits["test"])
    out = {}
    for name, (t, unit) in true.items():
        p = pred[name][0]
        err = p - t
        base = train_mean[name][0].mean() - t
        out[name] = {
            "unit": unit,
            "mae": _num(np.abs(err).mean()),
            "rmse": _num(np.sqrt((err**2).mean())),
            "r2": _num(1 - (err**2).sum() / ((t - t.mean()) ** 2).sum()) if t.var() > 0 else None,
            "mae_single_pass": _num(np.abs(single[name][0] - t).mean()),
            "mae_predict_train_mean": _num(np.abs(base).mean()),
            "mae_ci95": structure_ci(np.abs(err), sample_id),
            "by_condition": by_condition(np.abs(err), splits["test"], "mae", conditions),
        }
        for key, group, how in (
            ("per_structure", sample_id, "predictions of all test images of a structure averaged"),
            ("per_view", views, "predictions of all exposures of one view averaged"),
        ):
            combined = _averaged(p, t, group, sample_id, how)
            if combined is not None:
                out[name][key] = combined
        if name == "n_atoms":  # a count is judged relative to its size
            out[name]["median_relative_error"] = _num(np.median(np.abs(err) / t))
            out[name]["median_relative_error_ci95"] = structure_ci(np.abs(err) / t, sample_id, np.median)
    if TASKS[task].sign_flips:  # angle error where the astigmatism is large enough to have an angle
        c12 = true["c12_magnitude_nm"][0]
        out["c12_magnitude_nm"]["mae_modulus_of_components"] = _num(
            np.abs(np.hypot(pred_raw[:, 1], pred_raw[:, 2]) / 10 - c12).mean()
        )
        big = c12 > 1.0
        if big.any():
            ang_t = 0.5 * np.arctan2(splits["test"].y[big, 2], splits["test"].y[big, 1])
            ang_p = 0.5 * np.arctan2(pred_raw[big, 2], pred_raw[big, 1])
            d = np.rad2deg((ang_p - ang_t + np.pi / 2) % np.pi - np.pi / 2)
            out["phi12_deg_where_c12_over_1nm"] = {"unit": "deg", "mae": _num(np.abs(d).mean()), "n": int(big.sum())}
    scatter_figure(true, pred, figures / "scatter.png")
    conditions_figure(
        [
            (f"MAE {name} ({unit})", out[name]["by_condition"], out[name]["mae"], "mae")
            for name, (_, unit) in true.items()
        ],
        figures / "conditions.png",
        "test error by imaging condition",
    )
    return {
        "targets": out,
        "test_time_augmentation": "mean over 8 symmetry elements, as `hrtemflow predict` does (mae_single_pass: "
        "without)",
        "ci95_how": CI_HOW,
    }


# ----------------------------------------------------------------------------------- denoising


def psnr(pred: np.ndarray, clean: np.ndarray) -> float:
    rng = float(clean.max() - clean.min()) or 1.0
    return float(peak_signal_noise_ratio(clean, match_affine(pred, clean), data_range=rng))


def ssim(pred: np.ndarray, clean: np.ndarray) -> float:
    rng = float(clean.max() - clean.min()) or 1.0
    win = min(7, clean.shape[0] - (1 - clean.shape[0] % 2))
    return float(structural_similarity(clean, match_affine(pred, clean), data_range=rng, win_size=win))


def _arrays(table: Table, size: int, idx: np.ndarray, feed_args: dict) -> tuple[np.ndarray, np.ndarray]:
    feed = ShardFeed(table.take(idx), size, **{**feed_args, "batch_size": max(1, len(idx))})
    x, y = feed[0]
    return x[..., 0].astype(np.float64), y[..., 0].astype(np.float64)


def shard_param(table: Table, name: str) -> np.ndarray:
    """Each image's imaging parameter `name` (params/<name> of its shard, e.g. dose_e_per_A2, defocus_A)."""
    return table.column(layout.param_key(name))


def _denoising(model, card, splits, spec, figures: Path, feed_args: dict, max_baseline_images: int) -> dict:
    size = spec["image_size"]
    test_table = splits["test"]
    test = ShardFeed(test_table, size, **feed_args)
    net_psnr, net_ssim, noisy_psnr = [], [], []
    for i in range(len(test)):
        x, y = test[i]
        p = keras.ops.convert_to_numpy(model(x, training=False))[..., 0].astype(np.float64)
        for xi, pi, yi in zip(x[..., 0].astype(np.float64), p, y[..., 0].astype(np.float64)):
            net_psnr.append(psnr(pi, yi))
            net_ssim.append(ssim(pi, yi))
            noisy_psnr.append(psnr(xi, yi))
    net_psnr, net_ssim, noisy_psnr = map(np.asarray, (net_psnr, net_ssim, noisy_psnr))
    fam = families_of(test_table.sample_id)
    dose = shard_param(test_table, "dose_e_per_A2")
    val_idx = evenly_spaced(len(splits["val"]), 16)
    sigma = baselines.tune_gaussian(*_arrays(splits["val"], size, val_idx, feed_args), score=psnr)
    per_family, example = {}, None
    for f in sorted(set(fam)):  # the same evenly spaced images of each family for every method
        rows = np.flatnonzero(fam == f)
        subset = rows[evenly_spaced(len(rows), max_baseline_images)]
        noisy, clean = _arrays(test_table, size, subset, feed_args)
        net = keras.ops.convert_to_numpy(model(noisy[..., None].astype(np.float32), training=False))[..., 0].astype(
            np.float64
        )
        outputs = {
            "noisy": noisy,
            f"gaussian (sigma {sigma:g} px)": np.stack([baselines.gaussian(n, sigma) for n in noisy]),
            "nl-means": np.stack([baselines.nl_means(n) for n in noisy]),
            "bm3d": np.stack([baselines.bm3d(n) for n in noisy]),
            "network": net,
            "wiener_oracle": np.stack([baselines.wiener_oracle(n, c) for n, c in zip(noisy, clean)]),
        }
        methods, per_image = {}, {}
        for name, out in outputs.items():
            key = name.split(" (")[0]
            per_image[key] = np.array([psnr(o, c) for o, c in zip(out, clean)])
            methods[key] = {
                "psnr_dB": _num(per_image[key].mean()),
                "ssim": _num(np.mean([ssim(o, c) for o, c in zip(out, clean)])),
            }
        best = max(("gaussian", "nl-means", "bm3d"), key=lambda m: methods[m]["psnr_dB"])
        per_family[f] = {
            "n_images": int(len(subset)),
            "dose_e_per_A2": {
                "mean": _num(dose[subset].mean()),
                "min": _num(dose[subset].min()),
                "max": _num(dose[subset].max()),
            },
            "methods": methods,
            "best_baseline": best,
            "network_minus_best_baseline_dB": _num(methods["network"]["psnr_dB"] - methods[best]["psnr_dB"]),
            "network_minus_best_baseline_dB_ci95": structure_ci(
                per_image["network"] - per_image[best], test_table.sample_id[subset]
            ),
            "wiener_oracle_minus_best_baseline_dB": _num(
                methods["wiener_oracle"]["psnr_dB"] - methods[best]["psnr_dB"]
            ),
            "network_full_test": {
                "psnr_dB": _num(net_psnr[fam == f].mean()),
                "ssim": _num(net_ssim[fam == f].mean()),
                "noisy_psnr_dB": _num(noisy_psnr[fam == f].mean()),
                "n_images": int((fam == f).sum()),
            },
        }
        if example is None:
            example = (outputs, clean)
    denoise_figure(*example, figures / "denoise_examples.png")
    target = test_table.info.get("target", "clean")
    return {
        "target": target,
        "network_full_test": {
            "psnr_dB": _num(net_psnr.mean()),
            "ssim": _num(net_ssim.mean()),
            "noisy_psnr_dB": _num(noisy_psnr.mean()),
            "n_images": len(test_table),
        },
        "ci95_how": CI_HOW,
        "comparison": {
            "subset": f"up to {max_baseline_images} images per family, evenly spaced over the test split (same images "
            "for every method)",
            "gaussian_sigma_px": sigma,
            "gaussian_sigma_tuned_on": f"{len(val_idx)} validation images",
            "families": per_family,
        },
        "protocol": "images normalised per image (mean 0, std 1); each output matched to the target by a least-squares "
        "gain and "
        "offset before PSNR/SSIM (data_range = target max - min). wiener_oracle is not a baseline: it knows each "
        "target's ring-averaged power spectrum and the noise power, the linear-filter reference for what the data "
        "allow "
        "on an isotropic texture (amorphous carbon). "
        + (
            "The target `clean` has no aberrations: the network learns to undo them too, which the classical filters "
            "cannot, "
            "so this comparison favours the network."
            if target == "clean"
            else "The target `noise_free` has the same optics as the input: a like-for-like denoising comparison."
        ),
    }


# ------------------------------------------------------------------------------------------ main


def evaluate(
    spec: Mapping[str, Any],
    model_dir: str | Path,
    report_dir: str | Path,
    *,
    base: str | Path = ".",
    max_baseline_images: int = 32,
    cache_bytes: int | None = None,
) -> dict:
    """Evaluate the bundle in `model_dir` on the spec's test split; write metrics.json and figures."""
    report = Path(report_dir)
    model, card = load_checked(model_dir)
    if card.task != spec.get("task") or card.input_size != spec.get("image_size"):
        raise HrtemflowError(
            f"model bundle {model_dir} is for task {card.task!r} at {card.input_size} px, the spec asks for "
            f"{spec.get('task')!r} at {spec.get('image_size')} px; pass the matching --model-dir"
        )
    if card.kind == "classification" and card.classes != spec.get("classes"):
        raise HrtemflowError(
            f"model bundle {model_dir} knows classes {card.classes}, the spec lists {spec.get('classes')}; retrain"
        )
    table, splits = prepare(spec, base)
    if table.info["dataset_sha256"] != card.dataset_sha256:
        raise HrtemflowError(
            f"model bundle {model_dir} was trained on a different dataset than the spec's shards now hold "
            f"(dataset_sha256 differs); retrain it (`hrtemflow train`) before evaluating"
        )
    figures = report / FIGURE_DIR
    figures.mkdir(parents=True, exist_ok=True)
    feed_args = {"batch_size": card.hyper["batch_size"], "cache_bytes": cache_bytes}
    if card.kind == "regression":
        feed_args["target_scale"] = card.scaling()
    kind = card.kind
    if kind == "classification":
        result = _classification(model, card, splits, spec, figures, feed_args)
    elif kind == "regression":
        result = _regression(model, card, splits, spec, figures, feed_args)
    else:
        result = _denoising(model, card, splits, spec, figures, feed_args, max_baseline_images)
    metrics = {
        "task": card.task,
        "kind": kind,
        "model_dir": str(model_dir),
        "dataset_sha256": card.dataset_sha256,
        "split": "test",
        "n_images": len(splits["test"]),
        "n_structures": splits["test"].n_structures(),
        "figures": [f"{FIGURE_DIR}/{name}" for name in FIGURES[kind]],
        "backend": keras.backend.backend(),
        **result,
    }
    write_json_atomic(report / "metrics.json", metrics)
    return metrics
