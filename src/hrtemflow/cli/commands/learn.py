"""Learning commands: `hrtemflow train` and `hrtemflow evaluate` (one task per call)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ...core.errors import HrtemflowError
from ...core.runtime import threads


def _read_spec(path: str) -> dict:
    from ...campaign.specs import read_spec  # noqa: PLC0415

    return read_spec(path, "train")


def feed_workers(requested: int | None) -> int:
    """The feed's threads: as asked, else the job's own (Snakemake sets OMP_NUM_THREADS to a rule's threads,
    SLURM its CPUs), so a workflow job feeds its GPU with every CPU it was given and no rule text changes."""

    workers = threads(1) if requested is None else requested
    if workers < 1:
        raise HrtemflowError(f"--workers {workers}: give at least 1 (threads reading and noising batches ahead)")
    return workers


def _train(args: argparse.Namespace) -> int:
    spec = _read_spec(args.spec)
    workers = feed_workers(args.workers)
    from ...learn.table import prepare  # noqa: PLC0415
    from ...learn.train import train  # noqa: PLC0415

    table, splits = prepare(spec, args.base)  # spec, shards, arrays, labels, split sizes: refused here, before training
    counts = ", ".join(f"{k} {t.n_structures()} structures / {len(t)} images" for k, t in splits.items())
    print(f"train: {spec['task']}: {len(table.paths)} shard(s); {counts}; {workers} feed thread(s)", flush=True)
    card = train(
        spec,
        Path(args.out_dir),
        resume=not args.no_resume,
        progress=not args.quiet,
        base=args.base,
        workers=workers,
        prepared=(table, splits),
    )
    if (
        card.kind != "denoising"
    ):  # predict flags out-of-distribution regions with these (ood.npz, an output of the train rule)
        from ...learn.bundle import fit_bundle_ood  # noqa: PLC0415

        fit_bundle_ood(spec, args.out_dir, base=args.base)
    val = ", ".join(f"{k} {v:.4g}" for k, v in card.metrics["val"].items())
    print(
        f"train: {spec['task']}: {card.epochs_run} epoch(s), best {card.best_epoch}; validation {val}; "
        f"bundle in {args.out_dir}",
        flush=True,
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    spec = _read_spec(args.spec)
    from ...learn.evaluate import evaluate  # noqa: PLC0415

    metrics = evaluate(spec, args.model_dir, args.out_dir, base=args.base, max_baseline_images=args.baseline_images)
    headline = {k: metrics[k] for k in ("accuracy", "ece_before", "ece_after", "temperature") if k in metrics}
    if "targets" in metrics:
        headline = {k: v["mae"] for k, v in metrics["targets"].items()}
    if "comparison" in metrics:
        headline = {
            f"{fam} {k}": v["psnr_dB"]
            for fam, r in metrics["comparison"]["families"].items()
            for k, v in r["methods"].items()
        }
    print(
        f"evaluate: {metrics['task']}: {metrics['n_images']} test images; {json.dumps(headline)}; "
        f"report in {args.out_dir}",
        flush=True,
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one learning task from its spec (results/plan/train/<task>.json)")
    p.add_argument("spec", help="train spec JSON written by `hrtemflow plan`")
    p.add_argument("--out-dir", required=True, help="model bundle folder (model.keras, card.json, checkpoint/)")
    p.add_argument("--no-resume", action="store_true", help="ignore a checkpoint in --out-dir and start over")
    p.add_argument("--quiet", action="store_true", help="one line per epoch instead of a progress bar")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="threads reading batches ahead when the images do not fit the memory cache (HRTEMFLOW_FEED_CACHE_MB, "
        "default 2048), "
        "or drawing their shot noise with shot_noise: fresh; the reader is zarrs where installed "
        "(HRTEMFLOW_FEED_READER). "
        "Default: the job's threads ($HRTEMFLOW_THREADS, $SLURM_CPUS_PER_TASK, or $OMP_NUM_THREADS, which Snakemake "
        "sets to the rule's threads), else 1",
    )
    p.add_argument("--base", default=".", help="working directory the spec's shard paths refer to")
    p.set_defaults(func=_train, report_usage=True)

    p = sub.add_parser("evaluate", help="evaluate a trained model on the test split: metrics.json and figures")
    p.add_argument("spec", help="the train spec the model was trained from")
    p.add_argument("--model-dir", required=True, help="model bundle folder (model.keras, card.json)")
    p.add_argument("--out-dir", required=True, help="report folder (metrics.json, *.png)")
    p.add_argument(
        "--baseline-images", type=int, default=32, help="test images the classical denoisers run on (BM3D is slow)"
    )
    p.add_argument("--base", default=".", help="working directory the spec's shard paths refer to")
    p.set_defaults(func=_evaluate, report_usage=True)
