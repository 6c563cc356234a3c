"""Whole-tube micrographs (`hrtemflow.imaging.micrograph`) and the per-tube scorer of
`benchmarks/tube_micrographs.py`: one small real micrograph of an MD-like periodic tube (abTEM, coarse
sampling), its TIFF read back by predict's reader, its labelled end points on the tube, its optics from
the campaign's draws; the scorer's matching and metrics against a hand computation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("abtem")

from benchmarks import tube_micrographs as bench  # noqa: E402

from hrtemflow.apply.readers import read_micrograph  # noqa: E402
from hrtemflow.apply.tube_calibration import match_tubes  # noqa: E402
from hrtemflow.imaging import optics  # noqa: E402
from hrtemflow.imaging.views import variant_rng  # noqa: E402
from test_imaging import amorphous_carbon, make_spec, nanotube, write_md_shard  # noqa: E402

SEED = 11
PIXEL_A = 0.375


@pytest.fixture(scope="module")
def micrograph(tmp_path_factory):
    """A 3 nm (6,6) tube tiled from a 1.2 nm periodic cell, in a 5 nm field at 0.2 Å, through the
    benchmark's own writer (`make_one`: MD shard in, calibrated TIFF and labels row out)."""
    root = tmp_path_factory.mktemp("tube")
    tube = nanotube(6, 6, min_length=10.0)
    tube.info["nm"] = (6, 6)
    md = write_md_shard(root / "md", "cnt", "cnt-6-6", [tube])
    spec = make_spec(
        "cnt",
        "cnt-6-6",
        md,
        sizes=[64],
        physics={"fov_nm": [2.4, 2.4]},
        optics_cfg={"defocus_nm": [3, 20], "c12_nm": [0, 2]},
        noise={"dose_e_per_A2": [2e5, 4e5]},  # high dose: the tube stands out of the noise in every pixel
    )
    job = {"md": md["structures"], "structure": "cnt-6-6-0000000", "imaging": spec["imaging"], "chirality": "6-6"}
    options = {"length_nm": (2.8, 3.2), "field_nm": 5.0, "pixel_size_A": PIXEL_A, "sampling_A": 0.2}
    row = bench.make_one({**job, "seed": SEED, "repeat": 0}, str(root), options)
    from hrtemflow.imaging.micrograph import tube_micrograph
    from hrtemflow.imaging.shard import read_frames

    image, label = tube_micrograph(read_frames(md["structures"])[0], spec["imaging"], SEED, **options)
    return {"root": root, "row": row, "image": image, "label": label, "spec": spec, "cell": tube.cell.lengths()[2]}


def test_image_shape_and_calibrated_tiff(micrograph):
    image, label, row = micrograph["image"], micrograph["label"], micrograph["row"]
    size = optics.nice_size(50.0 / PIXEL_A)
    assert image.shape == (size, size) and label["size_px"] == size
    assert label["field_nm"] == pytest.approx(size * PIXEL_A / 10.0)
    assert label["sampling_A"] <= 0.2 and label["chirality"] == "6-6" and label["structure"] == "cnt-6-6-0000000"
    assert 2.8 <= label["length_nm"] <= 3.2 and label["length_nm"] > 2 * micrograph["cell"] / 10.0  # tiled
    (mic,) = read_micrograph(micrograph["root"] / row["file"])
    assert mic.pixel_size_A == pytest.approx(PIXEL_A, rel=1e-6)
    np.testing.assert_array_equal(mic.data, image)  # same seed, same micrograph
    assert row["x0"] == label["x0"] and row["pixel_size_nm"] == pytest.approx(PIXEL_A / 10.0)


def _local_std(image: np.ndarray, xy: np.ndarray, half: int = 3) -> float:
    c, r = int(round(xy[0])), int(round(xy[1]))
    return float(image[r - half : r + half + 1, c - half : c + half + 1].std())


