"""Optics conventions and detector physics (hrtemflow.imaging.optics): CTF vs abTEM, defocus sign,
astigmatism period, resampling exactness, intensity units, Poisson noise on vacuum."""

from __future__ import annotations

import math

import numpy as np
import pytest

abtem = pytest.importorskip("abtem")

from abtem.core.fft import fft2  # noqa: E402

from hrtemflow.imaging import optics  # noqa: E402
from hrtemflow.imaging.multislice import abtem_settings

NEUTRAL = {"brightness": 1.0, "contrast": 1.0, "background": 0.0, "mtf_c50": 10.0}
#: the optics, noise and detector ranges the draw tests sample from
DRAW_OPTICS = {
    "defocus_nm": [-50, 50],
    "cs_um": [-20, 20],
    "c12_nm": [0, 5],
    "c21_nm": [0, 0],
    "c23_nm": [0, 0],
    "focal_spread_nm": [2, 4],
    "convergence_mrad": [0.1, 0.3],
}
DRAW_NOISE = {"dose_e_per_A2": [50, 2000], "brightness": [0.9, 1.1], "contrast": [0.9, 1.1], "background": [0, 0.05]}
DRAW_DETECTOR = {"mtf_c50": [0.3, 0.6]}


def params(**kw) -> dict:
    p = dict(
        defocus_A=0.0,
        cs_A=0.0,
        c12_A=0.0,
        phi12_rad=0.0,
        c21_A=0.0,
        phi21_rad=0.0,
        c23_A=0.0,
        phi23_rad=0.0,
        focal_spread_A=0.0,
        convergence_mrad=0.0,
        dose_e_per_A2=1000.0,
        **NEUTRAL,
    )
    p.update(kw)
    return p


def single_atom_wave(symbol: str = "Ag", extent: float = 16.0, gpts: int = 320, energy: float = 200e3):
    """A real exit wave: one atom in the middle of the cell (abTEM multislice)."""
    from ase import Atoms

    atoms = Atoms(symbol, positions=[[extent / 2, extent / 2, 1.0]], cell=[extent, extent, 2.0], pbc=True)
    with abtem_settings():
        pot = abtem.Potential(atoms, gpts=gpts, slice_thickness=2.0, projection="infinite")
        wave = abtem.PlaneWave(energy=energy).multislice(pot).compute().array
    return wave[None].astype(np.complex64), extent, extent / gpts


def test_transfer_function_matches_abtem_ctf():
    """Our numpy CTF (aberrations + both envelopes) equals abTEM's CTF applied to the same wave."""
    rng = np.random.default_rng(0)
    n, extent, energy = 128, 25.0, 200e3
    psi = np.exp(1j * 0.3 * rng.standard_normal((n, n))).astype(np.complex64)
    p = params(
        defocus_A=120.0,
        cs_A=3e4,
        c12_A=30.0,
        phi12_rad=0.7,
        c21_A=500.0,
        phi21_rad=1.1,
        c23_A=300.0,
        phi23_rad=0.4,
        focal_spread_A=30.0,
        convergence_mrad=0.3,
    )
    ctf = abtem.CTF(
        defocus=p["defocus_A"],
        Cs=p["cs_A"],
        C12=p["c12_A"],
        phi12=p["phi12_rad"],
        C21=p["c21_A"],
        phi21=p["phi21_rad"],
        C23=p["c23_A"],
        phi23=p["phi23_rad"],
        focal_spread=p["focal_spread_A"],
        angular_spread=p["convergence_mrad"],
        energy=energy,
    )
    ref = abtem.Waves(psi, energy=energy, extent=extent).apply_ctf(ctf).array
    kx, ky = optics.spatial_frequencies(n, extent, np)
    t = optics.transfer_function(kx, ky, optics.wavelength_A(energy), p, 0.0, np)
    ours = np.fft.ifft2(np.fft.fft2(psi) * t)
    assert np.abs(ours - ref).max() < 1e-5 * np.abs(ref).max()


