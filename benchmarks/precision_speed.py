"""Training speed of the bench networks on this CPU: float32 against mixed bfloat16, full against patchify stem.

    python benchmarks/precision_speed.py [--steps 20] [--widths 16,32] [--stems full,patchify]

Whether `learning.tasks.<task>.precision: mixed_bfloat16` pays on a CPU node, and what
`learning.tasks.<task>.stem: patchify` (every stage at half the resolution) buys: the same model
(`hrtemflow.learn.models.build`), optimizer and loss (`learn.train._optimizer`, `_compile`) and batch
(64 images of 64²), each precision, width and stem built in its own process, and each training step timed
alone with `train_on_batch` after three warm-up steps; the median step is reported. (Whole `fit`
calls over a few dozen steps gave times in steps of ~5 s on the Intel Xeon here, whatever the model:
per-step medians do not.) bfloat16 is fast only where the CPU multiplies it in hardware (AMX tiles,
Intel Sapphire Rapids and newer); the flags this CPU reports are printed with the table.
Prints a markdown block for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from _common import emit, header, run_worker

CASES = [  # (label, task, kind, outputs, spectral_width at width 16): what the benches train
    ("classifier with a spectrum trunk (chirality, ordering)", "ordering", "classification", 3, 8),
    ("classifier, image only", "ordering", "classification", 3, 0),
    ("regressor (structure)", "structure", "regression", 4, 0),
]
POLICIES = ("float32", "mixed_bfloat16")
SIZE, DEPTH, BATCH = 64, 4, 64


def worker(policy: str, width: int, stem: str, steps: int) -> dict:
    import keras
    import numpy as np

    from hrtemflow.learn import models
    from hrtemflow.learn.train import _compile, _limit_threads, _optimizer

    _limit_threads()
    keras.config.set_dtype_policy(policy)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, SIZE, SIZE, 1)).astype("float32")
    out = {}
    for label, task, kind, n_out, spectral in CASES:
        model = models.build(task, kind, SIZE, n_out, width, DEPTH, spectral * width // 16, stem)
        _compile(model, kind, _optimizer({"learning_rate": 1e-3}, steps))
        y = (
            rng.integers(0, n_out, size=BATCH)
            if kind == "classification"
            else rng.normal(size=(BATCH, n_out)).astype("float32")
        )
        for _ in range(3):
            model.train_on_batch(x, y)
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            model.train_on_batch(x, y)
            times.append(time.perf_counter() - t0)
        out[label] = BATCH / float(np.median(times))
    return out


def cpu_flags() -> str:
    from hrtemflow.core.runtime import cpu_flags as flags_of_this_cpu

    flags = flags_of_this_cpu()
    if flags is None:
        return "unknown"
    found = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return ", ".join(found) or "none of avx512f, avx512_bf16, amx_bf16, amx_tile"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20, help="timed training steps of 64 images per case")
    ap.add_argument("--widths", default="16,32", help="first-stage channels to measure, comma-separated")
    ap.add_argument(
        "--stems", default="full,patchify", help="trunk stems to measure, comma-separated (the first is the reference)"
    )
    ap.add_argument("--worker", nargs=3, metavar=("POLICY", "WIDTH", "STEM"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker[0], int(args.worker[1]), args.worker[2], args.steps)))
        return 0

    t_start = time.perf_counter()
    widths = [int(w) for w in args.widths.split(",")]
    stems = args.stems.split(",")
    results: dict[tuple[str, int, str], dict] = {}
    for width in widths:
        for stem in stems:
            for policy in POLICIES:
                result = run_worker(
                    f"precision_speed: {policy}, width {width}, stem {stem}",
                    __file__,
                    ["--worker", policy, str(width), stem, "--steps", str(args.steps)],
                )
                if result is None:
                    return 1
                results[(policy, width, stem)] = result

    ref = (widths[0], stems[0])
    lines = [
        header(
            "Training speed on the CPU: precision (float32, mixed bfloat16) and stem (full, patchify) "
            "(benchmarks/precision_speed.py)"
        ),
        "",
        f"Training images/s of 64² (batch 64, depth {DEPTH}, TensorFlow; spectrum trunks half the image trunk's "
        "width), median of "
        f"{args.steps} steps timed one by one after 3 warm-up steps; each precision, width and stem in its own "
        "process. "
        f"CPU flags: {cpu_flags()}. The last column compares float32 with the same network at width {ref[0]}, stem "
        f"{ref[1]}.",
        "",
        "| network | width | stem | float32 img/s | mixed_bfloat16 img/s | bfloat16 / float32 | float32 against the "
        "reference |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for label, *_ in CASES:
        base = results[("float32", *ref)][label]
        for width in widths:
            for stem in stems:
                f32, bf16 = results[("float32", width, stem)][label], results[("mixed_bfloat16", width, stem)][label]
                lines.append(
                    f"| {label} | {width} | {stem} | {f32:.0f} | {bf16:.0f} | {bf16 / f32:.2f} | {f32 / base:.2f} |"
                )
    lines.append(f"\n(benchmark wall time {time.perf_counter() - t_start:.0f} s)\n")
    emit("\n".join(lines), "precision_speed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