def test_labelled_end_points_lie_on_the_tube(micrograph):
    """Along the labelled axis the image has the tube's walls and fringes; 1 nm beyond either end, 1.5 nm to
    either side, and along the same segment with x and y swapped (a wrong [x, y] vs [row, col]), vacuum."""
    image, lab = micrograph["image"], micrograph["label"]
    a, b = np.array([lab["x0"], lab["y0"]]), np.array([lab["x1"], lab["y1"]])
    axis = (b - a) / np.linalg.norm(b - a)
    normal = np.array([-axis[1], axis[0]])
    nm = 10.0 / PIXEL_A
    vacuum = np.median([_local_std(image, p) for p in (np.array([8.0, 8.0]), np.array([125.0, 8.0]))])
    on = [_local_std(image, a + t * (b - a)) for t in np.linspace(0.1, 0.9, 9)]
    beyond = [_local_std(image, p) for p in (a - 1.0 * nm * axis, b + 1.0 * nm * axis)]
    side = [_local_std(image, 0.5 * (a + b) + s * 1.5 * nm * normal) for s in (-1, 1)]
    swapped = [_local_std(image, (a + t * (b - a))[::-1]) for t in np.linspace(0.1, 0.9, 9)]
    assert min(on) > 3.0 * vacuum, (on, vacuum)
    assert max(beyond + side) < 1.5 * vacuum, (beyond, side, vacuum)
    assert np.linalg.norm((a - b)[::-1] - (a - b)) > 1.0 * nm  # the swap test below means something
    assert np.median(swapped) < 1.5 * vacuum, swapped
    projected = np.linalg.norm(b - a) / nm
    assert projected == pytest.approx(lab["projected_length_nm"], rel=1e-6)
    assert projected == pytest.approx(lab["length_nm"] * math.cos(math.radians(lab["tilt_deg"])), rel=1e-6)


def test_optics_are_the_campaigns_draw(micrograph):
    lab, img = micrograph["label"], micrograph["spec"]["imaging"]
    p = optics.draw_variant(variant_rng(SEED, 0, 0), img["optics"], img["detector"], img["noise"])
    assert lab["optics"] == pytest.approx(p)
    assert 3 <= lab["defocus_nm"] <= 20 and -20 <= lab["cs_um"] <= 20 and 0 <= lab["c12_nm"] <= 2
    assert 2e5 <= lab["dose_e_per_A2"] <= 4e5
    assert abs(lab["tilt_deg"]) <= img["physics"]["tilt_deg"] + 1e-9
    assert lab["energy_kV"] == img["physics"]["energy_kV"]


def test_a_tube_on_the_campaigns_film(micrograph, tmp_path):
    """With the campaign's films and support_film on, the same tube lies where it lay, on a film after it along
    the beam; with a share, some micrographs are on a film and some not, and the label says which."""
    from hrtemflow.imaging.micrograph import tube_micrograph
    from hrtemflow.imaging.shard import read_frames

    film_md = write_md_shard(tmp_path / "mda", "amorphous", "amorphous", [amorphous_carbon(box=20.0, thickness=6.0)])
    films = read_frames(Path(film_md["structures"]))
    imaging = micrograph["spec"]["imaging"]
    options = {"length_nm": (2.8, 3.2), "field_nm": 5.0, "pixel_size_A": PIXEL_A, "sampling_A": 0.2}
    tube = read_frames(Path(micrograph["spec"]["md"]["structures"]))[0]
    on = {**imaging, "physics": {**imaging["physics"], "support_film": True}}
    image, lab = tube_micrograph(tube, on, SEED, films=films, **options)
    bare = micrograph["label"]
    assert lab["support_film"] == 1 and lab["film_atoms"] > 0 and bare["support_film"] == 0
    assert lab["n_atoms"] == bare["n_atoms"] and all(lab[k] == bare[k] for k in ("x0", "y0", "x1", "y1", "defocus_nm"))
    vacuum_side = image[:12, :12].std() / image[:12, :12].mean()  # the film's speckle where the bare one has none
    assert vacuum_side > 1.5 * micrograph["image"][:12, :12].std() / micrograph["image"][:12, :12].mean()
    share = {**imaging, "physics": {**imaging["physics"], "support_film": 0.5}}
    drawn = [tube_micrograph(tube, share, s, films=films, **{**options, "sampling_A": 0.4})[1] for s in range(8)]
    assert {d["support_film"] for d in drawn} == {0, 1}
    assert all((d["film_atoms"] > 0) == bool(d["support_film"]) for d in drawn)
    _, no_films = tube_micrograph(tube, on, SEED, films=(), **options)  # no films given: none drawn
    assert no_films["support_film"] == 0 and no_films["x0"] == bare["x0"]


# ---------------------------------------------------------------------------------------------
# scorer


