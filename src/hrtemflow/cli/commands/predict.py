"""`hrtemflow predict` (trained bundles on real micrographs), `hrtemflow fit-ood` (a bundle's
out-of-distribution statistics from its training data) and `hrtemflow fit-tubes` (the calibration of a
nanotube classifier's per-tube answers, from predict's answers on labelled micrographs)."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ...apply.options import MAX_PIXELS, Options, check_options, check_temperatures
from ...apply.regions import parse_box, read_regions_csv
from ...apply.tubes import parse_tube
from ...core.errors import HrtemflowError
from ...learn.card import ModelCard
from ...learn.ood import MAX_FIT_IMAGES


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "predict",
        help="apply trained model bundles to experimental micrographs (a file or a folder)",
        description="Resample each micrograph to the bundle's pixel size, cut windows of its input size, normalise "
        "them "
        "as in training, and predict per region: top-3 classes (classifiers), estimates with a spread over the 8 "
        "flips/rotations (regressors), an out-of-distribution flag, and a denoised image (denoisers). Writes "
        "OUT/<file stem>/ (predictions.csv/.json, overlay_<task>.png, denoised.tif/.png) and OUT/summary.json + "
        "summary.csv. A nanotube classifier (chirality) also answers per tube: the windows centred along each tube "
        "(found automatically, or given with --tube) combined into one top-3 (OUT/tubes.csv, <file stem>/tubes.csv, "
        "tubes_<task>.png).",
    )
    p.add_argument(
        "input", type=Path, help="a micrograph file or a folder of them (dm3 dm4 emd ser emi mrc tif png npy)"
    )
    p.add_argument(
        "--bundles",
        type=Path,
        nargs="+",
        required=True,
        metavar="DIR",
        help="model bundle folders (model.keras + card.json)",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--pixel-size",
        type=float,
        default=None,
        metavar="NM",
        help="pixel size in nm; overrides the file's calibration, required for files without one",
    )
    p.add_argument(
        "--frames", choices=("refuse", "all"), default="refuse", help="stacks: refuse (default) or analyse every frame"
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--regions",
        type=Path,
        default=None,
        metavar="CSV",
        help="regions to analyse: CSV with columns x0,y0,x1,y1 (pixels of the original image; x = column) and optional "
        "label",
    )
    where.add_argument(
        "--box",
        action="append",
        default=None,
        metavar="x0,y0,x1,y1",
        help="one region in pixels of the original image (repeatable)",
    )
    tubes = p.add_mutually_exclusive_group()
    tubes.add_argument(
        "--tube",
        action="append",
        default=None,
        metavar="x0,y0,x1,y1[,x2,y2...]",
        help="a nanotube's two end points, or a polyline along a bent one, in pixels of the original image "
        "(repeatable); the chirality is then answered for these tubes instead of the tubes found automatically",
    )
    tubes.add_argument(
        "--no-tubes",
        action="store_true",
        help="no per-tube answers (by default a nanotube classifier's windows along each tube found are combined "
        "into one top-3 per tube: tubes.csv, tubes_<task>.png)",
    )
    p.add_argument(
        "--tubes-only",
        action="store_true",
        help="no sliding-window regions: only the per-tube answers (about 10x faster on a micrograph of a few "
        "tubes); --box/--regions still give regions",
    )
    p.add_argument(
        "--window-px",
        type=int,
        default=None,
        help="sliding-window size in pixels after resampling to the model's pixel size (default: its input size)",
    )
    p.add_argument(
        "--stride-fraction", type=float, default=0.5, help="window stride as a fraction of the window (default 0.5)"
    )
    p.add_argument(
        "--temperature",
        action="append",
        default=None,
        metavar="[TASK=]T",
        help="softmax temperature for a classifier, all or one task (default: the card's, else the one "
        "`hrtemflow evaluate` fitted for this model: metrics.json in the bundle or results/reports/<task>/)",
    )
    p.add_argument(
        "--no-tta", action="store_true", help="one pass per window instead of the 8 flips/rotations (no spread)"
    )
    p.add_argument(
        "--table-rows", type=int, default=40, help="rows of the terminal table per micrograph (all rows go to the CSV)"
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        default=MAX_PIXELS,
        metavar="N",
        help=f"largest image, in pixels, predict reads or resamples to a bundle's pixel size (default {MAX_PIXELS:,}, "
        "about 1 GB of memory); a larger micrograph is refused with advice, and in a folder the others go on",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    p.set_defaults(func=_predict)

    f = subparsers.add_parser(
        "fit-ood",
        help="fit a bundle's out-of-distribution statistics (ood.npz) from its training data",
        description="Feature mean and whitening of the training split, and the median and 99th percentile of the "
        "Mahalanobis distance, energy score and vacuum statistic on the validation split; saved as ood.npz in the "
        "bundle.",
    )
    f.add_argument(
        "spec", type=Path, help="the train spec the bundle was trained from (results/plan/train/<task>.json)"
    )
    f.add_argument("--model-dir", type=Path, required=True, help="model bundle folder")
    f.add_argument("--base", default=".", help="working directory the spec's shard paths refer to")
    f.add_argument(
        "--max-images",
        type=int,
        default=MAX_FIT_IMAGES,
        help=f"images per split used at most, evenly spaced (default {MAX_FIT_IMAGES})",
    )
    f.set_defaults(func=_fit_ood)

    t = subparsers.add_parser(
        "fit-tubes",
        help="calibrate a nanotube classifier's per-tube probabilities on labelled micrographs (tube_calibration.json)",
        description="Reads the output of `hrtemflow predict` on micrographs of known tubes (not the ones the network "
        "trained on) and a CSV of their labels, matches each labelled tube to the tube predict answered on it, and "
        "fits by likelihood the exponent that tempers each pool of a tube's window probabilities (the mean, p ∝ "
        "mean^exponent; the geometric, p ∝ exp(exponent x mean log p)); the better pool is saved as "
        "tube_calibration.json in the bundle, which predict then applies. With the mean, top-1 and top-3 do not "
        "change. Where predict read a tube's chiral angle from its graphene lattice and its radius from its walls, "
        "the fit also weighs them in (the walls' map to a radius, the spreads, how often a reading is wrong) and keeps "
        "them only where they lower the likelihood loss out of sample.",
    )
    t.add_argument("predict_dir", type=Path, help="the --out folder of `hrtemflow predict` on the labelled micrographs")
    t.add_argument(
        "--labels",
        type=Path,
        required=True,
        help="CSV, one row per tube: file (micrograph file name), chirality (a class of the bundle, e.g. 11-6), "
        "x0,y0,x1,y1 (its axis ends, pixels of the original image)",
    )
    t.add_argument("--model-dir", type=Path, required=True, help="the bundle predict ran (model.keras + card.json)")
    t.add_argument("--task", default="chirality", help="the bundle's name in predict's output (default chirality)")
    t.add_argument(
        "--match-nm",
        type=float,
        default=1.0,
        help="a predicted tube answers a labelled one when both its ends are this close to the labelled axis (nm)",
    )
    t.set_defaults(func=_fit_tubes)


def parse_temperatures(values: list[str] | None) -> dict[str, float]:
    """'T' (every classifier) or 'TASK=T' -> {task or '*': T}."""
    out: dict[str, float] = {}
    for v in values or []:
        task, _, t = v.rpartition("=")
        try:
            value = float(t)
        except ValueError:
            raise HrtemflowError(f"--temperature {v!r}: expected a number or TASK=NUMBER") from None
        if not (math.isfinite(value) and 0 < value <= 1e3):
            raise HrtemflowError(f"--temperature {v!r}: the temperature must be a positive number (at most 1000)")
        out[task or "*"] = value
    return out


def _check_inputs(args: argparse.Namespace) -> tuple[list[ModelCard], Options, dict[str, float]]:
    """Every argument checked before Keras loads (seconds): paths, numbers, cards, regions, temperatures."""
    if not args.input.exists():
        raise HrtemflowError(f"{args.input} does not exist: pass a micrograph file or a folder of them")
    if args.out.exists() and not args.out.is_dir():
        raise HrtemflowError(f"--out {args.out} exists and is not a folder; give the folder the outputs go to")
    cards = []
    for d in args.bundles:
        if not d.is_dir():
            raise HrtemflowError(f"model bundle {d} is not a folder; pass folders written by `hrtemflow train`")
        if not (d / "model.keras").is_file():
            raise HrtemflowError(f"model bundle {d}: model.keras is missing; pass folders written by `hrtemflow train`")
        cards.append(ModelCard.read(d))
    regions = None
    if args.regions is not None:
        regions = tuple(read_regions_csv(args.regions))
    elif args.box:
        regions = tuple(parse_box(b, f"b{i:03d}") for i, b in enumerate(args.box))
    opt = Options(
        pixel_size_nm=args.pixel_size,
        frames=args.frames,
        regions=regions,
        window_px=args.window_px,
        stride_fraction=args.stride_fraction,
        tta=not args.no_tta,
        table_rows=args.table_rows,
        max_pixels=args.max_pixels,
        tubes=tuple(parse_tube(t, f"u{i + 1:02d}") for i, t in enumerate(args.tube)) if args.tube else None,
        find_tubes=not args.no_tubes,
        sliding=not args.tubes_only,
    )
    check_options(opt)
    temps = parse_temperatures(args.temperature)
    check_temperatures(temps, cards)
    return cards, opt, temps


def _predict(args: argparse.Namespace) -> int:
    _, opt, temps = _check_inputs(args)
    if args.tubes_only and args.no_tubes:
        raise HrtemflowError("--tubes-only with --no-tubes leaves nothing to predict; give one of them")
    from ...apply.predict import predict_path  # noqa: PLC0415 (the apply stage: numpy, scipy, readers)

    def echo(*parts, file=None) -> None:
        if file is sys.stderr or not args.quiet:
            print(*parts, file=file or sys.stdout, flush=True)

    summary = predict_path(
        args.input, args.bundles, args.out, opt, temperatures=temps, progress=not args.quiet, echo=echo
    )
    print(f"predict: {summary['n_micrographs']} micrograph(s) analysed; results in {args.out}", flush=True)
    if summary["n_failed"]:
        print(
            f"predict: {summary['n_failed']} file(s) failed, each with its reason in {args.out / 'summary.json'}",
            file=sys.stderr,
        )
        return 1
    return 0


def _fit_ood(args: argparse.Namespace) -> int:
    from ...campaign.specs import read_spec  # noqa: PLC0415

    spec = read_spec(args.spec, "train")
    from ...learn.bundle import fit_bundle_ood  # noqa: PLC0415

    stats = fit_bundle_ood(spec, args.model_dir, base=args.base, max_images=args.max_images)
    print(
        f"fit-ood: {spec.get('task')}: {stats['n_train']} training / {stats['n_val']} validation images, features of "
        f"{', '.join(stats['feature_layers'])}; saved {args.model_dir / 'ood.npz'}",
        flush=True,
    )
    return 0


def _fit_tubes(args: argparse.Namespace) -> int:
    from ...apply.tube_calibration import CALIBRATION_FILE, fit_tubes  # noqa: PLC0415

    if not (math.isfinite(args.match_nm) and args.match_nm > 0):
        raise HrtemflowError(f"--match-nm {args.match_nm}: must be a positive distance in nm")
    r = fit_tubes(args.predict_dir, args.labels, args.model_dir, args.task, args.match_nm)
    print(
        f"fit-tubes: {r['tubes_fitted']} of {r['tubes_labelled']} labelled tubes found; "
        + "; ".join(
            f"{k} pool: exponent {f['exponent']:.3g}, NLL {f['nll']:.3f}, top-1 {100 * f['top1']:.1f} %"
            for k, f in r["fits"].items()
        )
        + f"; kept the {r['pool']} pool: ECE {100 * r['ece_mean']:.1f} % (windows' mean) -> "
        f"{100 * r['ece_tempered']:.1f} %, NLL {r['nll_mean']:.3f} -> {r['nll_tempered']:.3f}; a calibrated answer "
        f"reads {100 * r['ece_check_tempered']['ece_if_calibrated']:.1f} % on {r['tubes_fitted']} tubes "
        f"(p = {r['ece_check_tempered']['p_value']:.2f}); saved {args.model_dir / CALIBRATION_FILE}",
        flush=True,
    )
    fit = r.get("lattice_fit")
    if fit is None:
        print("fit-tubes: the tube's own readings are not weighed in (fewer than 20 tubes read, or no (n,m) classes)")
    else:
        walls = fit.get("walls")
        print(
            f"fit-tubes: lattice chiral angle read on {fit['angles_read']} of {fit['tubes']} tubes, spread "
            f"{fit['sigma_deg']:.2f}°; "
            + (
                f"walls read on {walls['tubes_read']}, radius off by {walls['radius_error_abs_median_nm']:.4f} nm "
                f"(median; 90 % within {walls['radius_error_abs_q90_nm']:.4f}), "
                + (
                    f"weighed in (spread {fit['wall_sigma_nm']:.4f} nm); "
                    if walls["kept"]
                    else "not weighed (no gain over the angle out of sample); "
                )
                if walls
                else "walls not weighed; "
            )
            + f"on the {fit['tubes_read']} read tubes top-1 {100 * fit['pool_alone']['top1']:.1f} -> "
            f"{100 * fit['with_lattice']['top1']:.1f} %, NLL {fit['pool_alone']['nll']:.3f} -> "
            f"{fit['with_lattice']['nll']:.3f} (two-fold, out of sample: {fit['with_lattice_two_fold']['nll']:.3f}): "
            + ("weighed in" if fit["kept"] else "not kept (no gain out of sample)"),
            flush=True,
        )
    return 0
