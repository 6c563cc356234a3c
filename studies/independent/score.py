"""Score a classifier bundle on the independent sets end to end through `hrtemflow predict`.

Per micrograph, the regions are boxes along the tube's known axis (labels.csv): each just under one
window of the bundle's field (card `input_size` x `pixel_size_A`, so predict centres one window on it)
centred on the axis, half a window apart, the first and last a half window in from the ends (the
classifier was trained on windows crossed by the tube near their centre). For a particle (a nanoalloy
set, scored with an ordering bundle) the region is one box round it: its centre +- its projected radius
and an atom's radius (`particle_box`); predict centres one window on a box smaller than a window, as the
ordering classifier was trained (one particle near the window's centre), and tiles a larger one. Then

    hrtemflow predict <micrograph> --bundles <bundle> --out <predictions>/<set> --regions <csv> --quiet

is run for each micrograph (the CLI's `main` with that argv; by default all of them in one Python
process, which imports Keras once, or `one_process_per_image` for the console script itself), and
`<predictions>/<set>/<micrograph>/predictions.json` is read back:

- per region (window): the class probabilities predict reports (temperature-scaled where a fitted
  temperature is found) and its flag; a region flagged `vacuum` or `ood` is left out of the answers;
- per image (= per object: one tube or particle per micrograph): for a tube, predict's own per-tube answer on
  the labelled axis, given as a microscopist gives a tube (`--tube x0,y0,x1,y1`): its windows pooled and
  tempered as the bundle's `tube_calibration.json` says (`hrtemflow fit-tubes`; without one, their mean); a
  tube predict flags (most windows `ood` or `vacuum`) has no answer. For a particle, the mean of its
  unflagged windows' probabilities; an image whose windows are all flagged has no answer. No answer counts
  as wrong. The mean of a tube's unflagged windows is kept beside predict's answer (`*_window_mean`), the
  figure earlier runs reported;
- top-1 and top-3 (per image and per region), ECE over 15 equal-width bins (on the answered images'
  confidences and on the unflagged regions'), the confident-and-wrong rate (an answer with top-1
  probability >= 0.8 that is wrong: out of all images), the share of regions flagged ood and vacuum,
  95 % intervals from 2,000 bootstrap resamples of the images (their regions go with them), and the
  most common confusions.

The bundle's own test-split figures come from its evaluation report (metrics.json in the bundle, or
reports/<task>/metrics.json of its results folder), when one matches the bundle's task and dataset.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hrtemflow.core.atomic import write_if_changed
from hrtemflow.core.calibration import ECE_BINS, calibration_check, expected_calibration_error

from .generate import TASK_FAMILY, read_card, read_labels

#: room round a particle's outermost atom centres in its region box (Å): about a metal atom's radius
ATOM_RADIUS_A = 1.5
#: the set each family's Δ column is measured against
BASELINES = {"cnt": "H0_ideal", "nanoalloy": "na_relaxed"}  # the Δ column: what a factor costs against these
#: what one object of a family is called in the table's text
OBJECT_NAMES = {"cnt": "tube", "nanoalloy": "particle"}
CONFIDENT = 0.8
BOOTSTRAP = 2000
TOP_CONFUSIONS = 5

#: runs `hrtemflow predict` (the console script's own function) once per argv list of a JSON file
DRIVER = """
import gc, json, sys
from hrtemflow.cli import main
failed = []
for argv in json.load(open(sys.argv[1], encoding="utf-8")):
    if main(argv) != 0:
        failed.append(argv[1])
    gc.collect()
if failed:
    print("predict failed on: " + ", ".join(failed), file=sys.stderr)
sys.exit(1 if failed else 0)
"""


# -------------------------------------------------------------------------------------------- regions


def window_px(card: Mapping[str, Any], pixel_A: float) -> float:
    """The bundle's window (its field) in pixels of a micrograph with pixel_A."""
    return float(card["input_size"]) * float(card["pixel_size_A"]) / float(pixel_A)


