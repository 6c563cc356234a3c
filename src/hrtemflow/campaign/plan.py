"""Samples -> groups -> shards: what a campaign makes and how its jobs are cut.

A group is the unit of incremental identity inside a family (an ordering, a chirality, or
amorphous); a shard is a run of a group's samples and the unit of a job. Ids derive from (group,
index) and never move when samples are added (`hrtemflow.core.ids`); what each job runs is in its
spec (`hrtemflow.campaign.specs`).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..core.families import FAMILIES, FILM_FAMILIES
from ..core.ids import chirality_label, group_name, parse_chirality, shard_name
from ..core.tasks import TASKS
from ..core.tubes import GRAPHENE_A, tube_chiral_angle_deg, tube_diameter_A


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
        return shard_name(self.name, k)

    def shard_indices(self, k: int) -> range:
        return range(k * self.shard_size, min((k + 1) * self.shard_size, self.n_samples))


def groups(cfg: dict) -> list[Group]:
    fam = cfg["families"]
    out: list[Group] = []
    na = fam["nanoalloy"]
    if na["enabled"]:
        for ordering in na["orderings"]:
            out.append(
                Group(
                    "nanoalloy",
                    group_name("nanoalloy", ordering),
                    na["samples_per_ordering"],
                    na["shard_size"],
                    (("ordering", ordering),),
                )
            )
    cnt = fam["cnt"]
    if cnt["enabled"]:
        for n, m in cnt["chiralities"]:
            out.append(
                Group(
                    "cnt",
                    group_name("cnt", chirality_label(n, m)),
                    cnt["samples_per_chirality"],
                    cnt["shard_size"],
                    (("chirality", [n, m]),),
                )
            )
    am = fam["amorphous"]
    if am["enabled"]:
        out.append(Group("amorphous", group_name("amorphous"), am["samples"], am["shard_size"]))
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

    @property
    def n_samples(self) -> int:
        return len(self.group.shard_indices(self.k))


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

    def families(self) -> list[str]:
        """The families this campaign makes, in the registry's order."""
        return [f for f in FAMILIES if self.of_family(f)]

    def tasks(self) -> list[str]:
        learn = self.cfg["learning"]
        if not (learn["enabled"] and self.cfg["imaging"]["enabled"]):
            return []
        return [
            t for t, tc in learn["tasks"].items() if tc["enabled"] and any(self.of_family(f) for f in TASKS[t].families)
        ]

    def task_shards(self, task: str) -> list[Shard]:
        return [s for s in self.shards if s.family in TASKS[task].families]


def make_plan(cfg: dict) -> Plan:
    return Plan(cfg, [Shard(g, k) for g in groups(cfg) for k in range(g.n_shards)])


SUPPORT_POOL = 8  # films come from the first shards of the amorphous family only


def support_shards(plan: Plan, shard: Shard) -> list[Shard]:
    """The amorphous shard whose films support a nanoalloy or CNT image shard (empty when off).

    One shard, picked by a hash of the nanoalloy shard's name from the first SUPPORT_POOL amorphous
    shards: the choice never moves when samples are added, and the DAG stays linear in size
    (every nanoalloy shard depending on every amorphous one made the seed campaign's DAG quadratic).
    """
    img = plan.cfg["imaging"]
    if shard.family not in FILM_FAMILIES or not img["families"][shard.family]["support_film"]:
        return []
    pool = plan.of_family("amorphous")[:SUPPORT_POOL]
    if not pool:
        return []
    pick = int.from_bytes(hashlib.sha256(shard.name.encode()).digest()[:4], "little") % len(pool)
    return [pool[pick]]


def summary_rows(plan: Plan) -> list[dict[str, Any]]:
    """Samples, shards and jobs per family and stage, for `hrtemflow plan --summary`."""
    cfg = plan.cfg
    img = cfg["imaging"]
    rows = []
    for family in plan.families():
        shards = plan.of_family(family)
        gs = {s.group.name: s.group for s in shards}
        samples = sum(g.n_samples for g in gs.values())
        images = (
            samples * img["views_per_structure"] * img["variants_per_view"] * len(img["sizes"]) if img["enabled"] else 0
        )
        rows.append(
            {
                "family": family,
                "groups": len(gs),
                "samples": samples,
                "shards": len(shards),
                "md_jobs": len(shards),
                "image_jobs": len(shards) if img["enabled"] else 0,
                "images": images,
            }
        )
    return rows


