"""Learning-stage accuracy against the issue's targets, on the committed bench campaigns.

    python benchmarks/learning_accuracy.py                  # run all four benches, then report
    python benchmarks/learning_accuracy.py chirality        # one bench
    python benchmarks/learning_accuracy.py --collect        # report what the results folders hold

Each bench is a whole campaign (`config/bench-<name>.yaml`: MD, imaging, training, evaluation), run
with snakemake on this machine's cores; incremental, so a rerun only redoes what changed. The
figures come from the evaluation reports (test split, disjoint by structure) and the per-job
benchmark files snakemake writes (training wall time, peak memory).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT, emit, header

BENCHES = ("chirality", "denoise", "nanoalloy", "nanoalloy-ncsi", "nanoalloy-ncsi-highdose", "nanoalloy-phaseplate")
#: the nanoalloy benches under a microscopist's chosen conditions, reported beside the wide one
CHOSEN_CONDITIONS = ("nanoalloy-ncsi", "nanoalloy-ncsi-highdose", "nanoalloy-phaseplate")
TRAIN_LIMIT_MIN = 20.0


def _config(name: str) -> dict:
    import yaml

    return yaml.safe_load((ROOT / "config" / f"bench-{name}.yaml").read_text())


def _results(name: str) -> Path:
    return ROOT / _config(name)["campaign"]["results"]


def _conditions(name: str) -> str:
    """A bench's optics and dose as its config sets them, so a row names what it was measured under."""
    img = _config(name)["imaging"]
    o, dose = img["optics"], img["noise"]["dose_e_per_A2"]
    plate = o.get("phase_plate_deg", (0, 0))
    return (
        f"Cs {o['cs_um'][0]:g} to {o['cs_um'][1]:g} µm, defocus {o['defocus_nm'][0]:g} to {o['defocus_nm'][1]:g} nm, "
        f"C12 ≤ {o['c12_nm'][1]:g} nm, "
        + (f"phase plate {plate[0]:g}–{plate[1]:g}°, " if any(plate) else "")
        + f"{dose[0]:,.0f}–{dose[1]:,.0f} e-/Å²"
    )


def _metrics(res: Path, task: str) -> dict | None:
    p = res / "reports" / task / "metrics.json"
    return json.loads(p.read_text()) if p.is_file() else None


def _job(res: Path, rule: str, task: str) -> dict | None:
    p = res / "benchmarks" / rule / f"{task}.tsv"
    if not p.is_file():
        return None
    row = next(csv.DictReader(p.open(), delimiter="\t"))
    return {"min": float(row["s"]) / 60, "rss_gb": float(row["max_rss"]) / 1024}


def _card(res: Path, task: str) -> dict:
    p = res / "models" / task / "card.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def run(name: str, cores: int) -> float:
    """One bench campaign through snakemake; returns its wall time (min)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    t0 = time.perf_counter()
    cmd = [
        str(Path(sys.executable).parent / "snakemake"),
        "--configfile",
        f"config/bench-{name}.yaml",
        "--cores",
        str(cores),
        "--keep-going",
        "--rerun-incomplete",
    ]
    res = subprocess.run(cmd, cwd=ROOT, env=env)
    if res.returncode:
        print(f"bench {name}: snakemake exited {res.returncode}; the report shows what finished", file=sys.stderr)
    return (time.perf_counter() - t0) / 60


def _row(
    claim: str,
    value: float | None,
    fmt: str,
    target: str,
    ok: bool | None,
    note: str | None = "",
    ci: list | None = None,
) -> str:
    """One table row; `ci` is the report's 95 % interval (test structures resampled), shown beside the value."""
    note = note or ""
    shown = "not run" if value is None else fmt.format(value)
    interval = f"{fmt.format(ci[0])} – {fmt.format(ci[1])}" if ci and None not in ci else "—"
    verdict = "—" if ok is None else ("**met**" if ok else "not met")
    return f"| {claim} | {shown} | {interval} | {target} | {verdict} | {note} |"


def _ci(d: dict | None, *keys: str) -> list | None:
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def _train_note(res: Path, task: str) -> str:
    job, card = _job(res, "train", task), _card(res, task)
    if not job:
        return ""
    epochs = f", {card.get('epochs_run')} epochs (best {card.get('best_epoch')})" if card else ""
    return f"train {job['min']:.1f} min, {job['rss_gb']:.1f} GB{epochs}"


