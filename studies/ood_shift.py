"""What makes the OOD gate flag independent in-range tubes: the structure, or the camera? (issue 29)

    python studies/ood_shift.py config/bench-chirality-transfer.yaml --out /tmp/oodexp

The chirality transfer bundle flags 12 % of the windows on the independent generator's ideal in-range tubes
and 1.4 % on the campaign's own validation tubes. This images the same validation tubes (`--per-class` of each
class, the benchmark's seeds and optics, no film) with the pipeline's own `tube_micrograph` in four ways and
runs `hrtemflow predict --tube` on each, as a user would:

- `md`: the campaign's MD frame, as `benchmarks/tube_micrographs.py` makes it;
- `ideal`: an ideal ASE tube of the same (n,m) at the measured 1.42 Å bond, no MD (the generator's structure);
- `box`: the MD frame imaged at a third of the pixel and summed 3 x 3 (a camera integrating over its pixels, a
  top-hat, as the generator's camera, instead of the imaging stage's Fourier crop);
- `boxmtf`: the same with the detector MTF 1/(1 + (f/c50)²) at the summed pixel before the shot noise, as the
  generator applies it (the image is made at 1000 x the dose, summed, scaled back, blurred, then counted).

    python studies/ood_shift.py --scored /tmp/indep/sets/H0_ideal /tmp/indep5/predictions/H0_ideal

reads a scored independent set instead (its labels and the scorer's predictions): the Spearman correlation of
each micrograph's median window OOD score with each of its drawn imaging parameters.

Prints, per way, the share of the tubes' windows predict flags ood and the median tube score (0: the
validation median, 1: its 99th percentile). No threshold is fitted; nothing is written into the bundle.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT)]

from studies.independent.generate import mtf  # noqa: E402  (the generator's camera MTF, as it applies it)

import tube_micrographs as tm  # noqa: E402
from hrtemflow.core.ids import parse_chirality  # noqa: E402

WAYS = ("md", "ideal", "box", "boxmtf")
BOX = 3  # the camera pixel is BOX x BOX of the image's
DOSE_FACTOR = 1000.0  # boxmtf: imaged near noise-free, then counted at the drawn dose


def _ideal(frame, chirality: str):
    from ase.build import nanotube

    n, m = parse_chirality(chirality)
    cells = max(1, round(frame.cell[2, 2] / nanotube(n, m, length=1, bond=1.42).cell[2, 2]))
    atoms = nanotube(n, m, length=cells, bond=1.42)
    atoms.info.update(frame.info)
    atoms.center(vacuum=10.0, axis=(0, 1))
    atoms.pbc = (False, False, True)
    return atoms


def micrograph(way: str, job: dict, pixel_A: float, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    from hrtemflow.imaging.micrograph import tube_micrograph

    frame = tm._frame(job["md"], job["structure"])
    atoms = _ideal(frame, job["chirality"]) if way == "ideal" else frame
    imaging = copy.deepcopy(job["imaging"])
    if way == "boxmtf":
        imaging["noise"]["dose_e_per_A2"] = [DOSE_FACTOR * v for v in imaging["noise"]["dose_e_per_A2"]]
    fine = way in ("box", "boxmtf")
    img, lab = tube_micrograph(
        atoms,
        imaging,
        job["seed"],
        chirality=job["chirality"],
        films=[],
        length_nm=(10, 12),
        margin_nm=2.0,
        pixel_size_A=pixel_A / BOX if fine else pixel_A,
        sampling_A=0.15,
    )
    if fine:
        k = img.shape[0] // BOX
        img = img[: BOX * k, : BOX * k].reshape(k, BOX, k, BOX).sum(axis=(1, 3))
        for c in ("x0", "y0", "x1", "y1"):
            lab[c] = (lab[c] + 0.5) / BOX - 0.5
    if way == "boxmtf":
        img = rng.poisson(np.clip(mtf(img / DOSE_FACTOR, rng.uniform(0.3, 0.6)), 0.0, None))
    return np.asarray(img, dtype=np.float32), lab


SCORED_PARAMETERS = (
    "defocus_nm",
    "cs_um",
    "c12_nm",
    "focal_spread_nm",
    "convergence_mrad",
    "mtf_c50",
    "dose",
    "tilt_deg",
    "tube_diameter_nm",
    "field_nm",
)


def correlate(set_dir: Path, pred_dir: Path) -> None:
    """Spearman ρ of each micrograph's median window OOD score with its drawn parameters (|tilt|)."""
    from scipy.stats import spearmanr

    labels = {r["file"].rsplit(".", 1)[0]: r for r in csv.DictReader((set_dir / "labels.csv").open())}
    score, params = [], []
    for stem, r in sorted(labels.items()):
        pred = pred_dir / stem / "predictions.json"
        if not pred.is_file():
            continue
        regions = json.loads(pred.read_text())["regions"]
        score.append(float(np.median([g[tm.TASK]["ood_score"] for g in regions])))
        params.append(r)
    print(f"{len(score)} micrographs of {set_dir}")
    print("| parameter | Spearman ρ with the median window OOD score | p |")
    print("|---|---|---|")
    for key in SCORED_PARAMETERS:
        v = [abs(float(r[key])) if key == "tilt_deg" else float(r[key]) for r in params]
        rho, p = spearmanr(v, score)
        print(f"| {'|tilt|' if key == 'tilt_deg' else key} | {rho:+.2f} | {p:.3f} |")


