"""Calibration of the per-tube answer: one exponent, fitted on labelled micrographs of whole tubes.

Why: a tube's answer is the mean of its windows' probabilities (`tubes.combine`), which is robust to a
bad window but under-confident: windows that agree on a class are evidence beyond what any one of
them says, and the mean does not count it (measured on the 71-class bench: mean top-1 probability 0.72
on tubes it got right 88 % of the time). Multiplying the windows would count every window as
independent evidence, which they are not (one structure, one set of optics), and is overconfident.
Between the two, the answer is a pool of the windows tempered by one exponent, fitted by likelihood on
labelled tubes that the network did not train on (the campaign's validation tubes, imaged as whole-tube
micrographs). Two pools are fitted and the one with the lower likelihood loss kept:

- `mean`: p ∝ (mean of the windows)^α. Like the windows' temperature it only rescales confidence: the
  ranking, hence top-1 and top-3, is the mean's.
- `geometric`: p ∝ exp(β · mean of the windows' log p), the windows' product tempered to β effective
  windows (their noise is independent where their structure and optics are not). A class that several
  windows rule out is ruled out, so the ranking can differ from the mean's. Each window's probabilities are
  mixed with 1 % of uniform first (GEOMETRIC_MIX), so that a window's zero is a finite penalty, not -inf.

Where a tube's own graphene lattice gives its chiral angle (`lattice.read_tube_lattice`) and its walls its
radius (`tube_profile.read_tube_walls`), the answer also weighs them (`lattice_fusion`: the pool tempered by its
own exponent times the readings' likelihood, fitted on the same tubes); the fit is kept only where it lowers the
likelihood loss of the tubes it applies to out of sample (two-fold).

The file `tube_calibration.json` in the bundle holds the pool and its exponent (and the lattice's parameters,
`lattice`) with what they were fitted on; predict applies them only to the same model (the SHA-256 of
model.keras) under the same window temperature, otherwise the mean is reported uncalibrated, with a note.
Predict records both pools of every tube untempered (`pools`) and its readings (`lattice`, with `walls`), so a
refit needs no second run of the network.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..core.atomic import plain_json, write_json_atomic
from ..core.calibration import ECE_BINS, calibration_check, expected_calibration_error
from ..core.errors import HrtemflowError
from . import lattice_fusion

CALIBRATION_FILE = "tube_calibration.json"
#: the exponent is searched in this range (1: the pool as it is)
EXPONENT_RANGE = (0.1, 100.0)
#: how a tube's windows are pooled before the exponent (module docstring); a file without one means "mean"
POOLS = ("mean", "geometric")
#: share of uniform mixed into each window's probabilities before the geometric pool
GEOMETRIC_MIX = 0.01
#: fewer labelled tubes than this fit α too loosely to trust
MIN_TUBES = 20
#: a labelled tube is matched to a predicted one when both predicted ends lie this close to its axis (nm)
MATCH_NM = 1.0
LABEL_COLUMNS = ("file", "chirality", "x0", "y0", "x1", "y1")
_TINY = 1e-300


class TubeCalibration(NamedTuple):
    """What predict applies to a tube's windows: the pool, its exponent, and the lattice angle's fitted
    weighing (`lattice_fusion`; None: the answer is the network's alone)."""

    pool: str
    exponent: float
    lattice: dict[str, float] | None = None


def temper(probabilities: np.ndarray, exponent: float) -> np.ndarray:
    """p^α renormalised (in logs: no underflow for α up to EXPONENT_RANGE's top)."""
    logp = exponent * np.log(np.maximum(np.asarray(probabilities, dtype=np.float64), _TINY))
    logp -= logp.max(axis=-1, keepdims=True)
    p = np.exp(logp)
    return p / p.sum(axis=-1, keepdims=True)


def pool_windows(probabilities: np.ndarray) -> dict[str, np.ndarray]:
    """Both pools of a tube's windows' probabilities (windows, classes), untempered and normalised."""
    p = np.asarray(probabilities, dtype=np.float64)
    mixed = (1.0 - GEOMETRIC_MIX) * p + GEOMETRIC_MIX / p.shape[-1]
    return {"mean": p.mean(axis=0), "geometric": temper(np.exp(np.log(mixed).mean(axis=0)), 1.0)}


def nll(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes."""
    p = np.asarray(probabilities, dtype=np.float64)[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.maximum(p, _TINY))))


def fit_exponent(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """α minimising the NLL of temper(probabilities, α) (bounded search over log α)."""
    from scipy.optimize import minimize_scalar  # noqa: PLC0415

    lo, hi = (math.log(v) for v in EXPONENT_RANGE)
    res = minimize_scalar(lambda t: nll(temper(probabilities, math.exp(t)), labels), bounds=(lo, hi), method="bounded")
    return float(math.exp(res.x))


def pool_scores(pooled: np.ndarray, labels: np.ndarray, exponent: float) -> dict[str, Any]:
    """A pool's answers on labelled tubes, tempered by `exponent`: NLL, ECE, top-1, top-3 and the ECE check."""
    q = temper(pooled, exponent)
    right = q.argmax(axis=1) == labels
    return {
        "exponent": exponent,
        "tubes": len(labels),
        "nll": nll(q, labels),
        "ece": expected_calibration_error(q, labels, ECE_BINS)[0],
        "top1": float(right.mean()),
        "top3": float(np.mean((np.argsort(-q, axis=1)[:, :3] == labels[:, None]).any(axis=1))),
        "ece_check": calibration_check(q.max(axis=1), right, ECE_BINS),
    }


def model_sha256(bundle_dir: Path) -> str:
    from ..learn.bundle import MODEL_FILE  # noqa: PLC0415

    h = hashlib.sha256()
    with (Path(bundle_dir) / MODEL_FILE).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def same_temperature(a: float | None, b: float | None) -> bool:
    """Two window temperatures are the same calibration: both none, or equal to rounding."""
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=1e-6)


def find_calibration(bundle_dir: Path, temperature: float | None) -> tuple[TubeCalibration | None, str]:
    """The bundle's fitted calibration and where it came from, or (None, why not): the file must name this
    model and the window temperature it was fitted under."""
    path = Path(bundle_dir) / CALIBRATION_FILE
    if not path.is_file():
        return None, (
            f"no {CALIBRATION_FILE}: per-tube probabilities are the windows' mean, uncalibrated (under-confident); "
            "fit one with `hrtemflow fit-tubes`"
        )
    try:
        cal = json.loads(path.read_text(encoding="utf-8"))
        alpha = float(cal["exponent"])
        pool = str(cal.get("pool", "mean"))
        fused = cal.get("lattice")
        if fused is not None:
            # the walls' parameters are there together or not at all (a weighing of the angle alone)
            names = lattice_fusion.PARAMETERS + (
                lattice_fusion.WALL_PARAMETERS if any(k in fused for k in lattice_fusion.WALL_PARAMETERS) else ()
            )
            fused = {k: float(fused[k]) for k in names}
    except (OSError, ValueError, KeyError, TypeError, RecursionError, AttributeError):
        return (
            None,
            f"{path} is not a tube calibration this version reads: not applied; refit with `hrtemflow fit-tubes`",
        )
    if cal.get("model_sha256") != model_sha256(bundle_dir):
        return None, f"{path} was fitted for another model.keras: not applied; refit with `hrtemflow fit-tubes`"
    fitted_t = cal.get("window_temperature")
    if not same_temperature(fitted_t, temperature):
        return None, (
            f"{path} was fitted under window temperature {fitted_t}, predict runs under {temperature}: not applied; "
            "refit with `hrtemflow fit-tubes` under this temperature"
        )
    if not (EXPONENT_RANGE[0] <= alpha <= EXPONENT_RANGE[1]):
        return None, f"{path}: exponent {alpha} outside {EXPONENT_RANGE}: not applied"
    if pool not in POOLS:
        return None, (
            f"{path}: pool {pool!r} is none of {', '.join(POOLS)}: not applied; refit with `hrtemflow fit-tubes`"
        )
    if fused is not None and not all(math.isfinite(v) for v in fused.values()):
        return None, f"{path}: lattice parameters {fused} are not finite: not applied; refit with `hrtemflow fit-tubes`"
    return TubeCalibration(pool, alpha, fused), str(path)


# ---------------------------------------------------------------------------------------------
# labelled tubes against predict's tubes


def read_labels(path: Path) -> list[dict[str, str]]:
    """A labels CSV: one row per tube, `file` (the micrograph's file name), `chirality` (a class of the
    bundle, e.g. 11-6) and its axis ends `x0,y0,x1,y1` in pixels of the original image."""
    path = Path(path)
    if not path.is_file():
        raise HrtemflowError(f"--labels {path} does not exist: pass a CSV with columns {', '.join(LABEL_COLUMNS)}")
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    missing = [c for c in LABEL_COLUMNS if not rows or c not in rows[0]]
    if missing:
        raise HrtemflowError(
            f"--labels {path}: "
            + ("no rows" if not rows else f"columns {', '.join(missing)} missing")
            + f"; it needs one row per tube with {', '.join(LABEL_COLUMNS)} (pixels of the original image)"
        )
    return rows


def segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of points p (k, 2) to the segment a-b."""
    ab = b - a
    t = np.clip(((p - a) @ ab) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
    return np.hypot(*(p - (a + t[:, None] * ab)).T)


def as_number(v: Any) -> float:
    """A CSV or JSON cell as a float; NaN where it is none."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def match_tubes(
    labels: Sequence[Mapping[str, Any]], tubes: Sequence[Mapping[str, Any]], task: str, match_nm: float = MATCH_NM
) -> list[dict[str, Any]]:
    """Per labelled tube, the predicted tube of the same micrograph (`source`, by file name) and task that
    lies on it: both predicted end points within `match_nm` of the labelled axis (predict finds tubes a
    little short, by design, so its windows stay on the tube); the longest such tube when there are
    several pieces; None (missed) when none lies on it. `tubes`: rows with source, task, x0_px, y0_px,
    x1_px, y1_px (tubes.csv) and pixel_size_nm of their micrograph. `coverage`: found over labelled length."""
    by_file: dict[str, list[Mapping[str, Any]]] = {}
    for t in tubes:
        if t.get("task", task) == task:
            by_file.setdefault(Path(str(t["source"])).name, []).append(t)
    out = []
    for lab in labels:
        a0 = np.array([as_number(lab["x0"]), as_number(lab["y0"])])
        b0 = np.array([as_number(lab["x1"]), as_number(lab["y1"])])
        best, best_key, best_d = None, None, math.inf
        for t in by_file.get(Path(str(lab["file"])).name, []):
            px_nm = (
                as_number(lab.get("pixel_size_nm"))
                if lab.get("pixel_size_nm") not in (None, "")
                else as_number(t.get("pixel_size_nm"))
            )
            ends = np.array(
                [[as_number(t["x0_px"]), as_number(t["y0_px"])], [as_number(t["x1_px"]), as_number(t["y1_px"])]]
            )
            d = float(segment_distance(ends, a0, b0).max()) * px_nm
            length = float(np.hypot(*(ends[1] - ends[0])))
            key = (d < match_nm, length if d < match_nm else -d)
            if best_key is None or key > best_key:
                best, best_key, best_d = t, key, d
        found = best is not None and best_d < match_nm
        coverage = None
        if found:
            length = float(
                np.hypot(
                    as_number(best["x1_px"]) - as_number(best["x0_px"]),
                    as_number(best["y1_px"]) - as_number(best["y0_px"]),
                )
            )
            coverage = length / max(float(np.hypot(*(b0 - a0))), 1e-9)
        out.append(
            {
                "label": lab,
                "tube": best if found else None,
                "distance_nm": best_d if best is not None else None,
                "coverage": coverage,
            }
        )
    return out


