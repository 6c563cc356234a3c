"""The plan: stable ids and seeds, fixed shard blocks, specs rewritten only when their content changes."""

from __future__ import annotations

import json
import os

import pytest

from hrtemflow.campaign.config import load_config
from hrtemflow.campaign.paths import shard_paths as paths
from hrtemflow.campaign.plan import format_summary, make_plan
from hrtemflow.campaign.specs import sample_seed, write_plan
from hrtemflow.core.atomic import write_if_changed
from hrtemflow.learn.table import check_spec as check_train_spec


def _plan(cfg, root):
    return make_plan(load_config(cfg, base=root))


def test_seeds_are_stable_and_distinct():
    assert sample_seed(2026, "cnt-8-4", 0) == sample_seed(2026, "cnt-8-4", 0)
    seeds = {sample_seed(2026, g, i) for g in ("cnt-8-4", "cnt-10-0") for i in range(1000)}
    assert len(seeds) == 2000
    assert all(0 <= s < 2**63 for s in seeds)
    # pinned: a seed must never change between versions, or old campaigns could not be extended
    assert sample_seed(2026, "cnt-8-4", 0) == 428020778150930653


def test_shards_are_fixed_blocks(demo_cfg, repo_root):
    demo_cfg["families"]["cnt"]["samples_per_chirality"] = 10
    demo_cfg["families"]["cnt"]["shard_size"] = 4
    plan = _plan(demo_cfg, repo_root)
    cnt = [s for s in plan.of_family("cnt") if s.group.name == "cnt-8-4"]
    assert [s.name for s in cnt] == ["cnt-8-4-s00000", "cnt-8-4-s00001", "cnt-8-4-s00002"]
    assert [list(s.group.shard_indices(s.k)) for s in cnt] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_spec_files_rewritten_only_on_change(demo_cfg, repo_root, tmp_path):
    demo_cfg["campaign"]["results"] = "res"
    plan = _plan(demo_cfg, repo_root)
    first = write_plan(plan, tmp_path)
    assert first["written"] > 0 and first["unchanged"] == 0
    md = tmp_path / paths(plan.cfg, plan.shards[0])["md_spec"]
    img = tmp_path / paths(plan.cfg, plan.shards[0])["image_spec"]
    os.utime(md, (1, 1))
    os.utime(img, (1, 1))
    again = write_plan(plan, tmp_path)
    assert again["written"] == 0 and again["unchanged"] == first["written"]
    assert md.stat().st_mtime == 1  # untouched

    # an imaging change rewrites imaging specs, never MD specs
    demo_cfg["imaging"]["optics"]["defocus_nm"] = [-30, 30]
    write_plan(_plan(demo_cfg, repo_root), tmp_path)
    assert md.stat().st_mtime == 1
    assert img.stat().st_mtime > 1


def test_adding_a_chirality_touches_only_its_shards(demo_cfg, repo_root, tmp_path):
    demo_cfg["campaign"]["results"] = "res"
    before = make_plan(load_config(demo_cfg, base=repo_root))
    write_plan(before, tmp_path)
    for spec in (tmp_path / "res" / "plan").rglob("*.json"):
        os.utime(spec, (1, 1))
    demo_cfg["families"]["cnt"]["chiralities"].append([12, 3])
    counts = write_plan(_plan(demo_cfg, repo_root), tmp_path)
    changed = sorted(
        str(p.relative_to(tmp_path)) for p in (tmp_path / "res" / "plan").rglob("*.json") if p.stat().st_mtime > 1
    )
    new_shards = [c for c in changed if "cnt-12-3" in c]
    assert len(new_shards) == 2  # its MD and imaging spec
    others = sorted(set(changed) - set(new_shards))
    # the chirality classifier gains a class and the denoiser gains data: nothing else moves
    assert others == ["res/plan/train/chirality.json", "res/plan/train/denoise.json"]
    assert counts["written"] == 4


def test_removed_groups_drop_their_specs(demo_cfg, repo_root, tmp_path):
    demo_cfg["campaign"]["results"] = "res"
    write_plan(_plan(demo_cfg, repo_root), tmp_path)
    demo_cfg["families"]["cnt"]["chiralities"] = [[10, 0], [8, 4]]
    counts = write_plan(_plan(demo_cfg, repo_root), tmp_path)
    assert counts["removed"] == 4
    assert not list((tmp_path / "res" / "plan").rglob("*cnt-7-5*"))


def test_raising_a_count_adds_shards(demo_cfg, repo_root, tmp_path):
    demo_cfg["campaign"]["results"] = "res"
    write_plan(_plan(demo_cfg, repo_root), tmp_path)
    texts = {p: p.read_text() for p in (tmp_path / "res" / "plan" / "md").rglob("*.json")}
    demo_cfg["families"]["amorphous"]["samples"] += 2  # one more shard of 2
    write_plan(_plan(demo_cfg, repo_root), tmp_path)
    assert all(p.read_text() == t for p, t in texts.items())
    assert (tmp_path / "res" / "plan" / "md" / "amorphous" / "amorphous-s00002.json").exists()
    spec = json.loads((tmp_path / "res" / "plan" / "md" / "amorphous" / "amorphous-s00002.json").read_text())
    assert [s["index"] for s in spec["samples"]] == [4, 5]