def axis_boxes(ends: Sequence[float], window: float, width: int, height: int) -> list[tuple[int, int, int, int]]:
    """Boxes (x0, y0, x1, y1) just under one window (an even side), centred on the segment ends = (x0, y0,
    x1, y1) at half a window apart, the outer ones a half window in from the ends; one at the middle of a
    shorter segment. Each box is shifted into the image where it would reach past an edge."""
    ax, ay, bx, by = (float(v) for v in ends)
    length = math.hypot(bx - ax, by - ay)
    ux, uy = ((bx - ax) / length, (by - ay) / length) if length > 0 else (1.0, 0.0)
    step = 0.5 * window
    count = 1 if length <= window else int(math.floor((length - window) / step + 1e-9)) + 1
    first = 0.5 * (length - (count - 1) * step)
    side = max(1, min(2 * int(math.floor(0.5 * (window - 1.0))), width, height))  # even: centred on the axis
    boxes = []
    for k in range(count):
        t = first + k * step
        cx, cy = ax + t * ux, ay + t * uy
        x0 = min(max(int(round(cx - 0.5 * side)), 0), width - side)
        y0 = min(max(int(round(cy - 0.5 * side)), 0), height - side)
        boxes.append((x0, y0, x0 + side, y0 + side))
    return boxes


def particle_box(cx: float, cy: float, radius: float, pad: float, width: int, height: int) -> tuple[int, int, int, int]:
    """The box (x0, y0, x1, y1) of whole pixels that holds a particle centred at (cx, cy) with radius +
    pad (pixel k spans [k, k + 1)), cut to the image."""
    if not (radius >= 0 and pad >= 0 and 0 <= cx <= width and 0 <= cy <= height):
        raise ValueError(f"a particle at ({cx}, {cy}), radius {radius} + {pad} px, in a {width} x {height} image")
    reach = radius + pad
    x0, y0 = max(int(math.floor(cx - reach)), 0), max(int(math.floor(cy - reach)), 0)
    x1, y1 = min(int(math.ceil(cx + reach)), width), min(int(math.ceil(cy + reach)), height)
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def object_boxes(row: Mapping[str, str], card: Mapping[str, Any]) -> list[tuple[int, int, int, int]]:
    """The regions of one labelled object: boxes along a tube's axis, or the box round a particle."""
    pixel_A = 10.0 * float(row["pixel_size_nm"])
    width, height = int(row["width_px"]), int(row["height_px"])
    if row.get("family", "cnt") == "nanoalloy":
        cx, cy, radius = (float(row[k]) for k in ("cx", "cy", "radius_px"))
        return [particle_box(cx, cy, radius, ATOM_RADIUS_A / pixel_A, width, height)]
    ends = [float(row[k]) for k in ("x0", "y0", "x1", "y1")]
    return axis_boxes(ends, window_px(card, pixel_A), width, height)


