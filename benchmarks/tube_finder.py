"""How well predict's tube finder places whole tubes, without a network (issue 30).

    python benchmarks/tube_finder.py DIR/micrographs [--out finder.json] [--workers 2]

DIR/micrographs is a folder written by `benchmarks/tube_micrographs.py` (calibrated TIFFs and labels.csv
with each tube's labelled end points). Every micrograph is read as predict reads it
(`hrtemflow.apply.readers.read_micrograph`), its tubes found as predict finds them
(`hrtemflow.apply.tubes.find_tubes`) and matched to the labelled tubes by the per-tube scorer's own rule
(`hrtemflow.apply.tube_calibration.match_tubes`: both found end points within 1 nm of the labelled axis).
Reports the found share (the ceiling of per-tube top-1 when a missed tube counts wrong), spurious tubes,
and where each found end lies against its labelled end: along the axis (positive = past the tube's end,
into vacuum, which puts windows off the tube) and across it, overall and by defocus, so a change of the
finder is judged on the share it finds and the ends it places, in minutes instead of a bundle's training.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from hrtemflow.apply.tube_calibration import MATCH_NM, as_number, match_tubes  # noqa: E402
from tube_micrographs import TASK, read_csv  # noqa: E402

#: defocus bins (nm) the end errors are broken down by: the lens spreads a tube's contrast more with defocus
DEFOCUS_BINS = (0.0, 7.0, 13.0, 1e9)


def find_one(path: str) -> list[dict[str, Any]]:
    """The tubes found in one micrograph, as rows of predict's tubes.csv (the columns the matcher reads)."""
    from hrtemflow.apply.readers import read_micrograph
    from hrtemflow.apply.tubes import find_tubes

    (mic,) = read_micrograph(path)
    rows = []
    for t in find_tubes(mic.data, float(mic.pixel_size_A)):
        (x0, y0), (x1, y1) = t.points[0], t.points[-1]
        rows.append(
            {
                "source": path,
                "task": TASK,
                "tube": t.name,
                "x0_px": x0,
                "y0_px": y0,
                "x1_px": x1,
                "y1_px": y1,
                "pixel_size_nm": float(mic.pixel_size_A) / 10.0,
            }
        )
    return rows


def end_errors(label: Mapping[str, Any], tube: Mapping[str, Any]) -> tuple[list[float], list[float]]:
    """Each found end against the labelled end nearest it (nm): along the labelled axis, positive outward
    (past the tube's end), and across it."""
    px = as_number(label["pixel_size_nm"])
    a = np.array([as_number(label["x0"]), as_number(label["y0"])])
    b = np.array([as_number(label["x1"]), as_number(label["y1"])])
    u = (b - a) / max(float(np.hypot(*(b - a))), 1e-9)
    normal = np.array([-u[1], u[0]])
    along, across = [], []
    for q in (
        np.array([as_number(tube["x0_px"]), as_number(tube["y0_px"])]),
        np.array([as_number(tube["x1_px"]), as_number(tube["y1_px"])]),
    ):
        near, outward = (a, -u) if np.hypot(*(q - a)) <= np.hypot(*(q - b)) else (b, u)
        along.append(float((q - near) @ outward) * px)
        across.append(abs(float((q - near) @ normal)) * px)
    return along, across


