"""A diameter range of CNT chiralities (families.cnt.chiralities_in_range_nm, issue 30): the validated config
writes it out as the explicit list, so every reader and every spec is that of the list; its errors name the
key and the fix; `hrtemflow plan --summary` lists the classes it made."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys

import pytest
import yaml

from hrtemflow.campaign.config import MAX_RANGE_TUBES, load_config
from hrtemflow.campaign.plan import class_rows, format_summary, make_plan
from hrtemflow.campaign.specs import spec_texts, task_classes
from hrtemflow.core.errors import ConfigError

RANGE = "chiralities_in_range_nm"

#: config/bench-chirality-all.yaml's list as its run was planned with it (before it became a range), by hand
BENCH_LIST = [
    [6, 6], [7, 5], [10, 1], [8, 4], [9, 3], [11, 0], [10, 2], [7, 6], [8, 5], [11, 1], [9, 4], [10, 3], [12, 0],
    [11, 2], [7, 7], [8, 6], [9, 5], [10, 4], [12, 1], [11, 3], [13, 0], [8, 7], [9, 6], [12, 2], [10, 5], [11, 4],
    [13, 1], [12, 3], [8, 8], [9, 7], [14, 0], [10, 6], [13, 2], [11, 5], [12, 4], [14, 1], [13, 3], [9, 8], [10, 7],
    [11, 6], [15, 0], [14, 2], [12, 5], [13, 4], [15, 1], [9, 9], [10, 8], [14, 3], [11, 7], [12, 6], [16, 0], [15, 2],
    [13, 5], [14, 4], [10, 9], [16, 1], [11, 8], [12, 7], [15, 3], [13, 6], [17, 0], [14, 5], [16, 2], [10, 10],
    [15, 4], [11, 9], [12, 8], [17, 1], [13, 7], [16, 3], [14, 6],
]  # fmt: skip


def _diameter_nm(n: int, m: int) -> float:
    """Written out here, not imported: d = a sqrt(n^2 + nm + m^2) / pi, a = sqrt(3) * 1.42 Å."""
    return math.sqrt(3) * 0.142 * math.sqrt(n * n + n * m + m * m) / math.pi


def _angle_deg(n: int, m: int) -> float:
    return math.degrees(math.atan2(math.sqrt(3) * m, 2 * n + m))


def _with_range(cfg: dict, span, **cnt) -> dict:
    """`cfg` with its chirality list replaced by a diameter range (and any other CNT keys given)."""
    cfg = copy.deepcopy(cfg)
    fam = cfg["families"]["cnt"]
    fam.pop("chiralities", None)
    fam[RANGE] = span
    fam.update(cnt)
    return cfg


def _problems(cfg: dict, base) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(cfg, base=base)
    return str(err.value)


def test_a_range_is_every_tube_of_its_diameters_by_diameter_then_angle(demo_cfg, repo_root):
    cfg = load_config(_with_range(demo_cfg, [0.8, 1.4]), base=repo_root)
    tubes = cfg["families"]["cnt"]["chiralities"]
    expected = {(n, m) for n in range(1, 30) for m in range(n + 1) if 0.8 <= _diameter_nm(n, m) <= 1.4}
    assert len(tubes) == len(expected) == 71
    assert {tuple(t) for t in tubes} == expected and all(isinstance(t, list) for t in tubes)
    keys = [(round(_diameter_nm(*t), 9), _angle_deg(*t)) for t in tubes]
    assert keys == sorted(keys)
    # equal diameters, different chiral angles: different tubes, different classes
    assert [7, 7] in tubes and [11, 2] in tubes
    assert math.isclose(_diameter_nm(7, 7), _diameter_nm(11, 2), rel_tol=1e-3)
    classes = task_classes(cfg, "chirality")
    assert len(classes) == len(set(classes)) == 71 and {"7-7", "11-2"} <= set(classes)
    assert len({g.name for g in (s.group for s in make_plan(cfg).of_family("cnt"))}) == 71


def test_a_range_is_its_list_written_out(demo_cfg, repo_root):
    """The validated configs differ only by the range key itself; the specs are the same bytes."""
    ranged = load_config(_with_range(demo_cfg, [0.8, 1.0]), base=repo_root)
    listed_raw = copy.deepcopy(demo_cfg)
    listed_raw["families"]["cnt"]["chiralities"] = copy.deepcopy(ranged["families"]["cnt"]["chiralities"])
    listed = load_config(listed_raw, base=repo_root)
    assert ranged["families"]["cnt"].pop(RANGE) == [0.8, 1.0] and RANGE not in listed["families"]["cnt"]
    assert ranged == listed
    assert spec_texts(make_plan(ranged)) == spec_texts(make_plan(listed))


def test_a_validated_range_config_validates_again_unchanged(demo_cfg, repo_root):
    cfg = load_config(_with_range(demo_cfg, [0.8, 1.4]), base=repo_root)
    assert load_config(copy.deepcopy(cfg), base=repo_root) == cfg


def test_bench_chirality_all_is_the_list_its_run_was_planned_with(repo_root, monkeypatch):
    """In memory only (its results folder belongs to a run): the range in config/bench-chirality-all.yaml
    validates to the 71 tubes it listed before, in the same order, and makes the very same specs."""
    monkeypatch.chdir(repo_root)
    raw = yaml.safe_load((repo_root / "config" / "bench-chirality-all.yaml").read_text())
    assert raw["families"]["cnt"][RANGE] == [0.8, 1.4] and "chiralities" not in raw["families"]["cnt"]
    listed_raw = copy.deepcopy(raw)
    del listed_raw["families"]["cnt"][RANGE]
    listed_raw["families"]["cnt"]["chiralities"] = copy.deepcopy(BENCH_LIST)
    ranged, listed = load_config(raw), load_config(listed_raw)
    assert ranged["families"]["cnt"]["chiralities"] == BENCH_LIST
    assert task_classes(ranged, "chirality") == [f"{n}-{m}" for n, m in BENCH_LIST]
    ranged["families"]["cnt"].pop(RANGE)
    assert ranged == listed
    texts = spec_texts(make_plan(ranged))
    assert len(texts) == 285 and texts == spec_texts(make_plan(listed))


@pytest.mark.parametrize(
    ("cnt", "message"),
    [
        (
            {RANGE: [0.8, 1.4], "chiralities": [[10, 0], [8, 4]]},
            "families.cnt: both chiralities and chiralities_in_range_nm are given; remove one (chiralities to make "
            "every tube in the range, chiralities_in_range_nm to make only the listed tubes)",
        ),
        (  # the schema's default list, but written by the user: still both
            {RANGE: [0.8, 1.4], "chiralities": [[10, 0], [8, 4], [7, 5], [9, 3]]},
            "families.cnt: both chiralities and chiralities_in_range_nm are given; remove one",
        ),
        (
            {RANGE: [1.4, 0.8]},
            "families.cnt.chiralities_in_range_nm: range [1.4, 0.8] is reversed; write it as [min, max]",
        ),
        (
            {RANGE: [0.85, 0.855]},
            "families.cnt.chiralities_in_range_nm: no tube (n, m) has a diameter in [0.85, 0.855] nm; widen it "
            "(nearest: (9,3) at 0.847 nm and (11,0) at 0.861 nm)",
        ),
        (
            {RANGE: [0.0, 4.5]},
            f"families.cnt.chiralities_in_range_nm: [0.0, 4.5] nm holds 1,045 tubes, more than the {MAX_RANGE_TUBES} "
            "classes a range may make; narrow the range or list the tubes in families.cnt.chiralities",
        ),
        (
            {RANGE: [0.8, float("nan")]},
            "families.cnt.chiralities_in_range_nm[1]: nan is not a finite number (NaN and infinity are refused)",
        ),
        (
            {RANGE: [float("-inf"), 1.4]},
            "families.cnt.chiralities_in_range_nm[0]: -inf is not a finite number (NaN and infinity are refused)",
        ),
        ({RANGE: [0.8, 5.0]}, "families.cnt.chiralities_in_range_nm[1]: 5.0 is greater than the maximum of 4.5"),
        ({RANGE: [0.8]}, "families.cnt.chiralities_in_range_nm: [0.8] is too short"),
        ({RANGE: ["0.8", 1.4]}, "families.cnt.chiralities_in_range_nm[0]: '0.8' is not of type 'number'"),
        (  # one tube is one class
            {RANGE: [0.81, 0.815]},
            "learning.tasks.chirality: a classifier needs at least 2 classes in families.cnt.chiralities, got ['6-6']",
        ),
    ],
)
def test_range_errors_name_the_key_and_the_fix(demo_cfg, repo_root, cnt, message):
    cfg = copy.deepcopy(demo_cfg)
    cfg["families"]["cnt"].pop("chiralities")
    cfg["families"]["cnt"].update(cnt)
    text = _problems(cfg, repo_root)
    assert message in text, text


def test_range_errors_are_listed_with_the_others(demo_cfg, repo_root):
    cfg = _with_range(demo_cfg, [0.85, 0.855])
    cfg["learning"]["image_size"] = 48
    text = _problems(cfg, repo_root)
    assert "(2 problems)" in text
    assert "families.cnt.chiralities_in_range_nm: no tube" in text and "learning.image_size: 48 px" in text


def test_the_range_counts_toward_max_samples(demo_cfg, repo_root):
    cfg = _with_range(demo_cfg, [0.8, 1.4], samples_per_chirality=100)
    cfg["campaign"]["max_samples"] = 7000
    assert "cnt 7,100" in _problems(cfg, repo_root)
    cfg["campaign"]["max_samples"] = 7100 + 24 + 4
    assert len(load_config(cfg, base=repo_root)["families"]["cnt"]["chiralities"]) == 71


def test_summary_lists_each_classifiers_classes_and_says_a_range_made_them(demo_cfg, repo_root):
    plan = make_plan(load_config(_with_range(demo_cfg, [0.8, 1.4]), base=repo_root))
    text = format_summary(plan)
    assert (
        "chirality classes (71, from families.cnt.chiralities_in_range_nm = [0.8, 1.4] nm; tube diameter at a C-C "
        "bond of 1.42 Å, chiral angle):" in text
    )
    assert "ordering classes (3, from families.nanoalloy.orderings):\n  core-shell, janus, disordered" in text
    for item in ("6-6 (0.81 nm, 30.0°)", "7-5 (0.82 nm, 24.5°)", "7-7 (0.95 nm, 30.0°)", "11-2 (0.95 nm, 8.2°)"):
        assert item in text
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("chirality classes"))
    listed = [item for line in lines[head + 1 : head + 20] if line.startswith("  ") for item in line.split("), ")]
    assert len(listed) == 71 and all(len(line) <= 100 for line in lines[head + 1 : head + 20])
    explicit = format_summary(make_plan(load_config(demo_cfg, base=repo_root)))
    assert "chirality classes (4, from families.cnt.chiralities; tube" in explicit and RANGE not in explicit


def test_plan_json_lists_the_classes_with_their_geometry(demo_cfg, repo_root, tmp_path):
    path = tmp_path / "range.yaml"
    path.write_text(yaml.safe_dump(_with_range(demo_cfg, [0.8, 1.4])))
    res = subprocess.run(
        [sys.executable, "-m", "hrtemflow.cli", "plan", "--json", "--dry", str(path), "--base", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    rows = {r["task"]: r for r in json.loads(res.stdout)["classes"]}
    chirality = rows["chirality"]
    assert chirality["from"] == "families.cnt.chiralities_in_range_nm" and chirality["range_nm"] == [0.8, 1.4]
    assert [c["name"] for c in chirality["classes"]][:3] == ["6-6", "7-5", "10-1"]
    for c in chirality["classes"]:
        n, m = map(int, c["name"].split("-"))
        assert c["diameter_nm"] == pytest.approx(_diameter_nm(n, m), abs=1e-4)
        assert c["chiral_angle_deg"] == pytest.approx(_angle_deg(n, m), abs=0.01)
    assert rows["ordering"] == {
        "task": "ordering",
        "from": "families.nanoalloy.orderings",
        "range_nm": None,
        "classes": [{"name": "core-shell"}, {"name": "janus"}, {"name": "disordered"}],
    }
    assert class_rows(make_plan(load_config(demo_cfg, base=repo_root)))[0]["range_nm"] is None
