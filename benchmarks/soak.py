"""Soak: the demo campaign, run again and again while job processes are SIGKILLed at random.

One uninterrupted reference run (which also notes when each stage's jobs ran), then N campaigns
(default 3), each in its own temporary folder: snakemake runs the campaign while, at random moments,
a random running job process (`hrtemflow md`, `hrtemflow image` or `hrtemflow train`) is SIGKILLed,
several times per campaign (stages in turn; the moment drawn from when that stage ran in the
reference; half the training kills wait until the job has checkpointed, to see it resume); after
each failure snakemake is simply run again (`--rerun-incomplete`) until the campaign is complete.
Then every campaign is checked against the plan and the reference:
- every planned sample is in its shard's manifest (lost otherwise);
- every ok sample is in the extxyz and imaged (lost otherwise); every image store is complete and
  readable; every model bundle loads (safe mode, checked against its card);
- MD outputs are byte-identical to the reference (extxyz; manifest without its timing fields) and
  every image array and attribute is identical (corrupt otherwise);
- hidden temporaries that kills left behind are counted (allowed, but reported).

By default the campaign is a reduced variant of config/config.yaml (fewer samples, shorter MD, one
image size, fewer epochs) so that the reference and three killed campaigns fit in about 30 minutes
on 2 cores; `--full` uses the demo config itself (about 15 minutes per run). The output says which.

    python benchmarks/soak.py [--campaigns 3] [--kills 4] [--full] [--cores 2] [--seed 1]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import yaml

from _common import ROOT, emit, header
from hrtemflow.campaign.paths import shard_paths as paths
from hrtemflow.campaign.paths import train_paths
from hrtemflow.campaign.plan import make_plan
from hrtemflow.campaign.specs import md_spec

BIN = Path(sys.executable).parent
STAGES = ("md", "image", "train")


def demo_config(full: bool) -> tuple[dict, str]:
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg.setdefault("potentials", {})["directory"] = str(ROOT / "resources" / "potentials")
    if full:
        return cfg, "config/config.yaml (the full demo)"
    f = cfg["families"]
    f["cnt"].update(shard_size=2)  # more, shorter jobs to kill
    f["cnt"]["structure"]["length_nm"] = 4.0
    f["amorphous"]["structure"]["box_nm"] = [1.6, 1.6, 0.8]
    img = cfg["imaging"]
    img.update(views_per_structure=2, variants_per_view=2, sizes=[64])
    for fam in ("nanoalloy", "cnt"):
        img["families"][fam].update(fov_nm=[3.0, 3.5], sampling_A=0.12)
    img["families"]["amorphous"]["fov_nm"] = [1.2, 1.5]
    for task in cfg["learning"]["tasks"].values():
        task["epochs"] = 3
    what = (
        "a reduced variant of config/config.yaml: the demo's 44 MD samples (CNT shards of 2, 4 nm tubes, "
        "1.6 nm amorphous boxes), 2 views x 2 variants at 64 px (coarser sampling, smaller fields), all 5 tasks at 3 "
        "epochs"
    )
    return cfg, what


# ------------------------------------------------------------------------------------------ running


def snakemake_cmd(work: Path, cores: int) -> list[str]:
    return [
        str(BIN / "snakemake"),
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(work),
        "--configfile",
        str(work / "campaign.yaml"),
        "--cores",
        str(cores),
        "--rerun-incomplete",
        "--keep-going",
    ]


def env() -> dict:
    e = {k: v for k, v in os.environ.items() if k not in ("HRTEMFLOW_FAULT_FRACTION", "TF_CPP_MIN_LOG_LEVEL")}
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    return e


def job_processes(pid: int) -> list[tuple[str, object]]:
    """(stage, process) of the running `hrtemflow md|image|train` processes under snakemake `pid`."""
    import psutil

    try:
        tree = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for p in tree:
        try:
            argv = p.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for i, a in enumerate(argv[:-1]):
            if a.endswith("/hrtemflow") and argv[i + 1] in STAGES:
                out.append((argv[i + 1], p))
                break
    return out


def unlock_if_needed(work: Path, cores: int, log) -> None:
    res = subprocess.run([*snakemake_cmd(work, cores), "--unlock"], env=env(), capture_output=True, text=True)
    log.write(res.stdout + res.stderr)


def checkpoint_epoch(work: Path, spec: str) -> int:
    """Epochs in the training checkpoint of the task whose spec is `spec` (0 if none yet)."""
    task = Path(spec).stem
    for state in (work / "results" / "models" / task / "checkpoint").glob("state.json"):
        try:
            return int(json.loads(state.read_text())["epoch"])
        except (OSError, ValueError, KeyError):
            return 0
    return 0


def run_campaign(
    work: Path, cfg: dict, cores: int, plan: list[tuple[float, str]], rng: random.Random, max_runs: int = 12
) -> dict:
    """Run snakemake until the campaign completes; at each (time, stage) of `plan` (s since the start)
    SIGKILL a random running job process, of that stage if one runs (else of a stage not hit yet, else
    any); rerun snakemake after each failure. Without a plan, note when each stage's jobs ran."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "campaign.yaml").write_text(yaml.safe_dump(cfg))
    made: list[dict] = []
    pending = sorted(plan)
    windows: dict[str, list[float]] = {}
    runs = 0
    t0 = time.perf_counter()
    with open(work / "soak.log", "w") as log:
        while True:
            runs += 1
            if runs > max_runs:
                raise SystemExit(
                    f"{work}: the campaign did not complete in {max_runs} snakemake runs; see {work / 'soak.log'}"
                )
            log.write(f"\n===== snakemake run {runs} =====\n")
            log.flush()
            proc = subprocess.Popen(snakemake_cmd(work, cores), env=env(), stdout=log, stderr=subprocess.STDOUT)
            while not plan and proc.poll() is None:  # the reference run: when does each stage run?
                now = time.perf_counter() - t0
                for stage, _ in job_processes(proc.pid):
                    windows.setdefault(stage, [now, now])[1] = now
                time.sleep(0.3)
            while proc.poll() is None and pending:
                at, want = pending[0]
                while proc.poll() is None and time.perf_counter() - t0 < at:
                    time.sleep(0.1)
                victim = None
                while proc.poll() is None and victim is None:
                    jobs = job_processes(proc.pid)
                    if jobs:
                        stages_done = {k["stage"] for k in made}
                        pool = [j for j in jobs if j[0] == want] or [j for j in jobs if j[0] not in stages_done] or jobs
                        victim = rng.choice(sorted(pool, key=lambda j: (j[0], j[1].pid)))
                    else:
                        time.sleep(0.2)
                if victim is None:
                    break  # snakemake ended (a failure, or done): rerun below, the plan goes on
                stage, p = victim
                try:
                    argv = p.cmdline()
                    target = next((a for a in argv if a.endswith(".json")), "?")
                    if stage == "train" and rng.random() < 0.5:  # half the training kills come after a checkpoint
                        while p.is_running() and checkpoint_epoch(work, target) < 1:
                            time.sleep(0.05)
                    time.sleep(rng.uniform(0.0, 0.5 if stage == "train" else 1.0))
                    if p.is_running():
                        epoch = checkpoint_epoch(work, target) if stage == "train" else None
                        p.send_signal(signal.SIGKILL)
                        made.append(
                            {
                                "stage": stage,
                                "at_s": round(time.perf_counter() - t0, 1),
                                "run": runs,
                                "target": target,
                                "checkpoint_epoch": epoch,
                            }
                        )
                        pending.pop(0)
                        log.write(f"\n##### soak: SIGKILL {stage} {target} at {made[-1]['at_s']} s\n")
                        log.flush()
                except Exception:  # noqa: BLE001 (it finished just now: not a kill, try again)
                    pass
            rc = proc.wait()
            if rc == 0:
                break
            text = (work / "soak.log").read_text()[-4000:]
            if "--unlock" in text:
                unlock_if_needed(work, cores, log)
    resumed = 0
    for k in made:
        if k["stage"] == "train" and k["checkpoint_epoch"]:
            log_text = (work / "results" / "logs" / "train" / f"{Path(k['target']).stem}.log").read_text()
            resumed += "resuming after epoch" in log_text
    return {
        "kills": made,
        "runs": runs,
        "wall_s": time.perf_counter() - t0,
        "resumed": resumed,
        "windows": windows,
        "train_after_checkpoint": sum(1 for k in made if k["stage"] == "train" and k["checkpoint_epoch"]),
    }