def _label(file: str, chirality: str, x0: float, y0: float, x1: float, y1: float) -> dict:
    return {"file": file, "chirality": chirality, "x0": x0, "y0": y0, "x1": x1, "y1": y1, "pixel_size_nm": 0.0375}


def _tube(source: str, task: str, x0, y0, x1, y1, top: list[tuple[str, float]], ood: str = "") -> dict:
    row = {"source": f"/some/folder/{source}", "frame": "", "tube": 0, "from": "auto", "task": task, "ood": ood}
    row.update(x0_px=x0, y0_px=y0, x1_px=x1, y1_px=y1, length_nm=10.0, windows=20)
    for k, (label, p) in enumerate(top, 1):
        row[f"top{k}"], row[f"p{k}"] = label, p
    return {k: str(v) for k, v in row.items()}  # as csv.DictReader gives them


def _d_nm(n: int, m: int) -> float:
    return math.sqrt(3) * 1.42 / math.pi * math.sqrt(n * n + n * m + m * m) / 10.0


def _theta(n: int, m: int) -> float:
    return math.degrees(math.atan2(math.sqrt(3) * m, 2 * n + m))


def test_scorer_matches_and_scores_as_by_hand(tmp_path):
    """Four tubes: A right (predicted axis 0.2 nm off, 10 px longer at each end), B wrong top-1 with the truth
    second, C missed (the only
    predicted tube 3 nm away), D: the far tube says 12-0, the near one (the match) 11-1; a row of another task on
    C's axis is ignored."""
    labels = [
        _label("a.tif", "8-4", 100, 100, 400, 100),
        _label("b.tif", "10-10", 100, 100, 100, 400),
        _label("c.tif", "6-6", 100, 100, 400, 400),
        _label("d.tif", "12-0", 50, 300, 350, 300),
    ]
    off = 0.2 / 0.0375  # 0.2 nm in px
    tubes = [
        _tube("a.tif", "chirality", 90, 100 + off, 410, 100 + off, [("8-4", 0.9), ("9-3", 0.05), ("7-5", 0.02)]),
        _tube("b.tif", "chirality", 100, 95, 100, 405, [("11-9", 0.6), ("10-10", 0.3), ("12-8", 0.05)], ood="ood"),
        _tube("c.tif", "chirality", 100 + 80, 100, 400 + 80, 400, [("6-6", 0.99), ("7-5", 0.005), ("8-4", 0.001)]),
        _tube("c.tif", "other", 100, 100, 400, 400, [("6-6", 0.99), ("7-5", 0.005), ("8-4", 0.001)]),
        _tube("d.tif", "chirality", 50, 200, 350, 200, [("12-0", 0.95), ("11-1", 0.03), ("13-0", 0.01)]),
        _tube("d.tif", "chirality", 52, 301, 348, 301, [("11-1", 0.7), ("10-2", 0.2), ("11-0", 0.05)]),
    ]
    m = bench.score(labels, tubes, "chirality", match_nm=1.0, resamples=200)
    assert m["tubes"] == 4 and m["found"] == 3 and m["found_rate"] == pytest.approx(0.75)
    assert m["top1"] == pytest.approx(0.25) and m["top3"] == pytest.approx(0.5)
    # ECE over the found tubes: bins of 1/15 hold 0.9 (right), 0.6 and 0.7 (wrong), one each
    assert m["ece"] == pytest.approx((abs(1 - 0.9) + 0.6 + 0.7) / 3)
    assert m["ece_check"]["n"] == 3 and m["ece_check"]["ece"] == pytest.approx(m["ece"])
    assert 0.0 < m["ece_check"]["ece_if_calibrated"] < 1.0 and 0.0 <= m["ece_check"]["p_value"] <= 1.0
    assert [(t["file"], t["found"], t["p1"]) for t in m["per_tube"]] == [
        ("a.tif", True, 0.9),
        ("b.tif", True, 0.6),
        ("c.tif", False, None),
        ("d.tif", True, 0.7),
    ]
    assert m["ood_flagged"] == 1 and m["top1_in_distribution"] == pytest.approx(0.5)
    assert [x["file"] for x in m["missed"]] == ["c.tif"] and m["missed"][0]["nearest_nm"] > 1.0
    for key in ("top1_ci95", "top3_ci95", "found_rate_ci95", "ece_ci95"):
        lo, hi = m[key]
        assert lo <= m[key.removesuffix("_ci95")] <= hi
    matches = match_tubes(labels, tubes, "chirality", 1.0)
    # the farther predicted end: 10 px past the labelled end and 0.2 nm off the axis
    assert matches[0]["distance_nm"] == pytest.approx(float(np.hypot(10, off)) * 0.0375, abs=1e-9)
    assert matches[0]["coverage"] == pytest.approx(320 / 300)
    assert matches[3]["tube"]["top1"] == "11-1"  # the near tube, not the far one that says 12-0
    errors = {e["true"]: e for e in m["confusions"]}
    assert set(errors) == {"10-10", "12-0"}
    assert errors["10-10"]["predicted"] == "11-9" and errors["12-0"]["predicted"] == "11-1"
    assert errors["10-10"]["delta_d_nm"] == pytest.approx(abs(_d_nm(11, 9) - _d_nm(10, 10)), abs=1e-4)
    assert errors["10-10"]["delta_theta_deg"] == pytest.approx(30.0 - _theta(11, 9), abs=1e-3)
    assert errors["12-0"]["delta_d_nm"] == pytest.approx(_d_nm(12, 0) - _d_nm(11, 1), abs=1e-4)
    assert errors["12-0"]["delta_theta_deg"] == pytest.approx(_theta(11, 1), abs=1e-3)
    s = m["confusion_summary"]
    assert (s["errors"], s["delta_d_lt_0.01nm"], s["delta_d_lt_0.05nm"], s["delta_theta_lt_5deg"]) == (2, 1, 2, 2)
    assert s["delta_d_lt_0.01nm_and_delta_theta_lt_5deg"] == 1
    assert "top-1" in bench.table(m)


