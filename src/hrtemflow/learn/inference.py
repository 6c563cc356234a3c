"""The forward pass that evaluation and `hrtemflow predict` share: raw outputs over the 8 symmetry
elements (test-time augmentation, astigmatism signs undone), pooled features for the OOD check, and
the softmax temperature (fitted on the validation split by `evaluate`, applied by `predict`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.tasks import TASKS
from .preprocess import D4, NORMALISATION, astig_signs, d4

# input bytes per forward pass (all symmetry elements together): the activations, not the input, set the
# memory, and at 2**24 a 64² classifier with a spectrum trunk peaked at 10 GB (128 images x 8 symmetry elements);
# at 2**22 (32 x 8) it stays near 3 GB and is no slower on 2 cores (benchmarks/RESULTS.md)
IMG_BYTES_PER_BATCH = 2**22


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


def feature_layers(model) -> list[Any]:
    """The layers the OOD distances are measured on: each resolution stage's output (MaxPooling2D;
    per channel its mean and standard deviation over space) and the last global pooling (the
    penultimate features). Early stages see texture (noise colour, contrast), the last one what the
    task separates: one Mahalanobis distance per layer (Lee et al. 2018) with texture statistics
    (as the Gram-matrix detector of Sastry & Oore 2020) catches vacuum and other materials that the
    penultimate layer alone maps close to a class. The last stage is left out when a global pooling
    follows it (its average is the pooling's output)."""
    import keras  # noqa: PLC0415

    stages = [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    pooled = [
        layer
        for layer in model.layers
        if isinstance(layer, (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D))
    ]
    return (stages[:-1] + pooled[-1:]) if pooled else stages


def make_net(model, kind: str, task: str, normalisation: Mapping[str, Any] | None = None) -> Net:
    """Wrap a model so one call yields its raw output and its pooled features."""
    import keras  # noqa: PLC0415

    norm = dict(normalisation or NORMALISATION)
    outputs = [model.get_layer("logits").output if kind == "classification" else model.output]
    layers = feature_layers(model) if kind != "denoising" else []
    outputs += [layer.output for layer in layers]
    forward = keras.Model(model.input, outputs)
    dims = tuple(int(layer.output.shape[-1]) * (2 if len(layer.output.shape) == 4 else 1) for layer in layers)
    sign_flips = TASKS[task].sign_flips if task in TASKS else None
    return Net(
        forward, kind, sign_flips, tuple(layer.name for layer in layers), dims, float(norm["eps"]), float(norm["clip"])
    )


def run_net(net: Net, x: np.ndarray, *, tta: bool = True, batch: int | None = None) -> dict[str, Any]:
    """Raw outputs per symmetry element (N, G, k), in the frame of the untransformed window, and
    per feature layer its features averaged over space and the elements (N, d). `x` is normalised,
    (N, H, W), in network order."""
    import keras  # noqa: PLC0415

    elements = D4 if tta else D4[:1]
    n, h, w = x.shape
    batch = batch or max(1, IMG_BYTES_PER_BATCH // (4 * h * w * len(elements)))
    outs: list[np.ndarray] = []
    feats: list[list[np.ndarray]] = [[] for _ in net.feature_layers]
    for start in range(0, n, batch):
        xb = x[start : start + batch]
        stack = np.concatenate([d4(xb, k, f) for k, f in elements])[..., None].astype(np.float32)
        res = net.forward(stack, training=False)
        res = res if isinstance(res, (list, tuple)) else [res]
        arrs = [keras.ops.convert_to_numpy(r).astype(np.float64) for r in res]
        o = arrs[0].reshape((len(elements), len(xb)) + arrs[0].shape[1:]).swapaxes(0, 1)
        if net.astig is not None:
            for g, (k, f) in enumerate(elements):
                sc, ss = astig_signs(k, f)
                o[:, g, net.astig[0]] *= sc
                o[:, g, net.astig[1]] *= ss
        outs.append(o)
        for j, a in enumerate(arrs[1:]):
            if a.ndim == 4:  # a stage's feature map: per channel mean and std over space
                a = np.concatenate([a.mean(axis=(1, 2)), a.std(axis=(1, 2))], axis=-1)
            feats[j].append(a.reshape(len(elements), len(xb), -1).mean(axis=0))
    return {
        "outputs": np.concatenate(outs) if outs else np.zeros((0, len(elements))),
        "features": [np.concatenate(f) if f else np.zeros((0, d)) for f, d in zip(feats, net.n_features)],
    }


def feed_outputs(net: Net, feed) -> np.ndarray:
    """Raw outputs (logits or scaled targets) per image of a feed and symmetry element, (N, 8, k),
    through the same forward pass as `hrtemflow predict` (element 0 is the image as it is)."""
    return np.concatenate([run_net(net, feed[i][0][..., 0], tta=True)["outputs"] for i in range(len(feed))])


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def energy(logits: np.ndarray) -> np.ndarray:
    """-logsumexp(logits): high where the network has no strong response to any class (Liu 2020)."""
    m = logits.max(axis=-1)
    return -(m + np.log(np.exp(logits - m[..., None]).sum(axis=-1)))


def probabilities(logits: np.ndarray, t: float = 1.0) -> np.ndarray:
    """Class probabilities from (N, k) logits, or from (N, G, k) logits of G symmetry elements averaged
    as `hrtemflow predict` averages them (mean of the tempered softmaxes)."""
    p = softmax(logits / t)
    return p.mean(axis=1) if p.ndim == 3 else p


def nll(logits: np.ndarray, labels: np.ndarray, t: float = 1.0) -> float:
    p = probabilities(logits, t)
    return float(-np.log(np.maximum(p[np.arange(len(labels)), labels], 1e-300)).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 minimising the NLL of the (averaged) softmax(logits / T) (Guo et al. 2017), on log T."""
    from scipy.optimize import minimize_scalar  # noqa: PLC0415 (scipy.optimize costs `hrtemflow --help` 0.3 s)

    res = minimize_scalar(
        lambda log_t: nll(logits, labels, float(np.exp(log_t))), bounds=(np.log(0.05), np.log(20.0)), method="bounded"
    )
    return float(np.exp(res.x))
