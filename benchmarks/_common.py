"""Shared bits of the benchmarks: machine and version header, markdown output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def header(title: str) -> str:
    from hrtemflow.core.runtime import machine_line

    return f"### {title}\n\n{machine_line()}\n"


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
    return json.loads(line[len("RESULT ") :])
