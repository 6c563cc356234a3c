"""`hrtemflow image` (one image shard from its spec) and `hrtemflow image-figure` (a contact sheet)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ...core.errors import HrtemflowError
from ...core.families import FAMILIES
from ...core.runtime import threads


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "image",
        help="make one image shard (Zarr) from its imaging spec",
        description="Read the MD shard named by SPEC (plan/images/<group>/<shard>.json), make K views per ok "
        "structure, one abTEM multislice each, M optics/noise variants per exit wave, and write the Zarr v3 "
        "image shard atomically to OUT. Failed MD samples are skipped and counted.",
    )
    p.add_argument("spec", type=Path, help="imaging spec JSON written by `hrtemflow plan`")
    p.add_argument("--out", type=Path, required=True, help="output store, e.g. results/images/<group>/<shard>.zarr")
    p.add_argument("--threads", type=int, default=None, help="FFT threads (default: $HRTEMFLOW_THREADS, SLURM or 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_image, report_usage=True)

    f = subparsers.add_parser(
        "image-figure",
        help="contact sheet of one family's images (noisy, noise-free, clean, with their parameters)",
        description="Write a PNG grid of images of one family from image shards: per image the noisy detector "
        "image, the noise-free image and the clean target, captioned with defocus, C12, dose, fov and label.",
    )
    f.add_argument("--family", required=True, choices=FAMILIES)
    f.add_argument("--shards", type=Path, nargs="+", required=True, help="image shards (.zarr) of that family")
    f.add_argument("--out", type=Path, required=True, help="output PNG")
    f.add_argument("--size", type=int, default=None, help="image size to show (default: the largest)")
    f.add_argument("--count", type=int, default=8, help="number of images (default 8)")
    f.set_defaults(func=_figure)


def load_spec(path: Path) -> dict:
    from ...campaign.specs import read_spec  # noqa: PLC0415

    return read_spec(path, "images")


def _image(args: argparse.Namespace) -> int:
    from ...imaging.shard import check_spec, run_shard  # noqa: PLC0415

    spec = load_spec(args.spec)
    check_spec(spec)  # every problem, before any work
    n_threads = args.threads if args.threads is not None else threads(1)
    if n_threads < 1:
        raise HrtemflowError(f"--threads {n_threads}: give 1 or more")
    result = run_shard(spec, args.out, threads=n_threads, progress=not args.no_progress)
    print(json.dumps(result), file=sys.stdout)
    return 0


def _figure(args: argparse.Namespace) -> int:
    from ...imaging.figure import contact_sheet  # noqa: PLC0415

    out = contact_sheet(args.shards, args.family, args.out, size=args.size, count=args.count)
    print(out)
    return 0