def write_regions(path: Path, rows: Sequence[Mapping[str, str]], card: Mapping[str, Any]) -> int:
    """The regions CSV of one micrograph: each object's boxes, labelled <object>:<box>."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["x0", "y0", "x1", "y1", "label"])
    n = 0
    for j, r in enumerate(rows):
        for k, box in enumerate(object_boxes(r, card)):
            w.writerow([*box, f"{j}:{k}"])
            n += 1
    write_if_changed(path, buf.getvalue())  # its time tells a later run that a prediction is still fresh
    return n


def check_family(set_dir: Path, card: Mapping[str, Any]) -> str:
    """The family of a set's objects, refused when the bundle's task does not read that family."""
    if not (set_dir / "labels.csv").is_file():
        raise SystemExit(
            f"set {set_dir.name} has not been generated ({set_dir}/labels.csv is missing): drop --score-only"
        )
    families = {r.get("family", "cnt") for r in read_labels(set_dir / "labels.csv")}
    wants = TASK_FAMILY.get(str(card.get("task")))
    if len(families) != 1 or (wants is not None and families != {wants}):
        raise SystemExit(
            f"{set_dir}: its micrographs hold {', '.join(sorted(families)) or 'nothing'}, but the bundle's task "
            f"{card.get('task')!r} reads {wants or 'an unknown family'}: score the bundle's own family's sets"
        )
    return families.pop()


# -------------------------------------------------------------------------------------------- predict


def hrtemflow_exe() -> str:
    """The console script next to this interpreter (a venv), else the one on PATH."""
    here = Path(sys.executable).with_name("hrtemflow")
    return str(here) if here.is_file() else (shutil.which("hrtemflow") or "hrtemflow")


def _fresh(pred: Path, card: Mapping[str, Any], bundle: Path, tif: Path, regions: Path, tubes: bool) -> bool:
    """Whether predictions.json is there, newer than its micrograph, its regions and every file of the bundle
    (the model, its OOD statistics, a tube calibration) and its evaluation report (the window temperature,
    `reports/<task>/metrics.json`, which the evaluate step writes after the model), of this bundle, and (for
    tubes) holds predict's answers on the given tubes. A prediction made while the campaign still evaluated
    the bundle is made again."""
    report = bundle.parent.parent / "reports" / str(card.get("task")) / "metrics.json"
    inputs = [tif, regions, *(f for f in bundle.iterdir() if f.is_file()), *([report] if report.is_file() else [])]
    if not pred.is_file() or pred.stat().st_mtime < max(p.stat().st_mtime for p in inputs):
        return False
    try:
        doc = json.loads(pred.read_text(encoding="utf-8"))
        info = doc["bundles"][card["task"]]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if tubes and doc.get("tubes_from") != "user (--tube)":
        return False
    answers = [t.get(card["task"]) for t in doc.get("tubes") or [] if isinstance(t, Mapping)]
    if tubes and any(isinstance(a, Mapping) and a.get("windows") and "lattice" not in a for a in answers):
        return False  # made before predict read each tube's lattice (its "calibration" flag)
    return info.get("dataset_sha256") == card.get("dataset_sha256") and Path(info["path"]) == Path(bundle)


def tube_argv(rows: Sequence[Mapping[str, str]]) -> list[str]:
    """`--tube x0,y0,x1,y1` for each labelled tube of a micrograph, in the labels' order (predict names
    them u01, u02, ...): the tube as a microscopist gives it, so predict answers it with its own pool."""
    argv: list[str] = []
    for r in rows:
        argv += ["--tube", ",".join(f"{float(r[k]):.2f}" for k in ("x0", "y0", "x1", "y1"))]
    return argv


def predict_set(
    set_dir: Path,
    bundle: Path,
    pred_dir: Path,
    card: Mapping[str, Any],
    *,
    rescore: bool = False,
) -> list[list[str]]:
    """Regions CSVs for the set's micrographs; the predict argv of those not predicted yet."""
    labels = read_labels(set_dir / "labels.csv")
    by_file: dict[str, list[dict[str, str]]] = {}
    for r in labels:
        by_file.setdefault(r["file"], []).append(r)
    jobs = []
    for name, rows in by_file.items():
        tif = set_dir / name
        regions = pred_dir / "regions" / f"{Path(name).stem}.csv"
        write_regions(regions, rows, card)
        tubes = all(r.get("family", "cnt") == "cnt" for r in rows)
        if not rescore and _fresh(pred_dir / Path(name).stem / "predictions.json", card, bundle, tif, regions, tubes):
            continue
        jobs.append(
            [
                "predict",
                str(tif),
                "--bundles",
                str(bundle),
                "--out",
                str(pred_dir),
                "--regions",
                str(regions),
                *(tube_argv(rows) if tubes else ["--no-tubes"]),
                "--quiet",
            ]
        )
    return jobs


