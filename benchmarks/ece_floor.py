"""How small an ECE can a test set of n tubes or micrographs show? The floor of a calibrated answer.

    python benchmarks/ece_floor.py --n 15 40 142 284 568 1000 2000
    python benchmarks/ece_floor.py --tube-metrics tubes-test/tube_metrics.json
    python benchmarks/ece_floor.py --factor-table predictions/factor_table.json --set H0_ideal

ECE over a finite test set reads above zero even when every probability is right: each confidence
bin's accuracy is a binomial estimate. This benchmark measures that floor
(`hrtemflow.core.calibration.calibrated_ece_draws`): n top-1 probabilities are drawn with replacement
from a confidence distribution, each sample's correctness is redrawn as a coin of its own probability,
and the ECE of the redraw is recorded, 2,000 times per n. The confidences come from a run's own answers
(a `benchmarks/tube_micrographs.py` tube_metrics.json, the found tubes' top-1 probabilities; or an
independent set's per-image probabilities from `studies.independent`'s factor_table.json) or, without
one, from three Beta distributions of the top-1 probability (means 0.75, 0.86, 0.90).

Prints, per n, the floor's mean and 95th percentile, and the smallest n whose mean floor is at or
below --target: below that n, an ECE target of --target cannot be told from a calibrated answer.
Writes the block to benchmarks/out/ece_floor.txt (--out).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from hrtemflow.core.calibration import ECE_BINS, NULL_RESAMPLES, calibrated_ece_draws  # noqa: E402

DEFAULT_N = (15, 40, 142, 284, 568, 1000, 2000, 5000)
#: Beta(a, b) of the top-1 probability when no run's answers are given: means 0.75, 0.86, 0.90
BETAS = ((3.0, 1.0), (6.0, 1.0), (9.0, 1.0))


def confidences_from(args: argparse.Namespace) -> dict[str, np.ndarray]:
    """Named top-1 probability samples: a run's answers, or the Beta distributions."""
    if args.tube_metrics:
        m = json.loads(Path(args.tube_metrics).read_text(encoding="utf-8"))
        if "per_tube" not in m:
            raise SystemExit(f"{args.tube_metrics} has no per_tube rows: rescore it with this version (--score-only)")
        conf = np.array([t["p1"] for t in m["per_tube"] if t.get("found") and t.get("p1") is not None], float)
        return {f"{Path(args.tube_metrics).parent.name} ({len(conf)} found tubes)": conf}
    if args.factor_table:
        table = json.loads(Path(args.factor_table).read_text(encoding="utf-8"))
        rows = {r["set"]: r for r in table.get("sets", table.get("rows", []))}
        if args.set not in rows:
            raise SystemExit(f"{args.factor_table}: no set {args.set!r} (it has {', '.join(rows)})")
        conf = np.array([p["probability"] for p in rows[args.set]["per_image"] if p.get("probability") is not None])
        return {f"{args.set} ({len(conf)} answered images)": conf}
    rng = np.random.default_rng(args.seed)
    return {f"Beta({a:g}, {b:g}), mean {a / (a + b):.2f}": rng.beta(a, b, 200_000) for a, b in BETAS}


def floor_table(conf: np.ndarray, ns: list[int], seed: int) -> list[tuple[int, float, float]]:
    """Per n: mean and 95th percentile of a calibrated answer's ECE, confidences resampled to n."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in ns:
        draws = np.concatenate(
            [
                calibrated_ece_draws(rng.choice(conf, n, replace=True), resamples=NULL_RESAMPLES // 20, seed=seed + k)
                for k in range(20)  # 20 resamples of the confidences x 100 coin redraws each
            ]
        )
        rows.append((n, float(draws.mean()), float(np.percentile(draws, 95))))
    return rows


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=list(DEFAULT_N), help="test-set sizes")
    ap.add_argument("--target", type=float, default=0.03, help="the ECE target to compare against (0.03)")
    ap.add_argument("--tube-metrics", help="a tube_metrics.json of benchmarks/tube_micrographs.py")
    ap.add_argument("--factor-table", help="a factor_table.json of studies.independent")
    ap.add_argument("--set", default="H0_ideal", help="the set of --factor-table (H0_ideal)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "ece_floor.txt", help="where to write")
    args = ap.parse_args(argv)
    if any(n < 1 for n in args.n):
        raise SystemExit(f"--n {args.n}: every test-set size must be at least 1")
    lines = [
        f"ECE ({ECE_BINS} equal-width bins) that a calibrated answer reads on n samples; mean [95th percentile] "
        f"of 2,000 redraws; target {100 * args.target:.1f} %",
    ]
    for name, conf in confidences_from(args).items():
        if conf.size == 0:
            raise SystemExit(f"{name}: no top-1 probabilities to resample")
        rows = floor_table(conf, sorted(set(args.n)), args.seed)
        lines.append(f"\n{name}: mean top-1 probability {conf.mean():.3f}")
        lines += [f"  n = {n:>5}: {100 * mean:5.1f} % [{100 * p95:5.1f} %]" for n, mean, p95 in rows]
        enough = [n for n, mean, _ in rows if mean <= args.target]
        lines.append(
            f"  the floor's mean reaches {100 * args.target:.1f} % at n = {enough[0]}"
            if enough
            else f"  the floor's mean stays above {100 * args.target:.1f} % up to n = {rows[-1][0]}"
        )
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n", encoding="utf-8")
    return text


if __name__ == "__main__":
    main()
