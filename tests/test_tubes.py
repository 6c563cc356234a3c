"""Per-tube answers of `hrtemflow predict`: tubes found in a micrograph or given as end points, the windows
centred along each tube's axis, combined into one top-3 per tube (tubes.csv, predictions.json, the table).

The real case: a 16 nm micrograph holding a (8,8) and a (12,12) tube, 7-8 nm long each, imaged by abTEM at
80 kV with Poisson noise, and the small chirality classifier of `tests/cnt_bundles.py` (trained on 2.6 nm
windows of (8,0), (8,8), (12,12) at 0.81 Å/px).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from hrtemflow.apply.options import Options
from hrtemflow.apply.tubes import (
    Tube,
    axis_centres,
    combine,
    find_tubes,
    parse_tube,
    window_origins,
)
from hrtemflow.core.errors import HrtemflowError

PX_A = 0.8  # the micrograph's pixel size: the classifier's is 0.8125 Å, so predict resamples


def tube_micrograph(
    specs,
    field_A: float = 160.0,
    sampling: float = 0.2,
    dose: float = 3000.0,
    seed: int = 0,
    *,
    px_A: float = PX_A,
    ctf: dict | None = None,
    seeds: tuple[int, ...] | None = None,
):
    """Tubes ((n, m, cells, angle_deg, (cx, cy) in Å)) in one field, imaged by abTEM directly; returns the
    counts image [row, col] at `px_A` and each tube's true end points (x, y) in pixels. `ctf`: abTEM's
    lens (default 10 nm underfocus, no Cs); `seeds`: a list of noisy images instead of one, with noise that
    stays the same from one process to the next (see below)."""
    import abtem
    from ase import Atoms
    from ase.build import nanotube

    abtem.config.set({"device": "cpu"})
    atoms, ends = Atoms(cell=[field_A, field_A, 30.0]), []
    for n, m, cells, angle, (cx, cy) in specs:
        t = nanotube(n, m, length=cells, bond=1.42)
        t.positions -= t.positions.mean(axis=0)
        t.rotate(90, "y")  # axis z -> x
        t.rotate(angle, "z")
        t.positions += np.array([cx, cy, 15.0])
        d = np.array([math.cos(math.radians(angle)), math.sin(math.radians(angle))])
        proj = (t.positions[:, :2] - [cx, cy]) @ d
        ends.append([(np.array([cx, cy]) + s * d) / px_A for s in (proj.min(), proj.max())])
        atoms += t
    pot = abtem.Potential(atoms, sampling=sampling, slice_thickness=2.0)
    exit_wave = abtem.PlaneWave(energy=80e3).multislice(pot)
    img = exit_wave.apply_ctf(**(ctf or {"defocus": 100.0, "Cs": 0})).intensity().compute().array  # [x, y]
    f = int(round(px_A / sampling))
    k = img.shape[0] // f
    img = img[: k * f, : k * f].reshape(k, f, k, f).mean(axis=(1, 3)).T  # [row = y, col = x]
    mean = img * dose * px_A**2
    if seeds is None:
        return np.random.default_rng(seed).poisson(mean).astype(np.float32), ends
    # shot noise as mean + sqrt(mean) x N(0, 1): at these counts (>100 per pixel) Poisson's own shape, and its
    # draws do not shift with the image's last bits, which abTEM's FFTs change from one process to the next
    # (numpy's Poisson sampler draws a varying number of uniforms, so one such bit reshuffles the whole image)
    noisy = [mean + np.sqrt(mean) * np.random.default_rng(s).standard_normal(mean.shape) for s in seeds]
    return [n.astype(np.float32) for n in noisy], ends


@pytest.fixture(scope="module")
def two_tubes():
    return tube_micrograph([(8, 8, 30, 25.0, (50.0, 55.0)), (12, 12, 32, 115.0, (115.0, 95.0))])


def _segment_distance(p, a, b) -> float:
    p, a, b = (np.asarray(v, dtype=float) for v in (p, a, b))
    t = np.clip(np.dot(p - a, b - a) / np.dot(b - a, b - a), 0, 1)
    return float(np.hypot(*(a + t * (b - a) - p)))


def _matches(tube: Tube, ends) -> bool:
    """Both true end points within 1 nm of the found axis, and the found length within 1.5 nm."""
    a, b = tube.points[0], tube.points[-1]
    true_len = float(np.hypot(*(np.asarray(ends[1]) - ends[0])))
    return max(_segment_distance(e, a, b) for e in ends) * PX_A < 10.0 and abs(tube.length_px - true_len) * PX_A < 15.0


# ------------------------------------------------------------------------------ geometry, no network


def test_windows_sit_on_the_axis_inside_the_tube():
    c = axis_centres([(10.0, 10.0), (110.0, 10.0)], window=32, step=16)
    assert np.allclose(c[:, 1], 10.0)
    assert c[0, 0] == pytest.approx(26.0) and c[-1, 0] == pytest.approx(94.0)
    assert np.allclose(np.diff(c[:, 0]), np.diff(c[:, 0])[0]) and np.diff(c[:, 0])[0] <= 16.0
    bent = axis_centres([(0.0, 0.0), (60.0, 0.0), (60.0, 60.0)], window=20, step=10)
    assert any(x == pytest.approx(60.0) and y > 5 for x, y in bent)  # the second leg is followed
    short = axis_centres([(0.0, 0.0), (10.0, 0.0)], window=32, step=16)
    assert short.tolist() == [[5.0, 0.0]]
    origins, kept = window_origins(np.array([[16.0, 16.0], [10.0, 40.0], [2.0, 40.0]]), 32, (64, 64))
    assert origins == [(0, 0), (24, 0)] and kept.tolist() == [True, True, False]


def test_found_ends_are_kept_inside_the_image():
    from hrtemflow.apply.tubes import _inside

    a, b = _inside((np.array([-10.0, 5.0]), np.array([50.0, 35.0])), (20, 40))  # (rows, cols)
    assert a.tolist() == pytest.approx([0.0, 10.0]) and b.tolist() == pytest.approx([18.0, 19.0])  # the last row
    inside = (np.array([3.0, 4.0]), np.array([30.0, 15.0]))
    assert [q.tolist() for q in _inside(inside, (20, 40))] == [q.tolist() for q in inside]


def test_combining_windows_keeps_only_those_in_distribution():
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9]])
    probs, flag, used, pools = combine(p, np.array(["", "", "ood"]))
    assert probs.tolist() == pytest.approx([0.85, 0.15]) and flag == "" and used == 2
    assert pools["mean"].tolist() == pytest.approx([0.85, 0.15]) and pools["geometric"][0] > 0.8
    probs, flag, used, _ = combine(p, np.array(["vacuum", "vacuum", ""]))
    assert flag == "vacuum" and used == 1 and probs.tolist() == pytest.approx([0.1, 0.9])
    probs, flag, used, _ = combine(p, np.array(["ood", "ood", "ood"]))
    assert flag == "ood" and used == 3
    # calibrated: the chosen pool, tempered
    probs, *_ = combine(p, np.array(["", "", "ood"]), ("mean", 2.0))
    assert probs.tolist() == pytest.approx([0.85**2 / (0.85**2 + 0.15**2), 0.15**2 / (0.85**2 + 0.15**2)])
    probs, _, _, pools = combine(p, np.array(["", "", ""]), ("geometric", 1.0))
    assert probs.tolist() == pytest.approx(pools["geometric"].tolist())


@pytest.mark.parametrize(
    "text, needle",
    [
        ("1,2,3", "end points"),
        ("1,2,3,4,5", "end points"),
        ("1,2,a,4", "number"),
        ("1,2,nan,4", "finite"),
        ("1,2,1,2", "coincide"),
        ("-5,2,3,4", "finite"),
    ],
)
def test_a_bad_tube_is_refused_with_what_to_give(text, needle):
    with pytest.raises(HrtemflowError, match=needle):
        parse_tube(text, "u01")


def test_noise_and_a_gradient_hold_no_tube():
    rng = np.random.default_rng(3)
    flat = rng.poisson(2000, (200, 200)).astype(float)
    assert find_tubes(flat, PX_A) == []
    ramp = flat * np.linspace(0.7, 1.3, 200)[None, :]
    assert find_tubes(ramp, PX_A) == []


def test_two_tubes_are_found_with_their_ends(two_tubes):
    img, ends = two_tubes
    found = find_tubes(img, PX_A)
    assert len(found) == 2, [t.points for t in found]
    for true in ends:
        assert sum(_matches(t, true) for t in found) == 1, (true, [t.points for t in found])


def test_a_faint_tube_near_focus_is_found_whole_once():
    """4 nm underfocus at 80 kV (Cs 4 µm, 4 nm focal spread), 1300 e-/Å²: a tube's walls show so little contrast
    that the first pass's 15 Å line sees none of this 16 nm (11,0) tube, or a piece of it, in most of 8 noisy
    images; the faint pass's 40 Å line sees it, and the finder answers it as one tube, never a piece beside it."""
    from hrtemflow.apply import tubes

    px = 0.375
    lens = {"defocus": 40.0, "Cs": 4e4, "focal_spread": 40.0}
    images, (true,) = tube_micrograph(
        [(11, 0, 38, 33.0, (100.0, 100.0))], 200.0, 0.1875, 1300.0, px_A=px, ctf=lens, seeds=tuple(range(8))
    )
    true_len = float(np.hypot(*(true[1] - true[0])))

    def whole(a, b) -> bool:
        """The per-tube scorer's match (both ends within 1 nm of the tube's axis), over 3/4 of its length."""
        return (
            max(_segment_distance(e, *true) for e in (a, b)) * px <= 10.0
            and float(np.hypot(*np.subtract(b, a))) > 0.75 * true_len
        )

    first_whole = found_whole = 0
    for img in images:
        cmap, factor = tubes.contrast_map(img, px)
        first = tubes._tubes_on(cmap, px * factor, tubes.MIN_TUBE_LENGTH_A)
        first_whole += any(whole(*tubes._unbinned(ends, factor)) for _, ends in first)
        found = find_tubes(img, px)
        assert len(found) <= 1, [t.points for t in found]  # one tube, never its pieces side by side
        found_whole += bool(found) and whole(*found[0].points)
    assert first_whole <= 1 and found_whole >= first_whole + 2, (first_whole, found_whole)