def _nanoalloy_rows(name: str, where: str = "") -> list[str]:
    """Rows of one nanoalloy bench; `where` names the bench's imaging conditions when not the wide bench's.
    The aberration rows come with the benches whose config trains that task, shown "not run" until it has."""
    res, rows = _results(name), []
    tasks = _config(name)["learning"]["tasks"]
    m = _metrics(res, "ordering")
    if tasks.get("ordering", {}).get("enabled", True):  # the phase-plate bench trains the structure regressor only
        rows.append(
            _row(
                f"Ag/Co ordering accuracy (3 classes){where}",
                m and m["accuracy"],
                "{:.3f}",
                "≥ 0.95",
                m and m["accuracy"] >= 0.95,
                m
                and f"{m['n_images']} test images of {m['n_structures']} particles"
                + (
                    f"; the {m['per_view']['images_per_group']:.0f} exposures of one view combined: "
                    f"{m['per_view']['accuracy']:.3f}"
                    if m.get("per_view")
                    else ""
                )
                + (
                    f"; all images of a particle combined: {m['per_structure']['accuracy']:.3f}"
                    if m.get("per_structure")
                    else ""
                ),
                _ci(m, "ci95", "accuracy"),
            )
        )
    m = _metrics(res, "aberrations")
    if tasks.get("aberrations", {}).get("enabled", True):
        t = m and m["targets"]
        rows.append(
            _row(
                "defocus MAE over ±50 nm (nm)",
                t and t["defocus_nm"]["mae"],
                "{:.2f}",
                "≤ 3",
                t and t["defocus_nm"]["mae"] <= 3,
                t and f"predicting the mean: {t['defocus_nm']['mae_predict_train_mean']:.1f} nm",
                _ci(t, "defocus_nm", "mae_ci95"),
            )
        )
        rows.append(
            _row(
                "astigmatism magnitude C12 MAE over 0–5 nm (nm)",
                t and t["c12_magnitude_nm"]["mae"],
                "{:.2f}",
                "≤ 1",
                t and t["c12_magnitude_nm"]["mae"] <= 1,
                t
                and f"predicting the mean: {t['c12_magnitude_nm']['mae_predict_train_mean']:.2f} nm"
                + (
                    f"; modulus of the predicted components: {t['c12_magnitude_nm']['mae_modulus_of_components']:.2f} "
                    "nm"
                    if t["c12_magnitude_nm"].get("mae_modulus_of_components") is not None
                    else ""
                ),
                _ci(t, "c12_magnitude_nm", "mae_ci95"),
            )
        )
    if not tasks.get("structure", {}).get("enabled", True):
        return rows  # the high-dose bench trains the classifier only
    m = _metrics(res, "structure")
    t = m and m["targets"]
    rows.append(
        _row(
            f"Co fraction MAE{where}",
            t and t["co_fraction"]["mae"],
            "{:.3f}",
            "≤ 0.05",
            t and t["co_fraction"]["mae"] <= 0.05,
            t
            and f"predicting the mean: {t['co_fraction']['mae_predict_train_mean']:.3f}"
            + (
                f"; the {t['co_fraction']['per_structure']['images_per_group']:.0f} images of a particle averaged: "
                f"{t['co_fraction']['per_structure']['mae']:.3f}"
                if t["co_fraction"].get("per_structure")
                else ""
            ),
            _ci(t, "co_fraction", "mae_ci95"),
        )
    )
    rows.append(
        _row(
            f"atom count, median relative error{where}",
            t and t["n_atoms"].get("median_relative_error"),
            "{:.3f}",
            "≤ 0.10",
            t and t["n_atoms"].get("median_relative_error", 1) <= 0.10,
            "",
            _ci(t, "n_atoms", "median_relative_error_ci95"),
        )
    )
    return rows


