"""The independent test generator and its scorer (studies/independent), smallest case, real: tiny
micrographs made with abTEM directly, read back by `hrtemflow predict`'s reader, then scored with the
shared small chirality bundle (`conftest.cnt_bundles`) through the `hrtemflow predict` command line."""

from __future__ import annotations

import ast
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

pytest.importorskip("abtem")

PACKAGE = ROOT / "studies" / "independent"
FORBIDDEN = ("hrtemflow.imaging", "hrtemflow.atomistic", "hrtemflow.store", "hrtemflow.learn")
PIXEL_A = 0.8125  # the shared bundle's: 32 px over 2.6 nm (tests/cnt_bundles.py)
TINY = [
    "tube_length_nm=[4,4]",
    "field_nm=[6,6]",
    "sampling_A=0.2",
    f"pixel_size_A={PIXEL_A}",
    "chiralities=[[8,0],[8,8],[12,12]]",
]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "studies.independent", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_no_pipeline_imaging_code_is_imported():
    """The generator shares no code with the pipeline's imaging: no module of the package imports the
    imaging, atomistic, store or learn stages (the generator imports nothing of hrtemflow at all)."""
    files = sorted(PACKAGE.glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "__main__.py", "generate.py", "score.py"}
    for f in files:
        names = []
        for node in ast.walk(ast.parse(f.read_text(), filename=str(f))):
            if isinstance(node, ast.Import):
                names += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.append(node.module or "")
        bad = [n for n in names if n.startswith(FORBIDDEN)]
        assert not bad, f"{f.name} imports {bad}"
        if f.name == "generate.py":
            assert not [n for n in names if n.startswith("hrtemflow")], names


def test_axis_boxes_step_half_a_window_along_the_tube():
    from studies.independent.score import axis_boxes

    boxes = axis_boxes((10.0, 50.0, 110.0, 50.0), 40.0, 200, 100)  # 100 px of tube, 40 px windows: 20 px from each end
    centres = [((x0 + x1) / 2, (y0 + y1) / 2) for x0, y0, x1, y1 in boxes]
    assert [c[0] for c in centres] == [30.0, 50.0, 70.0, 90.0] and all(c[1] == 50.0 for c in centres)
    assert all(x1 - x0 == 38 and y1 - y0 == 38 for x0, y0, x1, y1 in boxes)  # just under one window
    assert axis_boxes((0.0, 0.0, 10.0, 0.0), 40.0, 64, 64) == [(0, 0, 38, 38)]  # short: one, moved inside


def test_set_metrics_by_hand():
    from studies.independent.score import set_metrics

    classes = ["a", "b", "c"]
    objects = [
        {"file": "1", "truth": "a", "probs": [[0.9, 0.05, 0.05], [0.1, 0.8, 0.1]], "flags": ["", "ood"]},
        {"file": "2", "truth": "b", "probs": [[0.85, 0.1, 0.05], [0.95, 0.0, 0.05]], "flags": ["", "?"]},
        {"file": "3", "truth": "c", "probs": [[0.2, 0.2, 0.6]], "flags": ["vacuum"]},
    ]
    m = set_metrics(objects, classes)
    assert m["image_top1"] == pytest.approx(1 / 3)  # image 3 has no answer: wrong
    assert m["answered"] == pytest.approx(2 / 3) and m["image_top1_answered"] == pytest.approx(0.5)
    assert m["confident_wrong"] == pytest.approx(1 / 3)  # image 2: a at p = 0.9
    assert m["region_top1"] == pytest.approx(1 / 3)  # 3 unflagged regions, one right
    assert m["ood_flag_rate"] == pytest.approx(1 / 5) and m["vacuum_rate"] == pytest.approx(1 / 5)
    assert m["confusions"] == [{"true": "b", "predicted": "a", "count": 1}]
    lo, hi = m["image_top1_ci95"]
    assert 0 <= lo <= m["image_top1"] <= hi <= 1


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """Two ideal micrographs and one with every factor, through the package's command line."""
    out = tmp_path_factory.mktemp("independent")
    params = [a for p in TINY for a in ("--param", p)]
    for name, n in (("H0_ideal", "2"), ("all_factors", "1")):
        res = _cli("--generate-only", "--sets", name, "--n", n, "--out", str(out), *params)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return out


