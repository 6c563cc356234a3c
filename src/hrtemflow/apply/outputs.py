"""What `hrtemflow predict` writes: the terminal table, CSV and JSON, overlays, previews and
calibrated TIFFs; every file atomically."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.atomic import atomic_file, write_text_atomic
from .regions import Region


def write_calibrated_tiff(path: Path, image: np.ndarray, pixel_yx_A: tuple[float, float]) -> None:
    """float32 ImageJ TIFF with resolution in pixels per nm and unit 'nm' (hrtemflow.apply.readers reads it)."""
    import tifffile  # noqa: PLC0415

    py, px = pixel_yx_A[0] / 10.0, pixel_yx_A[1] / 10.0
    with atomic_file(path, suffix=".tif") as tmp:
        tifffile.imwrite(
            tmp,
            np.asarray(image, dtype=np.float32),
            imagej=True,
            resolution=(1.0 / px, 1.0 / py),
            metadata={"unit": "nm"},
        )


def _display_range(image: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(image, [0.5, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1.0)


def write_preview(path: Path, image: np.ndarray) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    lo, hi = _display_range(image)
    with atomic_file(path, suffix=".png") as tmp:
        plt.imsave(tmp, image, cmap="gray", vmin=lo, vmax=hi, format="png")


def write_overlay(
    path: Path,
    image: np.ndarray,
    regions: Sequence[Region],
    results: Sequence[Mapping[str, Any]],
    task: str,
    cells: Sequence[tuple[int, int, int, int]] | None = None,
) -> None:
    """The micrograph with each region's top-1 label; OOD regions grey and hatched, vacuum dotted.

    `cells` (sliding windows): draw each window's central stride cell instead of the overlapping boxes.
    """
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.patches import Patch, Rectangle  # noqa: PLC0415

    lo, hi = _display_range(image)
    ny, nx = image.shape
    inches = float(np.clip(max(ny, nx) / 64, 3, 8))
    fig = plt.figure(figsize=(inches * nx / max(ny, nx) + 2, inches * ny / max(ny, nx) + 0.5), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi)
    labels = [_top1(r) for r in results]
    names = sorted({lab for lab, _ in labels if lab})
    colours = {n: plt.get_cmap("tab10")(i % 10) for i, n in enumerate(names)}
    text = len(regions) <= 60
    for i, (reg, (lab, txt)) in enumerate(zip(regions, labels)):
        x0, y0, x1, y1 = cells[i] if cells else (reg.x0, reg.y0, reg.x1, reg.y1)
        flag = results[i].get("ood", "")
        if flag in ("ood", "vacuum"):
            style = {
                "edgecolor": "0.6",
                "facecolor": (0.5, 0.5, 0.5, 0.25 if cells else 0.0),
                "hatch": "xx" if flag == "ood" else "..",
                "linestyle": "--",
                "linewidth": 0.8,
            }
        else:
            c = colours.get(lab, (1, 1, 0, 1))
            style = {"edgecolor": c, "facecolor": (*c[:3], 0.3 if cells else 0.0), "linewidth": 1.2}
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, **style))
        if text:
            shown = flag.upper() if flag in ("ood", "vacuum") else txt
            ax.text(
                x0 + 1,
                y0 + 1,
                f"{reg.name}: {shown}",
                fontsize=6,
                va="top",
                color="white",
                bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "linewidth": 0},
            )
    handles = [Patch(facecolor=colours[n], label=n) for n in names]
    handles += [
        Patch(facecolor="0.7", hatch="xx", label="out of distribution"),
        Patch(facecolor="0.7", hatch="..", label="vacuum"),
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, title=task)
    ax.set_title(f"{task}: top-1 per region")
    ax.set_axis_off()
    with atomic_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _top1(result: Mapping[str, Any]) -> tuple[str, str]:
    if "top" in result:
        c, p = result["top"][0]
        return c, f"{c} {p:.2f}"
    name, (v, s, u) = next(iter(result["values"].items()))
    return "", f"{name} {v:.3g}" if v is not None else name


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:.4g}"
    return str(v)


def table_rows(
    regions: Sequence[Region], per_task: Mapping[str, Sequence[Mapping[str, Any]]]
) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the terminal table: region, top-3 with probabilities, OOD flag, regressions."""
    header = ["region"]
    rows = [[r.name + (f" ({r.label})" if r.label else "")] for r in regions]
    for task, results in per_task.items():
        if "top" in results[0]:
            k = len(results[0]["top"])
            header += [h for j in range(1, k + 1) for h in (f"{task} {j}", f"p{j}")]
            for row, res in zip(rows, results):
                row += [s for c, p in res["top"] for s in (c, f"{p:.2f}")]
        else:
            header += list(res_name for res_name in results[0]["values"])
            for row, res in zip(rows, results):
                row += [f"{_fmt(v)}±{_fmt(s, 2)}" for v, s, _ in res["values"].values()]
        header.append(f"{task} OOD" if len(per_task) > 1 else "OOD")
        for row, res in zip(rows, results):
            row.append(res["ood"] or "no")
    return header, rows


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], max_rows: int | None = None) -> str:
    shown = rows if max_rows is None or len(rows) <= max_rows else rows[:max_rows]
    widths = [max(len(h), *(len(r[i]) for r in shown)) if shown else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in shown]
    if len(shown) < len(rows):
        lines.append(f"... {len(rows) - len(shown)} more rows in predictions.csv")
    return "\n".join(lines)


