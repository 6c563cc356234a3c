"""How round the campaign's MD tubes are: the radius a tube shows in projection, by view direction.

    python studies/tube_roundness.py config/bench-chirality-all.yaml --split val 16-0 17-0 10-10 8-8

A diameter read from an image (the network's windows or the walls, `apply.tube_profile`) is the projected width of
one view; a tube whose cross-section is oval shows another width from another side. Per tube of the split (as the
training split them, `benchmarks/tube_micrographs.campaign_tubes`), its MD frame's atoms are centred slice by slice
along the axis (8 slices: a bent tube's bend is not ovality), and the projected radius along each of 36 directions
is sqrt(2 · mean(projected offset²)), the radius for a circle. Prints, per class, the range over all its tubes and
the median over tubes of each tube's smallest and largest, as % of the (n,m)'s nominal radius (1.42 Å bond).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.tube_micrographs import _frame, campaign_tubes  # noqa: E402

from hrtemflow.core.ids import parse_chirality  # noqa: E402
from hrtemflow.core.tubes import GRAPHENE_A, tube_diameter_A  # noqa: E402

DIRECTIONS = 36
SLICES = 8


def projected_radii(positions: np.ndarray) -> np.ndarray:
    """The projected radius (Å) along DIRECTIONS directions across the axis (z), bends removed slice by slice."""
    z = positions[:, 2]
    slices = np.digitize(z, np.linspace(z.min(), z.max() + 1e-6, SLICES + 1))
    xy = positions[:, :2].copy()
    for s in np.unique(slices):
        xy[slices == s] -= xy[slices == s].mean(axis=0)
    angles = np.linspace(0.0, np.pi, DIRECTIONS, endpoint=False)
    return np.array([np.sqrt(2.0 * np.mean((xy @ np.array([np.cos(a), np.sin(a)])) ** 2)) for a in angles])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("classes", nargs="+", help="(n,m) as n-m")
    ap.add_argument("--split", default="val", choices=("val", "test"))
    args = ap.parse_args(argv)
    tubes = campaign_tubes(args.config, split=args.split)
    print("| class | nominal radius nm | tubes | smallest % | largest % | median smallest % | median largest % |")
    print("|---|---|---|---|---|---|---|")
    for label in args.classes:
        if label not in tubes["per_class"]:
            print(f"{label}: no tubes of that class in the {args.split} split", file=sys.stderr)
            return 2
        radius = tube_diameter_A(*parse_chirality(label), GRAPHENE_A) / 2.0
        spans = []
        for t in tubes["per_class"][label]:
            r = projected_radii(_frame(t["md"], t["structure"]).positions) / radius - 1.0
            spans.append((r.min(), r.max()))
        s = 100.0 * np.array(spans)
        print(
            f"| ({label.replace('-', ',')}) | {radius / 10:.3f} | {len(s)} | {s[:, 0].min():+.2f} | "
            f"{s[:, 1].max():+.2f} | {np.median(s[:, 0]):+.2f} | {np.median(s[:, 1]):+.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