def run_predict(jobs: Sequence[Sequence[str]], work: Path, *, one_process_per_image: bool = False) -> None:
    """Every argv through the `hrtemflow` command line: one process for all (Keras imported once), or
    the console script once per micrograph."""
    if not jobs:
        return
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    if one_process_per_image:
        for argv in jobs:
            res = subprocess.run([hrtemflow_exe(), *argv], capture_output=True, text=True, env=env)
            if res.returncode != 0:
                raise SystemExit(f"hrtemflow {' '.join(argv)} failed:\n{res.stderr[-3000:]}")
        return
    work.mkdir(parents=True, exist_ok=True)
    jobs_file = work / "predict_jobs.json"
    jobs_file.write_text(json.dumps([list(a) for a in jobs]))
    res = subprocess.run([sys.executable, "-c", DRIVER, str(jobs_file)], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise SystemExit(f"hrtemflow predict failed ({res.returncode}):\n{res.stderr[-4000:]}")


# -------------------------------------------------------------------------------------------- metrics


def read_objects(set_dir: Path, pred_dir: Path, card: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One record per object: its truth, file, and its regions' probabilities (card class order) and flags."""
    classes = list(card["classes"])
    task = card["task"]
    labels = read_labels(set_dir / "labels.csv")
    objects: list[dict[str, Any]] = []
    index: dict[tuple[str, int], dict[str, Any]] = {}
    seen: Counter[str] = Counter()
    for r in labels:
        rec = {"file": r["file"], "truth": r["label"], "probs": [], "flags": [], "row": r}
        index[(r["file"], seen[r["file"]])] = rec
        seen[r["file"]] += 1
        objects.append(rec)
    for name in seen:
        pred = json.loads((pred_dir / Path(name).stem / "predictions.json").read_text(encoding="utf-8"))
        for region in pred["regions"]:
            res = region[task]
            rec = index[(name, int(str(region["label"]).split(":")[0]))]
            rec["probs"].append([float(res["probabilities"][c]) for c in classes])
            rec["flags"].append(res.get("ood", ""))
        mine = [o for o in objects if o["file"] == name]
        for j, t in enumerate(pred.get("tubes") or []):  # predict's answer on each given tube, in the labels' order
            res = t.get(task)
            if isinstance(res, Mapping) and j < len(mine):
                probs = res.get("probabilities") or {}
                mine[j]["tube"] = {
                    "probabilities": [float(probs[c]) for c in classes] if probs else None,
                    "ood": res.get("ood", ""),
                    "windows_used": res.get("windows_used"),
                    "pool": res.get("pool"),
                    "exponent": res.get("exponent"),
                }
    return objects


def ece(probs: np.ndarray, truth: np.ndarray) -> float | None:
    """Expected calibration error over equal-width confidence bins (as `hrtemflow evaluate`)."""
    return expected_calibration_error(probs, truth, ECE_BINS)[0] if len(probs) else None


def _topk(probs: np.ndarray, truth: np.ndarray, k: int) -> np.ndarray:
    return (np.argsort(-probs, axis=1)[:, :k] == truth[:, None]).any(axis=1)


#: predict's flags of a tube that leave it without an answer a user would take
NO_ANSWER_FLAGS = ("ood", "vacuum", "no window", "off the image", "calibration")


def image_answer(o: Mapping[str, Any], mean: np.ndarray | None) -> np.ndarray | None:
    """An object's answer (class probabilities) or None: predict's tube answer where there is one (None when
    predict flags the tube), else the mean of its unflagged windows."""
    tube = o.get("tube")
    if tube is None:
        return mean
    if tube.get("ood") in NO_ANSWER_FLAGS or not tube.get("probabilities"):
        return None
    return np.asarray(tube["probabilities"], dtype=np.float64)


def set_metrics(objects: Sequence[Mapping[str, Any]], classes: Sequence[str], seed: int = 0) -> dict[str, Any]:
    """The figures of one set (see the module docstring)."""
    classes = list(classes)
    k = min(3, len(classes))
    n = len(objects)
    truth = np.array([classes.index(o["truth"]) if o["truth"] in classes else -1 for o in objects])
    img_probs = np.full((n, len(classes)), np.nan)
    mean_probs = np.full((n, len(classes)), np.nan)
    keys = ("answered", "top1", "topk", "cw", "regions", "kept", "r1", "rk", "ood", "vac", "m_answered", "m_top1")
    per_obj = {key: np.zeros(n) for key in keys}
    region_probs, region_truth, confusions = [], [], Counter()
    for i, o in enumerate(objects):
        probs = np.asarray(o["probs"], dtype=np.float64).reshape(-1, len(classes))
        flags = np.asarray(o["flags"], dtype=object)
        keep = ~np.isin(flags, ("ood", "vacuum"))
        per_obj["regions"][i] = len(probs)
        per_obj["kept"][i] = keep.sum()
        per_obj["ood"][i] = (flags == "ood").sum()
        per_obj["vac"][i] = (flags == "vacuum").sum()
        mean = None
        if keep.any():
            t = np.full(keep.sum(), truth[i])
            per_obj["r1"][i] = (probs[keep].argmax(axis=1) == t).sum()
            per_obj["rk"][i] = _topk(probs[keep], t, k).sum()
            region_probs.append(probs[keep])
            region_truth.append(t)
            mean = probs[keep].mean(axis=0)
            mean_probs[i] = mean
            per_obj["m_answered"][i] = 1
            per_obj["m_top1"][i] = mean.argmax() == truth[i]
        p = image_answer(o, mean)
        if p is not None:
            img_probs[i] = p
            per_obj["answered"][i] = 1
            per_obj["top1"][i] = p.argmax() == truth[i]
            per_obj["topk"][i] = _topk(p[None], truth[i : i + 1], k)[0]
            per_obj["cw"][i] = p.max() >= CONFIDENT and p.argmax() != truth[i]
            if p.argmax() != truth[i]:
                confusions[(o["truth"], classes[int(p.argmax())])] += 1
    answered = per_obj["answered"] > 0
    rp = np.concatenate(region_probs) if region_probs else np.empty((0, len(classes)))
    rt = np.concatenate(region_truth) if region_truth else np.empty(0, dtype=int)

    ratios = {
        "image_top1": ("top1", None),
        "image_top1_window_mean": ("m_top1", None),
        f"image_top{k}": ("topk", None),
        "confident_wrong": ("cw", None),
        "answered": ("answered", None),
        "region_top1": ("r1", "kept"),
        f"region_top{k}": ("rk", "kept"),
        "ood_flag_rate": ("ood", "regions"),
        "vacuum_rate": ("vac", "regions"),
    }

    def ratio(num: np.ndarray, den: np.ndarray | None, w: np.ndarray) -> np.ndarray:
        d = w @ (den if den is not None else np.ones(n))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(d > 0, (w @ num) / np.where(d > 0, d, 1), np.nan)

    rng = np.random.default_rng(seed)
    weights = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(BOOTSTRAP)]) if n else None
    out: dict[str, Any] = {
        "n_images": n,
        "n_objects": n,
        "n_regions": int(per_obj["regions"].sum()),
        "n_regions_kept": int(per_obj["kept"].sum()),
        "unknown_truth": sorted({o["truth"] for o in objects if o["truth"] not in classes}),
    }
    for name, (num, den) in ratios.items():
        value = ratio(per_obj[num], per_obj[den] if den else None, np.ones((1, n)))[0] if n else float("nan")
        out[name] = _num(value)
        if weights is not None:
            boot = ratio(per_obj[num], per_obj[den] if den else None, weights)
            boot = boot[np.isfinite(boot)]
            out[f"{name}_ci95"] = (
                [_num(np.percentile(boot, 2.5)), _num(np.percentile(boot, 97.5))] if len(boot) else None
            )
    out["image_top1_answered"] = _num(per_obj["top1"][answered].mean()) if answered.any() else None
    out["ece_image"] = ece(img_probs[answered], truth[answered])
    m_answered = per_obj["m_answered"] > 0
    out["ece_image_window_mean"] = ece(mean_probs[m_answered], truth[m_answered])
    tubes = [o["tube"] for o in objects if o.get("tube")]
    out["image_answer"] = (
        "predict's tube answer (pool {}, exponent {})".format(
            "/".join(sorted({str(t.get("pool")) for t in tubes})),
            "/".join(sorted({f"{float(t.get('exponent') or 1.0):.3g}" for t in tubes})),
        )
        if tubes
        else "mean of the unflagged windows"
    )
    out["ece_region"] = ece(rp, rt)
    # what a calibrated per-image answer with these top-1 probabilities reads on this many images
    ip = img_probs[answered]
    out["ece_image_check"] = calibration_check(ip.max(axis=1), ip.argmax(axis=1) == truth[answered], ECE_BINS)
    out["mean_confidence_image"] = _num(np.nanmax(img_probs[answered], axis=1).mean()) if answered.any() else None
    out["confusions"] = [
        {"true": t, "predicted": p, "count": c} for (t, p), c in confusions.most_common(TOP_CONFUSIONS)
    ]
    out["per_image"] = [
        {
            "file": o["file"],
            "truth": o["truth"],
            "answer": classes[int(np.nanargmax(img_probs[i]))] if answered[i] else None,
            "probability": _num(np.nanmax(img_probs[i])) if answered[i] else None,
            "regions": int(per_obj["regions"][i]),
            "regions_kept": int(per_obj["kept"][i]),
        }
        for i, o in enumerate(objects)
    ]
    return out


