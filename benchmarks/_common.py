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


def run_campaign(cfg: dict, work: Path, *extra: str, cores: int = 2) -> float:
    """Run the workflow on `cfg` in the folder `work` (its results under work/<campaign.results>), as
    `make demo` would; return the wall seconds. Raises SystemExit with Snakemake's stderr if it fails."""
    import time

    import yaml

    cfg = {**cfg, "potentials": {**cfg.get("potentials", {}), "directory": str(ROOT / "resources" / "potentials")}}
    work.mkdir(parents=True, exist_ok=True)
    (work / "campaign.yaml").write_text(yaml.safe_dump(cfg))
    bindir = Path(sys.executable).parent
    cmd = [str(bindir / "snakemake"), "-s", str(ROOT / "Snakefile"), "--directory", str(work)]
    cmd += ["--configfile", str(work / "campaign.yaml"), "--cores", str(cores), *extra]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env={"PATH": f"{bindir}:/usr/bin:/bin"})
    wall = time.perf_counter() - t0
    if res.returncode:
        raise SystemExit(f"the campaign in {work} failed after {wall:.0f} s:\n{res.stderr[-4000:]}")
    return wall