def test_finder_benchmark_finds_the_tube_and_measures_its_ends(micrograph, tmp_path):
    """`benchmarks/tube_finder.py` on the one micrograph: the tube is found by predict's finder and matched by
    the scorer's rule, its ends measured against the labelled ones; and the end errors of hand-placed tubes."""
    import json
    import shutil

    from benchmarks import tube_finder

    folder = tmp_path / "micrographs"
    folder.mkdir()
    shutil.copy(micrograph["root"] / micrograph["row"]["file"], folder)
    bench.write_labels(folder / "labels.csv", [micrograph["row"]])
    m = tube_finder.main([str(folder), "--out", str(tmp_path / "finder.json")])
    assert m["tubes"] == 1 and m["found"] == 1.0 and m["spurious"] == 0
    (row,) = m["rows"]
    assert all(abs(e) < 1.0 for e in row["along_nm"]) and max(row["across_nm"]) < 1.0
    assert json.loads((tmp_path / "finder.json").read_text())["found"] == 1.0

    lab = {"x0": 10.0, "y0": 20.0, "x1": 50.0, "y1": 20.0, "pixel_size_nm": 0.05}
    # 4 px (0.2 nm) past the first end, 6 px (0.3 nm) short of the second, 2 px (0.1 nm) off the axis
    along, across = tube_finder.end_errors(lab, {"x0_px": 6.0, "y0_px": 22.0, "x1_px": 44.0, "y1_px": 20.0})
    assert along == pytest.approx([0.2, -0.3]) and across == pytest.approx([0.1, 0.0])
    # given end to end, each found end is measured against the labelled end nearest it
    along, _ = tube_finder.end_errors(lab, {"x0_px": 50.0, "y0_px": 20.0, "x1_px": 10.0, "y1_px": 20.0})
    assert along == pytest.approx([0.0, 0.0])


def test_finder_cost_times_this_finder_beside_an_earlier_commit(micrograph, tmp_path):
    """`benchmarks/tube_finder_cost.py` on the one micrograph, against HEAD's finder: both timed; a revision git
    does not know is refused with its name."""
    import shutil

    from benchmarks import tube_finder_cost

    folder = tmp_path / "micrographs"
    folder.mkdir()
    shutil.copy(micrograph["root"] / micrograph["row"]["file"], folder)
    bench.write_labels(folder / "labels.csv", [micrograph["row"]])
    spent = tube_finder_cost.main([str(folder), "--against", "HEAD", "--n", "1"])
    assert spent["then_s"] > 0 and spent["now_s"] > 0
    with pytest.raises(SystemExit, match="no-such-revision"):
        tube_finder_cost.main([str(folder), "--against", "no-such-revision"])
