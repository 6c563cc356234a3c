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
    # images 1 (a at 0.9, right) and 2 (a at 0.9, wrong) share one bin: |0.5 - 0.9|
    assert m["ece_image"] == pytest.approx(0.4)
    assert m["ece_image_check"]["n"] == 2 and m["ece_image_check"]["ece"] == pytest.approx(0.4)
    lo, hi = m["image_top1_ci95"]
    assert 0 <= lo <= m["image_top1"] <= hi <= 1


def test_set_metrics_take_predicts_tube_answer():
    """Where predict answered the tube, that is the image's answer (a flagged tube has none); the windows'
    mean is kept beside it."""
    from studies.independent.score import set_metrics

    classes = ["a", "b"]
    windows = {"probs": [[0.6, 0.4], [0.3, 0.7]], "flags": ["", ""]}  # mean: b at 0.55
    objects = [
        {"file": "1", "truth": "a", **windows, "tube": {"probabilities": [0.9, 0.1], "ood": ""}},
        {"file": "2", "truth": "a", **windows, "tube": {"probabilities": [0.9, 0.1], "ood": "ood"}},
        {"file": "3", "truth": "b", **windows, "tube": {"probabilities": [0.9, 0.1], "ood": "calibration"}},
    ]
    m = set_metrics(objects, classes)
    assert m["image_top1"] == pytest.approx(1 / 3) and m["answered"] == pytest.approx(1 / 3)
    assert m["image_top1_window_mean"] == pytest.approx(1 / 3)
    assert m["per_image"][0]["probability"] == pytest.approx(0.9)
    assert m["per_image"][1]["answer"] is None and m["per_image"][2]["answer"] is None
    assert m["confident_wrong"] == 0.0  # the tube whose lattice disagrees with the pixel size: no answer
    assert m["ece_image"] == pytest.approx(0.1) and m["ece_image_window_mean"] == pytest.approx(0.55 - 1 / 3)


def test_a_prediction_is_stale_after_a_new_tube_calibration(tmp_path):
    """Predictions made before `hrtemflow fit-tubes` wrote the bundle's calibration, or before the evaluation
    wrote the bundle's OOD statistics and window temperature, are made again."""
    import os

    from studies.independent.score import _fresh

    bundle = tmp_path / "models" / "chirality"
    bundle.mkdir(parents=True)
    card = {"task": "chirality", "dataset_sha256": "d"}
    tif, regions, pred = tmp_path / "m.tif", tmp_path / "m.csv", tmp_path / "predictions.json"
    for f in (tif, regions):
        f.write_text("x")
    doc = {"bundles": {"chirality": {"dataset_sha256": "d", "path": str(bundle)}}, "tubes_from": "user (--tube)"}
    pred.write_text(json.dumps(doc))
    assert _fresh(pred, card, bundle, tif, regions, True)
    pred.write_text(json.dumps({**doc, "tubes": [{"tube": "u01", "chirality": {"windows": 3, "ood": ""}}]}))
    assert not _fresh(pred, card, bundle, tif, regions, True)  # made before predict read the tubes' lattice
    pred.write_text(json.dumps({**doc, "tubes": [{"tube": "u01", "chirality": {"windows": 3, "lattice": {}}}]}))
    assert _fresh(pred, card, bundle, tif, regions, True)
    cal = bundle / "tube_calibration.json"
    cal.write_text("{}")
    later = pred.stat().st_mtime + 5
    os.utime(cal, (later, later))
    assert not _fresh(pred, card, bundle, tif, regions, True) and not _fresh(pred, card, bundle, tif, regions, False)
    pred.write_text(json.dumps({**doc, "tubes_from": "found automatically"}))
    os.utime(pred, (later + 1, later + 1))
    assert _fresh(pred, card, bundle, tif, regions, False) and not _fresh(pred, card, bundle, tif, regions, True)
    for i, newer in enumerate((bundle / "ood.npz", tmp_path / "reports" / "chirality" / "metrics.json")):
        newer.parent.mkdir(parents=True, exist_ok=True)  # what the evaluate step writes after the model
        newer.write_text("{}")
        os.utime(newer, (later + 2 + 2 * i, later + 2 + 2 * i))
        assert not _fresh(pred, card, bundle, tif, regions, False)
        os.utime(pred, (later + 3 + 2 * i, later + 3 + 2 * i))
        assert _fresh(pred, card, bundle, tif, regions, False)


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


