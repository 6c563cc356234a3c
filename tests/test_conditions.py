"""A micrograph's own imaging conditions against a network's training ranges (`hrtemflow.apply.conditions`),
on real physics: an abTEM multislice of a random amorphous-carbon film (2.0 g/cm³, 20 x 20 x 2 nm, 80 kV),
imaged through the project's optics (`hrtemflow.imaging.optics`: CTF with Cs and astigmatism, focal spread,
partial spatial coherence, detector MTF) and drawn as Poisson counts at a known dose.

The film's exit wave is periodic, so a 2 x 2 tiling of its 400 px image (0.5 Å) is a seamless 800 px
micrograph. Defocus: abTEM's is that of the exit surface; the rings give the film's mid-plane, 1 nm
(half the thickness) less.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("abtem")

from hrtemflow.apply import conditions as cond  # noqa: E402
from hrtemflow.learn.card import ModelCard  # noqa: E402
from hrtemflow.learn.preprocess import NORMALISATION  # noqa: E402

FOV_A = 200.0
THICKNESS_A = 20.0
ENERGY_KV = 80.0
PIXEL_A = 0.5
#: measured (module docstring of conditions: 162 micrographs of these films, -20 to 120 nm, Cs ±15 µm, |C12|
#: 0-3 nm, 100-1000 e⁻/Å²): high-confidence fits within 1.1 nm for 90 % of micrographs, 2.7 nm at worst
DEFOCUS_TOLERANCE_NM = 2.0


def _imaging(defocus_nm=(3, 20), dose=(1000, 5000), c12_nm=(0, 2), cs_um=(-20, 20), energy=80):
    """One card `imaging` entry as `hrtemflow.learn.table.imaging_conditions` writes it."""
    return {
        "family": "cnt",
        "energy_kV": energy,
        "optics": {
            "defocus_nm": list(defocus_nm),
            "cs_um": list(cs_um),
            "c12_nm": list(c12_nm),
            "c21_nm": [0, 0],
            "c23_nm": [0, 0],
            "focal_spread_nm": [2, 4],
            "convergence_mrad": [0.1, 0.3],
            "objective_aperture_mrad": 0,
        },
        "detector": {"mtf_c50": [0.3, 0.6]},
        "noise": {
            "dose_e_per_A2": list(dose),
            "brightness": [0.9, 1.1],
            "contrast": [0.9, 1.1],
            "background": [0, 0.05],
        },
    }


def card(imaging=None, pixel_size_A=PIXEL_A, input_size=48) -> ModelCard:
    return ModelCard(
        task="aberrations",
        kind="regression",
        input_size=input_size,
        pixel_size_A=pixel_size_A,
        normalisation=dict(NORMALISATION, eps=1e-6, clip=10.0),
        dataset_sha256="0" * 64,
        hyper={"batch_size": 16},
        targets=[{"name": "defocus_A", "unit": "Å", "offset": 0.0, "scale": 100.0}],
        imaging=imaging,
    )


@pytest.fixture(scope="module")
def film_wave():
    """The exit wave (FFT) of a random a-C film, 20 x 20 x 2 nm at 2.0 g/cm³ (ASE random positions), 0.2 Å sampling."""
    import abtem
    from abtem.core.fft import fft2
    from ase import Atoms

    from hrtemflow.imaging.multislice import abtem_settings

    rng = np.random.default_rng(11)
    cell = np.array([FOV_A, FOV_A, THICKNESS_A])
    n = int(round(2.0 / 12.011 * 0.602214 * cell.prod()))
    atoms = Atoms(f"C{n}", positions=rng.uniform(0.0, 1.0, (n, 3)) * cell, cell=cell, pbc=True)
    with abtem_settings(threads=2):
        potential = abtem.Potential(
            atoms, gpts=1000, slice_thickness=2.0, parametrization="lobato", projection="infinite"
        )
        waves = abtem.PlaneWave(energy=1e3 * ENERGY_KV).multislice(potential)
        wave = waves.compute().array if hasattr(waves, "compute") else waves.array
        return fft2(wave.reshape(1000, 1000), overwrite_x=False)


def micrograph(wave_fft, defocus_nm, dose=1000.0, cs_um=10.0, c12_nm=0.0, phi12_deg=0.0, pixel_A=PIXEL_A, seed=0):
    """Poisson electron counts, [row, col] = [y, x], 2 x 2 tiles of the film's image (the project's optics)."""
    from hrtemflow.imaging import optics
    from hrtemflow.imaging.multislice import abtem_settings

    p = {
        "defocus_A": 10.0 * defocus_nm,
        "cs_A": 1e4 * cs_um,
        "c12_A": 10.0 * c12_nm,
        "phi12_rad": math.radians(phi12_deg),
        "c21_A": 0.0,
        "phi21_rad": 0.0,
        "c23_A": 0.0,
        "phi23_rad": 0.0,
        "focal_spread_A": 30.0,
        "convergence_mrad": 0.2,
        "dose_e_per_A2": dose,
        "brightness": 1.0,
        "contrast": 1.0,
        "background": 0.0,
        "mtf_c50": 0.5,
    }
    size = int(round(FOV_A / pixel_A))
    with abtem_settings(threads=2):
        _, expected = optics.variant_images(
            wave_fft, FOV_A, 1e3 * ENERGY_KV, 0.2, [size], p, np.random.default_rng(seed)
        )[size]
    tiled = np.tile(np.asarray(expected, dtype=np.float64).T, (2, 2))
    return np.random.default_rng(seed).poisson(np.clip(tiled, 0.0, None)).astype(np.float32)


@pytest.fixture(scope="module")
def at_45(film_wave):
    """45 nm underfocus (44 nm at the film's mid-plane), Cs 10 µm, |C12| 2 nm at 30°, 1000 e⁻/Å²."""
    return micrograph(film_wave, 45.0, c12_nm=2.0, phi12_deg=30.0, seed=1)


# ---------------------------------------------------------------------------------------------
# measurements


def test_wavelength_is_the_imaging_stages():
    from hrtemflow.imaging import optics

    for kv in (60.0, 80.0, 300.0):
        assert cond.wavelength_A(kv) == pytest.approx(optics.wavelength_A(1e3 * kv), rel=1e-6)


def test_thon_fit_recovers_defocus_and_astigmatism(at_45):
    est = cond.estimate_conditions(at_45, PIXEL_A, {"calibration": "file"}, energy_kV=ENERGY_KV, cs_um=(-20, 20))
    d, c12, phi = est["defocus_nm"], est["c12_nm"], est["phi12_deg"]
    print(
        f"\ndefocus {d['value']:.2f} ± {d['uncertainty']:.2f} nm ({d['confidence']}, {d['sign']}); |C12| "
        f"{c12['value']:.2f} nm at {phi['value']:.1f}°; Cs {est['thon']['cs_um']} µm; {est['seconds']:.2f} s"
    )
    assert d["confidence"] == "high" and "Thon-ring fit" in d["method"]
    assert d["sign"] == "undetermined"  # Cs range symmetric about 0: ±defocus fit alike, said as underfocus
    assert abs(d["value"] - (45.0 - THICKNESS_A / 20)) < DEFOCUS_TOLERANCE_NM
    assert abs(c12["value"] - 2.0) < 0.5
    assert abs((phi["value"] - 30.0 + 90.0) % 180.0 - 90.0) < 10.0


@pytest.mark.parametrize("defocus_nm", [25.0, 80.0])
def test_thon_fit_other_defocus(film_wave, defocus_nm):
    img = micrograph(film_wave, defocus_nm, dose=300.0, cs_um=-10.0, seed=int(defocus_nm))
    d = cond.estimate_conditions(img, PIXEL_A, {}, energy_kV=ENERGY_KV, cs_um=(-20, 20))["defocus_nm"]
    assert d["confidence"] in ("high", "medium")
    assert abs(d["value"] - (defocus_nm - THICKNESS_A / 20)) < DEFOCUS_TOLERANCE_NM


def test_no_rings_is_unknown_with_the_reason():
    vacuum = np.random.default_rng(3).poisson(250.0, (800, 800)).astype(np.float32)
    est = cond.estimate_conditions(vacuum, PIXEL_A, {}, energy_kV=ENERGY_KV)
    assert est["defocus_nm"]["value"] is None and est["defocus_nm"]["confidence"] == "unknown"
    assert "no Thon rings" in est["defocus_nm"]["reason"]
    assert est["dose_e_per_A2"]["value"] == pytest.approx(1000.0, rel=0.01)  # 250 counts on 0.25 Å²


@pytest.mark.parametrize("dose", [100.0, 2000.0])
def test_dose_from_counts(film_wave, dose):
    img = micrograph(film_wave, 30.0, dose=dose, seed=5)
    q = cond.estimate_conditions(img, PIXEL_A, {}, energy_kV=ENERGY_KV)["dose_e_per_A2"]
    assert q["confidence"] == "high" and "Poisson" in q["method"]
    # the film's mean intensity is 0.99 of the beam's (electrons scattered beyond the wave's band limit)
    assert q["value"] == pytest.approx(dose, rel=0.03)


def test_dose_is_unknown_for_images_that_are_not_counts(film_wave):
    counts = micrograph(film_wave, 30.0, dose=1000.0, seed=6)
    scaled = counts * np.float32(0.0137) + np.float32(3.5)  # a gain-normalised float image
    q = cond.estimate_conditions(scaled, PIXEL_A, {})["dose_e_per_A2"]
    assert q["value"] is None and q["reason"].startswith("not electron counts") and "integers" in q["reason"]
    gained = np.rint(counts * 37.0)  # integers, but 37 grey levels per electron
    q = cond.estimate_conditions(gained, PIXEL_A, {})["dose_e_per_A2"]
    assert q["value"] is None and "not electron counts: variance/mean = 3" in q["reason"]
    ratio = float(q["reason"].split("variance/mean = ")[1].split()[0])
    assert ratio == pytest.approx(37.0, rel=0.1)


# ---------------------------------------------------------------------------------------------
# ranges and flags


def test_training_ranges_merge_entries():
    r = cond.training_ranges(
        card([_imaging((3, 20), (1000, 5000)), _imaging((-10, 12), (500, 800), c12_nm=(0, 5), energy=80)])
    )
    assert r["known"] and r["energy_kV"] == [80.0]
    assert r["defocus_nm"] == [-10.0, 20.0] and r["dose_e_per_A2"] == [500.0, 5000.0] and r["c12_nm"] == [0.0, 5.0]
    assert r["field_nm"] == pytest.approx(48 * PIXEL_A / 10) and r["phase_plate"] is False
    old = cond.training_ranges(card(None))
    assert not old["known"] and old["defocus_nm"] is None and old["pixel_size_A"] == PIXEL_A


def test_defocus_out_of_range_is_flagged_in_range_is_not(at_45):
    cards = {
        "near": card([_imaging(defocus_nm=(3, 20))]),
        "far": card([_imaging(defocus_nm=(20, 60))]),
        "old": card(None),
    }
    out = cond.assess(at_45, PIXEL_A, {"calibration": "file"}, cards)
    json.dumps(out, allow_nan=False)
    near = out["per_task"]["near"]["out_of_range"]
    assert len(near) == 1, near
    assert near[0].startswith("defocus 4") and "outside the training range 3–20 nm underfocus" in near[0]
    assert "predictions are unreliable" in near[0]
    assert out["per_task"]["far"]["out_of_range"] == []
    assert out["per_task"]["old"]["out_of_range"] == []  # no imaging record: nothing to check against
    assert out["per_task"]["old"]["training"]["known"] is False


def test_dose_out_of_range_is_flagged(film_wave):
    img = micrograph(film_wave, 45.0, dose=150.0, seed=7)
    out = cond.assess(img, PIXEL_A, {}, [card([_imaging(defocus_nm=(20, 60), dose=(1000, 5000))])])
    flags = out["per_task"]["aberrations"]["out_of_range"]
    assert len(flags) == 1 and flags[0].startswith("dose 1") and "below the training range 1000–5000" in flags[0]


def test_too_coarse_pixel_size_is_flagged(film_wave):
    coarse = micrograph(film_wave, 45.0, pixel_A=1.0, seed=8)  # 400 px at 1 Å: Nyquist 2 Å
    cards = [card([_imaging(defocus_nm=(20, 60))], pixel_size_A=PIXEL_A, input_size=48)]
    flags = cond.assess(coarse, 1.0, {"calibration": "override"}, cards)["per_task"]["aberrations"]["out_of_range"]
    assert len(flags) == 1, flags
    assert flags[0].startswith("pixel size 1 Å is coarser than the training's 0.5 Å")
    assert "48 px window, 2.4 nm" in flags[0] and "24 px" in flags[0]
    # finer than the card's (predict downsamples): no flag, whatever the difference
    fine = cond.assess(coarse, 1.0, {}, [card([_imaging(defocus_nm=(20, 60))], pixel_size_A=2.0)])
    assert fine["per_task"]["aberrations"]["out_of_range"] == []


def test_pixels_a_bundle_was_trained_to_resample_are_not_flagged(film_wave):
    """A card whose images were recorded at up to 2.2 x its pixel and resampled (detector.recorded_pixel_scale)
    accepts a micrograph at 2 x its pixel, and still flags one beyond that range, naming it."""
    coarse = micrograph(film_wave, 45.0, pixel_A=1.0, seed=8)
    detector = {"mtf_c50": [0.3, 0.6], "recorded_pixel_scale": [0.6, 2.2]}
    resampled = dict(_imaging(defocus_nm=(20, 60)), detector=detector)
    trained = card([resampled], pixel_size_A=PIXEL_A)
    assert cond.training_ranges(trained)["recorded_pixel_scale"] == [0.6, 2.2]
    assert cond.assess(coarse, 1.0, {}, [trained])["per_task"]["aberrations"]["out_of_range"] == []
    narrow = dict(resampled, detector={"mtf_c50": [0.3, 0.6], "recorded_pixel_scale": [0.6, 1.5]})
    flags = cond.assess(coarse, 1.0, {}, [card([narrow], pixel_size_A=PIXEL_A)])["per_task"]["aberrations"]
    assert len(flags["out_of_range"]) == 1, flags
    assert "recorded at up to 0.75 Å and resampled" in flags["out_of_range"][0]
    assert "take micrographs at 0.75 Å per pixel or finer" in flags["out_of_range"][0]


def test_beam_energy_from_the_file(tmp_path: Path, at_45):
    from hrtemflow.apply.readers import read_micrograph
    from test_readers import write_dm

    p = tmp_path / "film.dm4"
    write_dm(p, at_45[:256, :256].copy(), 0.05, "nm", version=4, voltage_V=300e3)
    mic = read_micrograph(p)[0]
    out = cond.assess(mic.data, mic.pixel_size_A, mic.metadata, [card([_imaging(defocus_nm=(20, 60))])])
    assert out["estimated"]["energy_kV"]["value"] == pytest.approx(300.0)
    assert out["estimated"]["thon"].get("energy_kV", 300.0) == pytest.approx(300.0)  # the rings use the file's
    flags = out["per_task"]["aberrations"]["out_of_range"]
    assert any(f.startswith("beam energy 300 kV is not the training energy 80 kV") for f in flags), flags


def test_regressor_values_are_used_and_the_rings_still_checked(at_45):
    cards = [card([_imaging(defocus_nm=(3, 20))])]
    regressor = {"defocus_nm": (18.0, 1.5, "nm"), "c12_nm": (1.0, 0.3, "nm"), "phi12_deg": (40.0, 5.0, "deg")}
    out = cond.assess(at_45, PIXEL_A, {}, cards, aberrations=regressor)
    d = out["estimated"]["defocus_nm"]
    assert d["value"] == 18.0 and "aberration regressor" in d["method"]
    flags = out["per_task"]["aberrations"]["out_of_range"]
    assert len(flags) == 1 and "from the Thon rings (the aberration regressor says 18" in flags[0]


def test_assess_never_raises_and_is_json():
    cards = [card([_imaging()])]
    odd = [
        np.zeros((300, 300), np.float32),
        np.full((300, 300), np.nan, np.float32),
        np.ones((20, 20)),
        np.ones((4, 64, 64)),
        None,
        np.arange(10.0),
        np.random.default_rng(0).normal(0, 1, (700, 500)).astype(np.float32),
    ]
    for image in odd:
        for px in (PIXEL_A, None, -1.0, float("nan")):
            out = cond.assess(image, px, None, cards)
            json.dumps(out, allow_nan=False)
            assert set(out["per_task"]) == {"aberrations"} and "error" not in out
            assert out["estimated"]["defocus_nm"]["confidence"] == "unknown"
    assert cond.assess(np.ones((64, 64)), PIXEL_A, {}, [])["per_task"] == {}


def test_assess_is_cheap_on_a_2k_image(at_45):
    big = np.tile(at_45, (3, 3))[:2048, :2048].copy()
    cards = {"near": card([_imaging(defocus_nm=(3, 20))])}
    cond.assess(big, PIXEL_A, {}, cards)  # warm
    t0 = time.perf_counter()
    out = cond.assess(big, PIXEL_A, {}, cards)
    seconds = time.perf_counter() - t0
    print(f"\nassess on 2048 x 2048: {seconds:.2f} s")
    assert out["per_task"]["near"]["out_of_range"]
    assert seconds < 2.0  # about 0.3 s on an idle core; the limit leaves room for a loaded machine
