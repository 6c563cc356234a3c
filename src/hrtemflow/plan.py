"""Samples -> shards -> one spec file per shard.

A spec holds everything that determines a shard's output, and is rewritten only when its content
changes: Snakemake then reruns exactly the shards a config change touches (docs/data-products.md).
Ids and seeds derive from (campaign seed, group, index) and never move when samples are added.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import FAMILIES, TASK_FAMILIES, potential_files, spectral_width_default
from .errors import HrtemflowError
from .io import canonical_json, write_if_changed
from .learn.targets import REGRESSION_TARGETS

SPEC_VERSION = 1
ORDERING_CLASSES = ("core-shell", "janus", "disordered")


def sample_seed(campaign_seed: int, group: str, index: int) -> int:
    """A 63-bit seed for one sample, independent of every other sample and of the shard size."""
    digest = hashlib.sha256(f"hrtemflow:{campaign_seed}:{group}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def sample_id(group: str, index: int) -> str:
    return f"{group}-{index:07d}"


def chirality_label(n: int, m: int) -> str:
    return f"{n}-{m}"


@dataclass(frozen=True)
class Group:
    """The unit of incremental identity inside a family (an ordering, a chirality, or amorphous)."""

    family: str
    name: str
    n_samples: int
    shard_size: int
    extra: tuple[tuple[str, Any], ...] = ()  # group-specific structure fields

    @property
    def n_shards(self) -> int:
        return -(-self.n_samples // self.shard_size)

    def shard_name(self, k: int) -> str:
        return f"{self.name}-s{k:05d}"

    def shard_indices(self, k: int) -> range:
        return range(k * self.shard_size, min((k + 1) * self.shard_size, self.n_samples))


def groups(cfg: dict) -> list[Group]:
    fam = cfg["families"]
    out: list[Group] = []
    na = fam["nanoalloy"]
    if na["enabled"]:
        for ordering in na["orderings"]:
            out.append(Group("nanoalloy", f"nanoalloy-{ordering}", na["samples_per_ordering"], na["shard_size"], (("ordering", ordering),)))
    cnt = fam["cnt"]
    if cnt["enabled"]:
        for n, m in cnt["chiralities"]:
            out.append(Group("cnt", f"cnt-{chirality_label(n, m)}", cnt["samples_per_chirality"], cnt["shard_size"], (("chirality", [n, m]),)))
    am = fam["amorphous"]
    if am["enabled"]:
        out.append(Group("amorphous", "amorphous", am["samples"], am["shard_size"]))
    return out


@dataclass(frozen=True)
class Shard:
    group: Group
    k: int

    @property
    def name(self) -> str:
        return self.group.shard_name(self.k)

    @property
    def family(self) -> str:
        return self.group.family


def results_dir(cfg: dict) -> str:
    return cfg["campaign"]["results"].rstrip("/")


def paths(cfg: dict, shard: Shard) -> dict[str, str]:
    """Every file of one shard, relative to the working directory (Snakemake's view)."""
    r, g, s = results_dir(cfg), shard.group.name, shard.name
    return {
        "md_spec": f"{r}/plan/md/{g}/{s}.json",
        "image_spec": f"{r}/plan/images/{g}/{s}.json",
        "structures": f"{r}/md/{g}/{s}.extxyz",
        "manifest": f"{r}/md/{g}/{s}.manifest.json",
        "images": f"{r}/images/{g}/{s}.zarr",
    }


@dataclass
class Plan:
    cfg: dict
    shards: list[Shard]

    def of_family(self, family: str) -> list[Shard]:
        return [s for s in self.shards if s.family == family]

    def by_name(self, name: str) -> Shard:
        return self._index[name]

    def __post_init__(self) -> None:
        self._index = {s.name: s for s in self.shards}

    def tasks(self) -> list[str]:
        learn = self.cfg["learning"]
        if not (learn["enabled"] and self.cfg["imaging"]["enabled"]):
            return []
        return [t for t, tc in learn["tasks"].items() if tc["enabled"] and any(self.of_family(f) for f in TASK_FAMILIES[t])]

    def task_shards(self, task: str) -> list[Shard]:
        return [s for s in self.shards if s.family in TASK_FAMILIES[task]]


def make_plan(cfg: dict) -> Plan:
    return Plan(cfg, [Shard(g, k) for g in groups(cfg) for k in range(g.n_shards)])


def md_spec(cfg: dict, shard: Shard) -> dict:
    g = shard.group
    fam = cfg["families"][g.family]
    structure = copy.deepcopy(fam["structure"])
    structure.update(dict(g.extra))
    carbon = g.family in ("cnt", "amorphous")
    seed = cfg["campaign"]["seed"]
    return {
        "kind": "md",
        "spec_version": SPEC_VERSION,
        "campaign_seed": seed,
        "family": g.family,
        "group": g.name,
        "shard": shard.name,
        "samples": [{"id": sample_id(g.name, i), "index": i, "seed": sample_seed(seed, g.name, i)} for i in g.shard_indices(shard.k)],
        "structure": structure,
        "md": copy.deepcopy(fam["md"]),
        "potential": {
            "pair_style": "tersoff" if carbon else "eam/fs",
            "file": potential_files(cfg)[g.family],
            "elements": ["C"] if carbon else ["Ag", "Co"],
        },
        "fault_injection": copy.deepcopy(cfg["campaign"]["fault_injection"]),
    }


SUPPORT_POOL = 8  # films come from the first shards of the amorphous family only


def support_shards(plan: Plan, shard: Shard) -> list[Shard]:
    """The amorphous shard whose films support a nanoalloy image shard (empty when off).

    One shard, picked by a hash of the nanoalloy shard's name from the first SUPPORT_POOL amorphous
    shards: the choice never moves when samples are added, and the DAG stays linear in size
    (every nanoalloy shard depending on every amorphous one made the seed campaign's DAG quadratic).
    """
    img = plan.cfg["imaging"]
    if shard.family != "nanoalloy" or not img["families"]["nanoalloy"]["support_film"]:
        return []
    pool = plan.of_family("amorphous")[:SUPPORT_POOL]
    if not pool:
        return []
    pick = int.from_bytes(hashlib.sha256(shard.name.encode()).digest()[:4], "little") % len(pool)
    return [pool[pick]]


def image_spec(plan: Plan, shard: Shard) -> dict:
    cfg = plan.cfg
    img = cfg["imaging"]
    p = paths(cfg, shard)
    support = support_shards(plan, shard)
    return {
        "kind": "images",
        "spec_version": SPEC_VERSION,
        "campaign_seed": cfg["campaign"]["seed"],
        "family": shard.family,
        "group": shard.group.name,
        "shard": shard.name,
        "md": {"structures": p["structures"], "manifest": p["manifest"]},
        "support": {"structures": [paths(cfg, s)["structures"] for s in support]} if support else None,
        "imaging": {
            "device": img["device"],
            "views_per_structure": img["views_per_structure"],
            "variants_per_view": img["variants_per_view"],
            "sizes": sorted(img["sizes"]),
            "physics": copy.deepcopy(img["families"][shard.family]),
            "optics": _optics(img["optics"]),
            "detector": copy.deepcopy(img["detector"]),
            "noise": copy.deepcopy(img["noise"]),
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


def task_classes(cfg: dict, task: str) -> list[str] | None:
    if task == "chirality":
        return [chirality_label(n, m) for n, m in cfg["families"]["cnt"]["chiralities"]]
    if task == "ordering":
        return [o for o in ORDERING_CLASSES if o in cfg["families"]["nanoalloy"]["orderings"]]
    return None


def _hyper(tcfg: dict, task: str) -> dict:
    """A task's training settings; keys other tasks ignore stay out, so changing them retrains nothing else.

    `spectral_width` is written only when set and not the task's default, `precision` only when
    not auto, `stem` only when not full and `shot_noise` only when not stored: a campaign planned
    before an option existed keeps its specs byte for byte, so its models are not retrained for nothing.
    """
    hyper = copy.deepcopy(tcfg)
    if task != "denoise":
        hyper.pop("target", None)
    if task == "denoise" or hyper.get("spectral_width") == spectral_width_default(task, hyper["width"]):
        hyper.pop("spectral_width", None)
    if hyper.get("precision") == "auto":
        hyper.pop("precision")
    if task == "denoise" or hyper.get("stem") == "full":
        hyper.pop("stem", None)
    if hyper.get("shot_noise") == "stored":
        hyper.pop("shot_noise")
    return hyper


def train_spec(plan: Plan, task: str) -> dict:
    cfg = plan.cfg
    learn = cfg["learning"]
    return {
        "kind": "train",
        "spec_version": SPEC_VERSION,
        "campaign_seed": cfg["campaign"]["seed"],
        "task": task,
        "families": list(TASK_FAMILIES[task]),
        "classes": task_classes(cfg, task),
        "image_size": learn["image_size"],
        "split": copy.deepcopy(learn["split"]),
        "hyper": _hyper(learn["tasks"][task], task),
        "shards": [paths(cfg, s)["images"] for s in plan.task_shards(task)],
        # what a regressor learns is part of its spec: a new target list retrains it, and only it
        **({"targets": [t.name for t in REGRESSION_TARGETS[task]]} if task in REGRESSION_TARGETS else {}),
    }


def train_paths(cfg: dict, task: str) -> dict[str, str]:
    r = results_dir(cfg)
    return {
        "spec": f"{r}/plan/train/{task}.json",
        "model": f"{r}/models/{task}/model.keras",
        "card": f"{r}/models/{task}/card.json",
        "report": f"{r}/reports/{task}/metrics.json",
        "figures": f"{r}/reports/{task}/figures",
    }


def spec_builders(plan: Plan) -> dict[str, Callable[[], dict]]:
    """Every spec file of the plan and how to build its content; cheap until a builder is called.

    A cluster job parses the Snakefile again and needs its own spec's hash only, not all of them.
    """
    cfg = plan.cfg
    out: dict[str, Callable[[], dict]] = {}
    for shard in plan.shards:
        p = paths(cfg, shard)
        out[p["md_spec"]] = functools.partial(md_spec, cfg, shard)
        if cfg["imaging"]["enabled"]:
            out[p["image_spec"]] = functools.partial(image_spec, plan, shard)
    for task in plan.tasks():
        out[train_paths(cfg, task)["spec"]] = functools.partial(train_spec, plan, task)
    return out


def spec_texts(plan: Plan) -> dict[str, str]:
    """Every spec file of the plan and its text."""
    return {path: canonical_json(build()) for path, build in spec_builders(plan).items()}


def write_plan(plan: Plan, base: str | Path = ".", *, only_missing: bool = False,
               texts: dict[str, str] | None = None) -> dict[str, int]:
    """Write every spec whose content changed; remove specs the config no longer asks for.

    `only_missing` writes just the specs that do not exist yet and changes nothing else (what a dry
    run may do). `texts` are the plan's spec texts when the caller has them already. Outputs of removed shards are left alone (they are data, not the plan).
    """
    base = Path(base)
    texts = spec_texts(plan) if texts is None else texts
    counts = Counter(written=0, unchanged=0, removed=0)
    for rel, text in texts.items():
        if only_missing and (base / rel).exists():
            counts["unchanged"] += 1
            continue
        counts["written" if write_if_changed(base / rel, text) else "unchanged"] += 1
    plan_root = base / results_dir(plan.cfg) / "plan"
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


def summary_rows(plan: Plan) -> list[dict[str, Any]]:
    """Samples, shards and jobs per family and stage, for `hrtemflow plan --summary`."""
    cfg = plan.cfg
    img = cfg["imaging"]
    rows = []
    for family in FAMILIES:
        shards = plan.of_family(family)
        if not shards:
            continue
        gs = {s.group.name: s.group for s in shards}
        samples = sum(g.n_samples for g in gs.values())
        images = samples * img["views_per_structure"] * img["variants_per_view"] * len(img["sizes"]) if img["enabled"] else 0
        rows.append({
            "family": family,
            "groups": len(gs),
            "samples": samples,
            "shards": len(shards),
            "md_jobs": len(shards),
            "image_jobs": len(shards) if img["enabled"] else 0,
            "images": images,
        })
    return rows


def format_summary(plan: Plan) -> str:
    rows = summary_rows(plan)
    head = f"{'family':<10} {'groups':>7} {'samples':>10} {'shards':>8} {'md jobs':>8} {'image jobs':>10} {'images':>12}"
    lines = [f"campaign {plan.cfg['campaign']['name']!r} (seed {plan.cfg['campaign']['seed']})", head, "-" * len(head)]
    tot = Counter()
    for r in rows:
        lines.append(f"{r['family']:<10} {r['groups']:>7} {r['samples']:>10,} {r['shards']:>8,} {r['md_jobs']:>8,} {r['image_jobs']:>10,} {r['images']:>12,}")
        tot.update({k: v for k, v in r.items() if k != "family"})
    lines.append("-" * len(head))
    lines.append(f"{'total':<10} {tot['groups']:>7} {tot['samples']:>10,} {tot['shards']:>8,} {tot['md_jobs']:>8,} {tot['image_jobs']:>10,} {tot['images']:>12,}")
    tasks = plan.tasks()
    lines.append(f"learning: {len(tasks)} training job(s) and {len(tasks)} evaluation job(s): {', '.join(tasks) or 'none'}")
    n_jobs = tot["md_jobs"] + tot["image_jobs"] + 2 * len(tasks)
    lines.append(f"jobs in the DAG (before reporting rules): {n_jobs:,}")
    return "\n".join(lines)


def read_spec(path: str | Path, what: str) -> dict:
    """Read a spec file written by the plan; `what` ("MD", "imaging", "train") names it in errors."""
    try:
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HrtemflowError(f"{what} spec {path} does not exist; write the plan first (`hrtemflow plan CONFIG`)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise HrtemflowError(f"{what} spec {path} cannot be read as JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise HrtemflowError(f"{what} spec {path}: the top level must be a JSON object")
    return spec