def test_a_calibration_set_redeclares_the_same_pixels(sets):
    """calibration_up is H0's micrographs with the declared pixel size 2.85 % larger and nothing else; a
    derived set asking for more micrographs than its source has is refused with what to generate."""
    from studies.independent.generate import read_labels

    from hrtemflow.apply.readers import read_micrograph

    params = [a for p in TINY for a in ("--param", p)]
    res = _cli("--generate-only", "--sets", "calibration_up", "--n", "2", "--out", str(sets), *params)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    src = read_labels(sets / "sets" / "H0_ideal" / "labels.csv")
    got = read_labels(sets / "sets" / "calibration_up" / "labels.csv")
    for a, b in zip(src, got):
        assert float(b["pixel_size_nm"]) == pytest.approx(1.0285 * float(a["pixel_size_nm"]), rel=1e-9)
        assert float(b["declared_pixel_scale"]) == 1.0285 and float(a["declared_pixel_scale"]) == 1.0
        assert {k: v for k, v in a.items() if k not in ("pixel_size_nm", "declared_pixel_scale")} == {
            k: v for k, v in b.items() if k not in ("pixel_size_nm", "declared_pixel_scale")
        }
        ma = read_micrograph(sets / "sets" / "H0_ideal" / a["file"])[0]
        mb = read_micrograph(sets / "sets" / "calibration_up" / b["file"])[0]
        assert np.array_equal(ma.data, mb.data)
        assert mb.pixel_size_A == pytest.approx(10 * float(b["pixel_size_nm"]), rel=1e-6)
    res = _cli("--generate-only", "--sets", "calibration_down", "--n", "3", "--out", str(sets), *params)
    assert res.returncode != 0 and "generate H0_ideal with at least as many micrographs first" in res.stderr


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
    right, right_mean = [], []
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
        # the image's answer: predict's own answer on the tube given by its labelled end points
        assert pred["tubes_from"] == "user (--tube)" and len(pred["tubes"]) == 1
        tube = pred["tubes"][0]
        assert np.allclose(np.array(tube["polyline_xy"]), ends, atol=0.01)
        res_t = tube["chirality"]
        if res_t["ood"] in ("ood", "vacuum"):
            assert per["answer"] is None
        else:
            probs = res_t["probabilities"]
            assert per["answer"] == max(probs, key=probs.get)
            assert per["probability"] == pytest.approx(max(probs.values()), abs=1e-9)
            assert res_t["pool"] == "mean" and res_t["exponent"] == 1.0  # no tube_calibration.json in the bundle
        right.append(per["answer"] == row["label"])
        kept = [r["chirality"] for r in regions if r["chirality"]["ood"] not in ("ood", "vacuum")]
        mean = {c: np.mean([k["probabilities"][c] for k in kept]) for c in card["classes"]} if kept else {}
        right_mean.append(bool(mean) and max(mean, key=mean.get) == row["label"])
    assert ideal["image_top1"] == pytest.approx(np.mean(right))
    assert ideal["image_top1_window_mean"] == pytest.approx(np.mean(right_mean))
    assert "predict's answer on the tube" in md and ideal["image_answer"].startswith("predict's tube answer")
    assert 0 <= ideal["confident_wrong"] <= 1 - ideal["image_top1"] + 1e-12
    # a second run predicts nothing again: the regions are rewritten only when they change
    pred = sets / "predictions" / "H0_ideal" / rows[0]["file"].rsplit(".", 1)[0] / "predictions.json"
    before = pred.stat().st_mtime_ns
    res = _cli("--score-only", "--bundle", str(bundle), "--sets", "H0_ideal", "--out", str(sets))
    assert res.returncode == 0 and "predict: 0 micrograph(s)" in res.stdout, res.stdout[-2000:] + res.stderr[-3000:]
    assert pred.stat().st_mtime_ns == before


