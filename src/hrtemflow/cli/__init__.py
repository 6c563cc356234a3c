"""Stage 7: the `hrtemflow` command. Each stage adds its subcommands in `hrtemflow/cli/commands/<stage>.py`.

A command module defines `register(subparsers)`, adding parsers whose `func(args) -> int` does the
work; heavy imports (LAMMPS, abTEM, TensorFlow) belong inside `func`, so `hrtemflow --help` is fast.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import pkgutil
import sys

from .. import __version__
from ..core.errors import HrtemflowError
from ..core.usage import usage_line
from . import commands


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


#: OSErrors a user fixes (disk, quota, mount, permissions): one line naming the path, no traceback
_OS_ADVICE = {
    errno.ENOSPC: "the file system is full: free space or write the results to a larger disk (campaign.results, "
    "--out), then rerun",
    errno.EDQUOT: "the disk quota is exceeded: free space or write the results elsewhere (campaign.results, --out), "
    "then rerun",
    errno.EROFS: "the file system is mounted read-only: write the results to a writable folder (campaign.results, "
    "--out)",
    errno.EACCES: "permission denied: make the folder writable (and readable) for this user, or write the results "
    "elsewhere",
    errno.EPERM: "operation not permitted: make the folder writable for this user, or write the results elsewhere",
}


def os_error_message(exc: OSError) -> str | None:
    """One line for an OSError a user can fix (see _OS_ADVICE), or None for anything else (a bug)."""
    advice = _OS_ADVICE.get(exc.errno)
    if advice is None:
        return None
    where = exc.filename if exc.filename is not None else "a results file"
    return (
        f"{where}: {os.strerror(exc.errno)}; {advice}. "
        "Outputs are written atomically: nothing half-written was left under a final name"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rc = int(args.func(args) or 0)
    except HrtemflowError as exc:
        print(f"hrtemflow {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        message = os_error_message(exc)
        if message is None:
            raise
        print(f"hrtemflow {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hrtemflow {args.command}: interrupted", file=sys.stderr)
        return 130
    if rc == 0 and getattr(args, "report_usage", False):  # a campaign job: its cost, for `hrtemflow summary`
        sys.stdout.flush()
        print(usage_line(args.command), file=sys.stderr, flush=True)
    return rc