# ------------------------------------------------------------------------------------------ checks


def store_contents(path: Path) -> dict:
    from hrtemflow.store.reader import read_all

    return read_all(path)


def same_store(a: dict, b: dict) -> bool:
    if sorted(a) != sorted(b):
        return False
    for k in a:
        x, y = a[k], b[k]
        if k.endswith("@attrs"):
            if x != y:
                return False
        elif (
            x.dtype != y.dtype
            or x.shape != y.shape
            or not (np.array_equal(x, y, equal_nan=True) if x.dtype.kind == "f" else (x == y).all())
        ):
            return False
    return True


def verify(work: Path, cfg: dict, reference: Path | None) -> dict:
    """Lost and corrupt samples, stores and bundles of a finished campaign (vs the reference run)."""
    import warnings

    from ase.io import read

    warnings.filterwarnings("ignore", message=".*snakemake_timestamp.*")  # Snakemake's stamp inside directory() outputs
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from hrtemflow.atomistic.md_shard import strip_timing
    from hrtemflow.campaign.config import load_config
    from hrtemflow.learn.bundle import load_checked as load_bundle
    from hrtemflow.store.reader import is_complete

    cfg = load_config(cfg, base=work)
    plan = make_plan(cfg)
    per = cfg["imaging"]["views_per_structure"] * cfg["imaging"]["variants_per_view"]
    res = Counter()
    problems: list[str] = []
    for shard in plan.shards:
        p = {k: work / v for k, v in paths(cfg, shard).items()}
        planned = [s["id"] for s in md_spec(cfg, shard)["samples"]]
        res["planned"] += len(planned)
        try:
            manifest = json.loads(p["manifest"].read_text())
        except (OSError, ValueError) as exc:
            res["lost"] += len(planned)
            problems.append(f"{shard.name}: manifest unreadable ({exc})")
            continue
        ids = [s["id"] for s in manifest["samples"]]
        res["lost"] += len(set(planned) - set(ids))
        ok = [s["id"] for s in manifest["samples"] if s["status"] == "ok"]
        res["ok"] += len(ok)
        res["failed"] += len(ids) - len(ok)
        try:
            frames = read(p["structures"], ":", format="extxyz") if p["structures"].stat().st_size else []
            in_xyz = [f.info["sample_id"] for f in frames]
        except Exception as exc:  # noqa: BLE001
            in_xyz = []
            problems.append(f"{shard.name}: extxyz unreadable ({exc})")
        res["lost"] += len(set(ok) - set(in_xyz))
        if not is_complete(p["images"]):
            res["lost"] += len(ok)
            problems.append(f"{shard.name}: image store incomplete")
            continue
        try:
            contents = store_contents(p["images"])
        except Exception as exc:  # noqa: BLE001
            res["corrupt"] += len(ok)
            problems.append(f"{shard.name}: image store unreadable ({exc})")
            continue
        imaged = contents["sample_id"].tolist()
        res["lost"] += len(set(ok) - set(imaged))
        if imaged != [i for i in ok for _ in range(per)]:
            problems.append(f"{shard.name}: images do not match the ok samples")
            res["corrupt"] += len(ok)
        if reference is not None:
            r = {k: reference / v for k, v in paths(cfg, shard).items()}
            md_same = p["structures"].read_bytes() == r["structures"].read_bytes() and strip_timing(
                manifest
            ) == strip_timing(json.loads(r["manifest"].read_text()))
            img_same = same_store(contents, store_contents(r["images"]))
            if not (md_same and img_same):
                res["corrupt"] += len(planned)
                problems.append(
                    f"{shard.name}: differs from the reference (md {'same' if md_same else 'DIFFERENT'}, "
                    f"images {'same' if img_same else 'DIFFERENT'})"
                )
    for task in plan.tasks():
        res["bundles"] += 1
        try:
            load_bundle(work / Path(train_paths(cfg, task)["model"]).parent)
        except Exception as exc:  # noqa: BLE001
            res["bad_bundles"] += 1
            problems.append(f"model {task}: {exc}")
    tmp = [q for q in (work / cfg["campaign"]["results"]).rglob(".*") if ".tmp" in q.name]
    res["leftover_tmp"] = len(tmp)
    res["leftover_tmp_kib"] = (
        sum(
            q.stat().st_size if q.is_file() else sum(f.stat().st_size for f in q.rglob("*") if f.is_file()) for q in tmp
        )
        // 1024
    )
    return {"counts": dict(res), "problems": problems}