def predicted_tubes(predict_dir: Path, task: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every tube predict answered for `task` in an output folder (from each micrograph's predictions.json:
    end points, pixel size, the full class probabilities and the exponent they were tempered with), and
    the bundle info predict recorded for the task."""
    predict_dir = Path(predict_dir)
    summary_path = predict_dir / "summary.json"
    if not summary_path.is_file():
        raise HrtemflowError(
            f"{predict_dir} holds no summary.json: pass the --out folder of `hrtemflow predict` run on the labelled "
            "micrographs"
        )
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    info = (summary.get("bundles") or {}).get(task)
    if info is None:
        raise HrtemflowError(
            f"{summary_path}: predict ran no bundle named {task!r} (it ran: {', '.join(summary.get('bundles') or {})})"
        )
    rows = []
    for rec in summary.get("micrographs", []):
        if rec.get("status") != "ok":
            continue
        for t in rec.get("tubes") or []:
            res = t.get(task)
            if not isinstance(res, Mapping) or not res.get("probabilities"):
                continue
            (x0, y0), (x1, y1) = t["polyline_xy"][0], t["polyline_xy"][-1]
            rows.append(
                {
                    "source": rec["source"],
                    "task": task,
                    "x0_px": x0,
                    "y0_px": y0,
                    "x1_px": x1,
                    "y1_px": y1,
                    "pixel_size_nm": rec.get("pixel_size_nm"),
                    "probabilities": res["probabilities"],
                    "exponent": res.get("exponent", 1.0),
                    "pool": res.get("pool", "mean"),
                    "pools": res.get("pools"),
                    "lattice": res.get("lattice"),
                }
            )
    return rows, info


def untempered(row: Mapping[str, Any], classes: Sequence[str], pool: str = "mean") -> np.ndarray | None:
    """A tube's pooled windows, untempered: as predict recorded them (`pools`), or its answer with the
    exponent undone when it was that pool; None when the output holds neither (an older predict)."""
    pools = row.get("pools")
    if isinstance(pools, Mapping) and isinstance(pools.get(pool), Mapping):
        return np.array([float(pools[pool].get(c, 0.0)) for c in classes])
    if row.get("pool", "mean") != pool:
        return None
    p = np.array([float(row["probabilities"].get(c, 0.0)) for c in classes])
    return temper(p, 1.0 / float(row.get("exponent") or 1.0))


def fit_tubes(
    predict_dir: Path, labels_csv: Path, bundle_dir: Path, task: str = "chirality", match_nm: float = MATCH_NM
) -> dict[str, Any]:
    """Fit each pool's exponent on predict's answers for labelled tubes and write the better one into the
    bundle (see the module docstring)."""
    from ..learn.bundle import find_temperature  # noqa: PLC0415
    from ..learn.card import ModelCard  # noqa: PLC0415

    bundle_dir = Path(bundle_dir)
    card = ModelCard.read(bundle_dir)
    if card.kind != "classification" or not card.classes:
        raise HrtemflowError(f"{bundle_dir}: a {card.kind} bundle has no classes to calibrate per tube")
    labels = read_labels(labels_csv)
    tubes, info = predicted_tubes(predict_dir, task)
    if Path(str(info.get("path", ""))).resolve() != bundle_dir.resolve():
        raise HrtemflowError(
            f"{predict_dir} was predicted with the bundle {info.get('path')}, not {bundle_dir}: fit a bundle on its "
            "own answers"
        )
    temperature, _ = find_temperature(bundle_dir, card)
    if not same_temperature(info.get("temperature"), temperature):
        raise HrtemflowError(
            f"{predict_dir} was predicted under window temperature {info.get('temperature')}, the bundle's is now "
            f"{temperature}: run predict again, then fit"
        )
    unknown = sorted({r["chirality"] for r in labels} - set(card.classes))
    if unknown:
        raise HrtemflowError(
            f"--labels {labels_csv}: {len(unknown)} label(s) are not classes of the bundle ({', '.join(unknown[:5])}); "
            "the labels must use its class names (e.g. 11-6)"
        )
    matches = match_tubes(labels, tubes, task, match_nm)
    found = [m for m in matches if m["tube"] is not None]
    if len(found) < MIN_TUBES:
        raise HrtemflowError(
            f"only {len(found)} of {len(labels)} labelled tubes were found by predict (need {MIN_TUBES}): label more "
            "tubes, or check that the labels' end points are in pixels of the original images"
        )
    classes = list(card.classes)
    y = np.array([classes.index(m["label"]["chirality"]) for m in found])
    pooled, fits = {}, {}
    for pool in POOLS:
        rows = [untempered(m["tube"], classes, pool) for m in found]
        if any(v is None for v in rows):
            continue  # an older predict output holds only the mean
        pooled[pool] = np.stack(rows)
        fits[pool] = pool_scores(pooled[pool], y, fit_exponent(pooled[pool], y))
    chosen = min(fits, key=lambda k: fits[k]["nll"])
    best = fits[chosen]
    alpha = best["exponent"]
    p = pooled["mean"]  # the uncalibrated mean, as predict reports it without a calibration
    q = temper(pooled[chosen], alpha)
    readings = [m["tube"].get("lattice") for m in found]
    fused = fit_lattice(pooled[chosen], readings, y, classes, alpha)
    if fused is not None and fused["kept"]:
        q = fused_answers(q, pooled[chosen], readings, classes, fused)
    result = {
        "pool": chosen,
        "exponent": alpha,
        "fits": fits,
        "task": task,
        "model_sha256": model_sha256(bundle_dir),
        "dataset_sha256": card.dataset_sha256,
        "window_temperature": temperature,
        "tubes_labelled": len(labels),
        "tubes_fitted": len(found),
        "top1": float(np.mean(p.argmax(axis=1) == y)),
        "top1_tempered": best["top1"],
        "nll_mean": nll(p, y),
        "nll_tempered": best["nll"],
        "ece_mean": expected_calibration_error(p, y, ECE_BINS)[0],
        "ece_tempered": best["ece"],
        # the ECE a calibrated answer with the tempered top-1 probabilities reads on this many tubes
        "ece_check_tempered": best["ece_check"],
        "mean_p1_mean": float(p.max(axis=1).mean()),
        "mean_p1_tempered": float(q.max(axis=1).mean()),
        # the answer predict gives (with the lattice where it is kept) on all the fitted tubes
        "answer": pool_scores(q, y, 1.0) | {"exponent": None, "lattice": bool(fused and fused["kept"])},
        "lattice": fused if fused is not None and fused["kept"] else None,
        "lattice_fit": fused,
        "fitted_on": {"predict": str(predict_dir), "labels": str(labels_csv), "match_nm": match_nm},
        "how": "each pool of the windows (mean; geometric, of the windows mixed with "
        f"{GEOMETRIC_MIX:g} uniform) tempered by the exponent minimising the NLL of the labelled tubes predict "
        "found (bounded search over log exponent); the pool with the lower NLL is applied; on the tubes whose lattice "
        "was read, that pool is weighed by the lattice angle's likelihood (lattice_fusion), kept where it lowers "
        "their NLL out of sample (two-fold)",
    }
    write_json_atomic(bundle_dir / CALIBRATION_FILE, plain_json(result))
    return result


def fit_lattice(
    pooled: np.ndarray,
    readings: Sequence[Mapping[str, Any] | None],
    labels: np.ndarray,
    classes: Sequence[str],
    exponent: float,
) -> dict[str, Any] | None:
    """The weighing of the tube's own angle and walls fitted on the labelled tubes that have either reading, with
    its scores on them against the pool alone; `kept` where it lowers their NLL out of sample (two-fold: each half
    scored by the weighing fitted on the other; in sample, up to eight free parameters always gain a little). None when
    the classes are no (n,m) or fewer than MIN_TUBES tubes were read. `walls`: how far the walls' radius is off
    the truth on them (nm)."""
    geometry = lattice_fusion.class_geometry(classes)
    read = np.array([lattice_fusion.usable(r) for r in readings], dtype=bool)
    if geometry is None or read.sum() < MIN_TUBES:
        return None
    rs = [r for r, ok in zip(readings, read) if ok]
    p, y = pooled[read], labels[read]
    alone = pool_scores(p, y, exponent)
    # the walls are weighed only where they gain out of sample over the angle alone: a tube's projected width
    # is its radius only as far as its cross-section is round (chirality-all.md, sixth run)
    tried = {}
    for walls_on in (False, True):
        params = lattice_fusion.fit(p, rs, y, geometry, exponent, walls=walls_on)
        if walls_on and not lattice_fusion.weighs_walls(params):
            continue  # too few walls read
        tried[walls_on] = (params, _two_fold(p, rs, y, geometry, exponent, walls_on))
    walls_kept = True in tried and nll(tried[True][1], y) < nll(tried[False][1], y)
    params, crossed = tried[walls_kept]
    with_lattice = pool_scores(lattice_fusion.fuse(p, rs, geometry, params), y, 1.0)
    walls = None
    if True in tried:
        with_walls, crossed_with_walls = tried[True]
        off = lattice_fusion.tube_radius(rs, with_walls) - geometry[y, 1]
        off = off[np.isfinite(off)]
        walls = {
            "kept": walls_kept,
            "nll_angle_alone": nll(tried[False][1], y),
            "nll_with_walls": nll(crossed_with_walls, y),
            "wall_sigma_nm_fitted": with_walls["wall_sigma_nm"],
            "tubes_read": len(off),
            "radius_error_abs_median_nm": float(np.median(np.abs(off))),
            "radius_error_abs_q90_nm": float(np.quantile(np.abs(off), 0.9)),
        }
    return {
        **params,
        "tubes_read": int(read.sum()),
        "angles_read": int(sum(lattice_fusion.angle_read(r) for r in rs)),
        "walls": walls,
        "tubes": len(readings),
        "pool_alone": alone,
        "with_lattice": with_lattice,
        "with_lattice_two_fold": pool_scores(crossed, y, 1.0),
        "kept": bool(nll(crossed, y) < alone["nll"]),
    }


def _two_fold(
    p: np.ndarray, rs: Sequence[Mapping[str, Any]], y: np.ndarray, geometry: np.ndarray, exponent: float, walls: bool
) -> np.ndarray:
    """Each tube's weighed answer from the weighing fitted on the other half of the tubes."""
    halves = np.arange(len(y)) % 2
    crossed = np.empty_like(p)
    for h in (0, 1):
        fit_on, score_on = np.flatnonzero(halves != h), np.flatnonzero(halves == h)
        half = lattice_fusion.fit(p[fit_on], [rs[i] for i in fit_on], y[fit_on], geometry, exponent, walls=walls)
        crossed[score_on] = lattice_fusion.fuse(p[score_on], [rs[i] for i in score_on], geometry, half)
    return crossed


def fused_answers(
    answers: np.ndarray,
    pooled: np.ndarray,
    readings: Sequence[Mapping[str, Any] | None],
    classes: Sequence[str],
    params: Mapping[str, float],
) -> np.ndarray:
    """`answers` (the pool's calibrated answers), replaced by the weighing where a tube was read."""
    out = np.array(answers, dtype=np.float64, copy=True)
    geometry = lattice_fusion.class_geometry(classes)
    read = np.array([lattice_fusion.usable(r, params) for r in readings], dtype=bool)
    if geometry is not None and read.any():
        out[read] = lattice_fusion.fuse(pooled[read], [r for r, ok in zip(readings, read) if ok], geometry, params)
    return out
