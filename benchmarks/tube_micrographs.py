"""Whole-tube micrographs of the campaign's test tubes, scored per tube through `hrtemflow predict` (issue 30).

    python benchmarks/tube_micrographs.py config/bench-chirality-all.yaml --n 142 --out DIR

The chirality classifier is trained on 2.4 nm windows; users image 10-20 nm of tube in a larger
field, one orientation and one set of optics per micrograph. This benchmark makes such micrographs
with the imaging stage's own physics (`hrtemflow.imaging.micrograph.tube_micrograph`) from the MD
tubes of the TEST split the training used (`hrtemflow.store.splits.split_structures`, by structure,
with the campaign's split fractions), n // n_classes per class (seeded), writes them as calibrated
TIFFs with `labels.csv`, runs `hrtemflow predict` on the folder and scores per tube from the
per-tube table predict writes (`<predict out>/tubes.csv`):

- each labelled tube is matched to the predicted tube of its micrograph that lies on it: both predicted
  end points within --match-nm of the labelled axis (the longest such piece)
  (1 nm); otherwise the tube is missed and counts as wrong (top-1 and top-3);
- top-1, top-3 (over all labelled tubes), ECE (15 bins, over found tubes: a missed tube has no
  probability), found rate, with 95 % bootstrap intervals (tubes resampled by structure);
- every wrong top-1 with the true and predicted (n, m), their diameter and chiral-angle differences.

Per-tube calibration: `--split val --calibrate` makes the same micrographs of the VALIDATION tubes, runs
predict, and fits the pool of a tube's window probabilities and the exponent that tempers it (`hrtemflow
fit-tubes`, `hrtemflow.apply.tube_calibration`), written into the bundle; a later run on the test split is scored
with it (tube_metrics.json records the pool and exponent predict applied):

    python benchmarks/tube_micrographs.py config/bench-chirality-all.yaml --split val --calibrate --out DIR_VAL
    python benchmarks/tube_micrographs.py config/bench-chirality-all.yaml --out DIR_TEST

Writes DIR/micrographs/*.tif + labels.csv (+ generation.json), DIR/predict/ (predict's output) and
DIR/tube_metrics.json. A rerun reuses what exists: micrographs are not made again when labels.csv exists
(--predict-only requires it), predict is not run again with --score-only; --generate-only makes the
micrographs and stops, so they can be made while the bundle still trains.

Cost and sampling (2 shared cores, load 4-6, 2026-12-05): a 15 nm (10,10) tube in a 19 nm field at 80 kV
(512 x 512 px of 0.375 Å) takes 12-26 s at the bench's 0.1 Å multislice sampling (more slices the more the
tube is tilted) and 4.7-5.3 s at 0.15 Å: 142 micrographs ~35 min vs ~12 min in one process, 284 ~70 vs
~25 min. At 0.15 Å the exit wave still carries |k| <= 2.2/Å, beyond the 80 kV focal-spread envelope
(below 1e-4 past 1.1-1.5/Å) and the 0.375 Å pixel's Nyquist (1.33/Å); 64 px windows cut along the axis of the same
micrographs (same seeds, noise-free) differ from the 0.1 Å ones by 0.9-1.7 % of their contrast (RMS),
against shot noise 3-10x the contrast at 1000-5000 e-/Å², and their band powers (normalised windows,
0.03-1.4/Å in 5 bands) match each other, their medians inside the training windows' interquartile ranges
(one at its upper edge: 1.0-1.4/Å holds ~0.29 of the power, the training windows' median ~0.25) for
(8,8) and (12,5), 3 tubes each. Hence the default --sampling-A 0.15; `--sampling-A campaign` images
at the campaign's sampling. `--workers 2` makes two at a time.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

TASK = "chirality"
from hrtemflow.apply.tube_calibration import MATCH_NM, as_number  # noqa: E402 (after the sys.path line)
from hrtemflow.core.calibration import ECE_BINS, calibration_check, top1_ece  # noqa: E402

#: multislice sampling (Å) of the micrographs: 4x faster than the bench's 0.1 Å, same windows (docstring)
SAMPLING_A = 0.15
_TAG = 0x54554245  # "TUBE": separates the choice of tubes from every campaign stream
LABEL_COLUMNS = (
    "file",
    "chirality",
    "x0",
    "y0",
    "x1",
    "y1",
    "length_nm",
    "pixel_size_nm",
    "defocus_nm",
    "cs_um",
    "c12_nm",
    "dose",
    "structure",
    "field_nm",
    "tilt_deg",
    "direction_deg",
    "sampling_A",
    "seed",
    "support_film",
)


# ---------------------------------------------------------------------------------------------
# the campaign's test tubes


def campaign_tubes(config: str | os.PathLike, base: Path = Path("."), split: str = "test") -> dict[str, Any]:
    """The campaign's classes, and per class its tubes of one split (`split`: test or val; sample id, MD file,
    imaging spec section), split as the training split them: by structure over each group's ok MD samples.
    Groups whose MD is not complete are listed under "missing"."""
    from hrtemflow.campaign.config import load_config
    from hrtemflow.campaign.plan import make_plan
    from hrtemflow.campaign.specs import image_spec, train_spec
    from hrtemflow.core.ids import group_of
    from hrtemflow.store.splits import split_structures

    cfg = load_config(config, base=base)
    plan = make_plan(cfg)
    spec = train_spec(plan, TASK)
    where: dict[str, tuple[str, dict]] = {}
    missing: set[str] = set()
    by_group: dict[str, list[str]] = {}
    for shard in plan.task_shards(TASK):
        ispec = image_spec(plan, shard)
        manifest = base / ispec["md"]["manifest"]
        if not manifest.is_file():
            missing.add(shard.group.name)
            continue
        for r in json.loads(manifest.read_text(encoding="utf-8"))["samples"]:
            if r.get("status") == "ok":
                where[r["id"]] = (str(base / ispec["md"]["structures"]), ispec["imaging"], film_source(ispec, base))
                by_group.setdefault(shard.group.name, []).append(r["id"])
    ok = [s for g, ids in by_group.items() if g not in missing for s in ids]
    side = split_structures(ok, spec["split"]["val"], spec["split"]["test"])
    per_class: dict[str, list[dict]] = {}
    for s in sorted(ok):
        if side[s] == split:
            path, imaging, films = where[s]
            label = group_of(s).split("-", 1)[1]  # "cnt-8-4" -> "8-4"
            per_class.setdefault(label, []).append({"structure": s, "md": path, "imaging": imaging, "films": films})
    return {
        "classes": list(spec["classes"]),
        "per_class": per_class,
        "missing": sorted(missing),
        "results": cfg["campaign"]["results"].rstrip("/"),
        "seed": int(cfg["campaign"]["seed"]),
        "split": spec["split"],
    }


def film_source(ispec: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """What `imaging.shard.read_films` needs to read a tube's support films in a worker process (it decides
    whether the views lie on films at all, and refuses a film campaign without any)."""
    return {"spec": {k: ispec.get(k) for k in ("family", "support", "imaging")}, "base": str(base)}


def choose(tubes: Mapping[str, Any], n: int, seed: int) -> list[dict]:
    """n // n_classes micrographs per class, each of a test tube drawn without replacement (cycling when a class
    has fewer test tubes than micrographs); every micrograph gets its own seed."""
    classes = tubes["classes"]
    k = n // len(classes)
    out = []
    for c, label in enumerate(classes):
        pool = tubes["per_class"].get(label, [])
        if not pool:
            continue
        rng = np.random.default_rng(np.random.SeedSequence([seed, _TAG, c]))
        order = rng.permutation(len(pool))
        for j in range(k):
            t, repeat = pool[order[j % len(pool)]], j // len(pool)
            out.append({**t, "chirality": label, "repeat": repeat, "seed": _seed(seed, t["structure"], repeat)})
    return out


def _seed(campaign_seed: int, structure: str, j: int) -> int:
    """A 63-bit seed per (campaign seed, structure, repeat), independent of n and of the other tubes."""
    digest = hashlib.sha256(f"hrtemflow-tube-micrograph:{campaign_seed}:{structure}:{j}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


# ---------------------------------------------------------------------------------------------
# making the micrographs

_FRAMES: dict[str, dict] = {}


def _frame(path: str, structure: str):
    from hrtemflow.imaging.shard import read_frames

    if path not in _FRAMES:
        _FRAMES.clear()  # one MD file at a time per process: tubes come grouped by class
        _FRAMES[path] = {f.info.get("sample_id"): f for f in read_frames(Path(path))}
    return _FRAMES[path][structure]


_FILMS: dict[str, list] = {}


def _films(source: Mapping[str, Any] | None) -> list:
    """The support films of a `film_source` (read once per process; [] without one)."""
    from hrtemflow.imaging.shard import read_films

    if not source:
        return []
    key = json.dumps(source, sort_keys=True)
    if key not in _FILMS:
        _FILMS[key] = read_films(source["spec"], Path(source["base"]))
    return _FILMS[key]


def make_one(job: Mapping[str, Any], folder: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """One micrograph: made, written as a calibrated TIFF, its labels.csv row returned."""
    from hrtemflow.apply.outputs import write_calibrated_tiff
    from hrtemflow.imaging.micrograph import tube_micrograph

    image, lab = tube_micrograph(
        _frame(job["md"], job["structure"]),
        job["imaging"],
        job["seed"],
        chirality=job["chirality"],
        films=_films(job.get("films")),
        **options,
    )
    name = f"{job['structure']}-r{job['repeat']:02d}.tif"
    write_calibrated_tiff(Path(folder) / name, image, (lab["pixel_size_A"], lab["pixel_size_A"]))
    row = {k: lab[k] for k in LABEL_COLUMNS if k in lab}
    row.update(file=name, dose=lab["dose_e_per_A2"])
    return row


def make_micrographs(jobs: Sequence[Mapping[str, Any]], folder: Path, options: Mapping[str, Any], workers: int) -> list:
    """Every micrograph (in `workers` processes), then labels.csv, written last: its presence means done."""
    from tqdm import tqdm

    folder.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    bar = tqdm(total=len(jobs), desc="micrographs", unit="micrograph")
    if workers <= 1:
        for job in jobs:
            rows.append(make_one(job, str(folder), options))
            bar.update()
    else:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            for row in pool.map(make_one, jobs, [str(folder)] * len(jobs), [options] * len(jobs), chunksize=1):
                rows.append(row)
                bar.update()
    bar.close()
    write_labels(folder / "labels.csv", rows)
    return rows


def write_labels(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=LABEL_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in LABEL_COLUMNS})
    tmp.replace(path)


def read_csv(path: Path) -> list[dict[str, str]]:
    with Path(path).open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------------------------------------
# scoring


def _nm(label: str) -> tuple[int, int]:
    n, m = str(label).split("-")
    return int(n), int(m)


def confusion_geometry(true: str, pred: str) -> dict[str, Any]:
    """A wrong top-1: both (n, m), their diameters, and how far apart they are (`core.tubes.chirality_difference`:
    |Δd| in nm, |Δθ| in degrees)."""
    from hrtemflow.core.tubes import GRAPHENE_A, chirality_difference, tube_diameter_A

    t, p = _nm(true), _nm(pred)
    dd, dt = chirality_difference(t, p, GRAPHENE_A)
    return {
        "true": true,
        "predicted": pred,
        "d_true_nm": round(tube_diameter_A(*t, GRAPHENE_A) / 10.0, 4),
        "d_pred_nm": round(tube_diameter_A(*p, GRAPHENE_A) / 10.0, 4),
        "delta_d_nm": round(abs(dd), 4),
        "delta_theta_deg": round(abs(dt), 3),
    }


def score(
    labels: Sequence[Mapping[str, Any]],
    tubes: Sequence[Mapping[str, Any]],
    task: str = TASK,
    match_nm: float = MATCH_NM,
    resamples: int = 2000,
) -> dict[str, Any]:
    """Per-tube metrics of predict's tubes.csv rows against the labels (see the module docstring)."""
    from hrtemflow.apply.tube_calibration import match_tubes
    from hrtemflow.learn.evaluate import structure_ci

    matches = match_tubes(labels, tubes, task, match_nm)
    n = len(matches)
    found = np.array([m["tube"] is not None for m in matches], bool)
    truth = [str(m["label"]["chirality"]) for m in matches]
    top = [[str(m["tube"].get(f"top{k}", "")) for k in (1, 2, 3)] if m["tube"] else ["", "", ""] for m in matches]
    top1 = np.array([f and t[0] == y for f, t, y in zip(found, top, truth, strict=True)], bool)
    top3 = np.array([f and y in t for f, t, y in zip(found, top, truth, strict=True)], bool)
    conf = np.array([as_number(m["tube"].get("p1")) if m["tube"] else math.nan for m in matches])
    ood = np.array([bool(m["tube"] and str(m["tube"].get("ood", "") or "").strip()) for m in matches], bool)
    structure = np.array([str(m["label"].get("structure") or m["label"]["file"]) for m in matches])
    idx = np.flatnonzero(found)
    # tubes whose lattice predict read, and those where the fitted weighing put its chiral angle in the answer
    read = np.array([bool(m["tube"]) and math.isfinite(as_number(m["tube"].get("lattice_angle_deg"))) for m in matches])
    weighed = np.array([bool(m["tube"]) and str(m["tube"].get("lattice_weighed")) == "True" for m in matches])
    # the diameter the tube's walls say (where the calibration maps them), against the label's
    from hrtemflow.core.tubes import GRAPHENE_A, tube_diameter_A

    d_read = np.array([as_number(m["tube"].get("diameter_nm")) if m["tube"] else math.nan for m in matches])
    d_off = d_read - np.array([tube_diameter_A(*_nm(t), GRAPHENE_A) / 10.0 for t in truth])
    walls = np.isfinite(d_off)

    def ci(values: np.ndarray, stat=np.mean) -> list[float | None]:
        return structure_ci(values, structure, stat, resamples=resamples) if n else [None, None]

    def ece_of(rows: np.ndarray) -> float:  # rows: positions among the found tubes (as floats, from structure_ci)
        rows = idx[rows.astype(int)]
        return top1_ece(conf[rows], top1[rows])

    errors = [
        {
            "file": matches[i]["label"]["file"],
            "structure": str(structure[i]),
            "p1": as_number(conf[i]),
            **confusion_geometry(truth[i], top[i][0]),
        }
        for i in idx
        if not top1[i]
    ]
    dd = np.array([e["delta_d_nm"] for e in errors])
    dt = np.array([e["delta_theta_deg"] for e in errors])
    summary = {
        "errors": len(errors),
        "delta_d_lt_0.01nm": int((dd < 0.01).sum()),
        "delta_d_lt_0.05nm": int((dd < 0.05).sum()),
        "delta_d_ge_0.05nm": int((dd >= 0.05).sum()),
        "delta_theta_lt_5deg": int((dt < 5.0).sum()),
        "delta_theta_lt_10deg": int((dt < 10.0).sum()),
        "delta_d_lt_0.01nm_and_delta_theta_lt_5deg": int(((dd < 0.01) & (dt < 5.0)).sum()),
        "median_delta_d_nm": float(np.median(dd)) if len(dd) else None,
        "median_delta_theta_deg": float(np.median(dt)) if len(dt) else None,
    }
    return {
        "task": task,
        "tubes": n,
        "found": int(found.sum()),
        "found_rate": float(found.mean()) if n else None,
        "found_rate_ci95": ci(found.astype(float)),
        "top1": float(top1.mean()) if n else None,
        "top1_ci95": ci(top1.astype(float)),
        "top3": float(top3.mean()) if n else None,
        "top3_ci95": ci(top3.astype(float)),
        "ece": _finite(ece_of(np.arange(len(idx)))),
        "ece_ci95": structure_ci(np.arange(len(idx), dtype=float), structure[idx], ece_of, resamples=resamples)
        if len(idx)
        else [None, None],
        # what a calibrated answer with these top-1 probabilities reads on this many tubes (core.calibration)
        "ece_check": calibration_check(conf[idx], top1[idx]),
        "ood_flagged": int(ood.sum()),
        "lattice_read": int(read.sum()),
        "lattice_weighed": int(weighed.sum()),
        "top1_lattice_weighed": float(top1[weighed].mean()) if weighed.any() else None,
        "top1_found_not_weighed": float(top1[found & ~weighed].mean()) if (found & ~weighed).any() else None,
        "walls_read": int(walls.sum()),
        "diameter_error_abs_median_nm": float(np.median(np.abs(d_off[walls]))) if walls.any() else None,
        "diameter_error_abs_q90_nm": float(np.quantile(np.abs(d_off[walls]), 0.9)) if walls.any() else None,
        "top1_in_distribution": float(top1[found & ~ood].mean()) if (found & ~ood).any() else None,
        "match_nm": match_nm,
        "match_distance_nm_median": float(np.median([m["distance_nm"] for m in matches if m["tube"]]))
        if len(idx)
        else None,
        "coverage_median": float(np.median([m["coverage"] for m in matches if m["tube"]])) if len(idx) else None,
        "how": "each labelled tube matched to the predicted tube (same micrograph, same task) lying on it (both "
        f"predicted end points within {match_nm} nm of the labelled axis; the longest piece); missed tubes count "
        "as wrong in top-1/top-3; "
        f"ECE ({ECE_BINS} equal-width bins of p1) over found tubes; 95 % percentile intervals, {resamples} "
        "resamples of the tubes by structure",
        "confusion_summary": summary,
        "confusions": sorted(errors, key=lambda e: (e["delta_d_nm"], e["delta_theta_deg"])),
        "per_tube": [
            {
                "file": m["label"]["file"],
                "chirality": truth[i],
                "found": bool(found[i]),
                "top1": top[i][0] or None,
                "p1": _finite(conf[i]) if found[i] else None,
            }
            for i, m in enumerate(matches)
        ],
        "missed": [
            {"file": m["label"]["file"], "chirality": m["label"]["chirality"], "nearest_nm": m["distance_nm"]}
            for m in matches
            if m["tube"] is None
        ],
    }