# ------------------------------------------------------------------------------------------ nanoalloy

NA_TINY = [
    "sampling_A=0.2",
    f"pixel_size_A={PIXEL_A}",
    "field_nm=[3.5,3.5]",
    "n_atoms=[40,80]",
    "centre_margin_nm=1.3",
]


def _particle(motif: str, ordering: str, seed: int, target: int = 300, x: float = 0.4):
    """One particle built by the generator (no imaging): positions, atomic numbers, what was built."""
    from studies.independent.generate import alloy_particle

    d = {"motif": motif, "ordering": ordering, "n_atoms_target": target, "co_fraction": x}
    return alloy_particle(d, np.random.default_rng(seed))


@pytest.mark.parametrize("motif", ["icosahedron", "decahedron", "truncated_octahedron", "fcc_sphere"])
def test_particle_chemistry_is_the_ordering_it_is_labelled(motif):
    """Core-shell: every Co nearer the centre than every Ag; Janus: one plane (normal to the recorded axis)
    has all Co on one side, all Ag on the other; disordered: Co spread through the particle, neither in the
    core nor on one side. The Co count is the drawn fraction of the atoms built."""
    for seed in range(3):
        pos, z, built = _particle(motif, "core-shell", seed)
        r = np.linalg.norm(pos - pos.mean(axis=0), axis=1)
        assert set(np.unique(z)) == {27, 47} and built["n_atoms"] == len(pos)
        assert built["n_co"] == (z == 27).sum() == round(0.4 * len(pos)) and built["n_ag"] == (z == 47).sum()
        assert r[z == 27].max() <= r[z == 47].min() + 1e-6

        pos, z, built = _particle(motif, "janus", seed)
        axis = np.asarray(built["axis"])
        assert abs(np.linalg.norm(axis) - 1) < 1e-9
        along = pos @ axis
        assert along[z == 27].min() >= along[z == 47].max() - 1e-6

        pos, z, built = _particle(motif, "disordered", seed)
        assert built["axis"] is None
        r = np.linalg.norm(pos - pos.mean(axis=0), axis=1)
        outer = r > np.median(r)
        assert abs((z[outer] == 27).mean() - (z[~outer] == 27).mean()) < 0.2  # no core, no shell
        offset = np.linalg.norm(pos[z == 27].mean(axis=0) - pos[z == 47].mean(axis=0))
        assert offset < 0.25 * r.max()  # no Janus split: the two metals' centres nearly coincide


def test_particle_labels_agree_with_the_pipelines_own_measure():
    """The class the ordering bundle was trained on is measured on each structure by
    hrtemflow.atomistic.analysis, not copied from the intent: it gives every generated particle, at the
    negative-Cs bench's sizes and compositions, the ordering the generator labels it with."""
    from ase import Atoms
    from studies.independent.generate import alloy_particle, draw_particle, load_factors, resolve_set

    from hrtemflow.atomistic.analysis import nanoalloy_labels

    p = resolve_set(load_factors(), "NA0_ideal", overrides={"pixel_size_A": PIXEL_A})
    assert p["n_atoms"] == [150, 600] and p["co_fraction"] == [0.2, 0.6] and p["energy_kV"] == 200
    seen = set()
    for i in range(30):
        rng = np.random.default_rng(i)
        d = draw_particle(p, rng)
        pos, z, built = alloy_particle(d, rng)
        assert 100 <= built["n_atoms"] <= 700
        measured = nanoalloy_labels(Atoms(numbers=z, positions=pos + 30, cell=[60, 60, 60]))
        assert measured["ordering"] == d["ordering"], (i, d, measured)
        seen.add((d["ordering"], d["motif"]))
    assert {o for o, _ in seen} == {"core-shell", "janus", "disordered"} and len({m for _, m in seen}) == 3


