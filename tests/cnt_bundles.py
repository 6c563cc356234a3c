"""A small real campaign shared by the predict tests: the imaging stage (abTEM) on ideal (8,0), (8,8) and
(12,12) nanotubes (14 structures each, 4 views x 4 optics variants, 32 px at 0.81 Å), a small chirality
classifier, an aberration regressor and a denoiser trained with `hrtemflow.learn.train`, and the OOD
statistics fitted with `hrtemflow fit-ood`: about 45 s on 2 cores, once per test session
(`conftest.cnt_bundles`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from hrtemflow.cli import main
from hrtemflow.imaging.shard import run_shard as run_image_shard
from test_imaging import make_spec as imaging_spec
from test_imaging import tubes, write_md_shard

CHIRALITIES = ((8, 0), (8, 8), (12, 12))
SIZE = 32
STRUCTURES = 14  # per chirality: 7 train, 3 validation, 4 test (x 16 images)


def train_spec(task: str, shards: list[str], **hyper) -> dict:
    h = {
        "enabled": True,
        "epochs": 4,
        "batch_size": 16,
        "learning_rate": 3e-3,
        "width": 8,
        "depth": 2,
        "patience": 10,
        "augment": True,
    }
    h.update(hyper)
    return {
        "kind": "train",
        "spec_version": 1,
        "campaign_seed": 7,
        "task": task,
        "families": ["cnt"],
        "classes": [f"{n}-{m}" for n, m in CHIRALITIES] if task == "chirality" else None,
        "image_size": SIZE,
        "split": {"val": 0.2, "test": 0.3},
        "hyper": h,
        "shards": shards,
    }


def make_cnt_bundles(root: Path) -> dict:
    """Image shards from the imaging stage, chirality + denoise bundles, the classifier's ood.npz."""
    from hrtemflow.learn import train as tr

    t0 = time.perf_counter()
    shards = []
    for n, m in CHIRALITIES:
        group = f"cnt-{n}-{m}"
        md = write_md_shard(root / "md" / group, "cnt", group, tubes(*[(n, m)] * STRUCTURES))
        spec = imaging_spec(
            "cnt",
            group,
            md,
            views=4,
            variants=4,
            sizes=(SIZE, 48),
            physics={"sampling_A": 0.2, "fov_nm": [2.6, 2.6]},
            noise={"dose_e_per_A2": [1000, 5000]},
        )
        rel = f"results/images/{group}/{group}-s00000.zarr"
        run_image_shard(spec, root / rel, progress=False)
        shards.append(rel)
    t_img = time.perf_counter() - t0
    specs = {
        "chirality": train_spec("chirality", shards, epochs=30, width=16, depth=3),
        "denoise": train_spec("denoise", shards, epochs=4),
        "aberrations": train_spec("aberrations", shards, epochs=4),
    }
    models = {}
    for task, spec in specs.items():
        (root / "results" / "plan").mkdir(parents=True, exist_ok=True)
        (root / "results" / "plan" / f"{task}.json").write_text(json.dumps(spec))
        models[task] = root / "results" / "models" / task
        tr.train(spec, models[task], base=root, progress=False)
    t_train = time.perf_counter() - t0 - t_img
    for task in ("chirality", "aberrations"):
        assert (
            main(
                [
                    "fit-ood",
                    str(root / "results" / "plan" / f"{task}.json"),
                    "--model-dir",
                    str(models[task]),
                    "--base",
                    str(root),
                ]
            )
            == 0
        )
    print(
        f"\ncampaign: imaging {t_img:.1f} s, training {t_train:.1f} s, fit-ood "
        f"{time.perf_counter() - t0 - t_img - t_train:.1f} s"
    )
    return {"root": root, "specs": specs, "models": models}
