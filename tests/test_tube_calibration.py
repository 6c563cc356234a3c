"""The per-tube calibration (`hrtemflow.apply.tube_calibration`, `hrtemflow fit-tubes`): the exponent that
tempers a tube's mean window probabilities, fitted by likelihood on labelled tubes, found by predict only for
the model and window temperature it was fitted for; end to end on the small real classifier of
`tests/cnt_bundles.py` and the two-tube micrograph of `tests/test_tubes.py`."""

from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest

from hrtemflow.apply import lattice_fusion
from hrtemflow.apply.tube_calibration import (
    CALIBRATION_FILE,
    find_calibration,
    fit_exponent,
    match_tubes,
    nll,
    read_labels,
    segment_distance,
    temper,
)
from hrtemflow.core.calibration import expected_calibration_error
from hrtemflow.core.errors import HrtemflowError


def test_temper_is_a_renormalised_power_that_keeps_the_ranking():
    p = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    q = temper(p, 2.0)
    np.testing.assert_allclose(q[0], np.array([0.25, 0.09, 0.04]) / 0.38)
    np.testing.assert_allclose(q.sum(axis=1), 1.0)
    assert (q.argmax(axis=1) == p.argmax(axis=1)).all()
    np.testing.assert_allclose(temper(p, 1.0), p)
    np.testing.assert_allclose(temper(temper(p, 3.0), 1 / 3.0), p, atol=1e-12)
    assert np.isfinite(temper(np.array([1.0, 0.0, 0.0]), 50.0)).all()  # a zero does not make a NaN


def test_the_fitted_exponent_undoes_a_known_under_confidence():
    """Tubes whose true class is drawn from p_true, reported as p_true^(1/3) renormalised (under-confident,
    like a mean of windows): the fit finds an exponent near 3 and the ECE falls."""
    rng = np.random.default_rng(0)
    n, k = 4000, 12
    logits = rng.normal(0, 2.5, (n, k))
    p_true = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(k, p=p) for p in p_true])
    reported = temper(p_true, 1 / 3)
    alpha = fit_exponent(reported, y)
    assert 2.5 < alpha < 3.6, alpha
    before = expected_calibration_error(reported, y)[0]
    after = expected_calibration_error(temper(reported, alpha), y)[0]
    assert after < 0.03 < before, (before, after)
    assert nll(temper(reported, alpha), y) < nll(reported, y)


def test_matching_takes_the_longest_piece_on_the_labelled_axis():
    labels = [{"file": "a.tif", "chirality": "8-4", "x0": 0, "y0": 0, "x1": 100, "y1": 0, "pixel_size_nm": 0.05}]
    tubes = [
        {"source": "/x/a.tif", "task": "chirality", "x0_px": 5, "y0_px": 2, "x1_px": 40, "y1_px": 2},
        {"source": "/x/a.tif", "task": "chirality", "x0_px": 10, "y0_px": -3, "x1_px": 95, "y1_px": 3},
        {"source": "/x/a.tif", "task": "chirality", "x0_px": 0, "y0_px": 60, "x1_px": 100, "y1_px": 60},
        {"source": "/x/b.tif", "task": "chirality", "x0_px": 0, "y0_px": 0, "x1_px": 100, "y1_px": 0},
    ]
    (m,) = match_tubes(labels, tubes, "chirality", match_nm=1.0)
    assert m["tube"] is tubes[1] and m["distance_nm"] == pytest.approx(3 * 0.05)
    assert m["coverage"] == pytest.approx(math.hypot(85, 6) / 100)
    (far,) = match_tubes(labels, tubes[2:3], "chirality", match_nm=1.0)
    assert far["tube"] is None and far["distance_nm"] == pytest.approx(3.0)
    np.testing.assert_allclose(
        segment_distance(np.array([[0.0, 3.0], [-4.0, 3.0], [14.0, 0.0]]), np.array([0.0, 0.0]), np.array([10.0, 0])),
        [3.0, 5.0, 4.0],
    )


