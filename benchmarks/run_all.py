"""Run every benchmark, one after the other, and collect their markdown blocks.

    python benchmarks/run_all.py            # all
    python benchmarks/run_all.py dag_scale  # some

Each block is also kept in benchmarks/out/<name>.md; copy the figures worth keeping into
benchmarks/RESULTS.md (dated, with machine and versions, which every block carries).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ALL = [
    "dag_scale",
    "md_throughput",
    "cost_table",
    "estimate_accuracy",
    "imaging_throughput",
    "feed_throughput",
    "backend_speed",
    "precision_speed",
    "demo_time",
    "compact_store",
    "soak",
    "learning_accuracy",
]  # the research studies on the benches it makes are in studies/


def main() -> int:
    names = sys.argv[1:] or ALL
    failed = []
    for name in names:
        script = HERE / f"{name}.py"
        if not script.exists():
            print(f"## {name}: no such benchmark ({script} missing)")
            failed.append(name)
            continue
        print(f"## {name}", flush=True)
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, str(script)])
        print(f"({name}: {time.perf_counter() - t0:.0f} s, exit {res.returncode})\n", flush=True)
        if res.returncode:
            failed.append(name)
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