def test_defocus_sign_positive_is_underfocus():
    """abTEM convention: positive defocus = underfocus (C10 < 0). At Scherzer (Δf > 0, Cs > 0) an atom
    images dark; flipping both signs (negative Cs imaging, overfocus) images it bright."""
    wave, extent, sampling = single_atom_wave()
    w = fft2(wave)
    cs = 2e5
    scherzer = float(abtem.transfer.scherzer_defocus(cs, 200e3))
    assert scherzer > 0
    kx, ky = optics.spatial_frequencies(8, 1.0, np)
    chi = optics.aberration_phase(kx, ky, 0.02, params(defocus_A=100.0), np)
    assert np.all(chi[np.hypot(kx, ky) > 0] < 0)  # chi = -pi lambda df k^2: underfocus lowers the phase
    centre = slice(60, 68)
    for sign, expect_dark in ((+1, True), (-1, False)):
        p = params(defocus_A=sign * scherzer, cs_A=sign * cs)
        img = optics.variant_images(w, extent, 200e3, sampling, [128], p, np.random.default_rng(0))[128][1]
        mean = img.mean()
        atom = img[centre, centre].mean()
        assert (atom < mean) == expect_dark, (sign, atom, mean)


def test_astigmatism_angle_has_period_pi():
    wave, extent, sampling = single_atom_wave()
    w = fft2(wave)
    base = params(defocus_A=30.0, c12_A=60.0, phi12_rad=0.4)
    img = {}
    for name, phi in (("a", 0.4), ("a+pi", 0.4 + math.pi), ("a+pi/2", 0.4 + math.pi / 2)):
        p = dict(base, phi12_rad=phi)
        img[name] = optics.variant_images(w, extent, 200e3, sampling, [64], p, np.random.default_rng(0))[64][1]
    assert np.allclose(img["a"], img["a+pi"], rtol=1e-4, atol=1e-3)
    assert not np.allclose(img["a"], img["a+pi/2"], rtol=1e-2)


def test_intensity_resampling_is_exact():
    """The cropped-grid intensity equals |psi|^2 on the full grid, Fourier-cropped to each size."""
    rng = np.random.default_rng(1)
    n, extent = 384, 24.0
    lam = optics.wavelength_A(200e3)
    kc = optics.exit_wave_cutoff(extent / n)
    kx, ky = optics.spatial_frequencies(n, extent, np)
    w = np.fft.fft2(np.exp(1j * 0.5 * rng.standard_normal((n, n)))) * ((kx**2 + ky**2) <= kc**2)
    p = params(defocus_A=80.0, cs_A=1e4, c12_A=20.0, phi12_rad=1.0, focal_spread_A=40.0, convergence_mrad=0.2)
    for k_band, transfer in (
        (kc, None),
        (optics.band_limit(kc, lam, 40.0), lambda a, b: optics.transfer_function(a, b, lam, p, 0.0, np)),
    ):
        fast = optics.intensity_at_sizes(w[None].astype(np.complex64), extent, [48, 96], k_band, transfer)
        full = w * ((kx**2 + ky**2) <= k_band**2) * (transfer(kx, ky) if transfer else 1.0)
        spectrum = np.fft.fft2(np.abs(np.fft.ifft2(full)) ** 2)
        for s in (48, 96):
            brute = np.fft.ifft2(optics.fourier_resize(spectrum, s) * (s * s / n**2)).real
            assert np.abs(np.fft.ifft2(fast[s]).real - brute).max() < 1e-5 * brute.mean()


def test_vacuum_counts_are_poisson_at_the_dose():
    """On vacuum (exit wave = incident plane wave) the expected counts are dose x pixel area and the
    noisy counts have variance = mean; the noise-free image is flat at that value."""
    n, extent, sampling = 256, 32.0, 0.125
    wave = fft2(np.ones((1, n, n), np.complex64))
    rng = np.random.default_rng(7)
    p = optics.draw_variant(
        rng,
        DRAW_OPTICS,
        DRAW_DETECTOR,
        {"dose_e_per_A2": [20, 200], "brightness": [1, 1], "contrast": [1, 1], "background": [0, 0]},
    )
    size = 128
    noisy, noise_free = optics.variant_images(wave, extent, 80e3, sampling, [size], p, rng)[size]
    expected = p["dose_e_per_A2"] * (extent / size) ** 2
    assert np.allclose(noise_free, expected, rtol=1e-5)
    assert np.array_equal(noisy, np.round(noisy))  # counts
    n_px = noisy.size
    assert abs(noisy.mean() / expected - 1) < 5 * math.sqrt(1 / (expected * n_px))
    assert abs(noisy.var() / noisy.mean() - 1) < 5 * math.sqrt(2 / n_px)