def test_generated_micrographs_read_back_calibrated(sets):
    from studies.independent.generate import LABEL_COLUMNS, read_labels

    from hrtemflow.apply.readers import read_micrograph

    for name, n in (("H0_ideal", 2), ("all_factors", 1)):
        rows = read_labels(sets / "sets" / name / "labels.csv")
        assert len(rows) == n and list(rows[0]) == list(LABEL_COLUMNS)
        for r in rows:
            mic = read_micrograph(sets / "sets" / name / r["file"])[0]
            assert mic.pixel_size_A == pytest.approx(10 * float(r["pixel_size_nm"]), rel=1e-6)
            assert mic.data.shape == (int(r["height_px"]), int(r["width_px"]))
            assert r["chirality"] in ("8-0", "8-8", "12-12") and r["label"] == r["chirality"]
            x0, y0, x1, y1 = (float(r[k]) for k in ("x0", "y0", "x1", "y1"))
            assert all(0 < v < mic.data.shape[1] for v in (x0, x1)) and all(0 < v < mic.data.shape[0] for v in (y0, y1))
            projected = math.hypot(x1 - x0, y1 - y0) * float(r["pixel_size_nm"])
            tilt = math.radians(float(r["tilt_deg"]))
            assert projected == pytest.approx(float(r["tube_length_nm"]) * math.cos(tilt), rel=1e-3)
            assert 3 <= float(r["defocus_nm"]) <= 20 and 1000 <= float(r["dose"]) <= 5000
            vacuum = float(r["dose"]) * (10 * float(r["pixel_size_nm"])) ** 2  # mean counts on vacuum
            assert 0.8 * vacuum < float(np.median(mic.data)) < 1.25 * vacuum + 25
            if name == "H0_ideal":
                assert float(r["pixel_size_nm"]) == pytest.approx(PIXEL_A / 10)
                assert r["parametrization"] == "lobato" and r["frozen_phonons"] == "0" and r["support_atoms"] == "0"
            else:
                assert r["parametrization"] == "kirkland" and int(r["frozen_phonons"]) == 4
                assert int(r["support_atoms"]) > 0 and float(r["drift_A"]) > 0 and float(r["gain_sigma"]) > 0
                assert 0.6 * PIXEL_A <= 10 * float(r["pixel_size_nm"]) <= 1.8 * PIXEL_A


def test_score_through_predict(sets, cnt_bundles):
    """The scorer runs `hrtemflow predict` on every micrograph with boxes along the tube, and its table
    holds each set with figures that follow from what predict wrote."""
    bundle = cnt_bundles["models"]["chirality"]
    card = json.loads((bundle / "card.json").read_text())
    assert card["pixel_size_A"] == pytest.approx(PIXEL_A) and sorted(card["classes"]) == ["12-12", "8-0", "8-8"]
    res = _cli("--score-only", "--bundle", str(bundle), "--sets", "H0_ideal", "all_factors", "--out", str(sets))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    table = json.loads((sets / "factor_table.json").read_text())
    assert [r["set"] for r in table["sets"]] == ["H0_ideal", "all_factors"]
    assert [r["n_images"] for r in table["sets"]] == [2, 1]
    md = (sets / "factor_table.md").read_text()
    assert "| H0_ideal | 2 |" in md and "| all_factors | 1 |" in md

    from studies.independent.generate import read_labels

    ideal = table["sets"][0]
    rows = read_labels(sets / "sets" / "H0_ideal" / "labels.csv")
    right = []
    for row, per in zip(rows, ideal["per_image"]):
        stem = row["file"].rsplit(".", 1)[0]
        pred = json.loads((sets / "predictions" / "H0_ideal" / stem / "predictions.json").read_text())
        regions = pred["regions"]
        assert len(regions) == per["regions"] >= 1
        ends = np.array([float(row[k]) for k in ("x0", "y0", "x1", "y1")]).reshape(2, 2)
        axis = (ends[1] - ends[0]) / np.linalg.norm(ends[1] - ends[0])
        for reg in regions:  # every box centred on the tube's axis
            x0, y0, x1, y1 = reg["box_xyxy"]
            rel = np.array([(x0 + x1) / 2, (y0 + y1) / 2]) - ends[0]
            assert abs(rel[0] * axis[1] - rel[1] * axis[0]) < 1.0
        kept = [r["chirality"] for r in regions if r["chirality"]["ood"] not in ("ood", "vacuum")]
        if kept:  # the image's answer: the mean of its unflagged windows' probabilities
            mean = {c: np.mean([k["probabilities"][c] for k in kept]) for c in card["classes"]}
            assert per["answer"] == max(mean, key=mean.get)
            assert per["probability"] == pytest.approx(max(mean.values()), abs=1e-9)
        else:
            assert per["answer"] is None
        right.append(per["answer"] == row["label"])
    assert ideal["image_top1"] == pytest.approx(np.mean(right))
    assert 0 <= ideal["confident_wrong"] <= 1 - ideal["image_top1"] + 1e-12
