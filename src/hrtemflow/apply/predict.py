"""Trained bundles applied to experimental micrographs: the `hrtemflow predict` driver.

Preprocessing is the training preprocessing, step for step: the micrograph is resampled to the
bundle's pixel size (card `pixel_size_A`) by a band-limited Fourier resampling (`resample`), the
operation by which the imaging stage makes its images at each pixel size, cut into windows of the
card's `input_size` (`regions`) and normalised by the very function the training feed uses
(`hrtemflow.learn.preprocess.normalise`, with the card's eps and clip).

Orientation: simulated arrays are indexed [x, y] (abTEM), a micrograph [row, col] = [y, x]. Each
window is transposed before the network, so angles (astigmatism φ12) come out as azimuths from +x
(columns, to the right) towards +y (rows, downwards) of the micrograph as displayed.

Per region the classifiers give the top-3 classes with probabilities (temperature-scaled when a
fitted temperature is found, `hrtemflow.learn.bundle.find_temperature`), the regressors a value and
a spread over the 8 flips/rotations of the window (test-time augmentation, `hrtemflow.learn.inference`),
and every region gets an out-of-distribution check (`hrtemflow.learn.ood`). Outputs are written by
`outputs`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.atomic import plain_json, write_json_atomic
from ..core.errors import HrtemflowError
from ..core.ids import parse_chirality
from ..core.tasks import TASKS
from ..core.tubes import tube_chiral_angle_deg
from ..learn.bundle import Bundle, load_bundle
from ..learn.card import ModelCard
from ..learn.inference import IMG_BYTES_PER_BATCH, Net, run_net, softmax
from ..learn.ood import majority_flag, ood_scores, structure_ratio, vacuum_gate
from ..learn.preprocess import normalise
from . import lattice, lattice_fusion, tube_profile
from .conditions import assess
from .options import Options, check_options, check_temperatures
from .outputs import (
    TUBE_COLUMNS,
    UniqueNames,
    bundle_keys,
    csv_rows,
    format_table,
    jsonable,
    output_names,
    summary_row,
    table_rows,
    tube_records,
    tube_rows,
    tube_table,
    write_calibrated_tiff,
    write_csv,
    write_overlay,
    write_preview,
    write_tube_overlay,
)
from .readers import list_micrographs, read_micrograph
from .regions import Region, sliding_regions, window_starts, windows_in
from .resample import resample
from .tube_calibration import find_calibration
from .tubes import Tube, axis_centres, combine, find_tubes, scaled, window_origins

TOP_K = 3
WINDOW_CHUNK = 4096  # windows cut, normalised and predicted at a time


def normalise_windows(windows: np.ndarray, net: Net) -> np.ndarray:
    """Training normalisation (the same function, the card's eps and clip), transposed to [x, y]."""
    x = normalise(np.asarray(windows, dtype=np.float32), eps=net.eps, clip=net.clip)
    return np.ascontiguousarray(np.swapaxes(x, -1, -2))


def resampled_shape(shape: tuple[int, int], pixel_A: float, target_A: float) -> tuple[int, int]:
    """The shape `resample` will give (computed first, so a size is checked before it is allocated)."""
    scale = float(pixel_A) / float(target_A)
    if abs(scale - 1.0) < 1e-9:
        return int(shape[0]), int(shape[1])
    return max(1, int(round(shape[0] * scale))), max(1, int(round(shape[1] * scale)))


def check_size(
    shape: tuple[int, int], pixel_A: float, card: ModelCard, source: str, max_pixels: int
) -> tuple[int, int]:
    """Refuse, before any allocation, a micrograph whose image or resampled image is over `max_pixels`."""
    rshape = resampled_shape(shape, pixel_A, card.pixel_size_A)
    worst = max(shape[0] * shape[1], rshape[0] * rshape[1], rshape[0] * shape[1])  # resample goes axis by axis
    if worst > max_pixels:
        raise HrtemflowError(
            f"{source}: {shape[1]} x {shape[0]} px at {pixel_A / 10:.4g} nm/px resampled to the {card.task} model's "
            f"{card.pixel_size_A / 10:.4g} nm/px would be {rshape[1]:,} x {rshape[0]:,} px, over the limit of "
            f"{max_pixels:,} px (--max-pixels); check --pixel-size, crop or bin the micrograph, or raise "
            "--max-pixels if the machine has the memory (about 30 bytes a pixel)"
        )
    return rshape


def _check_fits(shape: tuple[int, int], pixel_A: float, rshape: tuple[int, int], card: ModelCard, source: str) -> None:
    size = card.input_size
    if min(rshape) < size:
        raise HrtemflowError(
            f"{source}: the image is {shape[1]} x {shape[0]} px at {pixel_A / 10:.4g} nm/px, i.e. {rshape[1]} x "
            f"{rshape[0]} px at "
            f"the {card.task} model's {card.pixel_size_A / 10:.4g} nm/px: smaller than one {size} x {size} px window "
            f"({size * card.pixel_size_A / 10:.2f} nm). Pass a larger image or check --pixel-size"
        )


def check_sizes(shape: tuple[int, int], pixel_A: float, cards: Sequence[ModelCard], source: str, opt: Options) -> None:
    """Every model's size checks from the cards alone: a micrograph that cannot be done is refused before
    any model loads (Keras alone is about 1 GB) and before anything is resampled."""
    for card in cards:
        rshape = check_size(shape, pixel_A, card, source, opt.max_pixels)
        _check_fits(shape, pixel_A, rshape, card, source)


def _run_windows(b: Bundle, image: np.ndarray, starts: Sequence[tuple[int, int]], tta: bool) -> tuple[np.ndarray, dict]:
    """The network's outputs (windows, G, k) and the OOD checks of the windows at `starts` (row, col)."""
    w = b.size
    outputs, features, ratio = [], [], []
    for c in range(0, len(starts), WINDOW_CHUNK):  # bounded memory on large micrographs
        raw = np.stack([image[y : y + w, x : x + w] for y, x in starts[c : c + WINDOW_CHUNK]])
        res = run_net(b.net, normalise_windows(raw, b.net), tta=tta)
        outputs.append(res["outputs"])
        features.append(res["features"])
        ratio.append(structure_ratio(raw))
    out = np.concatenate(outputs)
    ood = ood_scores(b.ood, b.kind, b.size, out, [np.concatenate(f) for f in zip(*features)], np.concatenate(ratio))
    return out, ood


def _class_probabilities(b: Bundle, outputs: np.ndarray) -> np.ndarray:
    """Per window, temperature-scaled class probabilities averaged over the symmetry elements."""
    return softmax(outputs / (b.temperature or 1.0)).mean(axis=1)


def _predict_regions(
    b: Bundle,
    image: np.ndarray,
    pixel_yx: tuple[float, float],
    regions: Sequence[Region],
    orig_pixel_A: float,
    stride_fraction: float,
    tta: bool,
) -> list[dict[str, Any]]:
    """One result dict per region for a classifier or regressor."""
    w = b.size
    stride = max(1, int(round(stride_fraction * w)))
    sy, sx = orig_pixel_A / pixel_yx[0], orig_pixel_A / pixel_yx[1]
    starts, owner = [], []
    for i, r in enumerate(regions):
        for y in windows_in(r.y0 * sy, r.y1 * sy, image.shape[0], w, stride):
            for x in windows_in(r.x0 * sx, r.x1 * sx, image.shape[1], w, stride):
                starts.append((y, x))
                owner.append(i)
    all_outputs, ood = _run_windows(b, image, starts, tta)
    owner_arr = np.array(owner)
    results = []
    for i in range(len(regions)):
        m = np.flatnonzero(owner_arr == i)
        out: dict[str, Any] = {"windows": len(m)}
        flags = ood["flag"][m]
        out["ood"] = majority_flag(flags)
        out["ood_score"] = _f(np.median(ood["score"][m]))
        for key in ("feature_z", "energy_z", "structure_ratio"):
            if key in ood:
                out[key] = _f(np.median(ood[key][m]))
        outputs = all_outputs[m]  # (windows, G, k)
        if b.kind == "classification":
            probs = _class_probabilities(b, outputs).mean(axis=0)
            order = np.argsort(-probs)[:TOP_K]
            out["top"] = [(b.card.classes[j], float(probs[j])) for j in order]
            out["probabilities"] = {c: float(p) for c, p in zip(b.card.classes, probs)}
        else:
            out["values"] = _regression_values(b, outputs)
        results.append(out)
    return results


def tube_bundle(b: Bundle) -> bool:
    """A bundle that answers per tube: a classifier of nanotube images (the chirality task)."""
    return b.kind == "classification" and b.task in TASKS and "cnt" in TASKS[b.task].families


def _predict_tubes(
    b: Bundle,
    image: np.ndarray,
    pixel_yx: tuple[float, float],
    tubes: Sequence[Tube],
    orig_pixel_A: float,
    stride_fraction: float,
    tta: bool,
    readings: Sequence[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    """One result per tube: the windows centred on its axis (`tubes.axis_centres`), combined into one
    top-3 (`tubes.combine`), with how many windows were combined and the tube's OOD flag; a tube in
    distribution whose own lattice (`readings`, `lattice.read_tube_lattice`) disagrees with the pixel size
    is flagged "calibration": its diameter in pixels, which the classifier reads, is not the training's. Where
    the bundle's tube calibration weighs the tube's own readings (`lattice_fusion`: the lattice's chiral angle,
    the walls' radius), a read tube's answer is the network's pool times their likelihood; `network_top` keeps
    the network's own top-3."""
    w = b.size
    sy, sx = orig_pixel_A / pixel_yx[0], orig_pixel_A / pixel_yx[1]
    starts, owner = [], []
    for i, t in enumerate(tubes):
        centres = axis_centres(scaled(t, sx, sy), w, max(1.0, stride_fraction * w))
        origins, _ = window_origins(centres, w, image.shape)
        starts += origins
        owner += [i] * len(origins)
    if starts:
        outputs, ood = _run_windows(b, image, starts, tta)
        probs = _class_probabilities(b, outputs)
    owner_arr = np.array(owner, dtype=int)
    geometry = lattice_fusion.class_geometry(b.card.classes)
    weighing = None if b.tube_calibration is None or geometry is None else b.tube_calibration.lattice
    results = []
    for i in range(len(tubes)):
        m = np.flatnonzero(owner_arr == i)
        out: dict[str, Any] = {"windows": len(m)}
        if len(m) == 0:
            out.update(windows_used=0, ood="off the image", top=[], probabilities={})
            results.append(out)
            continue
        p, flag, used, pools = combine(probs[m], ood["flag"][m], b.tube_calibration)
        pool, exponent = (b.tube_calibration or ("mean", 1.0))[:2]
        network = p
        weighed = weighing is not None and i < len(readings) and lattice_fusion.usable(readings[i], weighing)
        if weighed:
            p = lattice_fusion.fuse(pools[pool], [readings[i]], geometry, weighing)[0]
        order = np.argsort(-p)[:TOP_K]
        out.update(
            windows_used=used,
            ood=flag,
            ood_score=_f(np.median(ood["score"][m])),
            pool=pool,
            exponent=exponent,
            top=[(b.card.classes[j], float(p[j])) for j in order],
            probabilities={c: float(v) for c, v in zip(b.card.classes, p)},
            pools={k: {c: float(v) for c, v in zip(b.card.classes, q)} for k, q in pools.items()},
            # the lattice's chiral angle weighed in (lattice_fusion), and the network's own top-3 beside it
            lattice_weighed=weighed,
            network_top=[(b.card.classes[j], float(network[j])) for j in np.argsort(-network)[:TOP_K]],
        )
        if i < len(readings):
            out["lattice"], out["ood"] = _lattice_verdict(readings[i], b.card, b.card.classes[order[0]], flag)
            if (
                weighing is not None
                and lattice_fusion.weighs_walls(weighing)
                and lattice_fusion.walls_read(readings[i])
            ):
                # the tube's diameter its walls say, through the fitted map
                out["diameter_nm"] = float(2.0 * lattice_fusion.tube_radius([readings[i]], weighing)[0])
        results.append(out)
    return results


def _lattice_verdict(reading: Mapping[str, Any], card: ModelCard, top: str, flag: str) -> tuple[dict[str, Any], str]:
    """The tube's lattice reading with its verdict against the answer's chiral angle and the card's tilt, and
    the tube's flag: "calibration" where a tube otherwise in distribution reads outside the band."""
    try:
        nm = parse_chirality(top)
    except ValueError:
        return {**reading, "check": f"class {top!r} is not an (n,m): no chiral angle to check against"}, flag
    out, why = lattice.check(reading, tube_chiral_angle_deg(*nm), _card_tilt(card))
    verdict = {**reading, "out_of_range": out, "check": why}
    return verdict, ("calibration" if out and flag in ("", "?") else flag)


def _card_tilt(card: ModelCard) -> float | None:
    """The training's largest out-of-plane tube tilt (deg) from the card; None when it does not record one."""
    tilts = [c.get("tilt_deg") for c in card.imaging or [] if isinstance(c, Mapping) and c.get("tilt_deg") is not None]
    return max(float(t) for t in tilts) if tilts else None


def _regression_values(b: Bundle, outputs: np.ndarray) -> dict[str, tuple[float, float, str]]:
    """Physical estimates (mean, spread, unit) from scaled outputs (windows, G, k): the spread is the
    standard deviation over symmetry elements and windows (TTA disagreement, not a calibrated error)."""
    offset, scale = b.card.scaling()
    y = (offset + scale * outputs).reshape(-1, len(offset))  # samples x targets
    samples = {
        ("c12_nm" if k == "c12_magnitude_nm" else k): v for k, v in TASKS[b.task].physical(y).items()
    }  # predict's name for |C12|
    out = {k: (_f(v.mean()), _f(v.std()), u) for k, (v, u) in samples.items()}
    if (flips := TASKS[b.task].sign_flips) is not None:
        c, s = y[:, flips[0]], y[:, flips[1]]
        two_phi = np.arctan2(s.mean(), c.mean())
        resultant = abs(np.exp(1j * np.arctan2(s, c)).mean())  # circular spread of 2 phi12
        spread = np.sqrt(max(0.0, -2.0 * np.log(max(resultant, 1e-12))))
        out["phi12_deg"] = (_f(np.degrees(two_phi / 2) % 180), _f(np.degrees(spread / 2)), "deg")
    return out


def _f(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def denoise(b: Bundle, image: np.ndarray, stride_fraction: float = 0.5) -> np.ndarray:
    """The denoiser over overlapping tiles, blended with sin^2 weights (a partition of unity at half
    overlap). Each tile's output (normalised) is mapped back to the input's intensity units by the
    least-squares gain and offset onto the input tile: noise is uncorrelated with the output, so the
    fit recovers the clean signal's scale."""
    import keras  # noqa: PLC0415

    w = b.size
    stride = max(1, int(round(stride_fraction * w)))
    starts = [
        (y, x) for y in window_starts(image.shape[0], w, stride) for x in window_starts(image.shape[1], w, stride)
    ]
    ramp = np.sin(np.pi * (np.arange(w) + 0.5) / w) ** 2
    weight = np.outer(ramp, ramp)
    acc = np.zeros(image.shape, dtype=np.float64)
    norm = np.zeros(image.shape, dtype=np.float64)
    for c in range(0, len(starts), WINDOW_CHUNK):
        chunk = starts[c : c + WINDOW_CHUNK]
        raw = np.stack([image[y : y + w, x : x + w] for y, x in chunk]).astype(np.float64)
        x = normalise_windows(raw, b.net)[..., None]
        batch = max(1, IMG_BYTES_PER_BATCH // (4 * w * w))
        pred = np.concatenate(
            [
                keras.ops.convert_to_numpy(b.model(x[i : i + batch], training=False))[..., 0]
                for i in range(0, len(x), batch)
            ]
        ).astype(np.float64)
        pred = np.swapaxes(pred, -1, -2)  # back to [row, col]
        for (y, x0), p, r in zip(chunk, pred, raw):
            a = np.stack([p.ravel(), np.ones(p.size)], axis=1)
            coef, *_ = np.linalg.lstsq(a, r.ravel(), rcond=None)
            acc[y : y + w, x0 : x0 + w] += weight * (coef[0] * p + coef[1])
            norm[y : y + w, x0 : x0 + w] += weight
    return (acc / norm).astype(np.float32)


def analyse_micrograph(
    mic, bundles: Sequence[Bundle], opt: Options, out_dir: Path, *, echo=print, keys: Sequence[str] | None = None
) -> dict[str, Any]:
    """Predict every region of one micrograph with every bundle; write its outputs into out_dir.
    `keys`: the name of each bundle's outputs (`outputs.bundle_keys`, by default from the bundles)."""
    source = mic.source + (f" (frame {mic.frame})" if mic.frame is not None else "")
    image, px = mic.data, float(mic.pixel_size_A)
    keys = list(keys) if keys is not None else bundle_keys([b.task for b in bundles], [b.path.name for b in bundles])
    key_of = {id(b): k for b, k in zip(bundles, keys)}
    check_sizes(image.shape, px, [b.card for b in bundles], source, opt)  # nothing allocated before
    resampled: dict[float, tuple[np.ndarray, tuple[float, float]]] = {}
    for b in bundles:
        if b.pixel_size_A not in resampled:
            resampled[b.pixel_size_A] = resample(image, px, b.pixel_size_A)
    predictors = [b for b in bundles if b.kind != "denoising"]
    cells = None
    if opt.regions is not None:
        regions = list(opt.regions)
        for r in regions:
            r.check(image.shape, source)
    elif predictors and opt.sliding:
        ref = max(predictors, key=lambda b: (opt.window_px or b.size) * b.pixel_size_A)
        window = max(1, int(round((opt.window_px or ref.size) * ref.pixel_size_A / px)))
        window = min(window, *image.shape)
        stride = max(1, int(round(opt.stride_fraction * window)))
        regions = sliding_regions(image.shape, window, stride)
        half = 0.5 * min(stride, window)
        cells = [
            (
                int(round((r.x0 + r.x1) / 2 - half)),
                int(round((r.y0 + r.y1) / 2 - half)),
                int(round((r.x0 + r.x1) / 2 + half)),
                int(round((r.y0 + r.y1) / 2 + half)),
            )
            for r in regions
        ]
    else:
        regions = []
    out_dir.mkdir(parents=True, exist_ok=True)
    per_task: dict[str, list[dict[str, Any]]] = {}
    record: dict[str, Any] = {
        "source": mic.source,
        "frame": mic.frame,
        "out_dir": str(out_dir),
        "pixel_size_nm": px / 10,
        "shape": list(image.shape),
        "calibration": mic.metadata.get("calibration"),
        "tasks": {},
    }
    for b in predictors if regions else []:  # --tubes-only: no regions
        img_b, pyx = resampled[b.pixel_size_A]
        key = key_of[id(b)]
        per_task[key] = _predict_regions(b, img_b, pyx, regions, px, opt.stride_fraction, opt.tta)
        record["tasks"][key] = _task_summary(b, per_task[key], pyx)
        write_overlay(out_dir / f"overlay_{key}.png", image, regions, per_task[key], key, cells)
    for b in bundles:
        if b.kind != "denoising":
            continue
        img_b, pyx = resampled[b.pixel_size_A]
        key = key_of[id(b)]
        stem = "denoised" if sum(x.kind == "denoising" for x in bundles) == 1 else f"denoised_{key}"
        den = denoise(b, img_b, opt.stride_fraction)
        write_calibrated_tiff(out_dir / f"{stem}.tif", den, pyx)
        write_preview(out_dir / f"{stem}.png", den)
        record["tasks"][key] = {
            "kind": "denoising",
            "bundle": str(b.path),
            "tiff": str(out_dir / f"{stem}.tif"),
            "pixel_size_nm": [pyx[0] / 10, pyx[1] / 10],
            "shape": list(den.shape),
        }
    conditions = assess(
        image, px, mic.metadata, {key_of[id(b)]: b.card for b in bundles}, aberrations=_regressed(per_task)
    )
    out_of_range = {k: v["out_of_range"] for k, v in conditions["per_task"].items() if v["out_of_range"]}
    for key, reasons in out_of_range.items():
        for reason in reasons:
            echo(f"warning: {source}: {key}: {reason}", file=sys.stderr)
    record["conditions"] = conditions
    record["out_of_training_ranges"] = out_of_range
    tubes, per_tube = _tubes_of(image, px, [b for b in predictors if tube_bundle(b)], resampled, key_of, opt, source)
    tube_json = tube_records(tubes, per_tube, px)
    if per_task or per_tube:
        if per_task:
            write_csv(out_dir / "predictions.csv", csv_rows(regions, per_task))
        write_json_atomic(
            out_dir / "predictions.json",
            plain_json(
                {
                    "source": mic.source,
                    "frame": mic.frame,
                    "pixel_size_nm": px / 10,
                    "regions_from": "user" if opt.regions else "sliding window",
                    "orientation": "x = column (to the right), y = row (downwards); angles from +x towards +y",
                    "bundles": {key_of[id(b)]: _bundle_info(b) for b in predictors},
                    "regions": [
                        {
                            "region": r.name,
                            "label": r.label,
                            "box_xyxy": [r.x0, r.y0, r.x1, r.y1],
                            **{k: jsonable(per_task[k][i]) for k in per_task},
                        }
                        for i, r in enumerate(regions)
                    ],
                    "conditions": conditions,
                    "out_of_training_ranges": out_of_range,
                    "tubes_from": _tubes_from(opt) if per_tube else None,
                    "tubes": tube_json,
                }
            ),
        )
        if per_task:
            header, trows = table_rows(regions, per_task)
            echo(f"\n{source}: {len(regions)} region(s) at {px / 10:.4g} nm/px")
            echo(format_table(header, trows, opt.table_rows))
    if per_tube:
        trows_ = tube_rows(tube_json, mic.source, mic.frame)
        write_csv(out_dir / "tubes.csv", trows_, TUBE_COLUMNS)
        for key in per_tube:
            write_tube_overlay(out_dir / f"tubes_{key}.png", image, tube_json, key)
        echo(f"\n{source}: {len(tubes)} tube(s) ({_tubes_from(opt)})")
        for rec in tube_json:
            for key in per_tube:
                if (res := rec.get(key) or {}).get("ood") == "calibration":
                    echo(f"warning: {source}: tube {rec['tube']}: {key}: {res['lattice']['check']}", file=sys.stderr)
        if trows_:
            echo(format_table(*tube_table(trows_), opt.table_rows))
    record["n_regions"] = len(regions)
    if per_tube:
        record["n_tubes"] = len(tubes)
        record["tubes"] = tube_json
    record["status"] = "ok"
    return record


def _regressed(per_task: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, tuple] | None:
    """The aberration regressor's verdict on the micrograph, for `conditions.assess`: per quantity the mean
    and spread of its in-distribution regions' estimates (None without such a regressor or region)."""
    for results in per_task.values():
        keep = [r["values"] for r in results if "values" in r and r["ood"] in ("", "?")]
        if keep and "defocus_nm" in keep[0]:
            out = {}
            for name in ("defocus_nm", "c12_nm"):
                v = [k[name][0] for k in keep if name in k and k[name][0] is not None]
                if v:
                    out[name] = (float(np.mean(v)), float(np.std(v)), "nm")
            return out or None
    return None


def _tubes_from(opt: Options) -> str:
    return "user (--tube)" if opt.tubes else "found automatically" if opt.find_tubes else "off"


def _tubes_of(
    image: np.ndarray,
    px: float,
    bundles: Sequence[Bundle],
    resampled: Mapping[float, tuple[np.ndarray, tuple[float, float]]],
    key_of: Mapping[int, str],
    opt: Options,
    source: str,
) -> tuple[list[Tube], dict[str, list[dict[str, Any]]]]:
    """The micrograph's tubes (the user's, else found) and each nanotube classifier's answer per tube."""
    if not bundles or not (opt.tubes or opt.find_tubes):
        return [], {}
    if opt.tubes:
        tubes = list(opt.tubes)
        for t in tubes:
            t.check(image.shape, source)
    else:
        tubes = find_tubes(image, px)
    # the tube's own readings: its layer lines (chiral angle, scale) and its walls (radius)
    readings = [
        {
            **lattice.read_tube_lattice(image, t.points, px / 10.0),
            "walls": tube_profile.read_tube_walls(image, t.points, px / 10.0),
        }
        for t in tubes
    ]
    per_tube = {}
    for b in bundles:
        img_b, pyx = resampled[b.pixel_size_A]
        per_tube[key_of[id(b)]] = _predict_tubes(b, img_b, pyx, tubes, px, opt.stride_fraction, opt.tta, readings)
    return tubes, per_tube


def _card_info(path: Path, card: ModelCard) -> dict[str, Any]:
    """What the card says (all a summary can say when no micrograph got as far as loading the models)."""
    return {
        "path": str(path),
        "task": card.task,
        "kind": card.kind,
        "input_size": card.input_size,
        "pixel_size_nm": card.pixel_size_A / 10,
        "dataset_sha256": card.dataset_sha256,
        # what its training images were taken with: the micrographs it is for (None: an older card)
        "trained_on": card.imaging,
    }


def _bundle_info(b: Bundle) -> dict[str, Any]:
    info = _card_info(b.path, b.card)
    info["ood_stats"] = b.ood is not None
    if b.kind == "classification":
        info["temperature"], info["temperature_source"] = b.temperature, b.temperature_source
    if tube_bundle(b):
        pool, exponent, weighing = b.tube_calibration or (None, None, None)
        info["tube_pool"], info["tube_exponent"], info["tube_exponent_source"] = (
            pool,
            exponent,
            b.tube_calibration_source,
        )
        info["tube_lattice"] = weighing
    if b.ood is not None:
        info["ood_threshold"] = "score > 1: beyond the validation images' 99th percentile"
    if b.kind != "denoising":
        info["vacuum_gate"] = vacuum_gate(b.size, b.ood)
    return info


def _task_summary(b: Bundle, results: Sequence[Mapping[str, Any]], pyx: tuple[float, float]) -> dict[str, Any]:
    flags = [r["ood"] for r in results]
    keep = [r for r in results if r["ood"] == ""]
    s: dict[str, Any] = {
        "kind": b.kind,
        "bundle": str(b.path),
        "n_ood": flags.count("ood"),
        "n_vacuum": flags.count("vacuum"),
        "n_unchecked": flags.count("?"),
        "n_in_distribution": len(keep),
        "pixel_size_nm": [pyx[0] / 10, pyx[1] / 10],
    }
    if b.kind == "classification":
        counts: dict[str, int] = {}
        for r in keep:
            counts[r["top"][0][0]] = counts.get(r["top"][0][0], 0) + 1
        s["top1_counts_in_distribution"] = counts
        s["majority"] = max(counts, key=counts.get) if counts else None
    else:
        names = list(results[0]["values"]) if results else []
        s["mean_in_distribution"] = {n: _f(np.mean([r["values"][n][0] for r in keep])) if keep else None for n in names}
    return s


def predict_path(
    inputs: str | Path,
    bundle_dirs: Sequence[str | Path],
    out: str | Path,
    opt: Options,
    *,
    temperatures: Mapping[str, float] | None = None,
    progress: bool = True,
    echo=print,
) -> dict[str, Any]:
    """Run every bundle on a micrograph file or on every supported file of a folder.

    Writes <out>/<name>/ per micrograph (names unique by construction, `outputs.output_names`) and
    <out>/summary.json + summary.csv. A single file's error is raised; in a folder, a file that fails
    (unreadable, too large, out of memory) is recorded in the summary with its reason and the others
    go on (raised only if every file failed); the caller exits non-zero when any failed.
    """
    from tqdm import tqdm  # noqa: PLC0415

    check_options(opt)
    src = Path(inputs)
    if not src.exists():
        raise HrtemflowError(f"{src} does not exist: pass a micrograph file or a folder of them")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise HrtemflowError(f"--out {out} exists and is not a folder; give the folder the outputs go to")
    files = list_micrographs(src) if src.is_dir() else [src]
    if not files:
        raise HrtemflowError(
            f"{src} holds no supported micrograph (extensions: .dm3 .dm4 .emd .ser .emi .mrc .tif .tiff .png .npy)"
        )
    temps = dict(temperatures or {})
    cards = [ModelCard.read(d) for d in bundle_dirs]  # every card checked before any model loads
    check_temperatures(temps, cards)
    loaded: list[Bundle] = []

    def bundles() -> list[Bundle]:
        """Loaded when the first micrograph passes its size checks: a refusal never waits on Keras."""
        if not loaded:  # all or none: a bundle that fails to load leaves nothing half-loaded for the next file
            new = [load_bundle(d, temperature=temps.get(c.task, temps.get("*"))) for d, c in zip(bundle_dirs, cards)]
            for b in new:
                if tube_bundle(b) and (opt.tubes or opt.find_tubes):
                    b.tube_calibration, b.tube_calibration_source = find_calibration(b.path, b.temperature)
                    if b.tube_calibration is None:
                        b.notes.append(f"{b.path}: {b.tube_calibration_source}")
            for note in (n for b in new for n in b.notes):
                echo(f"warning: {note}", file=sys.stderr)
            loaded.extend(new)
        return loaded

    keys = bundle_keys([c.task for c in cards], [Path(d).name for d in bundle_dirs])
    names = UniqueNames()
    folders = output_names(files, names)
    records = []
    bar = tqdm(files, desc="predict", unit="file", disable=not progress or len(files) < 2, file=sys.stderr)
    for f in bar:
        try:
            mics = read_micrograph(f, pixel_size_nm=opt.pixel_size_nm, frames=opt.frames)
            for mic in mics:
                for warning in mic.metadata.get("warnings", []):
                    echo(f"warning: {warning}", file=sys.stderr)
                source = mic.source + (f" (frame {mic.frame})" if mic.frame is not None else "")
                check_sizes(mic.data.shape, float(mic.pixel_size_A), cards, source, opt)
                for r in opt.regions or []:
                    r.check(mic.data.shape, source)
                for t in opt.tubes or []:
                    t.check(mic.data.shape, source)
                sub = folders[f] if mic.frame is None else names.claim(f"{folders[f]}_f{mic.frame:03d}")
                records.append(analyse_micrograph(mic, bundles(), opt, out / sub, echo=echo, keys=keys))
        except (HrtemflowError, MemoryError) as exc:
            reason = (
                str(exc)
                if isinstance(exc, HrtemflowError)
                else (f"{f}: not enough memory to analyse it; crop it, pass --regions or a smaller --max-pixels")
            )
            if not src.is_dir():
                if isinstance(exc, MemoryError):
                    raise HrtemflowError(reason) from None
                raise
            echo(f"warning: file skipped: {reason}", file=sys.stderr)
            records.append({"source": str(f), "frame": None, "status": "failed", "reason": reason})
    summary = {
        "input": str(src),
        "n_files": len(files),
        "n_micrographs": sum(r["status"] == "ok" for r in records),
        "n_failed": sum(r["status"] == "failed" for r in records),
        "bundles": {
            k: _bundle_info(b) if loaded else _card_info(Path(d), c)
            for b, k, d, c in zip(loaded or cards, keys, bundle_dirs, cards)
        },
        "micrographs": records,
    }
    write_json_atomic(out / "summary.json", plain_json(summary))
    write_csv(out / "summary.csv", [summary_row(r) for r in records])
    if any("tubes" in r for r in records):
        rows = [row for r in records for row in tube_rows(r.get("tubes") or [], r["source"], r["frame"])]
        write_csv(out / "tubes.csv", rows, TUBE_COLUMNS)
    if summary["n_micrographs"] == 0:
        raise HrtemflowError(
            f"no micrograph of {src} could be analysed ({summary['n_failed']} failed; reasons in "
            f"{out / 'summary.json'})"
        )
    return summary