def _num(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def own_test_split(bundle: Path, card: Mapping[str, Any]) -> dict[str, Any] | None:
    """The bundle's figures on its own test split, from the evaluation report that matches it."""
    for path in (bundle / "metrics.json", bundle.parent.parent / "reports" / card["task"] / "metrics.json"):
        if not path.is_file():
            continue
        try:
            m = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if m.get("task") != card["task"] or m.get("dataset_sha256") != card.get("dataset_sha256"):
            continue
        k = min(3, len(card["classes"]))
        ci = m.get("ci95") or {}
        return {
            "report": str(path),
            "n_images": m.get("n_images"),
            "n_structures": m.get("n_structures"),
            "region_top1": m.get("accuracy"),
            "region_top1_ci95": ci.get("accuracy"),
            f"region_top{k}": m.get(f"top{k}_accuracy"),
            "ece_region": m.get("ece_after"),
            "image_top1": (m.get("per_structure") or {}).get("accuracy"),
        }
    return None


# ---------------------------------------------------------------------------------------------- table


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _ci(row: Mapping[str, Any], key: str) -> str:
    ci = row.get(f"{key}_ci95")
    return f"{_pct(row.get(key))} [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else _pct(row.get(key))


def table_markdown(
    rows: Sequence[Mapping[str, Any]], own: Mapping[str, Any] | None, k: int, baseline: str = "H0_ideal"
) -> str:
    head = (
        f"| set | images | windows | image top-1 % [95 %] | Δ vs {baseline} | windows' mean top-1 % | "
        f"image top-{k} % | "
        "answered % | "
        f"window top-1 % [95 %] | window top-{k} % | ECE image (if calibrated) | ECE window | "
        "confident & wrong % [95 %] | "
        "OOD % | vacuum % | commonest confusions |"
    )
    lines = [head, "|" + "---|" * 16]
    if own:
        ece_own = "-" if own.get("ece_region") is None else f"{own['ece_region']:.3f}"
        lines.append(
            f"| own test split | {own.get('n_images') or '-'} | - | {_pct(own.get('image_top1'))} (per structure) "
            f"| - | - | - | - | {_ci(own, 'region_top1')} | {_pct(own.get(f'region_top{k}'))} | - | {ece_own} "
            "| - | - | - | - |"
        )
    base = next((r for r in rows if r["set"] == baseline), None)
    for r in rows:
        delta = (
            f"{100 * (r['image_top1'] - base['image_top1']):+.1f}"
            if base and r is not base and r.get("image_top1") is not None and base.get("image_top1") is not None
            else "-"
        )
        conf = "; ".join(f"{c['true']}→{c['predicted']} ({c['count']})" for c in r.get("confusions", [])) or "-"
        check = r.get("ece_image_check") or {}
        ece_i = "-" if r.get("ece_image") is None else f"{r['ece_image']:.3f}"
        if check.get("ece_if_calibrated") is not None:
            ece_i += f" ({check['ece_if_calibrated']:.3f})"
        ece_r = "-" if r.get("ece_region") is None else f"{r['ece_region']:.3f}"
        lines.append(
            f"| {r['set']} | {r['n_images']} | {r['n_regions']} | {_ci(r, 'image_top1')} | {delta} | "
            f"{_pct(r.get('image_top1_window_mean'))} | {_pct(r.get(f'image_top{k}'))} | {_pct(r.get('answered'))} | "
            f"{_ci(r, 'region_top1')} | "
            f"{_pct(r.get(f'region_top{k}'))} | {ece_i} | {ece_r} | {_ci(r, 'confident_wrong')} | "
            f"{_pct(r.get('ood_flag_rate'))} | {_pct(r.get('vacuum_rate'))} | {conf} |"
        )
    return "\n".join(lines) + "\n"


def score_sets(
    bundle: str | Path,
    sets_root: str | Path,
    out: str | Path,
    set_names: Sequence[str],
    *,
    one_process_per_image: bool = False,
    rescore: bool = False,
    seed: int = 0,
    echo=print,
) -> dict[str, Any]:
    """Predict every set's micrographs with the bundle and write factor_table.md/.json into out."""
    bundle = Path(bundle).resolve()
    card = read_card(bundle)
    if card.get("kind") != "classification":
        raise SystemExit(f"{bundle} is a {card.get('kind')} bundle; the independent sets score a classifier")
    out = Path(out)
    families = {check_family(Path(sets_root) / name, card) for name in set_names}
    family = families.pop() if len(families) == 1 else "cnt"
    jobs = []
    for name in set_names:
        jobs += predict_set(Path(sets_root) / name, bundle, out / "predictions" / name, card, rescore=rescore)
    echo(f"predict: {len(jobs)} micrograph(s) to run through `hrtemflow predict`")
    run_predict(jobs, out / "predictions", one_process_per_image=one_process_per_image)
    k = min(3, len(card["classes"]))
    rows = []
    for name in set_names:
        objects = read_objects(Path(sets_root) / name, out / "predictions" / name, card)
        rows.append({"set": name, **set_metrics(objects, card["classes"], seed=seed)})
    own = own_test_split(bundle, card)
    result = {
        "bundle": str(bundle),
        "task": card["task"],
        "classes": card["classes"],
        "pixel_size_A": card["pixel_size_A"],
        "window_px": card["input_size"],
        "dataset_sha256": card.get("dataset_sha256"),
        "own_test_split": own,
        "confident": CONFIDENT,
        "ece_bins": ECE_BINS,
        "bootstrap": {"resamples": BOOTSTRAP, "unit": "images (with their regions)", "seed": seed},
        "sets": rows,
    }
    thing = OBJECT_NAMES.get(family, "object")
    md = (
        f"Bundle `{bundle}` ({card['task']}, {len(card['classes'])} classes, {card['input_size']} px at "
        f"{card['pixel_size_A']:.4g} Å). One {thing} per micrograph. Image = "
        + (
            "predict's answer on the tube given by its end points (`--tube`), "
            + "; ".join(sorted({r["image_answer"] for r in rows}))
            + "; a tube predict flags ood or vacuum has no answer. The windows' mean: the mean of a tube's "
            "unflagged windows (the answer of earlier runs)"
            if family == "cnt"
            else f"the mean of a {thing}'s unflagged windows; an image with every window flagged has no answer"
        )
        + f", which counts as wrong. Confident & wrong: an answer with "
        f"top-1 p >= {CONFIDENT} that is wrong, out of all images. Intervals: {BOOTSTRAP} bootstrap resamples of the "
        "images. Own test split: its windows are the region figures, its structures the image figure.\n\n"
        + table_markdown(rows, own, k, BASELINES.get(family, "H0_ideal"))
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "factor_table.json").write_text(json.dumps(result, indent=1))
    (out / "factor_table.md").write_text(md)
    echo(md)
    return result