def test_a_calibration_counts_only_for_its_model_and_temperature(tmp_path):
    (tmp_path / "model.keras").write_bytes(b"weights one")
    cal, why = find_calibration(tmp_path, 0.8)
    assert cal is None and "fit-tubes" in why
    from hrtemflow.apply.tube_calibration import model_sha256

    fitted = {"exponent": 2.5, "model_sha256": model_sha256(tmp_path), "window_temperature": 0.8}
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps(fitted))  # an earlier file: no pool, the mean
    assert find_calibration(tmp_path, 0.8) == (("mean", 2.5, None), str(tmp_path / CALIBRATION_FILE))
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps({**fitted, "pool": "geometric"}))
    assert find_calibration(tmp_path, 0.8)[0] == ("geometric", 2.5, None)
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps({**fitted, "pool": "median"}))
    cal, why = find_calibration(tmp_path, 0.8)
    assert cal is None and "median" in why
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps(fitted))
    cal, why = find_calibration(tmp_path, 1.1)
    assert cal is None and "0.8" in why and "1.1" in why
    cal, why = find_calibration(tmp_path, None)
    assert cal is None and "temperature" in why
    (tmp_path / "model.keras").write_bytes(b"weights two")  # retrained: the old fit is not this model's
    cal, why = find_calibration(tmp_path, 0.8)
    assert cal is None and "another model.keras" in why
    (tmp_path / CALIBRATION_FILE).write_text("{not json")
    cal, why = find_calibration(tmp_path, 0.8)
    assert cal is None and "refit" in why


def test_geometric_pool_is_the_tempered_product_of_mixed_windows():
    """Two windows favour class 0, and a third rules it out: the mean keeps class 0, the geometric pool
    penalises it by the third window's (mixed) zero and ranks class 1 first."""
    from hrtemflow.apply.tube_calibration import GEOMETRIC_MIX, pool_windows

    w = np.array([[0.7, 0.3, 0.0], [0.7, 0.3, 0.0], [0.0, 0.45, 0.55]])
    pools = pool_windows(w)
    np.testing.assert_allclose(pools["mean"], w.mean(axis=0))
    mixed = (1 - GEOMETRIC_MIX) * w + GEOMETRIC_MIX / 3
    product = mixed.prod(axis=0) ** (1 / 3)
    np.testing.assert_allclose(pools["geometric"], product / product.sum())
    assert pools["mean"].argmax() == 0 and pools["geometric"].argmax() == 1
    # a tempered product: exponent 3 is the plain product of the three mixed windows
    np.testing.assert_allclose(temper(pools["geometric"], 3.0), mixed.prod(axis=0) / mixed.prod(axis=0).sum())


def test_labels_without_their_columns_are_refused(tmp_path):
    p = tmp_path / "labels.csv"
    p.write_text("file,chirality,x0,y0\na.tif,8-4,1,2\n")
    with pytest.raises(HrtemflowError, match="x1, y1 missing"):
        read_labels(p)
    with pytest.raises(HrtemflowError, match="does not exist"):
        read_labels(tmp_path / "none.csv")