def csv_rows(regions: Sequence[Region], per_task: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for i, r in enumerate(regions):
        row: dict[str, Any] = {"region": r.name, "label": r.label, "x0": r.x0, "y0": r.y0, "x1": r.x1, "y1": r.y1}
        for task, results in per_task.items():
            res = results[i]
            if "top" in res:
                for j, (c, p) in enumerate(res["top"], start=1):
                    row[f"{task}_{j}"], row[f"{task}_p{j}"] = c, round(p, 6)
            else:
                for name, (v, s, _u) in res["values"].items():
                    row[f"{task}_{name}"], row[f"{task}_{name}_std"] = v, s
            row[f"{task}_ood"] = res["ood"]
            for key in ("ood_score", "feature_z", "energy_z", "structure_ratio"):
                if key in res:
                    row[f"{task}_{key}"] = res[key]
        out.append(row)
    return out


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] = ()) -> None:
    """Rows under the union of their keys, `columns` first (so an empty table still has its header)."""
    cols: list[str] = list(columns)
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r.get(k) for k in cols})
    write_text_atomic(path, buf.getvalue())


def jsonable(res: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(res)
    for key in ("top", "network_top"):
        if key in out:
            out[key] = [{"class": c, "probability": p} for c, p in out[key]]
    if "values" in out:
        out["values"] = {k: {"value": v, "std": s, "unit": u} for k, (v, s, u) in out["values"].items()}
    return out


#: the files predict writes at the top of its output folder: no micrograph's folder takes these names
RESERVED_NAMES = ("summary.json", "summary.csv", "tubes.csv")
#: a folder name of at most this many bytes (file systems allow 255, and frames add "_f000")
MAX_NAME_BYTES = 160


def _safe_name(wanted: str) -> str:
    """A folder or file name that stays inside the output folder: no separators or control characters,
    not '.' or '..' or hidden, and short enough for any file system."""
    name = "".join(c if c.isprintable() and c not in '/\\:*?"<>|' else "_" for c in wanted).strip()
    if not name or set(name) == {"."} or name.startswith("."):
        name = "_" + name
    raw = name.encode("utf-8")
    if len(raw) > MAX_NAME_BYTES:
        name = raw[:MAX_NAME_BYTES].decode("utf-8", "ignore")
    return name


class UniqueNames:
    """Output names unique by construction, compared case-insensitively (as macOS and Windows compare
    them): a name already taken gets _2, _3, ... State: the names taken so far."""

    def __init__(self, reserved: Sequence[str] = RESERVED_NAMES) -> None:
        self.taken = {r.casefold() for r in reserved}

    def claim(self, wanted: str) -> str:
        base = _safe_name(wanted)
        name, k = base, 2
        while name.casefold() in self.taken:
            name, k = f"{base}_{k}", k + 1
        self.taken.add(name.casefold())
        return name


def output_names(files: Sequence[Path], names: UniqueNames | None = None) -> dict[Path, str]:
    """Output folder name per input file: its stem where no other stem is the same (ignoring case), else
    stem_extension; unique by construction (`UniqueNames`), decided before anything is written."""
    names = names or UniqueNames()
    folded = Counter(f.stem.casefold() for f in files)
    out = {}
    for f in files:
        wanted = f.stem if folded[f.stem.casefold()] == 1 else f"{f.stem}_{f.suffix.lstrip('.').lower()}"
        out[f] = names.claim(wanted)
    return out


def bundle_keys(tasks: Sequence[str], folders: Sequence[str]) -> list[str]:
    """The name each bundle's outputs go under (CSV columns, overlay_<key>.png): its task, or task@folder
    where two bundles share a task; unique by construction."""
    names = UniqueNames(reserved=())
    count = Counter(tasks)
    return [names.claim(t if count[t] == 1 else f"{t}@{folder}") for t, folder in zip(tasks, folders)]


def summary_row(r: Mapping[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {
        k: r.get(k) for k in ("source", "frame", "status", "reason", "out_dir", "pixel_size_nm", "n_regions")
    }
    ranges = r.get("out_of_training_ranges") or {}
    row["out_of_training_ranges"] = " | ".join(f"{k}: {reason}" for k, rs in ranges.items() for reason in rs)
    for task, s in (r.get("tasks") or {}).items():
        if s["kind"] == "classification":
            row[f"{task}_majority"] = s["majority"]
        elif s["kind"] == "regression":
            row.update({f"{task}_{k}": v for k, v in s["mean_in_distribution"].items()})
        if s["kind"] != "denoising":
            row[f"{task}_n_ood"], row[f"{task}_n_vacuum"] = s["n_ood"], s["n_vacuum"]
        else:
            row[f"{task}_tiff"] = s["tiff"]
    return row


#: the per-tube table's columns (tubes.csv, per micrograph and for a whole run), in order
TUBE_COLUMNS = (
    "source",
    "frame",
    "tube",
    "from",
    "task",
    "x0_px",
    "y0_px",
    "x1_px",
    "y1_px",
    "length_nm",
    "windows",
    "windows_used",
    "top1",
    "p1",
    "top2",
    "p2",
    "top3",
    "p3",
    "ood",
    "lattice_angle_deg",
    "lattice_weighed",
    "diameter_nm",
)


def tube_records(
    tubes: Sequence[Any], per_tube: Mapping[str, Sequence[Mapping[str, Any]]], pixel_A: float
) -> list[dict[str, Any]]:
    """The JSON of each tube: its polyline (original pixels), length, and per task its combined answer."""
    out = []
    for i, t in enumerate(tubes):
        rec: dict[str, Any] = {
            "tube": t.name,
            "from": t.source,
            "polyline_xy": [[round(x, 2), round(y, 2)] for x, y in t.points],
            "length_nm": round(t.length_px * pixel_A / 10.0, 3),
        }
        for task, results in per_tube.items():
            rec[task] = jsonable(results[i])
        out.append(rec)
    return out


def tube_rows(records: Sequence[Mapping[str, Any]], source: str, frame: int | None) -> list[dict[str, Any]]:
    """tubes.csv rows: one per tube and classifier, the end points and the top-3 with probabilities."""
    rows = []
    for rec in records:
        (x0, y0), (x1, y1) = rec["polyline_xy"][0], rec["polyline_xy"][-1]
        for task, res in rec.items():
            if not isinstance(res, Mapping):
                continue
            row: dict[str, Any] = {
                "source": source,
                "frame": frame,
                "tube": rec["tube"],
                "from": rec["from"],
                "task": task,
                "x0_px": x0,
                "y0_px": y0,
                "x1_px": x1,
                "y1_px": y1,
                "length_nm": rec["length_nm"],
                "windows": res["windows"],
                "windows_used": res.get("windows_used", 0),
            }
            for j in range(3):
                top = res.get("top") or []
                row[f"top{j + 1}"] = top[j]["class"] if j < len(top) else None
                row[f"p{j + 1}"] = round(top[j]["probability"], 4) if j < len(top) else None
            row["ood"] = res.get("ood", "")
            reading = res.get("lattice") or {}
            angle = reading.get("chiral_angle_deg") if reading.get("scale") is not None else None
            row["lattice_angle_deg"] = None if angle is None else round(float(angle), 2)
            row["diameter_nm"] = None if res.get("diameter_nm") is None else round(float(res["diameter_nm"]), 3)
            row["lattice_weighed"] = bool(res.get("lattice_weighed", False))
            rows.append({k: row.get(k) for k in TUBE_COLUMNS})
    return rows


def tube_table(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The terminal table a microscopist reads per tube: top-3 chiralities with probabilities, the
    windows combined, the OOD flag, the chiral angle the tube's lattice reads and the diameter its walls read
    (* where they were weighed in)."""
    header = ["tube", "task", "from", "length nm", "windows", "1", "p1", "2", "p2", "3", "p3", "OOD", "lattice", "d nm"]
    body = [
        [
            str(r["tube"]),
            str(r["task"]),
            str(r["from"]),
            f"{r['length_nm']:.1f}",
            f"{r['windows_used']}/{r['windows']}",
            *[s for j in (1, 2, 3) for s in (r[f"top{j}"] or "-", "-" if r[f"p{j}"] is None else f"{r[f'p{j}']:.2f}")],
            r["ood"] or "no",
            "-"
            if r["lattice_angle_deg"] is None
            else f"{r['lattice_angle_deg']:.1f}°" + ("*" if r["lattice_weighed"] else ""),
            "-" if r.get("diameter_nm") is None else f"{r['diameter_nm']:.3f}" + ("*" if r["lattice_weighed"] else ""),
        ]
        for r in rows
    ]
    return header, body


def write_tube_overlay(path: Path, image: np.ndarray, records: Sequence[Mapping[str, Any]], task: str) -> None:
    """The micrograph with each tube's axis and its top-1 chirality and probability (grey when flagged)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    lo, hi = _display_range(image)
    ny, nx = image.shape
    inches = float(np.clip(max(ny, nx) / 64, 3, 8))
    fig = plt.figure(figsize=(inches * nx / max(ny, nx), inches * ny / max(ny, nx) + 0.4), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi)
    for rec in records:
        res = rec.get(task) or {}
        pts = np.asarray(rec["polyline_xy"], dtype=float)
        flagged = bool(res.get("ood"))
        colour = "0.6" if flagged else "yellow"
        ax.plot(pts[:, 0], pts[:, 1], "-", color=colour, linewidth=1.5, alpha=0.8)
        top = res.get("top") or []
        label = (f"{rec['tube']}: {top[0]['class']} {top[0]['probability']:.2f}" if top else f"{rec['tube']}: -") + (
            f" ({res['ood']})" if flagged else ""
        )
        ax.text(
            pts[0, 0],
            pts[0, 1],
            label,
            fontsize=7,
            color="white",
            bbox={"facecolor": "black", "alpha": 0.6, "pad": 1, "linewidth": 0},
        )
    ax.set_title(f"{task}: one answer per tube")
    ax.set_axis_off()
    with atomic_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