def pool_figures(predicted: Path, labels: Sequence[Mapping[str, Any]], model: Path, match_nm: float) -> dict:
    """Per pool of the bundle's tube_calibration.json fits: its scores on the found tubes with that pool's
    fitted exponent (`tube_calibration.pool_scores`), from the pools predict recorded (so both are compared on
    these tubes, whichever predict applied). Empty without a calibration or pools."""
    from hrtemflow.apply.tube_calibration import CALIBRATION_FILE, match_tubes, pool_scores, predicted_tubes, untempered

    cal_path = model / CALIBRATION_FILE
    if not cal_path.is_file():
        return {}
    fits = json.loads(cal_path.read_text(encoding="utf-8")).get("fits") or {}
    rows, _ = predicted_tubes(predicted, TASK)
    found = [m for m in match_tubes(labels, rows, TASK, match_nm) if m["tube"] is not None]
    if not found or not rows[0].get("pools"):
        return {}
    classes = list(rows[0]["pools"]["mean"])
    y = np.array([classes.index(m["label"]["chirality"]) for m in found])
    return {
        pool: pool_scores(np.stack([untempered(m["tube"], classes, pool) for m in found]), y, float(fit["exponent"]))
        for pool, fit in fits.items()
    }


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _fmt_ci(v: Any, ci: Sequence[Any], pct: bool = True) -> str:
    if v is None:
        return "-"
    f = (lambda x: f"{100 * x:.1f} %") if pct else (lambda x: f"{100 * x:.2f} %")
    lo, hi = ci
    return f"{f(v)} [{f(lo) if lo is not None else '-'}, {f(hi) if hi is not None else '-'}]"


