"""The figures of an evaluation report (written to <report>/figures/, the folder `snakemake --report` collects)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.atomic import atomic_file
from .baselines import match_affine

#: figures per kind
FIGURES = {
    "classification": ("confusion.png", "calibration.png", "conditions.png"),
    "regression": ("scatter.png", "conditions.png"),
    "denoising": ("denoise_examples.png",),
}
FIGURE_DIR = "figures"


def _figure(*args, **kwargs):
    import matplotlib  # noqa: PLC0415 (the backend must be chosen before pyplot loads)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 (after matplotlib.use)

    return plt, plt.figure(*args, layout="constrained", **kwargs)


def _save(plt, fig, path: Path) -> None:
    with atomic_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)


def confusion_figure(cm: np.ndarray, classes: list[str], path: Path) -> None:
    n = len(classes)
    plt, fig = _figure(figsize=(2 + 0.35 * n, 1.6 + 0.35 * n))
    ax = fig.add_subplot()
    rows = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=90)
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 12:
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if rows[i, j] > 0.5 else "black",
                )
    fig.colorbar(im, ax=ax, label="fraction of true class")
    ax.set_title("confusion matrix (test split)")
    _save(plt, fig, path)


def calibration_figure(before: dict, after: dict, ece_b: float, ece_a: float, t: float, path: Path, bins: int) -> None:
    plt, fig = _figure(figsize=(8, 3.6))
    centres = (np.arange(bins) + 0.5) / bins
    for k, (rel, title) in enumerate(
        ((before, f"before: ECE {ece_b:.3f}"), (after, f"after T = {t:.2f}: ECE {ece_a:.3f}"))
    ):
        ax = fig.add_subplot(1, 2, k + 1)
        has = np.array(rel["count"]) > 0
        ax.bar(centres[has], np.array(rel["accuracy"])[has], width=1 / bins, edgecolor="k", alpha=0.7, label="accuracy")
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.set_title(title)
        ax.legend(loc="upper left", fontsize=8)
    _save(plt, fig, path)


def conditions_figure(rows: list[tuple[str, dict, float, str]], path: Path, title: str) -> None:
    """One row of panels per (name, by_condition, overall value, metric): the figure of merit in each
    quartile bin of every condition, with its interval and the all-images value as a dashed line."""
    keys = [k for k, v in rows[0][1].items() if isinstance(v, dict) and v.get("bins")]  # dose, defocus, c12
    plt, fig = _figure(figsize=(3.3 * len(keys), 3.0 * len(rows)))
    for r, (name, by_condition, overall, metric) in enumerate(rows):
        for k, key in enumerate(keys):
            ax = fig.add_subplot(len(rows), len(keys), r * len(keys) + k + 1)
            bins = by_condition[key]["bins"]
            x = [0.5 * (b["range"][0] + b["range"][1]) for b in bins]
            val = np.array([b[metric] for b in bins])
            ci = np.array([[b["ci95"][0], b["ci95"][1]] for b in bins], dtype=float)
            err = np.abs(np.stack([val - ci[:, 0], ci[:, 1] - val]))
            ax.errorbar(x, val, yerr=err, fmt="o-", capsize=3, label="quartile bin, 95 % interval")
            for j, b in enumerate(bins):
                ax.axvspan(b["range"][0], b["range"][1], color="0.9" if j % 2 else "0.97", zorder=0)
            ax.axhline(overall, color="k", ls="--", lw=1, label=f"all: {overall:.3g}")
            if metric == "accuracy":
                ax.set_ylim(min(0.5, float(np.nanmin(ci))) if np.isfinite(ci).any() else 0, 1.0)
            else:
                ax.set_ylim(0, None)
            ax.set_xlabel(by_condition[key]["label"])
            ax.set_ylabel(name)
            ax.legend(loc="lower right" if metric == "accuracy" else "upper right", fontsize=7)
    fig.suptitle(title)
    _save(plt, fig, path)


def scatter_figure(true: dict, pred: dict, path: Path) -> None:
    n = len(true)
    plt, fig = _figure(figsize=(3.2 * n, 3.2))
    for k, (name, (t, unit)) in enumerate(true.items()):
        ax = fig.add_subplot(1, n, k + 1)
        p = pred[name][0]
        ax.scatter(t, p, s=6, alpha=0.6)
        lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        ax.set_xlabel(f"true {name} ({unit})")
        ax.set_ylabel(f"predicted ({unit})")
    fig.suptitle("test split: predicted vs true")
    _save(plt, fig, path)


def denoise_figure(outputs: dict, clean: np.ndarray, path: Path, n_examples: int = 3) -> None:
    cols = [*outputs, "clean"]
    rows = min(n_examples, len(clean))
    plt, fig = _figure(figsize=(1.8 * len(cols), 1.9 * rows))
    for r in range(rows):
        for c, name in enumerate(cols):
            img = clean[r] if name == "clean" else match_affine(outputs[name][r], clean[r])
            ax = fig.add_subplot(rows, len(cols), r * len(cols) + c + 1)
            ax.imshow(img, cmap="gray", vmin=clean[r].min(), vmax=clean[r].max())
            ax.set_axis_off()
            if r == 0:
                ax.set_title(name, fontsize=8)
    _save(plt, fig, path)