def test_the_faint_pass_does_not_carry_a_tube_into_its_neighbour():
    """The two-tube micrograph at 1500 e-/Å²: the faint pass's long line carries the (12,12) tube's contrast along
    the (8,8) tube's axis, and a faint (8,8) then runs on across its neighbour; the clear (8,8) is kept."""
    images, ends = tube_micrograph(
        [(8, 8, 30, 25.0, (50.0, 55.0)), (12, 12, 32, 115.0, (115.0, 95.0))], dose=1500.0, seeds=tuple(range(6))
    )
    for img in images:
        found = find_tubes(img, PX_A)
        assert all(any(_matches(t, true) for true in ends) for t in found), [t.points for t in found]
        assert all(any(_matches(t, true) for t in found) for true in ends), [t.points for t in found]


# ------------------------------------------------------------------------------ through predict


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_predict_answers_per_tube_in_the_table_csv_and_json(cnt_bundles, two_tubes, tmp_path, capsys):
    from hrtemflow.apply.predict import predict_path
    from hrtemflow.cli import main

    img, ends = two_tubes
    folder = tmp_path / "mics"
    folder.mkdir()
    np.save(folder / "two_tubes.npy", img)
    np.save(folder / "vacuum.npy", np.random.default_rng(1).poisson(1900, img.shape).astype(np.float32))
    # the same tubes at 150 e-/Å², below the classifier's 1000-5000: flagged with the range it is outside of
    low = np.random.default_rng(2).poisson(img * (150.0 / 3000.0)).astype(np.float32)
    np.save(folder / "low_dose.npy", low)
    model = cnt_bundles["models"]["chirality"]
    out = tmp_path / "out"
    summary = predict_path(folder, [model], out, Options(pixel_size_nm=PX_A / 10), progress=False)
    printed = capsys.readouterr().out
    assert summary["n_micrographs"] == 3
    flags = {Path(r["source"]).stem: r["out_of_training_ranges"] for r in _read_csv(out / "summary.csv")}
    assert "dose" in flags["low_dose"] and "1000" in flags["low_dose"], flags
    assert "dose" not in flags["two_tubes"], flags
    dose = next(r for r in summary["micrographs"] if "low_dose" in r["source"])["conditions"]["estimated"]
    assert dose["dose_e_per_A2"]["value"] == pytest.approx(150.0, rel=0.1)

    rows = _read_csv(out / "tubes.csv")
    assert list(rows[0]) == [
        "source", "frame", "tube", "from", "task", "x0_px", "y0_px", "x1_px", "y1_px", "length_nm",
        "windows", "windows_used", "top1", "p1", "top2", "p2", "top3", "p3", "ood", "lattice_angle_deg",
        "lattice_weighed", "diameter_nm",
    ]  # fmt: skip
    mine = [r for r in rows if r["source"].endswith("two_tubes.npy")]
    assert len(mine) == 2 and not [r for r in rows if r["source"].endswith("vacuum.npy")]
    truth = {"8-8": ends[0], "12-12": ends[1]}
    for r in mine:
        pts = ((float(r["x0_px"]), float(r["y0_px"])), (float(r["x1_px"]), float(r["y1_px"])))
        tube = Tube(r["tube"], r["from"], pts)
        label = next(k for k, e in truth.items() if _matches(tube, e))
        assert r["top1"] == label, r  # (8,8) and (12,12) differ by 0.55 nm in diameter
        # the toy classifier's OOD statistics come from 2.6 nm windows with envelopes and an MTF that this
        # micrograph lacks, so "ood" is allowed here; a tube is never called vacuum
        assert r["from"] == "auto" and r["task"] == "chirality" and r["ood"] in ("", "ood")
        assert int(r["windows_used"]) >= 3
        probs = [float(r[f"p{j}"]) for j in (1, 2, 3)]
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=2e-3)
    assert "tube" in printed and "8-8" in printed and "12-12" in printed
    # the micrograph's own files carry the same: tubes.csv, predictions.json, the overlay
    own = _read_csv(out / "two_tubes" / "tubes.csv")
    assert [(r["tube"], r["top1"]) for r in own] == [(r["tube"], r["top1"]) for r in mine]
    pred = json.loads((out / "two_tubes" / "predictions.json").read_text())
    by_name = {t["tube"]: t for t in pred["tubes"]}
    for r in own:
        j = by_name[r["tube"]]["chirality"]
        assert j["top"][0]["class"] == r["top1"]
        assert j["top"][0]["probability"] == pytest.approx(float(r["p1"]), abs=1e-4)
        assert sum(j["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
    assert (out / "two_tubes" / "tubes_chirality.png").stat().st_size > 0
    assert _read_csv(out / "vacuum" / "tubes.csv") == []  # a header and no tube

    # the user's end points instead of the automatic ones
    (a, b) = ends[1]
    arg = f"{a[0]:.1f},{a[1]:.1f},{b[0]:.1f},{b[1]:.1f}"
    rc = main(["predict", str(folder / "two_tubes.npy"), "--bundles", str(model), "--out", str(tmp_path / "u"),
               "--pixel-size", str(PX_A / 10), "--tube", arg, "--quiet"])  # fmt: skip
    assert rc == 0
    user = _read_csv(tmp_path / "u" / "tubes.csv")
    assert len(user) == 1 and user[0]["from"] == "user" and user[0]["top1"] == "12-12"
    # a tube outside the micrograph is refused before any model runs
    rc = main(["predict", str(folder / "two_tubes.npy"), "--bundles", str(model), "--out", str(tmp_path / "bad"),
               "--pixel-size", str(PX_A / 10), "--tube", "10,10,5000,10", "--quiet"])  # fmt: skip
    assert rc != 0
    assert "tube u01" in capsys.readouterr().err
    # --tubes-only: the same answers per tube, no sliding-window regions
    rc = main(["predict", str(folder / "two_tubes.npy"), "--bundles", str(model), "--out", str(tmp_path / "t"),
               "--pixel-size", str(PX_A / 10), "--tubes-only", "--quiet"])  # fmt: skip
    assert rc == 0
    only = _read_csv(tmp_path / "t" / "tubes.csv")
    assert [(r["tube"], r["top1"]) for r in only] == [(r["tube"], r["top1"]) for r in own]
    assert not (tmp_path / "t" / "two_tubes" / "predictions.csv").exists()
    assert json.loads((tmp_path / "t" / "two_tubes" / "predictions.json").read_text())["regions"] == []
    # --no-tubes: no per-tube answer
    rc = main(["predict", str(folder / "two_tubes.npy"), "--bundles", str(model), "--out", str(tmp_path / "n"),
               "--pixel-size", str(PX_A / 10), "--no-tubes", "--quiet"])  # fmt: skip
    assert rc == 0 and not (tmp_path / "n" / "tubes.csv").exists()


def test_confused_chiralities_are_reported_with_their_distance():
    from hrtemflow.learn.evaluate import chirality_confusions

    confusion = np.array([[8, 2, 0], [1, 9, 0], [0, 3, 7]])
    rep = chirality_confusions(confusion, ["10-10", "11-9", "17-1"])
    assert rep["errors"] == 6
    first = rep["pairs"][0]
    assert (first["true"], first["predicted"], first["count"]) == ("17-1", "11-9", 3)
    assert first["share_of_true"] == pytest.approx(0.3)
    # (10,10) and (11,9): 0.0023 nm apart in diameter, 3.3 degrees in chiral angle
    pair = next(p for p in rep["pairs"] if p["true"] == "10-10")
    assert pair["delta_diameter_nm"] == pytest.approx(0.0023, abs=1e-4)
    assert pair["delta_angle_deg"] == pytest.approx(-3.3, abs=0.05)
    assert rep["share_of_errors"]["diameter within 0.01 nm"] == pytest.approx(0.5)
    assert rep["share_of_errors"]["angle within 5 deg"] == pytest.approx(0.5)
    assert chirality_confusions(confusion, ["core-shell", "janus", "random"]) is None


def test_the_regressors_verdict_goes_to_the_conditions_check():
    from hrtemflow.apply.predict import _regressed

    def region(d, c, ood=""):
        return {"ood": ood, "values": {"defocus_nm": (d, 1.0, "nm"), "c12_nm": (c, 0.1, "nm")}}

    per_task = {
        "chirality": [{"ood": "", "top": [("8-8", 0.9)]}],
        "aberrations": [region(10.0, 1.0), region(14.0, 2.0), region(90.0, 9.0, ood="ood")],
    }
    v = _regressed(per_task)
    assert v["defocus_nm"] == pytest.approx((12.0, 2.0, "nm")) and v["c12_nm"] == pytest.approx((1.5, 0.5, "nm"))
    assert _regressed({"aberrations": [region(10.0, 1.0, ood="ood")]}) is None
    assert _regressed({"chirality": per_task["chirality"]}) is None


def test_fitted_end_finds_both_ends_of_a_noisy_blurred_profile():
    """A tube's contrast amplitude from 10 to 110 map pixels, blurred (sigma 8) over a floor, with noise: the step
    fitted from either thresholded end (inside the tube at 12, past it at 105) lands on the true end, within a
    pixel, on both sides; a profile with no fall gives None (the crossing then decides)."""
    from scipy.special import ndtr

    from hrtemflow.apply.tubes import _fitted_end

    t = np.arange(-40.0, 140.0, 0.5)
    rng = np.random.default_rng(0)
    amp = 0.1 + ndtr((t - 10) / 8) * ndtr((110 - t) / 8) + rng.normal(0, 0.05, t.size)
    assert _fitted_end(t, amp, 12.0, -1, 40.0, 1.0) == pytest.approx(10.0, abs=1.0)
    assert _fitted_end(t, amp, 105.0, +1, 40.0, 1.0) == pytest.approx(110.0, abs=1.0)
    assert _fitted_end(t, np.ones_like(t), 105.0, +1, 40.0, 1.0) is None
