"""The ECE and its calibrated floor (hrtemflow.core.calibration)."""

from __future__ import annotations

import numpy as np
import pytest

from hrtemflow.core.calibration import (
    calibrated_ece_draws,
    calibration_check,
    expected_calibration_error,
    top1_ece,
)


def test_top1_ece_is_the_evaluations_ece():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(5) * 0.4, size=300)
    labels = rng.integers(0, 5, 300)
    ece, table = expected_calibration_error(probs, labels)
    assert top1_ece(probs.max(axis=1), probs.argmax(axis=1) == labels) == pytest.approx(ece)
    assert sum(table["count"]) == 300


def test_each_draw_is_the_ece_of_a_coin_redraw_of_every_sample():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.2, 1.0, 57)
    draws = calibrated_ece_draws(conf, resamples=6, seed=11)
    coins = np.random.default_rng(11).random((6, conf.size)) < conf
    assert draws == pytest.approx([top1_ece(conf, c) for c in coins])


def test_floor_of_certain_and_of_coin_answers():
    assert np.all(calibrated_ece_draws(np.ones(40), resamples=50) == 0.0)
    # one sample at 0.5: right or wrong, its bin is always 0.5 off
    assert np.all(calibrated_ece_draws(np.array([0.5]), resamples=50) == pytest.approx(0.5))


def test_floor_shrinks_with_the_number_of_samples():
    rng = np.random.default_rng(1)
    small = calibrated_ece_draws(rng.uniform(0.6, 1.0, 100), seed=2).mean()
    large = calibrated_ece_draws(rng.uniform(0.6, 1.0, 2000), seed=2).mean()
    assert large < small / 3  # about 1/sqrt(n): a factor sqrt(20) = 4.5
    assert 0.02 < small < 0.15


def test_check_passes_a_calibrated_answer_and_fails_an_overconfident_one():
    rng = np.random.default_rng(5)
    conf = rng.uniform(0.5, 1.0, 400)
    calibrated = rng.random(400) < conf
    ok = calibration_check(conf, calibrated)
    assert ok["p_value"] > 0.05
    assert ok["ece"] < ok["ece_if_calibrated_p95"]
    over = calibration_check(np.full(400, 0.95), rng.random(400) < 0.6)
    assert over["p_value"] < 0.01
    assert over["ece"] == pytest.approx(0.35, abs=0.06)
    assert over["ece_if_calibrated"] < 0.03
    empty = calibration_check(np.empty(0), np.empty(0, bool))
    assert empty["n"] == 0 and empty["ece"] is None


def test_floor_benchmark_reads_a_runs_tubes(tmp_path):
    """benchmarks/ece_floor.py on a tube_metrics.json: the found tubes' probabilities, a floor falling with n."""
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import ece_floor

    rows = [{"file": f"{i}.tif", "found": i % 7 != 0, "p1": 0.55 + 0.4 * (i % 10) / 9} for i in range(60)]
    metrics = tmp_path / "run" / "tube_metrics.json"
    metrics.parent.mkdir()
    metrics.write_text(json.dumps({"per_tube": rows}))
    text = ece_floor.main(["--tube-metrics", str(metrics), "--n", "20", "2000", "--out", str(tmp_path / "f.txt")])
    assert "run (51 found tubes)" in text and (tmp_path / "f.txt").read_text().strip() == text
    small, large = (float(line.split(":")[1].split("%")[0]) for line in text.splitlines() if line.startswith("  n ="))
    assert large < small / 4
    with pytest.raises(SystemExit, match="at least 1"):
        ece_floor.main(["--n", "0", "--out", str(tmp_path / "g.txt")])