def score(labels: Sequence[Mapping[str, Any]], found: Sequence[Mapping[str, Any]], match_nm: float) -> dict[str, Any]:
    """Found share (with the project's by-structure bootstrap interval), spurious tubes and end errors (see
    the module docstring)."""
    from hrtemflow.learn.evaluate import structure_ci  # the learn stage loads Keras: only when scoring

    matches = match_tubes(labels, found, TASK, match_nm)
    hit = np.array([m["tube"] is not None for m in matches])
    used = {id(m["tube"]) for m in matches if m["tube"] is not None}
    spurious = sum(1 for t in found if id(t) not in used)
    rows = []
    for m in matches:
        lab = m["label"]
        row = {
            "file": lab["file"],
            "defocus_nm": as_number(lab.get("defocus_nm")),
            "found": m["tube"] is not None,
            "distance_nm": m["distance_nm"],
        }
        if m["tube"] is not None:
            along, across = end_errors(lab, m["tube"])
            row.update(along_nm=along, across_nm=across, coverage=m["coverage"])
        rows.append(row)

    def summary(sel: Sequence[dict[str, Any]]) -> dict[str, Any]:
        got = [r for r in sel if r["found"]]
        along = np.array([e for r in got for e in r["along_nm"]])
        return {
            "tubes": len(sel),
            "found": len(got) / len(sel) if sel else None,
            "end_along_nm_median": float(np.median(along)) if along.size else None,
            "end_along_nm_p5_p95": [float(x) for x in np.percentile(along, [5, 95])] if along.size else None,
            "ends_past_0_5_nm": float(np.mean(along > 0.5)) if along.size else None,
            "end_across_nm_p95": float(np.percentile([e for r in got for e in r["across_nm"]], 95)) if got else None,
        }

    by_defocus = {}
    for lo, hi in zip(DEFOCUS_BINS[:-1], DEFOCUS_BINS[1:]):
        name = f"{lo:g}-{hi:g} nm" if hi < 1e8 else f">= {lo:g} nm"
        by_defocus[name] = summary([r for r in rows if lo <= r["defocus_nm"] < hi])
    structure = np.array([str(m["label"].get("structure") or m["label"]["file"]) for m in matches])
    return {
        **summary(rows),
        "found_ci95": structure_ci(hit, structure) if len(rows) else None,
        "spurious": spurious,
        "match_nm": match_nm,
        "by_defocus": by_defocus,
        "missed": [r for r in rows if not r["found"]],
        "rows": rows,
    }


def table(m: Mapping[str, Any]) -> str:
    def f(v: Any, pct: bool = False) -> str:
        return "–" if v is None else f"{100 * v:.1f} %" if pct else f"{v:+.2f}"

    lo, hi = m["found_ci95"]
    lines = [
        f"{m['tubes']} tubes, found {f(m['found'], True)} [{f(lo, True)}–{f(hi, True)}], "
        f"spurious {m['spurious']} (match < {m['match_nm']} nm)",
        "defocus      tubes  found    end along (nm): median  p5..p95        past 0.5 nm",
    ]
    for name, s in [("all", m), *m["by_defocus"].items()]:
        p = s["end_along_nm_p5_p95"] or [math.nan, math.nan]
        lines.append(
            f"{name:<12} {s['tubes']:>5}  {f(s['found'], True):>7}  {f(s['end_along_nm_median']):>14}  "
            f"{p[0]:+.2f}..{p[1]:+.2f}   {f(s['ends_past_0_5_nm'], True):>8}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("micrographs", type=Path, help="a folder of tube_micrographs.py (TIFFs and labels.csv)")
    p.add_argument("--out", type=Path, help="write the figures as JSON here")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--n", type=int, help="only the first n micrographs of labels.csv")
    p.add_argument("--match-nm", type=float, default=MATCH_NM)
    args = p.parse_args(argv)
    labels_csv = args.micrographs / "labels.csv"
    if not labels_csv.is_file():
        raise SystemExit(f"{labels_csv}: missing; make the micrographs with benchmarks/tube_micrographs.py first")
    labels = read_csv(labels_csv)[: args.n]
    if not labels:
        raise SystemExit(f"{labels_csv}: no tubes listed; make the micrographs again (tube_micrographs.py)")
    files = sorted({str(args.micrographs / lab["file"]) for lab in labels})
    t0 = time.perf_counter()
    if args.workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.workers) as pool:
            found = [row for rows in pool.map(find_one, files, chunksize=4) for row in rows]
    else:
        found = [row for path in files for row in find_one(path)]
    m = score(labels, found, args.match_nm)
    m["seconds"] = time.perf_counter() - t0
    print(table(m))
    if args.out:
        args.out.write_text(json.dumps(m, indent=1, default=float))
    return m


if __name__ == "__main__":
    main()