def test_weak_object_counts_are_conserved():
    """Resampling keeps the total: mean counts of a weak object = dose x pixel area (no aperture)."""
    wave, extent, sampling = single_atom_wave("C")
    w = fft2(wave)
    p = params(defocus_A=50.0, focal_spread_A=30.0, convergence_mrad=0.2, dose_e_per_A2=500.0, mtf_c50=0.4)
    for size in (32, 64, 128):
        img = optics.variant_images(w, extent, 200e3, sampling, [size], p, np.random.default_rng(0))[size][1]
        assert abs(img.mean() / (500.0 * (extent / size) ** 2) - 1) < 0.01


def test_objective_aperture_stops_what_is_scattered_outside_it():
    """An objective aperture removes the electrons scattered beyond it: the image's mean is the exit wave's
    intensity inside the aperture (Parseval), so each atom darkens the image by its high-angle scattering,
    more for Ag (Z 47) than for Co (Z 27) and more through a smaller aperture (mass-thickness contrast)."""
    lam = optics.wavelength_A(200e3)
    loss = {}
    for symbol in ("Ag", "Co"):
        wave, extent, sampling = single_atom_wave(symbol)
        w = fft2(wave)
        kx, ky = optics.spatial_frequencies(w.shape[-1], extent, np)
        power = _power(w)
        for mrad in (12.0, 20.0):
            inside = power[(kx**2 + ky**2) * lam**2 <= (mrad * 1e-3) ** 2].sum()
            mean = _noise_free(w, extent, sampling, params(), "envelope", aperture_mrad=mrad).mean()
            assert abs(mean - inside) < 0.005 * (1.0 - inside)
            loss[symbol, mrad] = (1.0 - mean) * extent**2  # Å² of the beam stopped by one atom
    assert loss["Ag", 12.0] > loss["Ag", 20.0] > loss["Co", 20.0] > 0.0
    assert loss["Co", 12.0] > loss["Co", 20.0]
    assert 1.5 < loss["Ag", 20.0] / loss["Co", 20.0] < 4.0


def column_wave(symbol: str = "Au", atoms_in_column: int = 6, extent: float = 12.0, gpts: int = 240):
    """A strong, nonlinear scatterer: a column of heavy atoms 2.5 Å apart along the beam."""
    from ase import Atoms

    positions = [[extent / 2, extent / 2, 1.0 + 2.5 * i] for i in range(atoms_in_column)]
    atoms = Atoms(
        symbol * atoms_in_column, positions=positions, cell=[extent, extent, 2.5 * atoms_in_column + 1.0], pbc=True
    )
    with abtem_settings():
        pot = abtem.Potential(atoms, gpts=gpts, slice_thickness=1.25, projection="infinite")
        wave = abtem.PlaneWave(energy=200e3).multislice(pot).compute().array
    return wave[None].astype(np.complex64), extent, extent / gpts


def _noise_free(w, extent, sampling, p, coherence, size=64, aperture_mrad=0.0):
    """A noise-free image in normalised intensity (1 on vacuum)."""
    img = optics.variant_images(
        w, extent, 200e3, sampling, [size], p, np.random.default_rng(0), aperture_mrad, coherence
    )[size][1]
    return img.astype(np.float64) / (p["dose_e_per_A2"] * (extent / size) ** 2)


def _power(w):
    """|Ψ(k)|² of an exit wave's FFT, scaled so that it sums to the mean of |ψ|² (Parseval)."""
    return np.abs(w[0].astype(np.complex128)) ** 2 / w.shape[-1] ** 4


def _brute_focal_average(w, extent, sampling, p, size=64, n=801):
    """The focal average the slow way: n coherent images at defocus offsets over ±6σ, Gaussian weights."""
    sigma = p["focal_spread_A"] / math.sqrt(2.0)
    x = np.linspace(-6.0, 6.0, n)
    weights = np.exp(-0.5 * x * x) / np.exp(-0.5 * x * x).sum()
    return sum(
        wt
        * _noise_free(
            w, extent, sampling, dict(p, focal_spread_A=0.0, defocus_A=p["defocus_A"] + sigma * xi), "envelope", size
        )
        for xi, wt in zip(x, weights, strict=True)
    )