def test_motif_sizes_are_nearest_the_drawn_count():
    from studies.independent.generate import particle_sites

    rng = np.random.default_rng(0)
    assert len(particle_sites("icosahedron", 300, 4.0, rng)[0]) == 309  # 147, 309, 561: nearest 300
    assert len(particle_sites("icosahedron", 228, 4.0, rng)[0]) == 147  # a tie goes to the smaller
    assert len(particle_sites("fcc_sphere", 333, 4.0, rng)[0]) == 333  # a ball has exactly the count
    for motif in ("decahedron", "truncated_octahedron"):
        n = len(particle_sites(motif, 400, 4.0, rng)[0])
        assert abs(n - 400) < 60, (motif, n)


def test_particle_geometry_in_the_written_image(tmp_path):
    """A particle micrograph without film or noise (1e6 e-/Å²): its TIFF reads back at the right pixel size;
    the label's centre and radius are where the scene's metal atoms project (every atom within the radius,
    one on it); and the image's contrast is there: centred on the label within 1.5 px (x = column,
    y = row), and over ten times stronger inside the circle than 0.5 nm outside it."""
    from studies.independent import generate as g

    from hrtemflow.apply.readers import read_micrograph

    over = {
        "pixel_size_A": 0.625,
        "sampling_A": 0.2,
        "field_nm": [4, 4],
        "n_atoms": [40, 80],
        "centre_margin_nm": 1.0,
        "support_film": None,
        "dose_e_per_A2": [1e6, 1e6],
    }
    p = g.resolve_set(g.load_factors(), "NA0_ideal", overrides=over)
    for index in (0, 5):
        row = g.make_micrograph(p, index, tmp_path, seed=29)[0]
        mic = read_micrograph(tmp_path / row["file"])[0]
        assert mic.pixel_size_A == pytest.approx(0.625, rel=1e-6) and mic.data.shape == (64, 64)
        assert row["support_atoms"] == 0 and row["n_ag"] + row["n_co"] == row["n_atoms"]

        rng = np.random.default_rng(g.micrograph_seed(29, "NA0_ideal", index))  # the same scene, rebuilt
        scene = g.BUILDERS["nanoalloy"](g.draw(p, rng), rng)
        metal = scene.positions[np.isin(scene.numbers, (27, 47))]
        px = (metal[:, :2] + 0.5 * scene.field_A / row["grid"]) / 0.625
        cx, cy, radius = row["cx"], row["cy"], row["radius_px"]
        assert len(metal) == row["n_atoms"] and px.mean(axis=0) == pytest.approx([cx, cy], abs=0.01)
        assert np.hypot(*(px - [cx, cy]).T).max() == pytest.approx(radius, abs=0.01)

        img = mic.data.astype(np.float64)
        dev = np.abs(img / np.median(img) - 1.0)
        yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]] + 0.5
        w = dev**2
        assert abs(cx - cy) > 3  # a transposed image would put the contrast elsewhere
        assert (w * xx).sum() / w.sum() == pytest.approx(cx, abs=1.5)
        assert (w * yy).sum() / w.sum() == pytest.approx(cy, abs=1.5)
        dist = np.hypot(xx - cx, yy - cy)
        assert dev[dist <= radius].mean() > 10 * dev[dist > radius + 0.5 * 10 / 0.625].mean()


