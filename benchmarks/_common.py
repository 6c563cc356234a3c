"""Shared bits of the benchmarks: machine and version header, markdown output."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def header(title: str) -> str:
    from hrtemflow.runtime import versions

    v = versions()
    cpu = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
        cpu = model
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    vers = ", ".join(f"{k} {val}" for k, val in v.items() if val != "not installed")
    return (f"### {title}\n\n{datetime.date.today().isoformat()} on {os.cpu_count()} cores ({cpu}), "
            f"{mem:.0f} GiB; {vers}\n")


def emit(block: str, name: str) -> None:
    """Print the markdown block and keep a copy in benchmarks/out/ (ignored by git)."""
    print(block)
    out = ROOT / "benchmarks" / "out"
    out.mkdir(exist_ok=True)
    (out / f"{name}.md").write_text(block)


def run_worker(what: str, script: str, args: list[str], env: dict | None = None) -> dict | None:
    """Run `script` again in a fresh process (a clean Keras/TensorFlow state per case) and return the
    JSON it prints after "RESULT "; None, with the worker's stderr tail printed, if it failed."""
    print(f"{what} ...", file=sys.stderr, flush=True)
    res = subprocess.run([sys.executable, script, *args], env=env, capture_output=True, text=True)
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if res.returncode or line is None:
        print(f"{what} failed (exit {res.returncode}):\n{res.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(line[len("RESULT "):])