def test_defocus_average_differs_from_the_envelope_only_in_its_nonlinear_terms():
    """The envelope is exact for the terms linear in the scattered wave: weakening a C atom's phase 10x
    shrinks the difference between the two models ~10x relative to the image's contrast (100x weaker
    meets float32's resolution of a contrast of 4e-5). With no focal spread the two are the same image."""
    wave, extent, sampling = single_atom_wave("C")
    phase = np.angle(wave)
    p = params(defocus_A=-70.0, cs_A=-1.5e5, focal_spread_A=40.0, convergence_mrad=0.2)
    rel = []
    for eps in (1.0, 0.1):
        w = fft2(np.exp(1j * eps * phase).astype(np.complex64))
        env, avg = (_noise_free(w, extent, sampling, p, c, size=32) for c in ("envelope", "defocus_average"))
        rel.append((avg - env).std() / env.std())
    assert rel[0] > 0.01
    assert rel[1] < 0.2 * rel[0]
    flat = dict(p, focal_spread_A=0.0)
    w = fft2(wave)
    assert np.array_equal(
        _noise_free(w, extent, sampling, flat, "envelope"), _noise_free(w, extent, sampling, flat, "defocus_average")
    )


def test_defocus_average_keeps_every_electron_the_envelope_drops():
    """A heavy column scatters far out, where the envelope on the wave is small: the envelope model loses
    those electrons (the image darkens as if through an aperture), the defocus average keeps them all
    (Parseval) and equals a brute-force average over 801 defocus values, also at an output band
    (128 px over 12 Å, 5.3 1/Å) where a fixed Gauss–Hermite rule would alias."""
    wave, extent, sampling = column_wave()
    w = fft2(wave)
    total = float(_power(w).sum())
    p = params(defocus_A=-70.0, cs_A=-1.5e5, focal_spread_A=40.0)
    for size in (32, 128):
        env, avg = (_noise_free(w, extent, sampling, p, c, size) for c in ("envelope", "defocus_average"))
        assert abs(total - avg.mean()) < 1e-6 < 1e-4 < total - env.mean()
        assert (env - avg).std() > 0.02 * avg.std()
        assert (avg - _brute_focal_average(w, extent, sampling, p, size)).std() < 0.002 * avg.std()