# ------------------------------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--campaigns", type=int, default=3)
    ap.add_argument("--kills", type=int, default=6, help="job processes SIGKILLed per campaign")
    ap.add_argument(
        "--full", action="store_true", help="the full demo config (about 15 min per run) instead of the reduced one"
    )
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", type=Path, help="keep the campaign folders here instead of a temporary folder")
    args = ap.parse_args()
    cfg, what = demo_config(args.full)
    rng = random.Random(args.seed)
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hrtemflow-soak-") as tmp:
        base = args.keep or Path(tmp)
        print(f"soak: {what}; in {base}", flush=True)
        ref = run_campaign(base / "reference", copy.deepcopy(cfg), args.cores, plan=[], rng=rng)
        spans = ", ".join(f"{k} {a:.0f}-{b:.0f} s" for k, (a, b) in sorted(ref["windows"].items()))
        print(f"soak: reference run: {ref['wall_s']:.0f} s ({spans})", flush=True)
        ref_check = verify(base / "reference", cfg, None)
        rows = []
        for k in range(args.campaigns):
            # one stage per kill, in turn (md, image, train in a random order), at a random moment of the time
            # that stage's jobs ran in the reference run
            order = rng.sample(STAGES, len(STAGES))
            plan = []
            for i in range(args.kills):
                stage = order[i % len(order)]
                lo, hi = ref["windows"].get(stage, [0.0, ref["wall_s"]])
                plan.append((rng.uniform(lo, hi), stage))
            run = run_campaign(base / f"campaign-{k + 1}", copy.deepcopy(cfg), args.cores, plan=plan, rng=rng)
            check = verify(base / f"campaign-{k + 1}", cfg, base / "reference")
            rows.append((run, check))
            c = check["counts"]
            kills = ", ".join(f"{x['stage']}@{x['at_s']}s" for x in run["kills"])
            print(
                f"soak: campaign {k + 1}: {len(run['kills'])} kill(s) ({kills}), {run['runs']} snakemake run(s), "
                f"{run['wall_s']:.0f} s; lost {c.get('lost', 0)}, corrupt {c.get('corrupt', 0)}, bad bundles "
                f"{c.get('bad_bundles', 0)}",
                flush=True,
            )
            for line in check["problems"]:
                print(f"  - {line}", flush=True)
    wall = time.perf_counter() - t_all

    rc = ref_check["counts"]
    lines = [
        header("Soak: random SIGKILLs of job processes, reruns until complete"),
        "",
        f"Campaign: {what}. Reference run (no kills): {ref['wall_s'] / 60:.1f} min, {rc['planned']} planned samples "
        f"({rc.get('ok', 0)} ok, {rc.get('failed', 0)} failed), {rc.get('bundles', 0)} model bundles. "
        f"Each campaign: snakemake `--cores {args.cores} --keep-going --rerun-incomplete`, run again after every "
        "failure; "
        f"{args.kills} SIGKILLs per campaign, each to a random running `hrtemflow md|image|train` process at a random "
        "moment "
        "(stages in turn, the moment drawn from when that stage ran in the reference; half the training kills wait "
        "for a "
        f"checkpoint); seed {args.seed}.",
        "",
        "| campaign | kills (stage@s) | snakemake runs | wall (min) | samples | lost | corrupt | stores complete | "
        "bundles load | leftover temporaries |",
        "|---|---|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    tot = Counter()
    for k, (run, check) in enumerate(rows, start=1):
        c = check["counts"]
        kills = ", ".join(f"{x['stage']}@{x['at_s']:.0f}" for x in run["kills"]) or "-"
        complete = "all" if not any("incomplete" in p or "unreadable" in p for p in check["problems"]) else "NO"
        loads = f"{c.get('bundles', 0) - c.get('bad_bundles', 0)}/{c.get('bundles', 0)}"
        lines.append(
            f"| {k} | {kills} | {run['runs']} | {run['wall_s'] / 60:.1f} | {c['planned']} | {c.get('lost', 0)} | "
            f"{c.get('corrupt', 0)} | {complete} | {loads} | {c.get('leftover_tmp', 0)} "
            f"({c.get('leftover_tmp_kib', 0)} KiB) |"
        )
        tot.update(
            {
                "kills": len(run["kills"]),
                "runs": run["runs"],
                "lost": c.get("lost", 0),
                "corrupt": c.get("corrupt", 0),
                "bad": c.get("bad_bundles", 0),
                "resumed": run["resumed"],
                "after_ckpt": run["train_after_checkpoint"],
            }
        )
        tot.update(Counter(x["stage"] for x in run["kills"]))
    lines += [
        "",
        f"Total: {tot['kills']} kills (md {tot['md']}, image {tot['image']}, train {tot['train']}; "
        f"{tot['after_ckpt']} training kills after a checkpoint, of which {tot['resumed']} resumed from it), "
        f"{tot['runs']} snakemake runs, "
        f"**{tot['lost']} lost, {tot['corrupt']} corrupt samples, {tot['bad']} bundles that do not load**; "
        f"wall time {wall / 60:.1f} min in all.",
        "",
    ]
    problems = [p for _, check in rows for p in check["problems"]]
    if problems:
        lines += ["Problems:", *[f"- {p}" for p in problems], ""]
    emit("\n".join(lines), "soak")
    if tot["lost"] or tot["corrupt"] or tot["bad"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