def test_fit_tubes_end_to_end_on_predict_output(cnt_bundles, tmp_path, capsys):
    """12 noisy copies of the two-tube micrograph (24 labelled tubes), predicted per tube, fitted with the
    CLI on a copy of the bundle; predict then applies the exponent: same top-1, tempered probabilities."""
    from hrtemflow.cli import main
    from test_tubes import PX_A, tube_micrograph

    img, ends = tube_micrograph([(8, 8, 30, 25.0, (50.0, 55.0)), (12, 12, 32, 115.0, (115.0, 95.0))], dose=1500.0)
    folder = tmp_path / "mics"
    folder.mkdir()
    rows = []
    rng = np.random.default_rng(5)
    for i in range(12):
        np.save(folder / f"m{i}.npy", rng.poisson(img).astype(np.float32))
        for label, (a, b) in zip(("8-8", "12-12"), ends):
            rows.append({"file": f"m{i}.npy", "chirality": label, "x0": a[0], "y0": a[1], "x1": b[0], "y1": b[1]})
    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    model = tmp_path / "chirality"
    shutil.copytree(cnt_bundles["models"]["chirality"], model)
    common = ["--bundles", str(model), "--pixel-size", str(PX_A / 10), "--tubes-only", "--quiet"]
    assert main(["predict", str(folder), "--out", str(tmp_path / "before"), *common]) == 0
    assert "no tube_calibration.json" in capsys.readouterr().err  # said, not silent

    bad = tmp_path / "bad.csv"
    bad.write_text("file,chirality,x0,y0,x1,y1\nm0.npy,9-9,1,1,50,50\n")
    assert main(["fit-tubes", str(tmp_path / "before"), "--labels", str(bad), "--model-dir", str(model)]) != 0
    assert "9-9" in capsys.readouterr().err
    assert not (model / CALIBRATION_FILE).exists()

    assert main(["fit-tubes", str(tmp_path / "before"), "--labels", str(labels), "--model-dir", str(model)]) == 0
    said = capsys.readouterr().out
    cal = json.loads((model / CALIBRATION_FILE).read_text())
    assert cal["tubes_fitted"] >= 20 and "exponent" in said
    assert set(cal["fits"]) == {"mean", "geometric"} and cal["pool"] in cal["fits"]
    assert cal["fits"][cal["pool"]]["nll"] == min(f["nll"] for f in cal["fits"].values())
    assert cal["exponent"] == cal["fits"][cal["pool"]]["exponent"] and "kept the" in said
    assert cal["nll_tempered"] <= cal["nll_mean"] + 1e-12 and cal["ece_tempered"] <= cal["ece_mean"] + 1e-12
    assert cal["ece_check_tempered"]["n"] == cal["tubes_fitted"] and "a calibrated answer reads" in said
    assert cal["ece_check_tempered"]["ece"] == pytest.approx(cal["ece_tempered"])

    assert main(["predict", str(folder), "--out", str(tmp_path / "after"), *common]) == 0
    before = json.loads((tmp_path / "before" / "summary.json").read_text())
    after = json.loads((tmp_path / "after" / "summary.json").read_text())
    assert after["bundles"]["chirality"]["tube_exponent"] == pytest.approx(cal["exponent"])
    assert after["bundles"]["chirality"]["tube_pool"] == cal["pool"]
    assert before["bundles"]["chirality"]["tube_exponent"] is None
    classes = list(before["micrographs"][0]["tubes"][0]["chirality"]["probabilities"])
    for rb, ra in zip(before["micrographs"], after["micrographs"], strict=True):
        for tb, ta in zip(rb["tubes"], ra["tubes"], strict=True):
            pb = np.array([tb["chirality"]["probabilities"][c] for c in classes])
            np.testing.assert_allclose(pb, [tb["chirality"]["pools"]["mean"][c] for c in classes])  # uncalibrated
            pooled = np.array([tb["chirality"]["pools"][cal["pool"]][c] for c in classes])
            pa = np.array([ta["chirality"]["probabilities"][c] for c in classes])
            assert ta["chirality"]["exponent"] == pytest.approx(cal["exponent"])
            assert ta["chirality"]["pool"] == cal["pool"]
            network = temper(pooled, cal["exponent"])
            if ta["chirality"]["lattice_weighed"]:  # the fit kept the lattice's angle: the weighing it fitted
                assert cal["lattice"] is not None
                geometry = lattice_fusion.class_geometry(classes)
                network = lattice_fusion.fuse(pooled, [ta["chirality"]["lattice"]], geometry, cal["lattice"])[0]
            np.testing.assert_allclose(pa, network, atol=1e-6)
    # the tube benchmark compares both fitted pools on the same tubes, from the pools predict recorded
    from benchmarks import tube_micrographs as bench

    figures = bench.pool_figures(tmp_path / "after", rows, model, 1.0)
    assert set(figures) == {"mean", "geometric"} and figures[cal["pool"]]["tubes"] == cal["tubes_fitted"]
    assert figures[cal["pool"]]["ece_check"]["ece"] == pytest.approx(cal["ece_tempered"], abs=1e-6)
    # refitting on the calibrated output undoes the applied exponent first: the same fit
    assert main(["fit-tubes", str(tmp_path / "after"), "--labels", str(labels), "--model-dir", str(model)]) == 0
    again = json.loads((model / CALIBRATION_FILE).read_text())
    assert again["exponent"] == pytest.approx(cal["exponent"], rel=1e-3)