def test_phase_plate_images_a_weak_object_at_focus():
    """At focus without aberrations a weak phase object has almost no contrast (sin χ = 0); a +90° plate
    on the unscattered beam turns its image into 1 + 2σV, the projected potential (cos χ = 1), atoms
    bright, low spatial frequencies included. Out of focus the plate's φ adds to χ: the weak object
    transfers 2 sin(χ + φ). The plate is unitary: a heavy column's image keeps its mean."""
    wave, extent, sampling = single_atom_wave("C")
    n, size = wave.shape[-1], 64
    phase = 0.1 * np.angle(wave[0]).astype(np.float64)  # a weak object: peak ~0.03 rad
    w = fft2(np.exp(1j * phase)[None].astype(np.complex64))
    kx, ky = optics.spatial_frequencies(size, extent, np)
    lam = optics.wavelength_A(200e3)
    for focus in ({}, {"defocus_A": -20.0, "cs_A": -1.5e5}):
        for phi in (math.pi / 2, 1.2):
            p = params(phase_plate_rad=phi, **focus)
            image = _noise_free(w, extent, sampling, p, "envelope", size)
            transfer = 2.0 * np.sin(optics.aberration_phase(kx, ky, lam, p, np) + phi)
            expected = (
                np.real(np.fft.ifft2(optics.fourier_resize(np.fft.fft2(phase), size) * transfer)) * (size / n) ** 2
            )
            residual = (image - image.mean()) - (expected - expected.mean())
            assert residual.std() < 0.02 * expected.std()  # 0.004 measured: the second-order terms
    plate, bare = (
        _noise_free(w, extent, sampling, params(phase_plate_rad=phi), "envelope", size) for phi in (math.pi / 2, 0.0)
    )
    assert plate[size // 2, size // 2] > plate.mean() + 10.0 * plate.std()  # the atom is bright
    assert bare.std() < 0.01 * plate.std()
    heavy = fft2(column_wave()[0])
    for phi in (math.pi / 2, -math.pi / 3):
        with_plate = _noise_free(heavy, 12.0, 0.05, params(phase_plate_rad=phi), "envelope", 32)
        assert abs(with_plate.mean() - _noise_free(heavy, 12.0, 0.05, params(), "envelope", 32).mean()) < 1e-5


def test_phase_plate_is_drawn_last_and_only_when_there_is_one():
    cfg_o, cfg_n, det = DRAW_OPTICS, DRAW_NOISE, DRAW_DETECTOR
    for seed in range(20):
        bare = optics.draw_variant(np.random.default_rng(seed), dict(cfg_o, phase_plate_deg=[0, 0]), det, cfg_n)
        plate = optics.draw_variant(np.random.default_rng(seed), dict(cfg_o, phase_plate_deg=[60, 90]), det, cfg_n)
        assert bare == optics.draw_variant(np.random.default_rng(seed), cfg_o, det, cfg_n)
        assert set(plate) - set(bare) == {"phase_plate_rad"} and {k: plate[k] for k in bare} == bare
        assert math.radians(60) <= plate["phase_plate_rad"] <= math.radians(90)


def test_recorded_pixel_scale_is_drawn_last_and_only_when_set():
    cfg_o, cfg_n, det = DRAW_OPTICS, DRAW_NOISE, DRAW_DETECTOR
    for seed in range(10):
        bare = optics.draw_variant(np.random.default_rng(seed), cfg_o, det, cfg_n)
        ones = optics.draw_variant(np.random.default_rng(seed), cfg_o, dict(det, recorded_pixel_scale=[1, 1]), cfg_n)
        rec = optics.draw_variant(np.random.default_rng(seed), cfg_o, dict(det, recorded_pixel_scale=[0.6, 1.8]), cfg_n)
        assert ones == bare
        assert set(rec) - set(bare) == {"recorded_pixel_scale"} and {k: rec[k] for k in bare} == bare
        assert 0.6 <= rec["recorded_pixel_scale"] <= 1.8


def _vacuum_variant(scale: float | None, size: int = 64, dose: float = 1000.0, seed: int = 3):
    """Noisy and noise-free images of vacuum (12.8 Å field, 0.1 Å grid) with an ideal camera, at `scale`."""
    n = 128
    wave_fft = np.fft.fft2(np.ones((n, n), dtype=np.complex64))
    p = {
        "defocus_A": 0.0, "cs_A": 0.0, "c12_A": 0.0, "phi12_rad": 0.0, "c21_A": 0.0, "phi21_rad": 0.0, "c23_A": 0.0,
        "phi23_rad": 0.0, "focal_spread_A": 0.0, "convergence_mrad": 0.0, "dose_e_per_A2": dose, "brightness": 1.0,
        "contrast": 1.0, "background": 0.0, "mtf_c50": 1e6,
    }  # fmt: skip
    if scale is not None:
        p["recorded_pixel_scale"] = scale
    return optics.variant_images(wave_fft, 12.8, 80e3, 0.1, [size], p, np.random.default_rng(seed))[size]


def test_an_image_recorded_at_another_pixel_is_detected_there_and_resampled():
    """Coarser camera pixels (2 x): counts per pixel are those of the 0.4 Å pixel, and the resampled image holds
    no power (signal or noise) beyond the camera's Nyquist frequency, as `predict` leaves a micrograph it
    upsamples. Finer ones (0.5 x): counts of the 0.1 Å pixel, and the noise of four of them averaged."""
    noisy, expected = _vacuum_variant(2.0)
    assert noisy.shape == (64, 64)
    assert float(expected.mean()) == pytest.approx(1000.0 * 0.4**2, rel=1e-4)
    assert float(noisy.mean()) == pytest.approx(160.0, rel=0.01)
    power = np.abs(np.fft.fft2(noisy - noisy.mean())) ** 2
    k = np.abs(np.fft.fftfreq(64) * 64)
    beyond = (k[:, None] > 16) | (k[None, :] > 16)
    assert power[beyond].sum() < 1e-8 * power.sum()
    plain, _ = _vacuum_variant(None)
    plain_power = np.abs(np.fft.fft2(plain - plain.mean())) ** 2
    assert plain_power[beyond].sum() > 0.5 * plain_power.sum()  # white: 3/4 of the noise is out there

    fine, fine_expected = _vacuum_variant(0.5)
    assert fine.shape == (64, 64) and float(fine_expected.mean()) == pytest.approx(1000.0 * 0.1**2, rel=1e-4)
    assert float(fine.var() / fine.mean()) == pytest.approx(0.25, abs=0.05)
    assert float(plain.var() / plain.mean()) == pytest.approx(1.0, abs=0.1)


def test_detector_mtf_is_half_at_c50():
    mtf = optics.detector_mtf(64, 0.5, np)
    f = np.fft.fftfreq(64) * 2
    j = int(np.argmin(np.abs(f - 0.5)))
    assert mtf[0, 0] == 1.0
    assert abs(mtf[j, 0] - 0.5) < 1e-6


def test_gain_contrast_background():
    x = np.array([0.0, 10.0, 20.0])
    y = optics.apply_gain(x, x, {"brightness": 2.0, "contrast": 0.5, "background": 0.1})
    assert np.allclose(y, 2.0 * (10 + 0.5 * (x - 10) + 1.0))


def test_expected_counts_undo_the_gain_of_a_stored_image():
    """From a weak object's stored noise-free image and its gain, `expected_counts` gives back the
    counts the noise was drawn from: the stored noisy image, ungained with them, is whole electrons."""
    wave, extent, sampling = single_atom_wave("C")
    w = fft2(wave)
    p = params(
        defocus_A=50.0,
        focal_spread_A=30.0,
        convergence_mrad=0.2,
        dose_e_per_A2=500.0,
        mtf_c50=0.4,
        brightness=1.7,
        contrast=0.8,
        background=0.04,
    )
    noisy, noise_free = optics.variant_images(w, extent, 200e3, sampling, [64], p, np.random.default_rng(3))[64]
    gain = ([p["brightness"]] * 2, [p["contrast"]] * 2, [p["background"]] * 2)
    counts = optics.expected_counts(np.stack([noise_free, noise_free]), *gain)[0]
    assert abs(counts.mean() / (500.0 * (extent / 64) ** 2) - 1) < 0.01  # the dose, not the gained level
    mu = counts.mean()
    electrons = mu + (noisy / p["brightness"] - mu * (1 + p["background"])) / p["contrast"]
    assert np.abs(electrons - np.round(electrons)).max() < 1e-3 * mu
    assert abs(np.var(electrons - counts) / mu - 1) < 0.1  # Poisson about them


@pytest.mark.parametrize("lam", [0.5, 5.0, 49.0, 51.0, 500.0])
def test_redrawn_shot_noise_has_poisson_mean_and_variance(lam):
    """Exact Poisson below POISSON_EXACT_BELOW counts, the rounded normal approximation above: whole,
    non-negative counts with mean = variance = the expected counts on both sides of the switch."""
    n = 250_000
    x = optics.redraw_shot_noise(np.full((100, 50, 50), lam, np.float32), np.random.default_rng(11))
    assert x.dtype == np.float32 and np.array_equal(x, np.round(x)) and x.min() >= 0
    assert abs(x.mean() / lam - 1) < 5 * math.sqrt(1 / (lam * n))
    assert abs(x.var() / lam - 1) < 5 * math.sqrt((2 + 1 / lam) / n)  # rounding's +1/12 is 0.0016 of 51, below this
    again = optics.redraw_shot_noise(np.full((100, 50, 50), lam, np.float32), np.random.default_rng(11))
    assert np.array_equal(x, again)


def test_draw_variant_is_deterministic_and_in_range():
    cfg_o, cfg_n = dict(DRAW_OPTICS, c21_nm=[0, 100], c23_nm=[0, 50]), DRAW_NOISE
    draws = [optics.draw_variant(np.random.default_rng(i), cfg_o, DRAW_DETECTOR, cfg_n) for i in range(200)]
    again = optics.draw_variant(np.random.default_rng(5), cfg_o, DRAW_DETECTOR, cfg_n)
    assert again == draws[5]
    assert set(draws[0]) == set(optics.PARAM_NAMES)
    for d in draws:
        assert -500 <= d["defocus_A"] <= 500 and 0 <= d["c12_A"] <= 50 and 0 <= d["phi12_rad"] < math.pi
        assert 0 <= d["phi23_rad"] < 2 * math.pi / 3 and 50 <= d["dose_e_per_A2"] <= 2000
    log_dose = np.log([d["dose_e_per_A2"] for d in draws])
    assert abs(np.median(log_dose) - 0.5 * (math.log(50) + math.log(2000))) < 0.5  # log-uniform


def test_nice_size_and_fourier_resize():
    assert optics.nice_size(127) == 128 and optics.nice_size(131) % 2 == 0
    a = np.fft.fft2(np.random.default_rng(0).standard_normal((32, 32)))
    assert np.allclose(optics.fourier_resize(optics.fourier_resize(a, 48), 32), a)
