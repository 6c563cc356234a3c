"""The `hrtemflow` command. Each stage adds its subcommands in `hrtemflow/commands/<stage>.py`.

A command module defines `register(subparsers)`, adding parsers whose `func(args) -> int` does the
work; heavy imports (LAMMPS, abTEM, TensorFlow) belong inside `func`, so `hrtemflow --help` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from . import __version__, commands
from .errors import HrtemflowError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hrtemflow",
        description="Atomistic simulation -> HRTEM images -> trained networks -> real micrographs.",
    )
    parser.add_argument("--version", action="version", version=f"hrtemflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except HrtemflowError as exc:
        print(f"hrtemflow {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hrtemflow {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