def report() -> str:
    rows, timing = [], []
    res = _results("chirality")
    m = _metrics(res, "chirality")
    note = f"{m['n_images']} test images of {m['n_structures']} tubes" if m else ""
    if m and m.get("per_view"):
        pv = m["per_view"]
        note += f"; the {pv['images_per_group']:.0f} exposures of one view combined: {pv['accuracy']:.3f}"
    if m and m.get("per_structure"):
        note += f"; all images of a tube combined: {m['per_structure']['accuracy']:.3f}"
    rows.append(
        _row(
            "CNT chirality top-1 (8 classes, d 0.82–1.36 nm)",
            m and m["accuracy"],
            "{:.3f}",
            "≥ 0.95",
            m and m["accuracy"] >= 0.95,
            note,
            _ci(m, "ci95", "accuracy"),
        )
    )
    rows.append(
        _row(
            "CNT chirality top-3",
            m and m["top3_accuracy"],
            "{:.3f}",
            "≥ 0.99",
            m and m["top3_accuracy"] >= 0.99,
            "",
            _ci(m, "ci95", "top3_accuracy"),
        )
    )
    rows.append(
        _row(
            "CNT chirality ECE after temperature scaling",
            m and m["ece_after"],
            "{:.3f}",
            "≤ 0.03",
            m and m["ece_after"] <= 0.03,
            m and f"before {m['ece_before']:.3f}, T = {m['temperature']:.2f}",
        )
    )
    timing.append(("chirality", res))

    rows += _nanoalloy_rows("nanoalloy")
    for name in CHOSEN_CONDITIONS:
        rows += _nanoalloy_rows(name, f", bench-{name} ({_conditions(name)})")
    timing += [(name, _results(name)) for name in ("nanoalloy", *CHOSEN_CONDITIONS)]

    res = _results("denoise")
    m = _metrics(res, "denoise")
    fams = (m or {}).get("comparison", {}).get("families", {})
    for fam, label in (("amorphous", "amorphous carbon"), ("cnt", "CNTs")):
        r = fams.get(fam)
        gain = r and r["network_minus_best_baseline_dB"]
        note = r and (
            f"network {r['methods']['network']['psnr_dB']:.2f} dB vs {r['best_baseline']} "
            f"{r['methods'][r['best_baseline']]['psnr_dB']:.2f} dB, "
            f"{r['n_images']} images at {r['dose_e_per_A2']['min']:.0f}–{r['dose_e_per_A2']['max']:.0f} e-/Å², target "
            f"{m['target']}"
            + (
                f"; oracle Wiener filter {r['wiener_oracle_minus_best_baseline_dB']:+.2f} dB"
                if r.get("wiener_oracle_minus_best_baseline_dB") is not None
                else ""
            )
        )
        rows.append(
            _row(
                f"denoiser − best baseline PSNR, {label} (dB)",
                gain,
                "{:+.2f}",
                "≥ +2",
                r and gain >= 2,
                note or "",
                _ci(r, "network_minus_best_baseline_dB_ci95"),
            )
        )
    timing.append(("denoise", res))

    lines = [
        "| claim | measured | 95 % interval | target | verdict | notes |",
        "|---|---:|---|---|---|---|",
        *rows,
        "",
        "95 % interval: the test structures resampled with replacement, all images of a structure together "
        "(its views and optics variants share their errors).",
        "",
        "| bench | task | training wall (min) | peak RSS (GB) | epochs | within 20 min? |",
        "|---|---|---:|---:|---|---|",
    ]
    for name, res in timing:
        for task in ("chirality", "ordering", "aberrations", "structure", "denoise"):
            job = _job(res, "train", task)
            if job:
                card = _card(res, task)
                lines.append(
                    f"| {name} | {task} | {job['min']:.1f} | {job['rss_gb']:.1f} | {card.get('epochs_run')} (best "
                    f"{card.get('best_epoch')}) | "
                    f"{'yes' if job['min'] <= TRAIN_LIMIT_MIN else 'no'} |"
                )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("benches", nargs="*", help=f"which bench campaigns to run: {', '.join(BENCHES)} (default: all)")
    ap.add_argument("--collect", action="store_true", help="run nothing; report what the bench results folders hold")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    if unknown := [b for b in args.benches if b not in BENCHES]:
        ap.error(f"unknown bench {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    walls = {}
    if not args.collect:
        for name in args.benches or BENCHES:
            walls[name] = run(name, args.cores)
    block = header("Learning accuracy (benchmarks/learning_accuracy.py)")
    block += (
        "\nBench campaigns `config/bench-{" + ",".join(BENCHES) + "}.yaml`, each run whole (MD, imaging, training, "
        "evaluation) by snakemake on this machine; test split disjoint by structure; backend "
        f"{os.environ.get('KERAS_BACKEND', 'tensorflow')}.\n\n"
    )
    if walls:
        block += "Campaign wall time: " + ", ".join(f"{k} {v:.1f} min" for k, v in walls.items()) + "\n\n"
    block += report() + "\n"
    emit(block, "learning_accuracy")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
