"""One spec file per job: the contract between the campaign and the stages that run it.

A spec holds everything that determines a job's output, and is rewritten only when its content
changes: Snakemake then reruns exactly the jobs a config change touches (docs/data-products.md).
Seeds derive from (campaign seed, group, index) and never move when samples are added. A new
option enters a spec only when it is set, so a campaign planned before the option existed keeps its
specs byte for byte and nothing reruns after an upgrade.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from ..core.atomic import canonical_json, write_if_changed
from ..core.errors import HrtemflowError
from ..core.families import CARBON
from ..core.ids import sample_id
from ..core.tasks import TASKS, spectral_width_default
from .config import potential_files
from .paths import plan_dir, shard_paths, train_paths
from .plan import Plan, Shard, support_shards

SPEC_VERSION = 1
#: what each spec kind is called in messages ("hrtemflow md: MD spec ... does not exist")
KIND_NAMES = {"md": "MD", "images": "imaging", "train": "train"}


def sample_seed(campaign_seed: int, group: str, index: int) -> int:
    """A 63-bit seed for one sample, independent of every other sample and of the shard size."""
    digest = hashlib.sha256(f"hrtemflow:{campaign_seed}:{group}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def md_spec(cfg: dict, shard: Shard) -> dict:
    g = shard.group
    fam = cfg["families"][g.family]
    structure = copy.deepcopy(fam["structure"])
    structure.update(dict(g.extra))
    if structure.get("bond_A", 0.0) is None:  # the MD's own geometry: the spec of a campaign planned before the key
        structure.pop("bond_A")
    carbon = g.family in CARBON
    seed = cfg["campaign"]["seed"]
    return {
        "kind": "md",
        "spec_version": SPEC_VERSION,
        "campaign_seed": seed,
        "family": g.family,
        "group": g.name,
        "shard": shard.name,
        "samples": [
            {"id": sample_id(g.name, i), "index": i, "seed": sample_seed(seed, g.name, i)}
            for i in g.shard_indices(shard.k)
        ],
        "structure": structure,
        "md": copy.deepcopy(fam["md"]),
        "potential": {
            "pair_style": "tersoff" if carbon else "eam/fs",
            "file": potential_files(cfg)[g.family],
            "elements": ["C"] if carbon else ["Ag", "Co"],
        },
        "fault_injection": copy.deepcopy(cfg["campaign"]["fault_injection"]),
    }


def image_spec(plan: Plan, shard: Shard) -> dict:
    cfg = plan.cfg
    img = cfg["imaging"]
    p = shard_paths(cfg, shard)
    support = support_shards(plan, shard)
    return {
        "kind": "images",
        "spec_version": SPEC_VERSION,
        "campaign_seed": cfg["campaign"]["seed"],
        "family": shard.family,
        "group": shard.group.name,
        "shard": shard.name,
        "md": {"structures": p["structures"], "manifest": p["manifest"]},
        "support": {"structures": [shard_paths(cfg, s)["structures"] for s in support]} if support else None,
        "imaging": {
            "device": img["device"],
            "views_per_structure": img["views_per_structure"],
            "variants_per_view": img["variants_per_view"],
            "sizes": sorted(img["sizes"]),
            "physics": copy.deepcopy(img["families"][shard.family]),
            "optics": _optics(img["optics"]),
            "detector": _detector(img["detector"]),
            "noise": copy.deepcopy(img["noise"]),
            # only when not the default: a campaign imaged before the option keeps its specs, so nothing reruns
            **({"storage": img["storage"]} if img.get("storage", "float32") != "float32" else {}),
        },
    }


def _optics(optics: dict) -> dict:
    """The optics of an image spec; `temporal_coherence` only when not the envelope and
    `phase_plate_deg` only when there is a plate, so a campaign planned before either option existed
    keeps its specs byte for byte and is not imaged again."""
    out = copy.deepcopy(optics)
    if out.get("temporal_coherence") == "envelope":
        out.pop("temporal_coherence")
    if not any(out.get("phase_plate_deg", (0.0, 0.0))):
        out.pop("phase_plate_deg", None)
    return out


def _detector(detector: dict) -> dict:
    """The detector of an image spec; `recorded_pixel_scale` only when images are resampled, so a campaign planned
    before the option keeps its specs and is not imaged again."""
    out = copy.deepcopy(detector)
    if [float(v) for v in out.get("recorded_pixel_scale", (1.0, 1.0))] == [1.0, 1.0]:
        out.pop("recorded_pixel_scale", None)
    return out


def task_classes(cfg: dict, task: str) -> list[str] | None:
    """A classifier's classes from the validated config (None for other kinds)."""
    entry = TASKS[task]
    return entry.classes(cfg) if entry.classes else None


