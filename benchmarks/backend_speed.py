"""Training and inference speed of the bench networks under each installed Keras backend.

    python benchmarks/backend_speed.py [--backends tensorflow,jax,torch] [--steps 30] [--repeats 2]

Which backend to train with on a CPU node (and, where one is lent, a GPU): the same model
(`hrtemflow.learn.models.build`), the same optimizer and loss (`learn.train._optimizer`,
`_compile`) and the same batches (64 images of 64², the nanoalloy bench's size), timed by
`model.fit` over `--steps` steps after one warm-up call (graph tracing and compilation are
excluded, as they are paid once per training job), and `model.predict` over 1,024 images. Each
backend runs in its own process, one after another in this one run, so the ratios are side by
side; a model built under one backend is not reused by another. Peak RSS is the process's own.
Prints a markdown block for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import sys
import time

from _common import emit, header, run_worker

CASES = [  # (label, task, kind, outputs, spectral_width): what the benches train
    ("classifier (ordering, chirality)", "ordering", "classification", 3, 8),
    ("regressor (aberrations)", "aberrations", "regression", 4, None),
    ("denoiser (U-Net)", "denoise", "denoising", 1, None),
]
SIZE, WIDTH, DEPTH, BATCH = 64, 16, 4, 64


def worker(steps: int, repeats: int) -> dict:
    """Runs inside a process whose KERAS_BACKEND is already set."""
    import keras
    import numpy as np

    from hrtemflow.learn import models
    from hrtemflow.learn.train import _compile, _limit_threads, _optimizer, has_gpu

    _limit_threads()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * BATCH, SIZE, SIZE, 1)).astype("float32")
    out = {"backend": keras.backend.backend(), "gpu": has_gpu(), "cases": {}}
    for label, task, kind, n_out, spectral in CASES:
        model = models.build(task, kind, SIZE, n_out, WIDTH, DEPTH, spectral)
        _compile(model, kind, _optimizer({"learning_rate": 1e-3}, steps))
        if kind == "classification":
            y = rng.integers(0, n_out, size=len(x))
        elif kind == "denoising":
            y = x
        else:
            y = rng.normal(size=(len(x), n_out)).astype("float32")
        model.fit(x[: 2 * BATCH], y[: 2 * BATCH], batch_size=BATCH, epochs=1, verbose=0)  # trace / compile
        train = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False)
            train.append(len(x) / (time.perf_counter() - t0))
        xp = x[:1024] if len(x) >= 1024 else np.resize(x, (1024, SIZE, SIZE, 1))
        model.predict(xp[:256], batch_size=256, verbose=0)
        infer = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model.predict(xp, batch_size=256, verbose=0)
            infer.append(len(xp) / (time.perf_counter() - t0))
        out["cases"][label] = {
            "train_img_s": max(train),
            "infer_img_s": max(infer),
            "params": int(model.count_params()),
        }
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--backends", default="tensorflow,jax,torch", help="comma-separated; those not installed are listed as such"
    )
    ap.add_argument("--steps", type=int, default=30, help="training steps of 64 images per timed call")
    ap.add_argument("--repeats", type=int, default=2, help="timed calls per case; the best is kept")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args.steps, args.repeats)))
        return 0

    t_start = time.perf_counter()
    results, missing = {}, []
    for backend in args.backends.split(","):
        if importlib.util.find_spec(backend) is None:
            missing.append(backend)
            continue
        env = {**os.environ, "KERAS_BACKEND": backend}  # the worker finds src/ through _common, as this process does
        result = run_worker(
            f"backend_speed: {backend}",
            __file__,
            ["--worker", "--steps", str(args.steps), "--repeats", str(args.repeats)],
            env,
        )
        if result is None:
            return 1
        results[backend] = result
    if not results:
        print(f"backend_speed: none of {args.backends} is installed", file=sys.stderr)
        return 1

    ref = "tensorflow" if "tensorflow" in results else next(iter(results))
    devices = ", ".join(f"{b}: {'GPU' if r['gpu'] else 'CPU'}" for b, r in results.items())
    lines = [
        header("Keras backends: training and inference speed (benchmarks/backend_speed.py)"),
        "",
        f"Images/s of 64² (batch 64; width {WIDTH}, depth {DEPTH}, the bench networks), best of {args.repeats} timed "
        f"calls of {args.steps} steps after a warm-up; each backend in its own process, one after another. "
        f"Devices: {devices}. Ratio: against {ref}.",
        "",
        "| network | backend | train img/s | ratio | inference img/s | ratio |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for label, *_ in CASES:
        base = results[ref]["cases"][label]
        for backend, r in results.items():
            c = r["cases"][label]
            lines.append(
                f"| {label} | {backend} | {c['train_img_s']:.0f} | {c['train_img_s'] / base['train_img_s']:.2f} | "
                f"{c['infer_img_s']:.0f} | {c['infer_img_s'] / base['infer_img_s']:.2f} |"
            )
    lines += [
        "",
        "Peak RSS per backend process: "
        + ", ".join(f"{b} {r['peak_rss_gb']:.1f} GB" for b, r in results.items())
        + ".",
    ]
    if missing:
        lines.append(f"Not installed here, not measured: {', '.join(missing)}.")
    lines.append(f"\n(benchmark wall time {time.perf_counter() - t_start:.0f} s)\n")
    emit("\n".join(lines), "backend_speed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
