"""How well a tube's own graphene lattice gives the micrograph's pixel size (`hrtemflow.apply.lattice`).

    python studies/lattice_reading.py /tmp/tubes-val-transfer/micrographs           # the pipeline's own tubes
    python studies/lattice_reading.py /tmp/indep/sets/H0_ideal /tmp/indep/sets/calibration_down ...

Each folder holds micrographs of labelled tubes and their `labels.csv` (`file, chirality, x0, y0, x1, y1,
pixel_size_nm`; `tilt_deg`, `declared_pixel_scale` and `support_film` where the generator wrote them):
`benchmarks/tube_micrographs.py --generate-only` writes such a folder, and so does the independent
generator (`python -m studies.independent --generate-only`). Per folder, and per support film where it
varies, it prints how many tubes give a reading, the reading's error against the truth (1 / the declared
scale / cos(tilt): a tube tilted out of the plane looks shorter along its axis), its chiral angle's error,
and how many tubes `lattice.check` would flag given their TRUE chirality (the answer predict checks against
is the classifier's: a wrong answer at another angle is not checked). No network is run.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import numpy as np
import tifffile

from hrtemflow.apply import lattice
from hrtemflow.core.ids import parse_chirality
from hrtemflow.core.tubes import tube_chiral_angle_deg


def read_folder(folder: Path, tilt_deg: float) -> list[dict]:
    rows = list(csv.DictReader((folder / "labels.csv").open()))
    out = []
    for r in rows:
        image = tifffile.imread(folder / r["file"])
        ends = [(float(r["x0"]), float(r["y0"])), (float(r["x1"]), float(r["y1"]))]
        reading = lattice.read_tube_lattice(image, ends, float(r["pixel_size_nm"]))
        n, m = parse_chirality(r["chirality"])
        tilt = math.radians(float(r.get("tilt_deg") or 0))
        truth = 1.0 / float(r.get("declared_pixel_scale") or 1.0) / math.cos(tilt)
        flagged, _ = lattice.check(reading, tube_chiral_angle_deg(n, m), tilt_deg)
        rec = {"film": r.get("support_film", "") in ("1", "True", "true"), "flagged": flagged, "read": False}
        if reading["scale"] is not None:
            rec.update(
                read=True,
                error_pct=100.0 * (reading["scale"] / truth - 1.0),
                angle_error_deg=abs(reading["chiral_angle_deg"] - tube_chiral_angle_deg(n, m)),
            )
        out.append(rec)
    return out


def summary(name: str, recs: list[dict]) -> str:
    read = [r for r in recs if r["read"]]
    if not read:
        return f"| {name} | {len(recs)} | 0 | - | - | - | - | {sum(r['flagged'] for r in recs)} |"
    err = np.abs([r["error_pct"] for r in read])
    ang = np.array([r["angle_error_deg"] for r in read])
    good = int(((err < 1.0) & (ang < 2.0)).sum())
    return (
        f"| {name} | {len(recs)} | {len(read)} | {np.median([r['error_pct'] for r in read]):+.2f} | "
        f"{np.quantile(err, 0.9):.2f} | {np.median(ang):.2f} | {good} | {sum(r['flagged'] for r in recs)} |"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--tilt-deg", type=float, default=lattice.DEFAULT_TILT_DEG, help="the training's largest tilt")
    args = ap.parse_args(argv)
    print(
        "| micrographs | tubes | read | error median % | abs. error 90th pct % | angle error median deg |"
        " within 1 % and 2 deg | flagged |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for folder in args.folders:
        if not (folder / "labels.csv").is_file():
            print(f"{folder}: no labels.csv (make the folder with --generate-only first)", file=sys.stderr)
            return 2
        recs = read_folder(folder, args.tilt_deg)
        name = f"{folder.parent.name}/{folder.name}"
        print(summary(name, recs))
        if any(r["film"] for r in recs) and not all(r["film"] for r in recs):
            print(summary(f"{name}, on a film", [r for r in recs if r["film"]]))
            print(summary(f"{name}, no film", [r for r in recs if not r["film"]]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