def _hyper(tcfg: dict, task: str) -> dict:
    """A task's training settings; keys other tasks ignore stay out, so changing them retrains nothing else.

    `spectral_width` is written only when set and not the task's default, `precision` only when
    not auto, `stem` only when not full and `shot_noise` only when not stored: a campaign planned
    before an option existed keeps its specs byte for byte, so its models are not retrained for nothing.
    """
    denoiser = TASKS[task].kind == "denoising"
    hyper = copy.deepcopy(tcfg)
    if not denoiser:
        hyper.pop("target", None)
    if denoiser or hyper.get("spectral_width") == spectral_width_default(task, hyper["width"]):
        hyper.pop("spectral_width", None)
    if hyper.get("precision") == "auto":
        hyper.pop("precision")
    if denoiser or hyper.get("stem") == "full":
        hyper.pop("stem", None)
    if hyper.get("shot_noise") == "stored":
        hyper.pop("shot_noise")
    return hyper


def train_spec(plan: Plan, task: str) -> dict:
    cfg = plan.cfg
    learn = cfg["learning"]
    entry = TASKS[task]
    return {
        "kind": "train",
        "spec_version": SPEC_VERSION,
        "campaign_seed": cfg["campaign"]["seed"],
        "task": task,
        "families": list(entry.families),
        "classes": task_classes(cfg, task),
        "image_size": learn["image_size"],
        "split": copy.deepcopy(learn["split"]),
        "hyper": _hyper(learn["tasks"][task], task),
        "shards": [shard_paths(cfg, s)["images"] for s in plan.task_shards(task)],
        # what a regressor learns is part of its spec: a new target list retrains it, and only it
        **({"targets": entry.target_names} if entry.targets else {}),
    }


def spec_builders(plan: Plan) -> dict[str, Callable[[], dict]]:
    """Every spec file of the plan and how to build its content; cheap until a builder is called.

    A cluster job parses the Snakefile again and needs its own spec's hash only, not all of them.
    """
    cfg = plan.cfg
    out: dict[str, Callable[[], dict]] = {}
    for shard in plan.shards:
        p = shard_paths(cfg, shard)
        out[p["md_spec"]] = functools.partial(md_spec, cfg, shard)
        if cfg["imaging"]["enabled"]:
            out[p["image_spec"]] = functools.partial(image_spec, plan, shard)
    for task in plan.tasks():
        out[train_paths(cfg, task)["spec"]] = functools.partial(train_spec, plan, task)
    return out


def spec_texts(plan: Plan) -> dict[str, str]:
    """Every spec file of the plan and its text."""
    return {path: canonical_json(build()) for path, build in spec_builders(plan).items()}


def write_plan(
    plan: Plan, base: str | Path = ".", *, only_missing: bool = False, texts: dict[str, str] | None = None
) -> dict[str, int]:
    """Write every spec whose content changed; remove specs the config no longer asks for.

    `only_missing` writes just the specs that do not exist yet and changes nothing else (what a dry
    run may do). `texts` are the plan's spec texts when the caller has them already. Outputs of
    removed shards are left alone (they are data, not the plan).
    """
    base = Path(base)
    texts = spec_texts(plan) if texts is None else texts
    counts = Counter(written=0, unchanged=0, removed=0)
    for rel, text in texts.items():
        if only_missing and (base / rel).exists():
            counts["unchanged"] += 1
            continue
        counts["written" if write_if_changed(base / rel, text) else "unchanged"] += 1
    plan_root = base / plan_dir(plan.cfg)
    if plan_root.is_dir() and not only_missing:
        keep = {str((base / rel).resolve()) for rel in texts}
        for spec in plan_root.rglob("*.json"):
            if str(spec.resolve()) not in keep:
                spec.unlink()
                counts["removed"] += 1
        for folder in sorted((d for d in plan_root.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)):
            if not any(folder.iterdir()):
                folder.rmdir()
    return dict(counts)


def read_spec(path: str | Path, kind: str) -> dict:
    """Read a spec file written by the plan and check its kind ("md", "images" or "train")."""
    what = KIND_NAMES[kind]
    try:
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HrtemflowError(
            f"{what} spec {path} does not exist; write the plan first (`hrtemflow plan CONFIG`)"
        ) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise HrtemflowError(f"{what} spec {path} cannot be read as JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise HrtemflowError(f"{what} spec {path}: the top level must be a JSON object")
    return spec
