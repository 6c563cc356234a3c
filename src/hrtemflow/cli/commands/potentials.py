"""`hrtemflow potentials`: regenerate (or check) the committed potential files in resources/potentials."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_OUT = Path("resources/potentials")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "potentials",
        help="write the Ag/Co TB-SMA eam/fs tables and C.tersoff (or check them)",
        description=(
            "Generate the Ag/Co TB-SMA eam/fs tables (one per parameter set) and the Tersoff carbon file. "
            "Output is byte-for-byte reproducible; unchanged files are left untouched."
        ),
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"folder to write into (default: {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        metavar="NAME",
        help="parameter set to write (repeatable; default: all of default, baletto_ag, cleri_rosato)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 listing files that are missing or differ from a regeneration",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...atomistic import potentials  # noqa: PLC0415  (keeps `hrtemflow --help` fast)

    out = Path(args.out)
    if args.check:
        stale = potentials.check_tables(out, args.sets)
        if stale:
            for name in stale:
                print(f"differs from a regeneration: {out / name}")
            print(f"{len(stale)} file(s) out of date; run `hrtemflow potentials --out {out}` to regenerate")
            return 1
        print(f"all potential files in {out} are up to date")
        return 0
    for path, changed in potentials.write_all(out, args.sets).items():
        print(f"{'wrote' if changed else 'unchanged'}: {path}")
    return 0
