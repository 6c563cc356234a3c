"""A job's own account of what it used, as the last line of its log: the contract between the stage
commands (which write it) and the cost report (which reads it).

Snakemake's `benchmark:` samples a job every 0.5 s for its first 15 s, then every 30 s, and keeps the
last sample: a job loses the CPU time of up to 30 s of its end (half of a one-minute job). The process
itself knows exactly (getrusage), so each of md, image, train and evaluate prints one line to the log on
success and `hrtemflow.report.cost` prefers it to the benchmark file.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

PREFIX = "hrtemflow usage: "
#: how much of a log's end is read: the line is the last one the command writes
_TAIL_BYTES = 4096

_STARTED = time.monotonic()


def peak_rss() -> int:
    """Peak resident bytes of this program since it started.

    Linux keeps `ru_maxrss` across fork and exec: a command started by a 3 GB process (Snakemake, pytest)
    reports 3 GB whatever it did. VmHWM in /proc/self/status is the high-water mark of this program's own
    address space; elsewhere `ru_maxrss` is all there is.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, kilobytes elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def usage(command: str) -> dict[str, Any]:
    """CPU seconds of this process and the children it waited for, wall seconds since hrtemflow started,
    peak resident memory."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "command": command,
        "cpu_s": round(me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime, 3),
        "wall_s": round(time.monotonic() - _STARTED, 3),
        # children: their ru_maxrss, an upper bound (it starts from this process's size at the fork)
        "max_rss_mb": round(max(peak_rss(), kids.ru_maxrss * 1024) / 2**20, 1),
    }


def usage_line(command: str) -> str:
    return PREFIX + json.dumps(usage(command), sort_keys=True)


def read_usage(log: str | Path) -> dict[str, Any] | None:
    """The usage a log ends with, or None: no log, no line (a failed or older job), or a line not ours."""
    try:
        with open(log, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - _TAIL_BYTES))
            tail = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    for line in reversed(tail.splitlines()):
        if line.startswith(PREFIX):
            try:
                found = json.loads(line[len(PREFIX) :])
                return found if isinstance(found, dict) and {"cpu_s", "wall_s"} <= set(found) else None
            except ValueError:
                return None
    return None
