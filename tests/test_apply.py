"""`hrtemflow predict` on real data: bundles trained here on real simulated images, applied to the real
soot micrograph (../shared/data/real) and to simulated images saved as calibrated TIFFs.

The module fixture runs the real imaging stage (abTEM) on ideal (8,0), (8,8) and (12,12) nanotubes
(14 structures each, 4 views x 4 optics variants, 32 px at 0.81 Å), trains a small chirality
classifier, an aberration regressor and a denoiser with `hrtemflow.learn.train`, and fits the OOD
statistics with `hrtemflow fit-ood`: about 45 s on 2 cores. Measurements are printed (pytest -s shows them).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("abtem")

from hrtemflow.apply.options import Options
from hrtemflow.apply.predict import denoise, normalise_windows, predict_path
from hrtemflow.apply.readers import read_micrograph  # noqa: E402
from hrtemflow.apply.regions import read_regions_csv, window_starts
from hrtemflow.apply.resample import resample
from hrtemflow.cli import main  # noqa: E402
from hrtemflow.core.errors import HrtemflowError  # noqa: E402
from hrtemflow.core.tasks import TASKS
from hrtemflow.learn.bundle import Bundle, _table_images, find_temperature, load_bundle
from hrtemflow.learn.card import ModelCard
from hrtemflow.learn.feed import dihedral
from hrtemflow.learn.inference import make_net, run_net, softmax
from hrtemflow.learn.ood import structure_ratio, vacuum_gate
from hrtemflow.learn.preprocess import D4, NORMALISATION, astig_signs, d4
from hrtemflow.learn.table import prepare

# TensorFlow tensors lack the numpy-2 `copy` keyword; Keras converts them many times a step
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

SOOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "soot_hrtem.tif"
SOOT_NM = 0.055496
from cnt_bundles import CHIRALITIES, SIZE, STRUCTURES, train_spec  # noqa: E402,F401


@pytest.fixture(scope="module")
def campaign(cnt_bundles) -> dict:
    return cnt_bundles


# ------------------------------------------------------------------------------ the real micrograph


def _spacing_nm(img: np.ndarray, px_nm: float) -> float:
    """Period (nm) of the strongest ring of the power spectrum between 0.25 and 0.6 nm."""
    a = (img - img.mean()) * np.outer(np.hanning(img.shape[0]), np.hanning(img.shape[1]))
    p = np.abs(np.fft.fft2(a)) ** 2
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(img.shape[0], px_nm), np.fft.fftfreq(img.shape[1], px_nm), indexing="ij"))
    edges = np.linspace(1 / 0.6, 1 / 0.25, 60)
    idx = np.digitize(k, edges)
    prof = [p[idx == j].mean() for j in range(1, len(edges))]
    return float(1 / (0.5 * (edges[1:] + edges[:-1]))[int(np.argmax(prof))])


def test_soot_is_out_of_distribution_for_the_nanotube_classifier_and_is_denoised(campaign, tmp_path, capsys):
    if not SOOT.exists():
        pytest.skip(f"real micrograph not found at {SOOT} (shared data not beside the checkout)")
    models = campaign["models"]
    out = tmp_path / "out"
    t0 = time.perf_counter()
    assert (
        main(
            [
                "predict",
                str(SOOT),
                "--bundles",
                str(models["chirality"]),
                str(models["denoise"]),
                "--pixel-size",
                str(SOOT_NM),
                "--out",
                str(out),
                "--table-rows",
                "5",
            ]
        )
        == 0
    )
    wall = time.perf_counter() - t0
    printed = capsys.readouterr().out
    assert (
        "chirality 1" in printed and "p3" in printed and "OOD" in printed and "more rows in predictions.csv" in printed
    )

    pred = json.loads((out / "soot_hrtem" / "predictions.json").read_text())
    regions = [r["chirality"] for r in pred["regions"]]
    assert len(regions) == 21 * 21 and all(len(r["top"]) == 3 for r in regions)
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-6 for r in regions)
    ratio = np.array([r["structure_ratio"] for r in regions])
    flagged = np.array([r["ood"] in ("ood", "vacuum") for r in regions])
    material, vacuum = ratio > 10, ratio < 5  # soot (fringes) vs the hole in the upper left
    print(
        f"\nsoot: {flagged.mean():.0%} of {len(regions)} windows flagged; material {flagged[material].mean():.0%} of "
        f"{material.sum()}, vacuum-like {flagged[vacuum].mean():.0%} of {vacuum.sum()}; median score material "
        f"{np.median([r['ood_score'] for r, m in zip(regions, material) if m]):.2f}, vacuum "
        f"{np.median([r['ood_score'] for r, v in zip(regions, vacuum) if v]):.2f}; predict {wall:.1f} s"
    )
    assert material.sum() > 250 and vacuum.sum() > 50
    assert flagged[material].mean() >= 0.95  # another material: flagged, not confidently classified
    assert flagged.mean() >= 0.7

    rows = list(csv.DictReader((out / "soot_hrtem" / "predictions.csv").open()))
    assert len(rows) == len(regions) and {
        "chirality_1",
        "chirality_p1",
        "chirality_3",
        "chirality_ood",
        "x0",
        "y1",
    } <= set(rows[0])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_micrographs"] == 1 and summary["micrographs"][0]["tasks"]["chirality"]["n_ood"] > 0
    trained_on = summary["bundles"]["chirality"]["trained_on"]  # the conditions the card records, from the shards
    assert (
        [c["family"] for c in trained_on] == ["cnt"]
        and trained_on[0]["energy_kV"] > 0
        and "defocus_nm" in trained_on[0]["optics"]
    )
    assert (out / "summary.csv").is_file()
    for name in ("overlay_chirality.png", "denoised.png"):
        assert (out / "soot_hrtem" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the denoised image: float32 TIFF at the bundle's pixel size, calibrated, fringes where they were
    den = read_micrograph(out / "soot_hrtem" / "denoised.tif")[0]
    card = json.loads((models["denoise"] / "card.json").read_text())
    expected_nm = SOOT_NM * 512 / den.data.shape[0]  # resampled to the card's pixel size, shape rounded
    assert den.metadata["calibration"] == "file" and den.data.dtype == np.float32
    assert (
        abs(den.pixel_size_A / 10 / expected_nm - 1) < 1e-5 and abs(den.pixel_size_A / card["pixel_size_A"] - 1) < 0.01
    )
    # the preprocessing keeps the physical scale: the graphitic fringes (0.34-0.37 nm) stay where they are
    mic = read_micrograph(SOOT, pixel_size_nm=SOOT_NM)[0]
    resampled, (py, px) = resample(mic.data, mic.pixel_size_A, card["pixel_size_A"])
    s = resampled.shape[0] / 512
    crop = (slice(int(100 * s), int(360 * s)), slice(int(250 * s), int(510 * s)))
    spacing = {
        "original": _spacing_nm(mic.data[100:360, 250:510], SOOT_NM),
        "resampled": _spacing_nm(resampled[crop], px / 10),
        "denoised": _spacing_nm(den.data[crop], den.pixel_size_A / 10),
    }
    corr = np.corrcoef(den.data.ravel(), resampled.ravel())[0, 1]
    print(
        "fringe spacing (nm): "
        + ", ".join(f"{k} {v:.3f}" for k, v in spacing.items())
        + f"; denoised vs input correlation {corr:.2f}"
    )
    assert 0.33 <= spacing["original"] <= 0.38 and abs(spacing["resampled"] / spacing["original"] - 1) < 0.03
    assert (
        den.data.shape == resampled.shape and np.isfinite(den.data).all()
    )  # (its quality is the denoiser's: see evaluate)


# ----------------------------------------------------------------- simulated images at another scale


def _predict_tiffs(folder: Path, images: np.ndarray, px_nm: float, bundle: Bundle, out: Path) -> dict[str, np.ndarray]:
    """Save images (shard order [x, y]) as calibrated TIFFs (rows = y, as a micrograph), run predict on
    the folder, return top-1 class index and flag per image."""
    import tifffile

    folder.mkdir()
    for i, img in enumerate(images):
        tifffile.imwrite(
            folder / f"img{i:03d}.tif",
            np.ascontiguousarray(img.T.astype(np.float32)),
            imagej=True,
            resolution=(1 / px_nm, 1 / px_nm),
            metadata={"unit": "nm"},
        )
    t0 = time.perf_counter()
    summary = predict_path(folder, [bundle.path], out, Options(), progress=False, echo=lambda *a, **k: None)
    assert summary["n_micrographs"] == len(images) and summary["n_failed"] == 0
    classes, top1, flag = bundle.card.classes, [], []
    for rec in sorted(summary["micrographs"], key=lambda r: r["source"]):
        p = json.loads((Path(rec["out_dir"]) / "predictions.json").read_text())
        assert len(p["regions"]) == 1 and p["regions"][0]["chirality"]["windows"] == 1
        top1.append(classes.index(p["regions"][0]["chirality"]["top"][0]["class"]))
        flag.append(p["regions"][0]["chirality"]["ood"] != "")
    return {"top1": np.array(top1), "flag": np.array(flag), "wall_s": time.perf_counter() - t0}


def test_images_at_another_pixel_size_predict_like_the_training_size(campaign, tmp_path):
    """Test-split images at 2/3 of the training pixel size, as calibrated TIFFs, resampled back by
    predict: (a) the arrays upsampled 1.5x (bicubic): the same predictions as the original arrays;
    (b) the imaging stage's own 48 px images of the same views (a finer detector, its own shot
    noise): the same accuracy."""
    import zarr
    from skimage.transform import rescale

    spec, root = campaign["specs"]["chirality"], campaign["root"]
    bundle = load_bundle(campaign["models"]["chirality"])
    _, splits = prepare(spec, root)
    test = splits["test"]
    images = _table_images(test, SIZE, 10_000)
    fine = np.stack(
        [np.asarray(zarr.open_group(test.paths[s], mode="r")["s48/image"][r]) for s, r in zip(test.shard, test.row)]
    )
    px_nm = float(test.pixel_size_A[0]) / 10
    assert np.allclose(test.pixel_size_A, bundle.pixel_size_A) and len(images) >= 180

    x = normalise_windows(images.swapaxes(1, 2), bundle.net)  # as a micrograph window: transposed back to [x, y]
    original = softmax(run_net(bundle.net, x)["outputs"]).mean(axis=1).argmax(axis=1)
    single = softmax(run_net(bundle.net, x, tta=False)["outputs"][:, 0]).argmax(axis=1)
    upsampled = np.stack([rescale(a.astype(np.float64), 1.5, order=3, mode="reflect") for a in images])
    up = _predict_tiffs(tmp_path / "up", upsampled, px_nm / 1.5, bundle, tmp_path / "out-up")
    det = _predict_tiffs(tmp_path / "fine", fine, px_nm * SIZE / 48, bundle, tmp_path / "out-fine")
    acc = {
        "original": (original == test.y).mean(),
        "single pass": (single == test.y).mean(),
        "upsampled": (up["top1"] == test.y).mean(),
        "48 px detector": (det["top1"] == test.y).mean(),
    }
    print(
        f"\n{len(images)} test images, accuracy "
        + ", ".join(f"{k} {v:.3f}" for k, v in acc.items())
        + f"; top-1 agreement with the original: upsampled {(up['top1'] == original).mean():.3f}, 48 px "
        f"{(det['top1'] == original).mean():.3f}; flagged: upsampled {up['flag'].mean():.1%}, 48 px "
        f"{det['flag'].mean():.1%}; "
        f"predict {up['wall_s']:.1f} s / {len(images)} files"
    )
    assert acc["original"] > 0.8  # the classifier learnt the tubes: chance is 1/3
    # resampling must not cost accuracy (it may gain a little: under JAX 0.969 -> 0.995), and must keep the answers
    assert acc["upsampled"] >= acc["original"] - 0.02 and (up["top1"] == original).mean() >= 0.95
    assert abs(acc["48 px detector"] - acc["original"]) <= 0.04
    assert det["flag"].mean() <= 0.1 and up["flag"].mean() <= 0.15  # in-distribution images are rarely flagged


# ------------------------------------------------------------------------------------- regression


def test_aberration_estimates_have_a_spread_and_follow_the_image(campaign, tmp_path, capsys):
    if not SOOT.exists():
        pytest.skip(f"real micrograph not found at {SOOT} (shared data not beside the checkout)")
    ab = campaign["models"]["aberrations"]
    out = tmp_path / "out"
    assert (
        main(
            [
                "predict",
                str(SOOT),
                "--bundles",
                str(ab),
                "--pixel-size",
                str(SOOT_NM),
                "--box",
                "300,150,400,250",
                "--box",
                "10,10,120,120",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "defocus_nm" in printed and "phi12_deg" in printed and "±" in printed
    pred = json.loads((out / "soot_hrtem" / "predictions.json").read_text())["regions"]
    for region in pred:
        values = region["aberrations"]["values"]
        assert set(values) == {"defocus_nm", "c12_cos2phi_nm", "c12_sin2phi_nm", "c12_nm", "phi12_deg"}
        assert (
            all(v["std"] >= 0 and v["value"] is not None for v in values.values())
            and values["defocus_nm"]["unit"] == "nm"
        )
        assert 0 <= values["phi12_deg"]["value"] < 180
    assert pred[0]["aberrations"]["ood"] == "ood"  # soot, for a regressor trained on nanotubes
    rows = list(csv.DictReader((out / "soot_hrtem" / "predictions.csv").open()))
    assert {"aberrations_defocus_nm", "aberrations_defocus_nm_std", "aberrations_ood"} <= set(rows[0])

    # averaged over the 8 flips/rotations, the estimate turns with the image exactly: a quarter turn
    # negates both astigmatism components, a flip the sine one (defocus and |C12| stay)
    b = load_bundle(ab)
    x = np.random.default_rng(0).normal(size=(6, SIZE, SIZE)).astype(np.float32)
    mean = {
        name: run_net(b.net, np.ascontiguousarray(t))["outputs"].mean(axis=1)
        for name, t in {"x": x, "rot": np.rot90(x, 1, axes=(1, 2)), "flip": x[:, ::-1, :]}.items()
    }
    np.testing.assert_allclose(mean["rot"], mean["x"] * [1, -1, -1, 1], atol=1e-4)
    np.testing.assert_allclose(mean["flip"], mean["x"] * [1, 1, -1, 1], atol=1e-4)


# ------------------------------------------------------------------------------------ regions, folder


def test_regions_csv_boxes_and_a_folder_with_a_bad_file(campaign, tmp_path):
    if not SOOT.exists():
        pytest.skip(f"real micrograph not found at {SOOT} (shared data not beside the checkout)")
    chir = campaign["models"]["chirality"]
    regions = tmp_path / "regions.csv"
    regions.write_text("x0,y0,x1,y1,label\n10,10,60,60,vacuum\n300,150,450,300,soot big\n340,200,350,210,soot tiny\n")
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(SOOT, folder / "soot.tif")
    tiny = np.random.default_rng(0).random((20, 20)).astype(np.float32)
    np.save(folder / "tiny.npy", tiny)  # 20 px x 0.055 nm: smaller than one window
    out = tmp_path / "out"
    assert (
        main(
            [
                "predict",
                str(folder),
                "--bundles",
                str(chir),
                "--pixel-size",
                str(SOOT_NM),
                "--regions",
                str(regions),
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 1  # the good file analysed, the bad one listed: a folder run with a failure exits non-zero
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_micrographs"] == 1 and summary["n_failed"] == 1
    bad = next(r for r in summary["micrographs"] if r["status"] == "failed")
    assert "tiny.npy" in bad["source"] and "smaller than one 32 x 32 px window" in bad["reason"]
    rows = list(csv.DictReader((out / "soot" / "predictions.csv").open()))
    assert [r["label"] for r in rows] == ["vacuum", "soot big", "soot tiny"]
    pred = json.loads((out / "soot" / "predictions.json").read_text())["regions"]
    # resampled by 350/512: 50 px -> 34 px (origins 0, 2 per axis), 150 px -> 103 px (0, 16, 32, 48, 64, 71),
    # 10 px -> one window centred on the box
    assert [p["chirality"]["windows"] for p in pred] == [4, 36, 1]
    assert pred[1]["chirality"]["ood"] == "ood" and pred[2]["chirality"]["ood"] == "ood"
    summary_csv = list(csv.DictReader((out / "summary.csv").open()))
    assert {r["status"] for r in summary_csv} == {"ok", "failed"}

    assert (
        main(
            [
                "predict",
                str(SOOT),
                "--bundles",
                str(chir),
                "--pixel-size",
                str(SOOT_NM),
                "--box",
                "0,0,100,100",
                "--box",
                "200,200,300,300",
                "--out",
                str(tmp_path / "boxes"),
                "--quiet",
                "--no-tta",
            ]
        )
        == 0
    )
    rows = list(csv.DictReader((tmp_path / "boxes" / "soot_hrtem" / "predictions.csv").open()))
    assert [(r["region"], r["x1"]) for r in rows] == [("b000", "100"), ("b001", "300")]


def test_stacks_and_window_size(campaign, tmp_path, capsys):
    if not SOOT.exists():
        pytest.skip(f"real micrograph not found at {SOOT} (shared data not beside the checkout)")
    import tifffile

    chir = campaign["models"]["chirality"]
    soot = read_micrograph(SOOT, pixel_size_nm=SOOT_NM)[0].data
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(
        stack,
        np.stack([soot[:128, :128], soot[300:428, 300:428]]),
        imagej=True,
        resolution=(1 / SOOT_NM, 1 / SOOT_NM),
        metadata={"unit": "nm", "axes": "ZYX"},
    )
    assert main(["predict", str(stack), "--bundles", str(chir), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "--frames all" in capsys.readouterr().err
    assert (
        main(
            [
                "predict",
                str(stack),
                "--bundles",
                str(chir),
                "--frames",
                "all",
                "--out",
                str(tmp_path / "o"),
                "--quiet",
                "--no-tta",
            ]
        )
        == 0
    )
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert [Path(r["out_dir"]).name for r in summary["micrographs"]] == ["stack_f000", "stack_f001"]
    assert all(abs(r["pixel_size_nm"] - SOOT_NM) < 1e-6 for r in summary["micrographs"])

    # regions of 64 px at the model's pixel size (94 px of the micrograph), no overlap: each tiled by 32 px windows
    assert (
        main(
            [
                "predict",
                str(SOOT),
                "--bundles",
                str(chir),
                "--pixel-size",
                str(SOOT_NM),
                "--window-px",
                "64",
                "--stride-fraction",
                "1",
                "--out",
                str(tmp_path / "w"),
                "--quiet",
                "--no-tta",
            ]
        )
        == 0
    )
    rows = list(csv.DictReader((tmp_path / "w" / "soot_hrtem" / "predictions.csv").open()))
    assert len(rows) == 36 and {int(r["x1"]) - int(r["x0"]) for r in rows} == {94}
    pred = json.loads((tmp_path / "w" / "soot_hrtem" / "predictions.json").read_text())["regions"]
    assert all(p["chirality"]["windows"] >= 4 for p in pred)


# ------------------------------------------------------------------------------------- bad inputs


def test_user_errors_exit_2_with_a_clear_message(campaign, tmp_path, capsys):
    if not SOOT.exists():
        pytest.skip(f"real micrograph not found at {SOOT} (shared data not beside the checkout)")
    chir = campaign["models"]["chirality"]
    # uncalibrated file, no --pixel-size: through the installed command, no traceback
    res = subprocess.run(
        [
            str(Path(sys.executable).parent / "hrtemflow"),
            "predict",
            str(SOOT),
            "--bundles",
            str(chir),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "--pixel-size" in res.stderr and "soot_hrtem.tif" in res.stderr

    def fails(args: list[str], *needles: str) -> None:
        assert main(["predict", *args, "--out", str(tmp_path / "o"), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert all(n in err for n in needles), err

    small = tmp_path / "small.tif"
    import tifffile

    tifffile.imwrite(
        small,
        np.random.default_rng(0).random((40, 40), dtype=np.float32),
        imagej=True,
        resolution=(1 / 0.05, 1 / 0.05),
        metadata={"unit": "nm"},
    )
    fails([str(small), "--bundles", str(chir)], "40 x 40 px at 0.05 nm/px", "smaller than one 32 x 32 px window")

    mismatched = tmp_path / "mismatched"
    shutil.copytree(chir, mismatched, ignore=shutil.ignore_patterns("checkpoint"))
    card = json.loads((mismatched / "card.json").read_text())
    (mismatched / "card.json").write_text(json.dumps({**card, "input_size": 64}))
    fails(
        [str(SOOT), "--bundles", str(mismatched), "--pixel-size", str(SOOT_NM)],
        "does not match the card's input_size 64",
    )
    (mismatched / "card.json").write_text(json.dumps(card))

    stats = dict(np.load(mismatched / "ood.npz", allow_pickle=False))
    np.savez(mismatched / "ood.npz", **{**stats, "model_sha256": np.asarray("0" * 64)})
    fails([str(SOOT), "--bundles", str(mismatched), "--pixel-size", str(SOOT_NM)], "fitted for another model.keras")

    fails(
        [str(SOOT), "--bundles", str(chir), "--pixel-size", str(SOOT_NM), "--box", "400,400,600,600"],
        "not inside the image of 512 x 512 px",
    )
    fails([str(SOOT), "--bundles", str(chir), "--box", "1,2,3"], "four numbers")
    fails([str(SOOT), "--bundles", str(tmp_path)], "model.keras is missing")
    fails([str(tmp_path / "none.tif"), "--bundles", str(chir)], "does not exist")
    fails([str(SOOT), "--bundles", str(chir), "--pixel-size", "-1"], "positive")
    fails(
        [str(SOOT), "--bundles", str(chir), "--pixel-size", str(SOOT_NM), "--temperature", "chirality=x"],
        "--temperature",
    )


def test_temperature_comes_from_the_evaluation_report(campaign, tmp_path):
    chir = campaign["models"]["chirality"]
    card = ModelCard.read(chir)
    assert find_temperature(chir, card) == (None, "none found (uncalibrated softmax)")
    report = chir.parent.parent / "reports" / "chirality"
    report.mkdir(parents=True, exist_ok=True)
    (report / "metrics.json").write_text(
        json.dumps({"task": "chirality", "dataset_sha256": card.dataset_sha256, "temperature": 1.7})
    )
    try:
        assert find_temperature(chir, card) == (1.7, str(report / "metrics.json"))
        assert (
            find_temperature(chir, dataclasses.replace(card, dataset_sha256="other"))[0] is None
        )  # a report of another dataset
        assert find_temperature(chir, card, 0.9) == (0.9, "--temperature")
    finally:
        shutil.rmtree(report.parent)


# ------------------------------------------------------------------------------ pieces, no training


def test_vacuum_statistic_separates_noise_from_structure():
    from test_learn_data import fringes

    rng = np.random.default_rng(1)
    noise = rng.poisson(400, (200, SIZE, SIZE)).astype(np.float64)
    lattice = np.stack(
        [rng.poisson(400 * fringes(SIZE, 6.0, t, 0.0, contrast=0.2)) for t in rng.uniform(0, np.pi, 50)]
    ).astype(np.float64)
    gate = vacuum_gate(SIZE, None)
    r_noise, r_lattice = structure_ratio(noise), structure_ratio(lattice)
    assert (r_noise < gate).mean() > 0.97 and (r_lattice > 10 * gate).all()
    # an illumination gradient is not structure
    ramp = noise + np.linspace(0, 200, SIZE)[None, :, None]
    assert (structure_ratio(ramp) < gate).mean() > 0.97
    assert vacuum_gate(SIZE, {"ratio_q01": 1.1}) == 1.1


def test_test_time_augmentation_undoes_the_training_transforms():
    """For each of the 8 elements, the astigmatism sign change is the one the training feed applies."""

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 8))
    y = np.tile([1.0, 2.0, 3.0], (64, 1))
    xa, ya = dihedral(x, rng, y=y, astig=TASKS["aberrations"].sign_flips)
    seen = set()
    for i in range(64):
        ((k, f),) = [(k, f) for k, f in D4 if np.array_equal(d4(x[i : i + 1], k, f)[0], xa[i])]
        sc, ss = astig_signs(k, f)
        assert np.allclose(ya[i], [1.0, 2.0 * sc, 3.0 * ss])
        seen.add((k, f))
    assert len(seen) == 8


def test_denoise_tiles_blend_back_to_the_image():
    """An identity network: tiling, normalisation, transposition and blending must give the input back."""
    import keras

    inp = keras.Input((16, 16, 1), name="image")
    out = keras.layers.Conv2D(1, 1, kernel_initializer="ones", bias_initializer="zeros", name="clean")(inp)
    model = keras.Model(inp, out)
    card = ModelCard(
        task="denoise",
        kind="denoising",
        input_size=16,
        pixel_size_A=1.0,
        normalisation=dict(NORMALISATION),
        dataset_sha256="",
        hyper={"batch_size": 1},
    )
    b = Bundle(Path("."), card, make_net(model, "denoising", "denoise"), model)
    img = np.random.default_rng(0).normal(100, 10, (45, 61)).astype(np.float32)
    img[:, :30] += np.linspace(0, 50, 45)[:, None]  # non-symmetric, so a transposition would show
    np.testing.assert_allclose(denoise(b, img), img, rtol=1e-5, atol=1e-3)


def test_resampling_keeps_the_calibration():
    from test_learn_data import fringes

    img = fringes(240, 24.0, 0.3, 0.0) * 100  # 24 periods over 240 px at 0.5 Å: 5 Å period
    out, (py, px) = resample(img, 0.5, 0.8)
    assert out.shape == (150, 150) and py == px == 0.8
    assert abs(_spacing_nm(out, px / 10) - 0.5) < 0.02
    # band-limited: white shot noise stays white (as the imaging stage makes it), a round trip is exact
    noise = np.random.default_rng(0).poisson(100, (256, 256)).astype(np.float32)
    down, _ = resample(noise, 0.5, 0.8)
    windows = down[:128, :128].reshape(4, 32, 4, 32).swapaxes(1, 2).reshape(16, 32, 32)
    assert abs(np.median(structure_ratio(windows)) - 1) < 0.15
    up, (pu, _) = resample(img, 0.5, 0.5 / 1.5)
    back, _ = resample(up, pu, 0.5)
    assert up.shape == (360, 360) and np.abs(back - img).max() < 1e-3 * np.ptp(img)
    coarse, (pk, _) = resample(img, 0.5, 0.8, method="skimage")
    assert coarse.shape == (150, 150) and pk == 0.8 and abs(_spacing_nm(coarse, 0.08) - 0.5) < 0.02
    same, cal = resample(img, 0.8, 0.8)
    assert same.shape == img.shape and cal == (0.8, 0.8)
    assert window_starts(100, 32, 16) == [0, 16, 32, 48, 64, 68] and window_starts(20, 32, 16) == []


def test_regions_csv_is_checked(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("x0,y0,x1\n1,2,3\n")
    with pytest.raises(HrtemflowError, match="y1 are missing"):
        read_regions_csv(p)
    p.write_text("x0,y0,x1,y1\n1,2,a,4\n")
    with pytest.raises(HrtemflowError, match="line 2"):
        read_regions_csv(p)
    p.write_text("X0, Y0, X1, Y1, Label\n1,2,30,40, tube A\n\n")
    (r,) = read_regions_csv(p)
    assert (r.x0, r.y0, r.x1, r.y1, r.label) == (1, 2, 30, 40, "tube A")
    with pytest.raises(HrtemflowError, match="not inside"):
        r.check((20, 100), "img")