def test_particle_box():
    from studies.independent.score import object_boxes, particle_box

    assert particle_box(50.3, 20.7, 10.0, 2.0, 100, 80) == (38, 8, 63, 33)  # [cx - 12, cx + 12) in whole pixels
    assert particle_box(3.0, 77.0, 10.0, 0.0, 100, 80) == (0, 67, 13, 80)  # cut to the image
    with pytest.raises(ValueError, match="particle at"):
        particle_box(120.0, 20.0, 10.0, 2.0, 100, 80)
    row = {"family": "nanoalloy", "cx": "40.5", "cy": "30.25", "radius_px": "8", "pixel_size_nm": "0.075"}
    row |= {"width_px": "90", "height_px": "70"}
    (box,) = object_boxes(row, {"input_size": 64, "pixel_size_A": 0.75})
    assert box == (30, 20, 51, 41)  # radius 8 px + 1.5 Å (2 px) of atom round the centre
    tube = {"family": "cnt", "x0": "10", "y0": "50", "x1": "110", "y1": "50", "pixel_size_nm": "0.075"}
    tube |= {"width_px": "200", "height_px": "100"}
    assert len(object_boxes(tube, {"input_size": 40, "pixel_size_A": 0.75})) == 4  # tubes: along the axis


def test_nanoalloy_sets_refuse_what_they_cannot_make():
    from studies.independent.__main__ import pick_sets
    from studies.independent.generate import load_factors, resolve_set

    factors = load_factors()
    chirality = {"task": "chirality", "classes": ["8-0"], "pixel_size_A": 0.8}
    ordering = {"task": "ordering", "classes": ["core-shell", "janus"], "pixel_size_A": 0.625}
    na = pick_sets(factors, ["all"], ordering)
    assert na[0] == "NA0_ideal" and "na_all_factors" in na and "H0_ideal" not in na
    assert "NA0_ideal" not in pick_sets(factors, ["all"], chirality) and pick_sets(factors, ["nanoalloy"], None) == na
    assert resolve_set(factors, "NA0_ideal", ordering)["orderings"] == ["core-shell", "janus"]
    with pytest.raises(SystemExit, match="reads cnt"):
        resolve_set(factors, "NA0_ideal", chirality)
    with pytest.raises(SystemExit, match="orderings"):
        resolve_set(factors, "NA0_ideal", overrides={"pixel_size_A": 0.6, "orderings": ["alloyed"]})
    with pytest.raises(SystemExit, match="n_atoms"):
        resolve_set(factors, "NA0_ideal", overrides={"pixel_size_A": 0.6, "n_atoms": [600, 150]})
    with pytest.raises(SystemExit, match="unknown set"):
        pick_sets(factors, ["NA1"], None)


@pytest.fixture(scope="module")
def particle_sets(tmp_path_factory):
    """Two ideal particle micrographs and one with every factor, through the package's command line."""
    out = tmp_path_factory.mktemp("independent_na")
    params = [a for p in NA_TINY for a in ("--param", p)]
    for name, n in (("NA0_ideal", "2"), ("na_all_factors", "1"), ("na_relaxed", "1")):
        res = _cli("--generate-only", "--sets", name, "--n", n, "--out", str(out), *params)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return out


def test_particle_micrographs_read_back_calibrated(particle_sets):
    from studies.independent.generate import PARTICLE_COLUMNS, read_labels

    from hrtemflow.apply.readers import read_micrograph

    for name, n in (("NA0_ideal", 2), ("na_all_factors", 1), ("na_relaxed", 1)):
        rows = read_labels(particle_sets / "sets" / name / "labels.csv")
        assert len(rows) == n and list(rows[0]) == list(PARTICLE_COLUMNS)
        for r in rows:
            mic = read_micrograph(particle_sets / "sets" / name / r["file"])[0]
            assert mic.pixel_size_A == pytest.approx(10 * float(r["pixel_size_nm"]), rel=1e-6)
            assert mic.data.shape == (int(r["height_px"]), int(r["width_px"]))
            assert r["family"] == "nanoalloy" and r["label"] == r["ordering"] in ("core-shell", "janus", "disordered")
            assert int(r["n_ag"]) + int(r["n_co"]) == int(r["n_atoms"])
            assert 0.15 <= float(r["co_fraction"]) <= 0.65 and (r["janus_axis"] != "") == (r["ordering"] == "janus")
            cx, cy, radius = float(r["cx"]), float(r["cy"]), float(r["radius_px"])
            assert radius < cx < mic.data.shape[1] - radius and radius < cy < mic.data.shape[0] - radius
            assert -9 <= float(r["defocus_nm"]) <= -5 and -20 <= float(r["cs_um"]) <= -10  # negative-Cs bench
            assert 1000 <= float(r["dose"]) <= 10000 and float(r["energy_kV"]) == 200
            assert int(r["support_atoms"]) > 0 and 0.6 <= float(r["support_nm"]) <= 5.0  # on a film
            if name == "na_all_factors":
                assert int(r["ligand_atoms"]) > 0 and r["parametrization"] == "kirkland"
                assert int(r["frozen_phonons"]) == 4 and float(r["gain_sigma"]) > 0
            assert (int(r["relax_steps"]) > 0) == (name != "NA0_ideal")  # every set but NA0 minimised before imaging
    ideal, relaxed = (read_labels(particle_sets / "sets" / n / "labels.csv")[0] for n in ("NA0_ideal", "na_relaxed"))
    same = ("ordering", "motif", "n_atoms", "n_co", "orientation_quat", "defocus_nm", "dose", "support_nm")
    assert all(ideal[k] == relaxed[k] for k in same)  # draws_as: NA0's draws, only the relaxation differs
    every = read_labels(particle_sets / "sets" / "na_all_factors" / "labels.csv")[0]
    assert all(every[k] == ideal[k] for k in ("ordering", "motif", "n_atoms", "n_co"))  # paired with NA0 as well