def class_rows(plan: Plan) -> list[dict[str, Any]]:
    """The classes of each classification task the plan trains, in the order the network numbers them, and the
    config key they come from: what a user checks before a campaign, e.g. that a diameter range holds the tubes
    meant. A chirality class carries its tube's diameter (at a C-C bond of 1.42 Å) and chiral angle."""
    rows = []
    for task in plan.tasks():
        entry = TASKS[task]
        if entry.kind != "classification" or entry.classes is None:
            continue
        source, span = entry.classes_from, None
        if entry.class_label == "chirality":
            span = plan.cfg["families"]["cnt"].get("chiralities_in_range_nm")
            source = "families.cnt.chiralities_in_range_nm" if span is not None else source
        rows.append(
            {
                "task": task,
                "from": source,
                "range_nm": span,
                "classes": [_class_detail(entry.class_label, c) for c in entry.classes(plan.cfg)],
            }
        )
    return rows


def _class_detail(label: str | None, name: str) -> dict[str, Any]:
    """One class as the summary lists it: its name, and for a chirality its tube's geometry."""
    if label != "chirality":
        return {"name": name}
    n, m = parse_chirality(name)
    return {
        "name": name,
        "diameter_nm": round(tube_diameter_A(n, m, GRAPHENE_A) / 10, 4),
        "chiral_angle_deg": round(tube_chiral_angle_deg(n, m), 2),
    }


def format_classes(rows: list[dict[str, Any]], width: int = 100) -> list[str]:
    """`class_rows` as text: a head line per task saying where its classes come from, then one wrapped list."""
    lines = []
    for r in rows:
        where = r["from"] + (f" = {r['range_nm']} nm" if r["range_nm"] is not None else "")
        tubes = any("diameter_nm" in c for c in r["classes"])
        note = "; tube diameter at a C-C bond of 1.42 Å, chiral angle" if tubes else ""
        lines.append(f"{r['task']} classes ({len(r['classes'])}, from {where}{note}):")
        lines += _wrap([_class_text(c) for c in r["classes"]], width)
    return lines


def _wrap(items: list[str], width: int) -> list[str]:
    """Items joined by commas into indented lines of at most `width` characters, never breaking an item."""
    lines: list[str] = []
    for item in items:
        if lines and len(lines[-1]) + 2 + len(item) <= width:
            lines[-1] += ", " + item
        else:
            if lines:
                lines[-1] += ","
            lines.append("  " + item)
    return lines


def _class_text(c: dict[str, Any]) -> str:
    """'7-5 (0.82 nm, 24.5°)' for a tube, the bare name otherwise."""
    if "diameter_nm" not in c:
        return c["name"]
    return f"{c['name']} ({c['diameter_nm']:.2f} nm, {c['chiral_angle_deg']:.1f}°)"


def format_summary(plan: Plan) -> str:
    rows = summary_rows(plan)
    head = (
        f"{'family':<10} {'groups':>7} {'samples':>10} {'shards':>8} {'md jobs':>8} {'image jobs':>10} {'images':>12}"
    )
    lines = [f"campaign {plan.cfg['campaign']['name']!r} (seed {plan.cfg['campaign']['seed']})", head, "-" * len(head)]
    tot: Counter = Counter()
    for r in rows:
        lines.append(
            f"{r['family']:<10} {r['groups']:>7} {r['samples']:>10,} {r['shards']:>8,} {r['md_jobs']:>8,} "
            f"{r['image_jobs']:>10,} {r['images']:>12,}"
        )
        tot.update({k: v for k, v in r.items() if k != "family"})
    lines.append("-" * len(head))
    lines.append(
        f"{'total':<10} {tot['groups']:>7} {tot['samples']:>10,} {tot['shards']:>8,} {tot['md_jobs']:>8,} "
        f"{tot['image_jobs']:>10,} {tot['images']:>12,}"
    )
    tasks = plan.tasks()
    lines.append(
        f"learning: {len(tasks)} training job(s) and {len(tasks)} evaluation job(s): {', '.join(tasks) or 'none'}"
    )
    n_jobs = tot["md_jobs"] + tot["image_jobs"] + 2 * len(tasks)
    lines.append(f"jobs in the DAG (before reporting rules): {n_jobs:,}")
    lines += format_classes(class_rows(plan))
    return "\n".join(lines)