def test_write_if_changed(tmp_path):
    f = tmp_path / "a" / "b.json"
    assert write_if_changed(f, "x")
    assert not write_if_changed(f, "x")
    assert write_if_changed(f, "y")
    assert f.read_text() == "y"
    assert not list(f.parent.glob(".*.tmp")), "no temporary files left behind"


def test_summary_text(demo_cfg, repo_root):
    text = format_summary(_plan(demo_cfg, repo_root))
    assert "nanoalloy" in text and "cnt" in text and "amorphous" in text
    assert "total" in text and "44" in text


def test_spec_holds_what_determines_the_output(demo_cfg, repo_root):
    plan = _plan(demo_cfg, repo_root)
    from hrtemflow.campaign.specs import image_spec, md_spec

    shard = plan.of_family("nanoalloy")[0]
    spec = md_spec(plan.cfg, shard)
    assert spec["structure"]["ordering"] == "core-shell"
    assert spec["potential"]["file"].endswith("AgCo_default.eam.fs")
    assert "imaging" not in json.dumps(spec["md"])
    ispec = image_spec(plan, shard)
    assert ispec["imaging"]["physics"]["energy_kV"] == 200
    assert ispec["md"]["structures"].endswith(f"{shard.name}.extxyz")


def test_regressor_specs_name_their_targets(demo_cfg, repo_root, tmp_path, monkeypatch):
    """What a regressor learns is in its spec (a new target list retrains it); a spec from another
    target list is refused before any shard is opened."""
    import dataclasses

    import pytest

    from hrtemflow.campaign.specs import train_spec
    from hrtemflow.core.errors import HrtemflowError
    from hrtemflow.core.tasks import TASKS

    plan = _plan(demo_cfg, repo_root)
    for task in ("aberrations", "structure"):
        spec = train_spec(plan, task)
        assert spec["targets"] == TASKS[task].target_names
    assert "targets" not in train_spec(plan, "chirality")
    old = train_spec(plan, "aberrations")
    fewer = dataclasses.replace(TASKS["aberrations"], targets=TASKS["aberrations"].targets[:3])
    monkeypatch.setitem(TASKS, "aberrations", fewer)
    assert train_spec(plan, "aberrations")["targets"] != old["targets"]
    with pytest.raises(HrtemflowError, match="rerun `hrtemflow plan`"):
        check_train_spec(old)


def test_spectral_width_enters_only_its_own_spec_and_only_when_not_the_default(demo_cfg, repo_root):
    """Setting a task's spectrum trunk retrains that task alone; spelling out a default retrains nothing."""
    from hrtemflow.campaign.specs import train_spec

    plan = _plan(demo_cfg, repo_root)
    before = {task: train_spec(plan, task) for task in plan.tasks()}
    assert not any("spectral_width" in spec["hyper"] for spec in before.values())

    tasks = demo_cfg["learning"]["tasks"]
    tasks["aberrations"]["spectral_width"] = plan.cfg["learning"]["tasks"]["aberrations"]["width"]  # its default
    tasks["structure"]["spectral_width"] = 0  # its default
    tasks["denoise"]["spectral_width"] = 8  # the denoiser has no spectrum trunk
    spelled = _plan(demo_cfg, repo_root)
    assert {task: train_spec(spelled, task) for task in spelled.tasks()} == before

    tasks["chirality"]["spectral_width"] = 8
    after = {task: train_spec(_plan(demo_cfg, repo_root), task) for task in before}
    assert after["chirality"]["hyper"]["spectral_width"] == 8
    assert [task for task in before if after[task] != before[task]] == ["chirality"]


@pytest.mark.parametrize(
    "option, default, value, task, ignored_by",
    [
        ("precision", "auto", "mixed_bfloat16", "ordering", ()),
        ("stem", "full", "patchify", "structure", ("denoise",)),
        ("shot_noise", "stored", "fresh", "denoise", ()),
    ],
)
def test_option_enters_only_its_own_spec_and_only_when_not_default(
    demo_cfg, repo_root, option, default, value, task, ignored_by
):
    """Training in bfloat16, on a patchify stem or with fresh shot noise retrains that task alone; a config that
    spells out the default retrains nothing, nor does a value for a task that does not use the option."""
    from hrtemflow.campaign.specs import train_spec

    plan = _plan(demo_cfg, repo_root)
    before = {t: train_spec(plan, t) for t in plan.tasks()}
    assert not any(option in spec["hyper"] for spec in before.values())

    tasks = demo_cfg["learning"]["tasks"]
    for t in before:
        tasks[t][option] = value if t in ignored_by else default
    assert {t: train_spec(_plan(demo_cfg, repo_root), t) for t in before} == before

    tasks[task][option] = value
    after = {t: train_spec(_plan(demo_cfg, repo_root), t) for t in before}
    assert after[task]["hyper"][option] == value
    assert [t for t in before if after[t] != before[t]] == [task]