def test_score_particles_through_predict(particle_sets, cnt_bundles, tmp_path):
    """The scorer runs `hrtemflow predict` with one box round each particle and reads the ordering answers
    back. The bundle is the shared 3-class chirality network relabelled as an ordering bundle (a card
    edit): its answers mean nothing, what is checked is the path from labels to boxes to predict to table."""
    import shutil

    bundle = tmp_path / "ordering"
    shutil.copytree(cnt_bundles["models"]["chirality"], bundle)
    card = json.loads((bundle / "card.json").read_text())
    card |= {"task": "ordering", "classes": ["core-shell", "janus", "disordered"]}
    card["imaging"] = [{**card["imaging"][0], "family": "nanoalloy"}]
    (bundle / "card.json").write_text(json.dumps(card))
    res = _cli("--score-only", "--bundle", str(bundle), "--sets", "all", "--out", str(particle_sets))
    assert res.returncode != 0 and "set na_relaxed_phonons has not been generated" in res.stderr  # `all`: every NA set
    sets = ("NA0_ideal", "na_all_factors")
    res = _cli("--score-only", "--bundle", str(bundle), "--sets", *sets, "--out", str(particle_sets))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    table = json.loads((particle_sets / "factor_table.json").read_text())
    assert table["task"] == "ordering" and [r["n_images"] for r in table["sets"]] == [2, 1]
    assert "| NA0_ideal | 2 |" in (particle_sets / "factor_table.md").read_text()

    from studies.independent.generate import read_labels

    for s in table["sets"]:
        rows = read_labels(particle_sets / "sets" / s["set"] / "labels.csv")
        for row, per in zip(rows, s["per_image"]):
            pred_dir = particle_sets / "predictions" / s["set"] / row["file"][:-4]
            pred = json.loads((pred_dir / "predictions.json").read_text())
            (region,) = pred["regions"]  # one box per particle
            x0, y0, x1, y1 = region["box_xyxy"]
            assert abs((x0 + x1) / 2 - float(row["cx"])) <= 1 and abs((y0 + y1) / 2 - float(row["cy"])) <= 1
            assert x1 - x0 >= 2 * float(row["radius_px"])
            res = region["ordering"]
            if res["ood"] in ("ood", "vacuum"):
                assert per["answer"] is None
            else:
                assert per["answer"] == max(res["probabilities"], key=res["probabilities"].get)
            assert per["truth"] == row["ordering"]
    with pytest.raises(SystemExit, match="reads cnt"):  # a chirality bundle is not scored on particles
        from studies.independent.score import check_family

        check_family(particle_sets / "sets" / "NA0_ideal", {"task": "chirality"})
