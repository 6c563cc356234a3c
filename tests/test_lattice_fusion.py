"""The lattice's chiral angle weighed into a tube's answer (`apply.lattice_fusion`): the fit on labelled tubes
recovers how far a reading can be trusted and helps where the network confuses angle neighbours, hurts nothing
where the readings are noise, and predict applies exactly the fitted weighing (an abTEM (8,8) tube through the
small real classifier of `tests/cnt_bundles.py`)."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from hrtemflow.apply import lattice_fusion
from hrtemflow.apply.tube_calibration import (
    CALIBRATION_FILE,
    find_calibration,
    fit_exponent,
    fit_lattice,
    model_sha256,
    nll,
    temper,
)
from hrtemflow.core.tubes import tube_chiral_angle_deg

#: angle neighbours of nearly one diameter, the 71-class bench's commonest confusions, and two others
CLASSES = ["10-8", "9-9", "11-9", "10-10", "16-0", "16-1", "13-7", "13-6"]


def _tubes(n: int, seed: int, outliers: float, sigma: float = 0.15):
    """Tubes whose network pools put the truth and its angle neighbour near level (the truth ahead 60 % of the
    time), and lattice readings at the true angle ± sigma, a share `outliers` of them weak and anywhere."""
    rng = np.random.default_rng(seed)
    angles = lattice_fusion.class_geometry(CLASSES)[:, 0]
    partner = {0: 1, 1: 0, 2: 3, 3: 2, 4: 5, 5: 4, 6: 7, 7: 6}
    y = rng.integers(0, len(CLASSES), n)
    pooled = np.full((n, len(CLASSES)), 0.02)
    readings = []
    for i, c in enumerate(y):
        lead = rng.random() < 0.6
        pooled[i, c], pooled[i, partner[c]] = (0.5, 0.38) if lead else (0.38, 0.5)
        if rng.random() < outliers:
            readings.append({"scale": 1.0, "chiral_angle_deg": rng.uniform(0, 30), "strength": rng.uniform(1, 3)})
        else:
            theta = angles[c] + rng.normal(0, sigma)
            readings.append({"scale": 1.0, "chiral_angle_deg": theta, "strength": rng.uniform(20, 200)})
    return pooled / pooled.sum(axis=1, keepdims=True), readings, y


def test_the_fit_learns_the_readings_spread_and_fixes_angle_neighbours():
    pooled, readings, y = _tubes(400, 0, outliers=0.15)
    fitted = fit_lattice(pooled, readings, y, CLASSES, exponent=1.0)
    assert fitted["kept"] and fitted["tubes_read"] == 400
    assert 0.08 < fitted["sigma_deg"] < 0.3, fitted["sigma_deg"]
    # weak readings are mostly outliers, strong ones rarely
    assert lattice_fusion.outlier_share(2.0, fitted["e0"], fitted["e1"]) > 0.5
    assert lattice_fusion.outlier_share(100.0, fitted["e0"], fitted["e1"]) < 0.05
    assert fitted["pool_alone"]["top1"] == pytest.approx(0.6, abs=0.06)
    assert fitted["with_lattice"]["top1"] > 0.85 > fitted["pool_alone"]["top1"] + 0.2
    # on new tubes the fitted weighing carries over
    pooled2, readings2, y2 = _tubes(400, 1, outliers=0.15)
    fused = lattice_fusion.fuse(pooled2, readings2, lattice_fusion.class_geometry(CLASSES), fitted)
    assert np.mean(fused.argmax(axis=1) == y2) > 0.85
    assert nll(fused, y2) < nll(temper(pooled2, 1.0), y2)


def test_readings_that_say_nothing_are_not_kept():
    """Readings drawn at random angles: the weighing gains nothing over the pool alone, on loss or on top-1, and
    out of sample it loses, so fit_tubes does not keep it."""
    pooled, readings, y = _tubes(300, 2, outliers=1.0)
    rng = np.random.default_rng(3)
    for r in readings:
        r["strength"] = rng.uniform(1, 200)
    fitted = fit_lattice(pooled, readings, y, CLASSES, exponent=fit_exponent(pooled, y))
    assert fitted["with_lattice"]["nll"] >= fitted["pool_alone"]["nll"] - 0.01
    assert abs(fitted["with_lattice"]["top1"] - fitted["pool_alone"]["top1"]) < 0.03
    assert not fitted["kept"] and fitted["with_lattice_two_fold"]["nll"] > fitted["pool_alone"]["nll"]


def _diameter_neighbours(n: int, seed: int):
    """Tubes of one chiral angle whose network pools put the truth and its diameter neighbour near level (the
    truth ahead 60 % of the time), their walls read as a faint or bright line about the radius: dark 0.04 nm
    inside it, bright 0.12 nm outside, each ± 0.015 nm; a tenth of them faint (contrast 1-3) and anywhere.
    No lattice angle: each zigzag reads 0°, which tells them nothing."""
    classes = ["15-0", "16-0", "17-0", "18-0"]
    geometry = lattice_fusion.class_geometry(classes)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(classes), n)
    pooled = np.full((n, len(classes)), 0.02)
    readings = []
    for i, c in enumerate(y):
        other = c + 1 if c == 0 or (c < len(classes) - 1 and rng.random() < 0.5) else c - 1
        lead = rng.random() < 0.6
        pooled[i, c], pooled[i, other] = (0.5, 0.38) if lead else (0.38, 0.5)
        r = geometry[c, 1]
        if rng.random() < 0.1:
            walls = {"radius_dark_nm": rng.uniform(0.3, 0.9), "radius_bright_nm": rng.uniform(0.3, 0.9)}
            walls |= {"contrast_dark": rng.uniform(1, 3), "contrast_bright": rng.uniform(1, 3)}
        else:
            walls = {
                "radius_dark_nm": r - 0.04 + rng.normal(0, 0.015),
                "radius_bright_nm": r + 0.12 + rng.normal(0, 0.015),
            }
            walls |= {"contrast_dark": rng.uniform(15, 60), "contrast_bright": rng.uniform(10, 40)}
        readings.append({"scale": None, "reason": "lattice not resolved", "walls": walls})
    return classes, pooled / pooled.sum(axis=1, keepdims=True), readings, y


def test_the_walls_radius_tells_diameter_neighbours_apart():
    classes, pooled, readings, y = _diameter_neighbours(400, 5)
    fitted = fit_lattice(pooled, readings, y, classes, exponent=1.0)
    assert fitted["kept"] and fitted["angles_read"] == 0 and fitted["walls"]["tubes_read"] == 400
    assert fitted["walls"]["kept"] and fitted["walls"]["nll_with_walls"] < fitted["walls"]["nll_angle_alone"]
    # the map of the two radii to the tube's: a + b = 1 and the offsets cancel; its spread about 0.015/sqrt(2)
    assert fitted["wall_dark"] + fitted["wall_bright"] == pytest.approx(1.0, abs=0.05)
    assert 0.005 < fitted["wall_sigma_nm"] < 0.02 and fitted["walls"]["radius_error_abs_median_nm"] < 0.015
    assert lattice_fusion.outlier_share(1.2, fitted["w0"], fitted["w1"]) > 0.5
    assert lattice_fusion.outlier_share(30.0, fitted["w0"], fitted["w1"]) < 0.05
    assert fitted["pool_alone"]["top1"] == pytest.approx(0.6, abs=0.06)
    assert fitted["with_lattice_two_fold"]["top1"] > 0.85
    classes2, pooled2, readings2, y2 = _diameter_neighbours(400, 6)
    fused = lattice_fusion.fuse(pooled2, readings2, lattice_fusion.class_geometry(classes2), fitted)
    assert np.mean(fused.argmax(axis=1) == y2) > 0.85
    # the radius the walls say, on the bright tubes, within three of its spreads
    bright = np.array([r["walls"]["contrast_dark"] > 10 for r in readings2])
    off = lattice_fusion.tube_radius(readings2, fitted)[bright] - lattice_fusion.class_geometry(classes2)[y2[bright], 1]
    assert np.quantile(np.abs(off), 0.95) < 0.03


def test_nothing_to_fuse_without_chiralities_or_readings():
    pooled, readings, y = _tubes(30, 4, outliers=0.0)
    assert fit_lattice(pooled, readings, y, ["a", "b", "c", "d", "e", "f", "g", "h"], 1.0) is None
    unread = [{"scale": None, "reason": "lattice not resolved"}] * 30
    assert fit_lattice(pooled, unread, y, CLASSES, 1.0) is None
    assert not lattice_fusion.usable(None) and not lattice_fusion.usable({"scale": 1.0, "strength": 0.0})
    np.testing.assert_allclose(
        lattice_fusion.class_geometry(["8-0", "8-8", "11-4"])[:, 0], [0.0, 30.0, tube_chiral_angle_deg(11, 4)]
    )
    np.testing.assert_allclose(lattice_fusion.class_geometry(["8-8"])[0, 1], 0.5425, atol=1e-3)


def test_a_calibration_with_bad_lattice_parameters_is_refused(tmp_path):
    (tmp_path / "model.keras").write_bytes(b"weights")
    params = {"exponent": 1.5, "sigma_deg": 0.2, "sigma_one_line_deg": 1.0, "e0": -2.0, "e1": -0.5}
    fitted = {"exponent": 2.0, "pool": "mean", "model_sha256": model_sha256(tmp_path), "window_temperature": 0.9}
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps({**fitted, "lattice": {**params, "tubes_read": 40}}))
    cal, _ = find_calibration(tmp_path, 0.9)
    assert cal.pool == "mean" and cal.exponent == 2.0 and cal.lattice == params
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps({**fitted, "lattice": None}))
    assert find_calibration(tmp_path, 0.9)[0].lattice is None
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps({**fitted, "lattice": {"sigma_deg": 0.2}}))
    cal, why = find_calibration(tmp_path, 0.9)
    assert cal is None and "refit" in why
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps({**fitted, "lattice": {**params, "sigma_deg": "nan"}}))
    cal, why = find_calibration(tmp_path, 0.9)
    assert cal is None and "not finite" in why


def test_predict_weighs_the_lattice_angle_as_the_calibration_says(cnt_bundles, tmp_path, capsys):
    """An (8,8) tube at 0.375 Å given by its ends: its lattice reads 30°, so the fitted weighing lowers the
    zigzag (8,0) against the network's own answer, exactly by the angle's and the walls' likelihood; the CSV and
    the table carry both readings."""
    from hrtemflow.cli import main
    from hrtemflow.learn.bundle import find_temperature
    from hrtemflow.learn.card import ModelCard
    from test_lattice import PX_A, _tube_image

    img, ends = _tube_image(8, 8, 24, angle_deg=-20.0, seed=1)
    folder = tmp_path / "mics"
    folder.mkdir()
    np.save(folder / "t.npy", img)
    model = tmp_path / "chirality"
    shutil.copytree(cnt_bundles["models"]["chirality"], model)
    temperature, _ = find_temperature(model, ModelCard.read(model))
    params = {"exponent": 1.3, "sigma_deg": 0.5, "sigma_one_line_deg": 1.5, "e0": -3.0, "e1": 0.0}
    # the walls' map as the 71-class bench's validation tubes fitted it, a spread of 0.01 nm
    params |= {"wall_dark": 0.68, "wall_bright": 0.32, "wall_offset_nm": -0.015, "wall_sigma_nm": 0.01}
    params |= {"w0": 2.0, "w1": -2.0}
    cal = {"pool": "mean", "exponent": 1.7, "model_sha256": model_sha256(model), "window_temperature": temperature}
    (model / CALIBRATION_FILE).write_text(json.dumps({**cal, "lattice": params}))
    tube = ",".join(f"{v:.2f}" for xy in ends for v in xy)
    args = ["--bundles", str(model), "--pixel-size", str(PX_A / 10), "--tubes-only", "--tube", tube]
    assert main(["predict", str(folder), "--out", str(tmp_path / "out"), *args]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["bundles"]["chirality"]["tube_lattice"] == params
    (t,) = summary["micrographs"][0]["tubes"]
    res = t["chirality"]
    assert res["lattice"]["chiral_angle_deg"] == 30.0 and res["lattice_weighed"]
    classes = list(res["probabilities"])
    pool = np.array([res["pools"]["mean"][c] for c in classes])
    expected = lattice_fusion.fuse(pool, [res["lattice"]], lattice_fusion.class_geometry(classes), params)[0]
    np.testing.assert_allclose([res["probabilities"][c] for c in classes], expected, atol=1e-6)
    network = dict((d["class"], d["probability"]) for d in res["network_top"])
    np.testing.assert_allclose([network[c] for c in network], temper(pool, 1.7)[[classes.index(c) for c in network]])
    assert res["probabilities"]["8-0"] < temper(pool, 1.7)[classes.index("8-0")]
    with (tmp_path / "out" / "tubes.csv").open(newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert float(row["lattice_angle_deg"]) == 30.0 and row["lattice_weighed"] == "True"
    assert "30.0°*" in printed
    # the walls' diameter, through the map, is (8,8)'s within a few hundredths of a nm, and the table shows it
    d = float(row["diameter_nm"])
    assert d == pytest.approx(res["diameter_nm"], abs=1e-3) and d == pytest.approx(1.085, abs=0.05)
    assert f"{d:.3f}*" in printed


def test_a_one_line_reading_only_says_near_armchair():
    """(10,9) at 28.3° shows its two lines merged into one at 30°: that reading keeps (10,9) in play against
    (10,10), where a two-line reading at 30° with its narrow spread rules it out."""
    angles = lattice_fusion.class_geometry(["10-9", "10-10"])
    params = {"exponent": 1.0, "sigma_deg": 0.2, "sigma_one_line_deg": 1.5, "e0": -8.0, "e1": 0.0}
    one = {"scale": 1.0, "chiral_angle_deg": 30.0, "strength": 50.0, "lines_per_nm": [4.06]}
    two = {**one, "lines_per_nm": [4.06, 4.02]}
    l_one, l_two = np.exp(lattice_fusion.log_likelihood([one, two], angles, params))
    assert 0.3 < l_one[0] / l_one[1] < 0.7
    assert l_two[0] / l_two[1] < 1e-3
