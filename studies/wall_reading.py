"""How well a whole tube's walls give its radius (`hrtemflow.apply.tube_profile`), with no network.

    python studies/wall_reading.py /tmp/tubes-val/micrographs

The folder holds micrographs of labelled tubes and their `labels.csv` (`file, chirality, x0, y0, x1, y1,
pixel_size_nm, defocus_nm`), as `benchmarks/tube_micrographs.py --generate-only` writes it. The walls are read
along the labelled axes; the map of the two radii (darkest, brightest) to the tube's radius is the one predict's
calibration fits (`lattice_fusion.fit_wall_map`), fitted here on one half of the tubes and scored on the other
(two-fold), so every figure is out of sample. Prints the radius error overall, by defocus and by the walls'
contrast, and each radius alone against the map.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import tifffile

from hrtemflow.apply import lattice_fusion
from hrtemflow.apply.tube_profile import read_tube_walls
from hrtemflow.core.ids import parse_chirality
from hrtemflow.core.tubes import GRAPHENE_A, tube_diameter_A


def read_folder(folder: Path) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """The readings (as predict stores them: {"walls": ...}), the true radii (nm) and the defoci (nm)."""
    rows = list(csv.DictReader((folder / "labels.csv").open()))
    readings, radii, defocus = [], [], []
    for r in rows:
        image = tifffile.imread(folder / r["file"])
        ends = [(float(r["x0"]), float(r["y0"])), (float(r["x1"]), float(r["y1"]))]
        readings.append({"walls": read_tube_walls(image, ends, float(r["pixel_size_nm"]))})
        radii.append(tube_diameter_A(*parse_chirality(r["chirality"]), GRAPHENE_A) / 20.0)
        defocus.append(float(r.get("defocus_nm") or "nan"))
    return readings, np.array(radii), np.array(defocus)


def two_fold(readings: list[dict], radii: np.ndarray) -> np.ndarray:
    """Each tube's radius error (nm) through the map fitted on the other half."""
    off = np.full(len(radii), np.nan)
    halves = np.arange(len(radii)) % 2
    for h in (0, 1):
        fit_on, score_on = np.flatnonzero(halves != h), np.flatnonzero(halves == h)
        params = lattice_fusion.fit_wall_map([readings[i] for i in fit_on], radii[fit_on])
        off[score_on] = lattice_fusion.tube_radius([readings[i] for i in score_on], params) - radii[score_on]
    return off


def row(name: str, off: np.ndarray) -> str:
    off = off[np.isfinite(off)]
    a = np.abs(off)
    return (
        f"| {name} | {len(off)} | {np.median(off):+.4f} | {np.median(a):.4f} | {np.quantile(a, 0.9):.4f} | "
        f"{np.mean(a > 0.039 / 2):.3f} |"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path)
    args = ap.parse_args(argv)
    if not (args.folder / "labels.csv").is_file():
        print(f"{args.folder}: no labels.csv (make the folder with --generate-only first)", file=sys.stderr)
        return 2
    readings, radii, defocus = read_folder(args.folder)
    read = np.array([lattice_fusion.walls_read(r) for r in readings])
    print(f"{read.sum()} of {len(read)} tubes read")
    readings = [r for r, ok in zip(readings, read) if ok]
    radii, defocus = radii[read], defocus[read]
    contrast = lattice_fusion.wall_radii(readings)[:, 2]
    off = two_fold(readings, radii)
    params = lattice_fusion.fit_wall_map(readings, radii)
    print("map on all: r = " + " ".join(f"{k} {v:+.4f}" for k, v in params.items()))
    print(
        "| tubes | n | median error nm | median abs. nm | 90th pct abs. nm |"
        " share beyond half the (16,0)-(17,0) step (0.0196 nm) |"
    )
    print("|---|---|---|---|---|---|")
    print(row("all (two-fold)", off))
    for lo, hi in ((3, 6), (6, 9), (9, 12), (12, 15), (15, 18), (18, 21)):
        print(row(f"defocus {lo}-{hi} nm", off[(defocus >= lo) & (defocus < hi)]))
    for lo, hi in ((0, 5), (5, 10), (10, 20), (20, np.inf)):
        print(row(f"contrast {lo}-{hi}", off[(contrast >= lo) & (contrast < hi)]))
    w = lattice_fusion.wall_radii(readings)
    for j, name in enumerate(("darkest radius alone", "brightest radius alone")):
        a = np.column_stack([w[:, j], np.ones(len(w))])
        halves = np.arange(len(radii)) % 2
        single = np.empty(len(radii))
        for h in (0, 1):
            coef, *_ = np.linalg.lstsq(a[halves != h], radii[halves != h], rcond=None)
            single[halves == h] = a[halves == h] @ coef - radii[halves == h]
        print(row(name + " (two-fold, least squares)", single))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