def main(argv: list[str] | None = None) -> int:
    from hrtemflow.apply.options import Options
    from hrtemflow.apply.outputs import write_calibrated_tiff
    from hrtemflow.apply.predict import predict_path
    from hrtemflow.apply.tubes import parse_tube

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", type=Path, nargs="?")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--scored", nargs=2, type=Path, metavar=("SET_DIR", "PRED_DIR"), help="correlate instead")
    ap.add_argument("--per-class", type=int, default=2)
    ap.add_argument("--ways", nargs="+", choices=WAYS, default=list(WAYS))
    ap.add_argument("--model", type=Path, help="bundle (default: the campaign's models/chirality)")
    args = ap.parse_args(argv)
    if args.scored:
        correlate(*args.scored)
        return 0
    if args.config is None or args.out is None:
        ap.error("give the campaign config and --out (or --scored SET_DIR PRED_DIR)")
    tubes = tm.campaign_tubes(args.config, split="val")
    model = args.model or Path(tubes["results"]) / "models" / tm.TASK
    pixel_A = float(json.loads((model / "card.json").read_text())["pixel_size_A"])
    jobs = tm.choose(tubes, args.per_class * len(tubes["classes"]), tubes["seed"])
    rows = []
    for way in args.ways:
        rng = np.random.default_rng(7)
        folder = args.out / way
        folder.mkdir(parents=True, exist_ok=True)
        flagged = windows = tubes_flagged = right = 0
        scores = []
        for job in jobs:
            name = f"{job['structure']}.tif"
            img, lab = micrograph(way, job, pixel_A, rng)
            write_calibrated_tiff(folder / name, img, (pixel_A, pixel_A))
            tube = parse_tube(",".join(f"{lab[c]:.2f}" for c in ("x0", "y0", "x1", "y1")), "u01")
            out = args.out / "predict" / way / job["structure"]
            predict_path(
                folder / name,
                [model],
                out,
                Options(tubes=(tube,), sliding=False),
                progress=False,
                echo=lambda *a, **k: None,
            )
            for t in json.loads((out / job["structure"] / "predictions.json").read_text())["tubes"]:
                c = t[tm.TASK]
                windows += c["windows"]
                # windows left out of the tube's answer: those flagged (all of them count when every one is)
                flagged += c["windows"] - c["windows_used"] if c["windows_used"] < c["windows"] else 0
                flagged += c["windows"] if c["ood"] in ("ood", "vacuum") and c["windows_used"] == c["windows"] else 0
                tubes_flagged += c["ood"] != ""
                scores.append(c.get("ood_score", np.nan))
                right += bool(c["top"]) and c["top"][0]["class"] == job["chirality"]
        share = 100.0 * flagged / max(windows, 1)
        rows.append(
            (way, len(jobs), windows, round(share, 1), tubes_flagged, round(float(np.nanmedian(scores)), 2), right)
        )
    print("| way | tubes | windows | windows flagged % | tubes flagged | median tube score | right |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(str(v) for v in r) + " |")
    with (args.out / "ood_shift.csv").open("w", newline="") as fh:
        header = ("way", "tubes", "windows", "flagged_pct", "tubes_flagged", "median_score", "right")
        csv.writer(fh).writerows([header, *rows])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