def _nm_or_dash(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def _p(v: Any) -> str:
    return "-" if v is None else f"{v:.2f}"


def table(m: Mapping[str, Any]) -> str:
    s = m["confusion_summary"]
    lines = [
        f"per tube, {m['tubes']} tubes ({m['task']}), match < {m['match_nm']} nm:",
        f"  found   {_fmt_ci(m['found_rate'], m['found_rate_ci95'])}",
        f"  top-1   {_fmt_ci(m['top1'], m['top1_ci95'])}   (target >= 95 %)",
        f"  top-3   {_fmt_ci(m['top3'], m['top3_ci95'])}   (target >= 99 %)",
        f"  ECE     {_fmt_ci(m['ece'], m['ece_ci95'], pct=False)}   (target <= 3 %); a calibrated answer "
        f"would read {_pct(m['ece_check']['ece_if_calibrated'])} (95th pct "
        f"{_pct(m['ece_check']['ece_if_calibrated_p95'])}) on {m['ece_check']['n']} tubes, "
        f"p = {_p(m['ece_check']['p_value'])}",
        f"  OOD-flagged {m['ood_flagged']}",
        f"  lattice read on {m.get('lattice_read', 0)} found tubes, its chiral angle weighed in on "
        f"{m.get('lattice_weighed', 0)} (top-1 there {_pct(m.get('top1_lattice_weighed'))}, on the other found "
        f"tubes {_pct(m.get('top1_found_not_weighed'))})",
        f"  walls read on {m.get('walls_read', 0)} found tubes, their diameter off by "
        f"{_nm_or_dash(m.get('diameter_error_abs_median_nm'))} nm in the median, "
        f"{_nm_or_dash(m.get('diameter_error_abs_q90_nm'))} nm at the 90th percentile",
        f"  wrong top-1 among found: {s['errors']}; delta d < 0.01 nm: {s['delta_d_lt_0.01nm']}, "
        f"< 0.05 nm: {s['delta_d_lt_0.05nm']}; delta theta < 5 deg: {s['delta_theta_lt_5deg']}, "
        f"< 10 deg: {s['delta_theta_lt_10deg']}; both (< 0.01 nm, < 5 deg): "
        f"{s['delta_d_lt_0.01nm_and_delta_theta_lt_5deg']}",
    ]
    for e in m["confusions"][:10]:
        lines.append(
            f"    {e['true']:>6} -> {e['predicted']:<6} dd {e['delta_d_nm']:.4f} nm  "
            f"dtheta {e['delta_theta_deg']:5.2f} deg  p1 {e['p1']:.2f}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# the command


def run_predict(micrographs: Path, model: Path, out: Path) -> float:
    """`hrtemflow predict --tubes-only` on the folder (a subprocess, as a user runs it; the per-tube answers
    without the sliding-window regions, which this benchmark does not score); returns the wall seconds."""
    exe = Path(sys.executable).parent / "hrtemflow"
    cmd = [str(exe), "predict", str(micrographs), "--bundles", str(model), "--out", str(out), "--tubes-only", "--quiet"]
    print(" ".join(cmd), file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"hrtemflow predict failed (exit {res.returncode}):\n{res.stderr[-4000:]}")
    return time.perf_counter() - t0


def _sampling(text: str) -> float | None:
    return None if text == "campaign" else float(text)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "config",
        help="the campaign config (its MD and its chirality model are read; only --calibrate writes, "
        "tube_calibration.json into the bundle)",
    )
    p.add_argument("--n", type=int, default=142, help="micrographs, n // n_classes per class (default 142)")
    p.add_argument("--out", type=Path, required=True, help="output folder (outside the campaign's results)")
    p.add_argument("--model", type=Path, default=None, help="chirality bundle (default <results>/models/chirality)")
    p.add_argument("--length-nm", type=float, nargs=2, default=(10.0, 20.0), help="tube length range (nm)")
    p.add_argument("--margin-nm", type=float, default=2.0, help="field = length + 2 x margin (nm)")
    p.add_argument("--pixel-size-nm", type=float, default=None, help="detector pixel (default: the model card's)")
    p.add_argument(
        "--sampling-A",
        type=_sampling,
        default=SAMPLING_A,
        metavar="A|campaign",
        help=f"multislice sampling in Å, or 'campaign' for the campaign's (default {SAMPLING_A}: see the docstring)",
    )
    p.add_argument("--workers", type=int, default=1, help="processes making micrographs (1 FFT thread each)")
    p.add_argument("--match-nm", type=float, default=MATCH_NM, help="largest axis distance of a match (nm)")
    p.add_argument("--seed", type=int, default=None, help="seed of the draws (default: the campaign's)")
    p.add_argument(
        "--split",
        choices=("test", "val"),
        default="test",
        help="whose tubes: the test split's (scored, default) or the validation split's (for --calibrate)",
    )
    p.add_argument(
        "--calibrate",
        action="store_true",
        help="after scoring, fit the per-tube calibration on these tubes (`hrtemflow fit-tubes`) and write it into "
        "the bundle; only with --split val (the test tubes must stay unseen)",
    )
    reuse = p.add_mutually_exclusive_group()
    reuse.add_argument(
        "--generate-only",
        action="store_true",
        help="make the micrographs and stop (while the bundle still trains: give --pixel-size-nm)",
    )
    reuse.add_argument("--predict-only", action="store_true", help="use the micrographs made before; run predict")
    reuse.add_argument("--score-only", action="store_true", help="use the micrographs and predict output made before")
    return p.parse_args(argv)


def _pixel_size_A(args: argparse.Namespace, model: Path, tubes: Mapping[str, Any]) -> float:
    if args.pixel_size_nm is not None:
        return 10.0 * args.pixel_size_nm
    card = model / "card.json"
    if card.is_file():
        return float(json.loads(card.read_text(encoding="utf-8"))["pixel_size_A"])
    from hrtemflow.imaging.micrograph import PIXEL_SIZE_A

    print(f"no model card at {card}: pixel size {PIXEL_SIZE_A} Å", file=sys.stderr)
    return PIXEL_SIZE_A


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.calibrate and args.split != "val":
        raise SystemExit("--calibrate fits on the tubes it is given: use it with --split val, never on the test tubes")
    out: Path = args.out
    micrographs, predicted = out / "micrographs", out / "predict"
    labels_csv = micrographs / "labels.csv"
    tubes = campaign_tubes(args.config, split=args.split)
    model = args.model or Path(tubes["results"]) / "models" / TASK
    info: dict[str, Any] = {
        "config": str(args.config),
        "model": str(model),
        "split": args.split,
        "missing_groups": tubes["missing"],
    }
    if tubes["missing"]:
        print(f"MD not complete for {len(tubes['missing'])} group(s), left out: {', '.join(tubes['missing'])}")
    if labels_csv.is_file():
        print(f"{labels_csv} exists: micrographs reused")
        if (micrographs / "generation.json").is_file():
            info["generation"] = json.loads((micrographs / "generation.json").read_text(encoding="utf-8"))
    elif args.predict_only or args.score_only:
        raise SystemExit(
            f"{labels_csv} does not exist: make the micrographs first (without --predict-only/--score-only)"
        )
    else:
        jobs = choose(tubes, args.n, tubes["seed"] if args.seed is None else args.seed)
        options = {
            "length_nm": tuple(args.length_nm),
            "margin_nm": args.margin_nm,
            "pixel_size_A": _pixel_size_A(args, model, tubes),
            "sampling_A": args.sampling_A,
        }
        t0 = time.perf_counter()
        make_micrographs(jobs, micrographs, options, args.workers)
        wall = time.perf_counter() - t0
        info["generation"] = {
            "micrographs": len(jobs),
            "wall_s": round(wall, 1),
            "s_per_micrograph": round(wall / max(1, len(jobs)), 2),
            "workers": args.workers,
            **{k: v for k, v in options.items() if k != "length_nm"},
            "length_nm": list(args.length_nm),
        }
        (micrographs / "generation.json").write_text(json.dumps(info["generation"], indent=1) + "\n", encoding="utf-8")
    if args.generate_only:
        print(f"{len(read_csv(labels_csv))} labelled micrographs in {micrographs}; predict and score with a rerun")
        return info
    labels = read_csv(labels_csv)
    if not args.score_only:
        info["predict_wall_s"] = round(run_predict(micrographs, model, predicted), 1)
    tubes_csv = predicted / "tubes.csv"
    if not tubes_csv.is_file():
        raise SystemExit(f"{tubes_csv} does not exist: this hrtemflow predict writes no per-tube table")
    metrics = score(labels, read_csv(tubes_csv), TASK, args.match_nm)
    metrics.update(info)
    metrics["tube_pool"], metrics["tube_exponent"] = _applied_calibration(predicted)
    if not args.calibrate:  # both fitted pools on these tubes, with their validation exponents
        metrics["pools"] = pool_figures(predicted, labels, model, args.match_nm)
        for pool, f in metrics["pools"].items():
            print(
                f"{pool} pool (exponent {f['exponent']:.3g}): top-1 {100 * f['top1']:.1f} % and top-3 "
                f"{100 * f['top3']:.1f} % of {f['tubes']} found tubes, ECE {_pct(f['ece_check']['ece'])} "
                f"(a calibrated answer: {_pct(f['ece_check']['ece_if_calibrated'])}, "
                f"p = {_p(f['ece_check']['p_value'])})"
            )
    if args.calibrate:
        from hrtemflow.apply.tube_calibration import fit_tubes

        metrics["calibration"] = fit_tubes(predicted, labels_csv, model, TASK, args.match_nm)
        c = metrics["calibration"]
        print(
            f"calibrated on {c['tubes_fitted']} validation tubes: {c['pool']} pool, exponent {c['exponent']:.3g}, ECE "
            f"{100 * c['ece_mean']:.1f} % -> {100 * c['ece_tempered']:.1f} % (a calibrated answer: "
            f"{_pct(c['ece_check_tempered']['ece_if_calibrated'])}, p = {_p(c['ece_check_tempered']['p_value'])}; "
            f"saved in {model})"
        )
    (out / "tube_metrics.json").write_text(json.dumps(metrics, indent=1) + "\n", encoding="utf-8")
    print(table(metrics))
    return metrics


def _applied_calibration(predicted: Path) -> tuple[Any, Any]:
    """The per-tube pool and exponent predict applied ((None, None): the uncalibrated mean), from its summary."""
    summary = predicted / "summary.json"
    if not summary.is_file():
        return None, None
    info = json.loads(summary.read_text(encoding="utf-8")).get("bundles", {}).get(TASK, {})
    return info.get("tube_pool"), info.get("tube_exponent")


if __name__ == "__main__":
    main()
