"""What predict's tube finder costs per micrograph, against the finder of an earlier commit (issue 30).

    python benchmarks/tube_finder_cost.py DIR/micrographs --against REV [--n 40]

Times `hrtemflow.apply.tubes.find_tubes` of this checkout and of git revision REV (its `tubes.py`, loaded
beside this one) on the same micrographs, alternating one call of each, so that the ratio is measured side
by side on a shared machine; DIR/micrographs is a folder of `benchmarks/tube_micrographs.py`.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from tube_micrographs import read_csv  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("micrographs", type=Path, help="a folder of tube_micrographs.py (TIFFs and labels.csv)")
    p.add_argument("--against", required=True, help="git revision whose find_tubes to time beside this one")
    p.add_argument("--n", type=int, default=40, help="the first n micrographs of labels.csv (default 40)")
    args = p.parse_args(argv)
    from hrtemflow.apply import tubes
    from hrtemflow.apply.readers import read_micrograph

    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{args.against}:src/hrtemflow/apply/tubes.py"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if source.returncode:
        raise SystemExit(f"--against {args.against}: {source.stderr.strip()}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tubes_then.py"
        path.write_text(source.stdout)
        spec = importlib.util.spec_from_file_location("hrtemflow.apply._tubes_then", path)
        then = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = then  # its dataclass looks itself up there
        spec.loader.exec_module(then)
    files = [lab["file"] for lab in read_csv(args.micrographs / "labels.csv")][: args.n]
    if not files:
        raise SystemExit(f"{args.micrographs / 'labels.csv'}: no micrographs listed")
    spent, sizes = {"then": 0.0, "now": 0.0}, []
    for name in files:
        (mic,) = read_micrograph(args.micrographs / name)
        image, px = np.asarray(mic.data), float(mic.pixel_size_A)
        sizes.append(image.shape[0])
        for key, module in (("then", then), ("now", tubes)):
            t0 = time.perf_counter()
            module.find_tubes(image, px)
            spent[key] += time.perf_counter() - t0
    n = len(files)
    print(
        f"{n} micrographs ({min(sizes)}-{max(sizes)} px square): find_tubes at {args.against} "
        f"{spent['then'] / n:.2f} s, now {spent['now'] / n:.2f} s per micrograph, "
        f"ratio {spent['now'] / spent['then']:.2f} "
        f"({platform.machine()}, python {platform.python_version()}, numpy {np.__version__})"
    )
    return {"then_s": spent["then"] / n, "now_s": spent["now"] / n}


if __name__ == "__main__":
    main()