@pytest.mark.parametrize(
    ("option", "default", "value"),
    [
        ("temporal_coherence", "envelope", "defocus_average"),
        ("phase_plate_deg", [0.0, 0.0], [60.0, 90.0]),
    ],
)
def test_physics_options_enter_image_specs_only_when_set(demo_cfg, repo_root, option, default, value):
    """Spelling out the default (the envelope, no phase plate) images nothing again; setting the option
    changes every image spec and no MD spec (so `snakemake` re-images and re-trains, and keeps the MD)."""
    from hrtemflow.campaign.specs import image_spec, md_spec

    plan = _plan(demo_cfg, repo_root)
    before = {s.name: (md_spec(plan.cfg, s), image_spec(plan, s)) for s in plan.shards}
    assert not any(option in spec[1]["imaging"]["optics"] for spec in before.values())

    demo_cfg.setdefault("imaging", {}).setdefault("optics", {})[option] = default
    spelled = _plan(demo_cfg, repo_root)
    assert {s.name: (md_spec(spelled.cfg, s), image_spec(spelled, s)) for s in spelled.shards} == before

    demo_cfg["imaging"]["optics"][option] = value
    after_plan = _plan(demo_cfg, repo_root)
    after = {s.name: (md_spec(after_plan.cfg, s), image_spec(after_plan, s)) for s in after_plan.shards}
    assert all(after[name][0] == before[name][0] for name in before)
    assert all(after[name][1]["imaging"]["optics"][option] == value for name in before)


def test_recorded_pixel_scale_enters_image_specs_only_when_set(demo_cfg, repo_root):
    """detector.recorded_pixel_scale: [1, 1] (none, spelled out) re-images nothing; a range changes every image
    spec's detector and no MD spec."""
    from hrtemflow.campaign.specs import image_spec, md_spec

    def specs(cfg):
        plan = _plan(cfg, repo_root)
        return {s.name: (md_spec(plan.cfg, s), image_spec(plan, s)) for s in plan.shards}

    before = specs(demo_cfg)
    assert not any("recorded_pixel_scale" in spec[1]["imaging"]["detector"] for spec in before.values())
    demo_cfg.setdefault("imaging", {}).setdefault("detector", {})["recorded_pixel_scale"] = [1, 1]
    assert specs(demo_cfg) == before
    demo_cfg["imaging"]["detector"]["recorded_pixel_scale"] = [0.6, 1.8]
    after = specs(demo_cfg)
    assert all(after[name][0] == before[name][0] for name in before)
    assert all(after[name][1]["imaging"]["detector"]["recorded_pixel_scale"] == [0.6, 1.8] for name in before)


def test_a_share_of_cnt_views_on_films_changes_only_the_cnt_image_specs(demo_cfg, repo_root):
    """imaging.families.cnt.support_film: 0.5 gives every CNT image shard one amorphous shard's films; the MD
    specs and the other families' image specs stay as they were."""
    from hrtemflow.campaign.specs import image_spec, md_spec

    demo_cfg["families"]["amorphous"]["structure"]["box_nm"] = [4.0, 4.0, 1.0]  # covers the CNT fields (4 nm)

    def specs(cfg):
        plan = _plan(cfg, repo_root)
        return plan, {s.name: (md_spec(plan.cfg, s), image_spec(plan, s)) for s in plan.shards}

    _, before = specs(demo_cfg)
    demo_cfg["imaging"]["families"]["cnt"]["support_film"] = 0.5
    plan, after = specs(demo_cfg)
    cnt = {s.name for s in plan.of_family("cnt")}
    amorphous = {image_spec(plan, s)["md"]["structures"] for s in plan.of_family("amorphous")}
    assert cnt and all(after[n][0] == before[n][0] for n in before)
    assert all(after[n][1] == before[n][1] for n in before if n not in cnt)
    for name in cnt:
        spec = after[name][1]
        assert spec["imaging"]["physics"]["support_film"] == 0.5 and before[name][1]["support"] is None
        assert len(spec["support"]["structures"]) == 1 and spec["support"]["structures"][0] in amorphous


def test_compact_storage_enters_image_specs_only_when_set(demo_cfg, repo_root):
    """imaging.storage: float32 (the default, spelled out) re-images nothing; compact changes every image
    spec and no MD or train spec."""
    from hrtemflow.campaign.specs import image_spec, md_spec, train_spec

    def specs(cfg):
        plan = _plan(cfg, repo_root)
        return (
            {s.name: (md_spec(plan.cfg, s), image_spec(plan, s)) for s in plan.shards},
            {t: train_spec(plan, t) for t in plan.tasks()},
        )

    before = specs(demo_cfg)
    demo_cfg.setdefault("imaging", {})["storage"] = "float32"
    assert specs(demo_cfg) == before
    demo_cfg["imaging"]["storage"] = "compact"
    after = specs(demo_cfg)
    assert after[1] == before[1]
    assert all(
        after[0][n][0] == before[0][n][0] and after[0][n][1]["imaging"]["storage"] == "compact" for n in before[0]
    )
