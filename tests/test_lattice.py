"""A tube's own graphene lattice against the micrograph's pixel size (`apply.lattice`): ASE tubes imaged by
abTEM directly at the chirality bench's 0.375 Å pixels, read at the true, a 2.85 % too small and a too large
declared pixel size."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hrtemflow.apply import lattice
from hrtemflow.core.tubes import tube_chiral_angle_deg

PX_A = 0.375


def _tube_image(n: int, m: int, cells: int, angle_deg: float = 30.0, seed: int = 0):
    """One (n, m) tube in the image plane, its axis at `angle_deg`, 80 kV, 8 nm underfocus, 3000 e/Å²;
    returns the counts [row, col] and its end points (x, y) in pixels."""
    import abtem
    from ase.build import nanotube

    abtem.config.set({"device": "cpu"})
    field = 90.0
    t = nanotube(n, m, length=cells, bond=1.42)
    t.positions -= t.positions.mean(axis=0)
    t.rotate(90, "y")  # axis z -> x
    t.rotate(angle_deg, "z")
    t.positions += [field / 2, field / 2, 10.0]
    t.set_cell([field, field, 20.0])
    t.pbc = False
    img = (
        abtem.PlaneWave(energy=80e3)
        .multislice(abtem.Potential(t, sampling=PX_A / 3, slice_thickness=2.0))
        .apply_ctf(defocus=80.0, Cs=0)
        .intensity()
        .compute()
        .array
    )
    k = img.shape[0] // 3
    img = img[: 3 * k, : 3 * k].reshape(k, 3, k, 3).mean(axis=(1, 3)).T
    counts = np.random.default_rng(seed).poisson(img * 3000.0 * PX_A**2).astype(np.float32)
    d = np.array([math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))])
    half = 0.5 * float(np.ptp((t.positions[:, :2] - field / 2) @ d))
    ends = [tuple((field / 2 + s * half * d) / PX_A) for s in (-1, 1)]
    return counts, ends


@pytest.fixture(scope="module")
def chiral_tube():
    return _tube_image(11, 4, 1)  # θ = 14.9°, one 5.7 nm period


def test_the_lattice_gives_the_pixel_size_and_the_chiral_angle(chiral_tube):
    img, ends = chiral_tube
    r = lattice.read_tube_lattice(img, ends, PX_A / 10)
    assert r["scale"] == pytest.approx(1.0, abs=0.005)
    assert r["pixel_size_nm"] == pytest.approx(PX_A / 10, rel=0.005)
    assert r["chiral_angle_deg"] == pytest.approx(tube_chiral_angle_deg(11, 4), abs=1.0)
    out, why = lattice.check(r, tube_chiral_angle_deg(11, 4), 10.0)
    assert not out and "agrees" in why


@pytest.mark.parametrize("declared", [0.9723, 1.0285])
def test_a_pixel_size_declared_off_by_three_percent_is_flagged(chiral_tube, declared):
    img, ends = chiral_tube
    r = lattice.read_tube_lattice(img, ends, declared * PX_A / 10)
    assert r["scale"] == pytest.approx(1.0 / declared, abs=0.005)
    assert r["pixel_size_nm"] == pytest.approx(PX_A / 10, rel=0.005)  # what the tube says: the true one
    out, why = lattice.check(r, tube_chiral_angle_deg(11, 4), 10.0)
    assert out and "--pixel-size" in why
    # a training with more tilt admits the finer-looking lattice, never the coarser one
    assert lattice.check(r, tube_chiral_angle_deg(11, 4), 20.0)[0] is (declared > 1.0)


def test_a_reading_at_another_chiral_angle_than_the_answer_is_not_used(chiral_tube):
    img, ends = chiral_tube
    r = lattice.read_tube_lattice(img, ends, 0.9723 * PX_A / 10)
    out, why = lattice.check(r, tube_chiral_angle_deg(10, 10), 10.0)  # an armchair answer: 30°
    assert not out and "not used" in why


def test_an_armchair_tube_reads_from_its_one_line():
    img, ends = _tube_image(8, 8, 24, angle_deg=-20.0, seed=1)
    r = lattice.read_tube_lattice(img, ends, PX_A / 10)
    assert len(r["lines_per_nm"]) == 1
    assert r["chiral_angle_deg"] == 30.0
    assert r["scale"] == pytest.approx(1.0, abs=0.005)


def test_noise_short_tubes_and_coarse_pixels_give_no_reading():
    noise = np.random.default_rng(0).poisson(100.0, (256, 256)).astype(np.float32)
    ends = [(20.0, 128.0), (236.0, 128.0)]
    assert lattice.read_tube_lattice(noise, ends, PX_A / 10)["scale"] is None
    assert "too short" in lattice.read_tube_lattice(noise, [(20.0, 128.0), (60.0, 128.0)], PX_A / 10)["reason"]
    assert "too coarse" in lattice.read_tube_lattice(noise, ends, 0.09)["reason"]
    out, why = lattice.check({"scale": None, "reason": "x"}, 20.0, None)
    assert not out and why == "x"


def test_predict_flags_a_tube_in_distribution_whose_lattice_is_off(chiral_tube):
    from types import SimpleNamespace

    from hrtemflow.apply.predict import _lattice_verdict

    img, ends = chiral_tube
    off = lattice.read_tube_lattice(img, ends, 0.9723 * PX_A / 10)
    right = lattice.read_tube_lattice(img, ends, PX_A / 10)
    card = SimpleNamespace(imaging=[{"family": "amorphous"}, {"family": "cnt", "tilt_deg": 10}])
    verdict, flag = _lattice_verdict(off, card, "11-4", "")
    assert flag == "calibration" and verdict["out_of_range"] and verdict["pixel_size_nm"] == off["pixel_size_nm"]
    assert _lattice_verdict(off, card, "11-4", "ood")[1] == "ood"  # the windows' own flag stays first
    assert _lattice_verdict(right, card, "11-4", "")[1] == ""
    assert _lattice_verdict(off, card, "amorphous", "")[1] == ""  # no (n,m): nothing to check against
    # 25° of tilt in training admits a lattice 2.9 % finer; a card without a tilt is read at the default 10°
    assert _lattice_verdict(off, SimpleNamespace(imaging=[{"family": "cnt", "tilt_deg": 25}]), "11-4", "")[1] == ""
    assert _lattice_verdict(off, SimpleNamespace(imaging=None), "11-4", "")[1] == "calibration"


def test_the_lattice_study_reads_a_labelled_folder(chiral_tube, tmp_path, capsys):
    """studies/lattice_reading.py on a folder of one tube, declared right and 2.85 % too small."""
    import csv
    import sys

    import tifffile

    from conftest import ROOT

    sys.path.insert(0, str(ROOT / "studies"))
    import lattice_reading

    img, ends = chiral_tube
    tifffile.imwrite(tmp_path / "t.tif", img)
    with (tmp_path / "labels.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "chirality", "x0", "y0", "x1", "y1", "pixel_size_nm", "declared_pixel_scale"])
        for scale in (1.0, 0.9723):
            w.writerow(["t.tif", "11-4", *ends[0], *ends[1], scale * PX_A / 10, scale])
    assert lattice_reading.main([str(tmp_path)]) == 0
    row = capsys.readouterr().out.strip().splitlines()[-1].split("|")
    tubes, read, within, flagged = (int(row[i]) for i in (2, 3, 7, 8))
    assert (tubes, read, within, flagged) == (2, 2, 2, 1)  # both read right; the mis-declared one flagged
    assert lattice_reading.main([str(tmp_path / "missing")]) == 2
