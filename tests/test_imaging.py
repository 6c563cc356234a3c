"""The imaging stage end to end on small real structures (ASE-built, written in the MD contract
format): physics checks (CTF zero, CNT walls, weak-object mean, Poisson), geometry, shard handling,
reproducibility, CLI and GPU parity."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("abtem")

import ase.io  # noqa: E402
from ase import Atoms  # noqa: E402

from hrtemflow.core.errors import HrtemflowError  # noqa: E402
from hrtemflow.imaging import optics  # noqa: E402
from hrtemflow.imaging.multislice import abtem_settings, exit_waves, view_images
from hrtemflow.imaging.shard import check_spec as check_image_spec
from hrtemflow.imaging.shard import read_films, read_md
from hrtemflow.imaging.shard import run_shard as run_image_shard
from hrtemflow.imaging.views import make_view, view_rng
from hrtemflow.store.dataset import open_dataset  # noqa: E402
from hrtemflow.store.reader import is_complete  # noqa: E402

# ---------------------------------------------------------------------------------------------
# real structures and MD shards in the contract format (docs/data-products.md)


def amorphous_carbon(
    box: float = 40.0, thickness: float = 10.0, density: float = 2.0, seed: int = 0, d_min: float = 1.35
) -> Atoms:
    """A random periodic carbon film at `density` g/cm³ (random sequential addition, min distance d_min)."""
    rng = np.random.default_rng(seed)
    cell = np.array([box, box, thickness])
    n = int(round(density / 12.011 * 0.602214 * cell.prod()))
    pos = np.empty((n, 3))
    k = 0
    while k < n:
        c = rng.uniform(0.0, 1.0, 3) * cell
        d = pos[:k] - c
        d -= cell * np.round(d / cell)
        if k == 0 or np.min(np.einsum("ij,ij->i", d, d)) >= d_min**2:
            pos[k] = c
            k += 1
    return Atoms(f"C{n}", positions=pos, cell=cell, pbc=True)


def nanotube(n: int, m: int, min_length: float = 20.0) -> Atoms:
    """An ideal (n,m) tube, periodic along z in a vacuum box (the MD contract's CNT cell)."""
    from ase.build import nanotube as build

    t = build(n, m, length=1, bond=1.42)
    t = t.repeat((1, 1, max(1, math.ceil(min_length / t.cell[2][2]))))
    t.cell = [40.0, 40.0, t.cell[2][2]]
    t.pbc = [False, False, True]
    t.center(axis=(0, 1))
    return t


def core_shell_particle(shells: int = 4) -> Atoms:
    """An Ag-shell / Co-core icosahedron in a vacuum box."""
    from ase.cluster import Icosahedron

    p = Icosahedron("Ag", noshells=shells, latticeconstant=4.09)
    r = np.linalg.norm(p.positions - p.positions.mean(axis=0), axis=1)
    symbols = np.array(p.get_chemical_symbols())
    symbols[r < 5.0] = "Co"
    p.set_chemical_symbols(symbols)
    p.cell = [30.0, 30.0, 30.0]
    p.pbc = True
    p.center()
    return p


def labels_of(family: str, atoms: Atoms) -> dict:
    if family == "cnt":
        n, m = atoms.info["nm"]
        return {
            "n_atoms": len(atoms),
            "energy_per_atom_eV": -7.3,
            "n": n,
            "m": m,
            "chirality": f"{n}-{m}",
            "diameter_A": 0.783 * math.sqrt(n * n + n * m + m * m),
            "chiral_angle_deg": 0.0,
            "length_A": float(atoms.cell[2][2]),
            "vacancies": 0,
            "stone_wales": 0,
        }
    if family == "nanoalloy":
        sym = np.array(atoms.get_chemical_symbols())
        return {
            "n_atoms": len(atoms),
            "energy_per_atom_eV": -3.1,
            "composition": {"Ag": int((sym == "Ag").sum()), "Co": int((sym == "Co").sum())},
            "co_fraction": float((sym == "Co").mean()),
            "motif": "icosahedron",
            "ordering_intent": "core-shell",
            "ordering": "core-shell",
            "com_offset_A": 0.0,
            "surface_ag_fraction": 1.0,
            "core_co_fraction": 1.0,
            "order_measure": 0.9,
            "radius_A": 7.0,
        }
    return {
        "n_atoms": len(atoms),
        "energy_per_atom_eV": -7.0,
        "density_g_cm3": 2.0,
        "sp_fraction": 0.1,
        "sp2_fraction": 0.6,
        "sp3_fraction": 0.3,
        "thickness_A": float(atoms.cell[2][2]),
    }


def write_md_shard(
    folder: Path, family: str, group: str, structures: list[Atoms], failed: tuple[int, ...] = ()
) -> dict:
    """Write <group>-s00000.extxyz (ok frames only) and its manifest; returns the spec's md section."""
    folder.mkdir(parents=True, exist_ok=True)
    shard = f"{group}-s00000"
    records, frames = [], []
    for i, atoms in enumerate(structures):
        sid = f"{group}-{i:07d}"
        ok = i not in failed
        records.append(
            {
                "id": sid,
                "index": i,
                "seed": 1000 + 7 * i,
                "status": "ok" if ok else "failed",
                "reason": None if ok else "nan energy",
                "wall_s": 0.1,
                "steps": 100,
                "labels": labels_of(family, atoms) if ok else {},
            }
        )
        if ok:
            a = atoms.copy()
            a.info = {"sample_id": sid, "energy_per_atom_eV": -1.0}
            frames.append(a)
    structures_path = folder / f"{shard}.extxyz"
    if frames:
        ase.io.write(structures_path, frames, format="extxyz")
    else:
        structures_path.write_text("")
    manifest = {
        "kind": "md-manifest",
        "shard": shard,
        "family": family,
        "group": group,
        "versions": {"lammps": "test", "hrtemflow": "test"},
        "samples": records,
    }
    (folder / f"{shard}.manifest.json").write_text(json.dumps(manifest))
    return {"structures": str(structures_path), "manifest": str(folder / f"{shard}.manifest.json")}


PHYSICS = {
    "energy_kV": 80,
    "sampling_A": 0.1,
    "slice_thickness_A": 2.0,
    "parametrization": "lobato",
    "fov_nm": [3.0, 4.0],
    "shift_fraction": 0.1,
    "tilt_deg": 10,
    "frozen_phonons": 0,
    "phonon_sigma_A": 0.08,
    "support_film": False,
}
OPTICS = {
    "defocus_nm": [-50, 50],
    "cs_um": [-20, 20],
    "c12_nm": [0, 5],
    "c21_nm": [0, 0],
    "c23_nm": [0, 0],
    "focal_spread_nm": [2, 4],
    "convergence_mrad": [0.1, 0.3],
    "objective_aperture_mrad": 0,
}
NOISE = {"dose_e_per_A2": [50, 2000], "brightness": [0.9, 1.1], "contrast": [0.9, 1.1], "background": [0, 0.05]}


def make_spec(
    family: str,
    group: str,
    md: dict,
    views: int = 2,
    variants: int = 3,
    sizes=(64, 128),
    physics=None,
    optics_cfg=None,
    noise=None,
    mtf=(0.3, 0.6),
    support=None,
) -> dict:
    """An imaging spec exactly as `hrtemflow.campaign.specs.image_spec` writes it."""
    return {
        "kind": "images",
        "spec_version": 1,
        "campaign_seed": 2026,
        "family": family,
        "group": group,
        "shard": f"{group}-s00000",
        "md": md,
        "support": {"structures": support} if support else None,
        "imaging": {
            "device": "cpu",
            "views_per_structure": views,
            "variants_per_view": variants,
            "sizes": sorted(sizes),
            "physics": {**PHYSICS, **(physics or {})},
            "optics": {**OPTICS, **(optics_cfg or {})},
            "detector": {"mtf_c50": list(mtf)},
            "noise": {**NOISE, **(noise or {})},
        },
    }


def tubes(*chiralities) -> list[Atoms]:
    out = []
    for n, m in chiralities:
        t = nanotube(n, m)
        t.info["nm"] = (n, m)
        out.append(t)
    return out


@pytest.fixture(scope="module")
def cnt_shard(tmp_path_factory) -> tuple[Path, dict]:
    """Realistic optics (envelopes, astigmatism, MTF) with unit gain: 3 samples, the middle one failed."""
    root = tmp_path_factory.mktemp("cnt")
    md = write_md_shard(root / "md", "cnt", "cnt-8-4", tubes((8, 4), (8, 4), (8, 4)), failed=(1,))
    spec = make_spec("cnt", "cnt-8-4", md, noise={"brightness": [1, 1], "contrast": [1, 1], "background": [0, 0]})
    out = root / "cnt-8-4-s00000.zarr"
    result = run_image_shard(spec, out, progress=False)
    return out, {"spec": spec, "result": result}


# ---------------------------------------------------------------------------------------------
# physics


def test_first_ctf_zero_of_amorphous_carbon(tmp_path):
    """The first zero of the azimuthally averaged power spectrum of noise-free a-C images lies where
    the analytic CTF puts it for the stored defocus: k1 = 1/sqrt(lambda * defocus) (Cs = 0)."""
    films = [amorphous_carbon(seed=s) for s in range(2)]
    md = write_md_shard(tmp_path / "md", "amorphous", "amorphous", films)
    spec = make_spec(
        "amorphous",
        "amorphous",
        md,
        views=2,
        variants=4,
        sizes=[256],
        physics={"fov_nm": [4.0, 4.0], "shift_fraction": 0.5},
        optics_cfg={
            "defocus_nm": [50, 100],
            "cs_um": [0, 0],
            "c12_nm": [0, 0],
            "focal_spread_nm": [0, 0],
            "convergence_mrad": [0, 0],
        },
        mtf=(10, 10),
    )
    run_image_shard(spec, tmp_path / "a.zarr", progress=False)
    ds = open_dataset([tmp_path / "a.zarr"], 256)
    lam = optics.wavelength_A(80e3)
    images = ds.read(slice(None), "noise_free").astype(np.float64)
    deviations, stack_u, stack_p = [], [], []
    for i in range(len(ds)):
        fov, defocus = ds.params["fov_A"][i], ds.params["defocus_A"][i]
        ps = np.abs(np.fft.fft2(images[i] - images[i].mean())).ravel() ** 2
        f = np.fft.fftfreq(256, d=fov / 256)
        k = np.hypot(f[:, None], f[None, :]).ravel()
        k1 = 1.0 / math.sqrt(lam * defocus)
        deviations.append(_minimum(k / k1, ps, 0.6, 1.4, 0.025) - 1.0)
        stack_u.append(k / k1)
        stack_p.append(ps / ps[(k > 0.5 * k1) & (k < 1.5 * k1)].mean())
    stacked = _minimum(np.concatenate(stack_u), np.concatenate(stack_p), 0.6, 1.4, 0.02) - 1.0
    print(
        f"first CTF zero: stacked deviation {stacked:+.4f}, per image median |dev| {np.median(np.abs(deviations)):.4f}"
    )
    assert abs(stacked) < 0.02
    assert np.median(np.abs(deviations)) < 0.02


def _minimum(x: np.ndarray, y: np.ndarray, lo: float, hi: float, step: float) -> float:
    """Position of the minimum of the binned mean of y(x) in [lo, hi] (parabola through 9 bins)."""
    edges = np.arange(lo, hi + step / 2, step)
    idx = np.digitize(x, edges)
    centres, means = [], []
    for j in range(1, len(edges)):
        sel = idx == j
        if sel.any():
            centres.append(x[sel].mean())
            means.append(y[sel].mean())
    c, m = np.array(centres), np.array(means)
    j = int(np.argmin(m))
    w = slice(max(j - 4, 0), j + 5)
    a, b, _ = np.polyfit(c[w], m[w], 2)
    return -b / (2 * a)


def _wall_profile(img: np.ndarray, fov: float, direction: float, centre: np.ndarray, half_width: float):
    """Profile across a tube whose axis runs along `direction` through `centre` (arrays indexed [x, y])."""
    n = img.shape[0]
    x = np.arange(n) * (fov / n)
    xx, yy = np.meshgrid(x, x, indexing="ij")
    s = (-math.sin(direction) * (xx - centre[0]) + math.cos(direction) * (yy - centre[1])).ravel()
    edges = np.arange(-half_width, half_width + 1e-9, 0.01 * half_width)
    idx = np.digitize(s, edges)
    cc = 0.5 * (edges[1:] + edges[:-1])
    prof = np.array([img.ravel()[idx == j].mean() if np.any(idx == j) else np.nan for j in range(1, len(edges))])
    return cc, prof


def _wall_separation(cc: np.ndarray, prof: np.ndarray, sign: float, d: float) -> float:
    """Distance between the extrema (sign=+1: minima, -1: maxima) on either side of the axis."""

    def extremum(sel):
        j = np.flatnonzero(sel)[np.nanargmin(sign * prof[sel])]
        w = slice(j - 4, j + 5)
        ok = ~np.isnan(prof[w])
        a, b, _ = np.polyfit(cc[w][ok], prof[w][ok], 2)
        return -b / (2 * a)

    return extremum(cc > 0.2 * d) - extremum(cc < -0.2 * d)


def _shell_profile(x: np.ndarray, amp: float, base: float, x0: float, radius: float, sigma: float) -> np.ndarray:
    """Projection of a cylindrical shell of atoms (radius, axis at x0) blurred by a Gaussian of width sigma.

    A shell seen side-on projects as 1/sqrt(R² - x²), a profile that peaks at the edge only for
    infinitely thin atoms; blurred, its maximum moves inside R. Averaging the Gaussian over the shell's
    angle gives the blurred projection exactly, so a fit recovers R whatever the blur.
    """
    theta = np.linspace(0.0, np.pi, 181)
    return base + amp * np.exp(-((x[:, None] - x0 - radius * np.cos(theta)[None]) ** 2) / (2 * sigma**2)).mean(axis=1)


def _shell_diameter(cc: np.ndarray, prof: np.ndarray, d_guess: float) -> float:
    """The wall separation of a tube profile: the diameter of the shell whose blurred projection fits it."""
    from scipy.optimize import curve_fit

    ok = ~np.isnan(prof)
    x, y = cc[ok], prof[ok]
    base = y[np.abs(x) > 0.65 * d_guess].mean()
    amp = y[np.argmax(np.abs(y - base))] - base
    p, _ = curve_fit(_shell_profile, x, y, p0=[0.3 * amp, base, 0.0, d_guess / 2, 0.4], maxfev=20000)
    return 2 * abs(p[3])


@pytest.mark.parametrize("n,m", [(10, 0), (7, 5), (20, 20)])
def test_cnt_wall_separation(n, m):
    """Tube axis in the image plane, no tilt, noise-free, 0.07 Å pixels, 80 kV: the wall separation of
    the image matches d = 0.0783 nm sqrt(n² + nm + m²) within 3 %.

    The wall separation is the diameter of the cylindrical shell whose blurred projection fits the
    profile across the tube (`_shell_diameter`). The distance between the two darkest lines is not it:
    a curved shell of atoms of finite width projects to a profile whose extrema sit 0.2-0.5 Å inside
    the shell (abTEM's projected potential shows it at any sampling), 5-7 % of d for 0.8 nm tubes.
    Checked at Scherzer focus for positive Cs and for negative-Cs imaging (bright walls), where the
    fit lands within 1 % of d; off those conditions Fresnel fringes bias it by up to ~3 %.
    """
    import abtem

    d = 0.783 * math.sqrt(n * n + n * m + m * m)
    tube = tubes((n, m))[0]
    physics = {**PHYSICS, "sampling_A": 0.05, "fov_nm": [3.0, 4.0], "shift_fraction": 0.05, "tilt_deg": 0}
    view = make_view(tube, "cnt", physics, view_rng(11, 0))
    direction, centre = view.euler_rad[0], view.fov_A / 2 + np.array(view.shift_A)
    assert abs(view.euler_rad[1] - math.pi / 2) < 1e-12  # axis in the image plane

    pos = view.atoms.positions
    across = -math.sin(direction) * (pos[:, 0] - centre[0]) + math.cos(direction) * (pos[:, 1] - centre[1])
    assert abs((across.max() - across.min()) / d - 1) < 0.01

    with abtem_settings():
        wave = exit_waves(view, physics)
        projected = abtem.Potential(view.atoms, gpts=view.gpts, slice_thickness=100.0).build().project().array
    from abtem.core.fft import fft2

    s_pot = _shell_diameter(*_wall_profile(projected, view.fov_A, direction, centre, 0.8 * d), d)
    peaks = _wall_separation(*_wall_profile(projected, view.fov_A, direction, centre, 0.8 * d), -1, d)
    print(f"({n},{m}) d = {d:.3f} Å: projected potential shell {s_pot / d - 1:+.2%}, its maxima {peaks / d - 1:+.2%}")
    assert abs(s_pot / d - 1) < 0.01
    size = 2 * round(view.fov_A / 0.07 / 2)
    for cs in (5e4, -1e5):  # Cs = +5 µm at Scherzer underfocus (dark walls), -10 µm at overfocus (bright walls)
        defocus = math.copysign(float(abtem.transfer.scherzer_defocus(abs(cs), 80e3)), cs)
        p = {
            **optics.draw_variant(np.random.default_rng(0), {**OPTICS, "c12_nm": [0, 0]}, {"mtf_c50": [10, 10]}, NOISE),
            "defocus_A": defocus,
            "cs_A": cs,
            "focal_spread_A": 0.0,
            "convergence_mrad": 0.0,
            "brightness": 1.0,
            "contrast": 1.0,
            "background": 0.0,
        }
        image = optics.variant_images(
            fft2(wave), view.fov_A, 80e3, view.sampling_A, [size], p, np.random.default_rng(0)
        )[size][1]
        s_img = _shell_diameter(*_wall_profile(image, view.fov_A, direction, centre, 0.8 * d), d)
        print(
            f"  Cs {cs / 1e4:+.0f} µm, defocus {defocus:.0f} Å: image wall separation {s_img:.3f} Å "
            f"({s_img / d - 1:+.2%})"
        )
        assert abs(s_img / d - 1) < 0.03


def test_weak_object_mean_is_the_incident_intensity(cnt_shard):
    """Noise-free images of a carbon tube (with envelopes, astigmatism and MTF) average to the incident
    counts dose x pixel area within 1 %; the clean target too."""
    ds = open_dataset([cnt_shard[0]], 128)
    expected = ds.params["dose_e_per_A2"] * ds.pixel_size_A**2
    for kind in ("noise_free", "clean"):
        means = ds.read(slice(None), kind).mean(axis=(1, 2))
        assert np.all(np.abs(means / expected - 1) < 0.01), kind


def test_noise_is_poisson_at_the_stored_dose(cnt_shard):
    """With unit gain, image - noise_free has variance = noise_free (Poisson) at every pixel."""
    ds = open_dataset([cnt_shard[0]], 128)
    noisy = ds.read(slice(None), "image").astype(np.float64)
    mean = ds.read(slice(None), "noise_free").astype(np.float64)
    z = (noisy - mean) / np.sqrt(mean)
    n = z[0].size
    for i in range(len(ds)):
        assert abs(z[i].mean()) < 5 / math.sqrt(n)
        assert abs(z[i].var() - 1) < 5 * math.sqrt(2 / n)
    assert np.array_equal(noisy, np.round(noisy))


# ---------------------------------------------------------------------------------------------
# geometry


def test_cnt_view_covers_the_field_without_seam_overlaps():
    tube = tubes((8, 4))[0]
    for v in range(4):
        view = make_view(tube, "cnt", PHYSICS, view_rng(3, v))
        pos, fov = view.atoms.positions, view.fov_A
        assert np.all((pos[:, :2] >= 0) & (pos[:, :2] < fov))
        e0, e1, _ = view.euler_rad
        assert abs(e1 - math.pi / 2) <= math.radians(PHYSICS["tilt_deg"]) + 1e-12
        # no gap: atoms along the whole chord of the axis through the field
        centre = fov / 2 + np.array(view.shift_A)
        along = math.cos(e0) * (pos[:, 0] - centre[0]) + math.sin(e0) * (pos[:, 1] - centre[1])
        hist, _ = np.histogram(along, bins=np.arange(along.min(), along.max(), 2.0))
        assert np.all(hist > 0)
        # no two atoms closer than 0.75 x the C-C bond, also across the periodic cut
        from scipy.spatial import cKDTree

        box = np.array([fov, fov, view.atoms.cell[2][2] + 10])
        assert len(cKDTree(pos, boxsize=box).query_pairs(0.75 * 1.42)) == 0


def test_film_view_is_flat_and_nanoalloy_view_keeps_the_particle():
    film = amorphous_carbon(box=20.0, thickness=6.0, seed=3)
    view = make_view(film, "amorphous", PHYSICS, view_rng(1, 0))
    assert view.euler_rad[1:] == (0.0, 0.0)
    assert view.atoms.positions[:, 2].max() - view.atoms.positions[:, 2].min() < 6.0
    area_density = len(view.atoms) / view.fov_A**2
    assert abs(area_density / (len(film) / 400.0) - 1) < 0.1  # tiled film, no gaps, no doubled seams
    for v in range(4):  # the largest shifts still leave no empty corner
        far = make_view(film, "amorphous", {**PHYSICS, "shift_fraction": 0.5}, view_rng(2, v))
        q = far.fov_A / 4
        for cx in (0.0, 3 * q):
            for cy in (0.0, 3 * q):
                xy = far.atoms.positions[:, :2]
                inside = np.sum((xy[:, 0] >= cx) & (xy[:, 0] < cx + q) & (xy[:, 1] >= cy) & (xy[:, 1] < cy + q))
                assert inside > 0.5 * q * q * len(film) / 400.0  # a gap would leave ~0
    particle = core_shell_particle()
    pview = make_view(particle, "nanoalloy", PHYSICS, view_rng(1, 0))
    assert len(pview.atoms) == len(particle)
    assert sorted(pview.atoms.get_chemical_symbols()) == sorted(particle.get_chemical_symbols())
    a = pview.atoms.positions - pview.atoms.positions.mean(axis=0)
    b = particle.positions - particle.positions.mean(axis=0)
    assert np.allclose(np.sort(np.linalg.norm(a, axis=1)), np.sort(np.linalg.norm(b, axis=1)), atol=1e-8)  # a rotation


def test_nanoalloy_on_support_film_with_frozen_phonons(tmp_path):
    md = write_md_shard(tmp_path / "md", "nanoalloy", "nanoalloy-core-shell", [core_shell_particle(3)])
    film_md = write_md_shard(
        tmp_path / "mda", "amorphous", "amorphous", [amorphous_carbon(box=40.0, thickness=6.0, seed=5)]
    )
    spec = make_spec(
        "nanoalloy",
        "nanoalloy-core-shell",
        md,
        views=1,
        variants=2,
        sizes=[64],
        physics={"energy_kV": 200, "support_film": True, "frozen_phonons": 2},
        support=[film_md["structures"]],
    )
    films = read_films(spec)
    view = make_view(read_md(spec)[1][0], "nanoalloy", spec["imaging"]["physics"], view_rng(1000, 0), films)
    symbols = set(view.atoms.get_chemical_symbols())
    assert {"Ag", "Co", "C"} <= symbols
    z = view.atoms.positions[:, 2]
    is_c = np.array(view.atoms.get_chemical_symbols()) == "C"
    assert z[is_c].min() > z[~is_c].max()  # the film lies under the particle (after it along the beam)
    with abtem_settings():
        assert exit_waves(view, spec["imaging"]["physics"]).shape == (2, view.gpts, view.gpts)
    run_image_shard(spec, tmp_path / "na.zarr", progress=False)
    ds = open_dataset([tmp_path / "na.zarr"], 64)
    assert len(ds) == 2 and ds.labels["composition_Co"][0] > 0 and ds.labels["ordering"][0] == "core-shell"


def test_a_share_of_tube_views_lies_on_a_film(tmp_path):
    """support_film: 0.5 on a CNT shard: each view is on a film or not (drawn after the view's other draws, so
    the tube sits where it sits without films), and the images record which (params support_film)."""
    md = write_md_shard(tmp_path / "md", "cnt", "cnt-8-4", tubes((8, 4)))
    film_md = write_md_shard(tmp_path / "mda", "amorphous", "amorphous", [amorphous_carbon(box=40.0, thickness=6.0)])
    spec = make_spec(
        "cnt",
        "cnt-8-4",
        md,
        views=6,
        variants=1,
        sizes=[64],
        physics={"support_film": 0.5, "fov_nm": [2.4, 2.4]},
        support=[film_md["structures"]],
    )
    films = read_films(spec)
    tube = read_md(spec)[1][0]
    physics = spec["imaging"]["physics"]
    on = []
    for v in range(6):
        bare = make_view(tube, "cnt", physics, view_rng(1000, v))
        view = make_view(tube, "cnt", physics, view_rng(1000, v), films)
        k = len(bare.atoms)
        assert np.array_equal(view.atoms.positions[:k], bare.atoms.positions)  # the same tube, placed the same
        assert view.film is not None and bare.film is None
        assert (len(view.atoms) > k) == view.film
        if view.film:
            assert view.atoms.positions[k:, 2].min() > bare.atoms.positions[:, 2].max()  # under it, along the beam
        on.append(view.film)
    assert any(on) and not all(on)
    result = run_image_shard(spec, tmp_path / "c.zarr", progress=False)
    ds = open_dataset([tmp_path / "c.zarr"], 64)
    assert result["n_images"] == 6 and set(ds.params["support_film"]) <= {0.0, 1.0}
    record = read_md(spec)[0][0]
    drawn = [make_view(tube, "cnt", physics, view_rng(record["seed"], v), films).film for v in range(6)]
    assert list(ds.params["support_film"]) == [float(d) for d in drawn]


# ---------------------------------------------------------------------------------------------
# shards, reproducibility, CLI


def test_failed_md_samples_are_skipped_and_counted(cnt_shard):
    out, info = cnt_shard
    assert info["result"]["n_failed_skipped"] == 1 and info["result"]["n_samples"] == 2
    ds = open_dataset([out], 64)
    assert len(ds) == 2 * 2 * 3
    assert set(ds.sample_id) == {"cnt-8-4-0000000", "cnt-8-4-0000002"}
    assert ds.image_id[0] == "cnt-8-4-0000000-v00-o00" and ds.image_id[-1] == "cnt-8-4-0000002-v01-o02"
    import zarr

    attrs = zarr.open_group(str(out), mode="r").attrs
    assert attrs["n_failed_skipped"] == 1 and attrs["n_samples"] == 2 and attrs["complete"] is True


def test_shard_with_no_ok_sample_is_a_valid_empty_store(tmp_path):
    md = write_md_shard(tmp_path / "md", "cnt", "cnt-10-0", tubes((10, 0), (10, 0)), failed=(0, 1))
    result = run_image_shard(make_spec("cnt", "cnt-10-0", md), tmp_path / "e.zarr", progress=False)
    assert result["n_images"] == 0 and result["n_failed_skipped"] == 2
    assert is_complete(tmp_path / "e.zarr")
    ds = open_dataset([tmp_path / "e.zarr"], 128)
    assert len(ds) == 0 and ds.read([], "image").shape == (0, 128, 128)


def test_same_spec_gives_the_same_bytes(cnt_shard, tmp_path):
    import zarr

    out, info = cnt_shard
    run_image_shard(copy.deepcopy(info["spec"]), tmp_path / "again.zarr", progress=False)
    a, b = zarr.open_group(str(out), mode="r"), zarr.open_group(str(tmp_path / "again.zarr"), mode="r")
    arrays = [name for name, node in a.members(max_depth=None) if isinstance(node, zarr.Array)]
    assert len(arrays) > 20
    for name in arrays:
        x, y = a[name][...], b[name][...]
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), name


def test_cli_image_validates_before_work(tmp_path, capsys):
    from hrtemflow.cli import main

    md = write_md_shard(tmp_path / "md", "cnt", "cnt-8-4", tubes((8, 4)))
    spec = make_spec("cnt", "cnt-8-4", md, views=1, variants=1, sizes=[64])
    good = tmp_path / "spec.json"
    good.write_text(json.dumps(spec))
    assert main(["image", str(good), "--out", str(tmp_path / "ok.zarr"), "--no-progress"]) == 0
    assert is_complete(tmp_path / "ok.zarr")

    broken = copy.deepcopy(spec)
    broken["md"]["manifest"] = str(tmp_path / "missing.manifest.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(broken))
    assert main(["image", str(bad), "--out", str(tmp_path / "bad.zarr"), "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "bad.zarr").exists()

    wrong = copy.deepcopy(spec)
    wrong["kind"] = "md"
    with pytest.raises(HrtemflowError, match="expected 'images'"):
        check_image_spec(wrong)


def test_gpu_without_cuda_fails_before_any_work(tmp_path):
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            pytest.skip("a GPU is present")
    except Exception:  # noqa: BLE001
        pass
    md = write_md_shard(tmp_path / "md", "cnt", "cnt-8-4", tubes((8, 4)))
    spec = make_spec("cnt", "cnt-8-4", md, views=1, variants=1, sizes=[64])
    spec["imaging"]["device"] = "gpu"
    with pytest.raises(HrtemflowError, match="CuPy/CUDA"):
        run_image_shard(spec, tmp_path / "g.zarr", progress=False)
    assert not (tmp_path / "g.zarr").exists()


def test_image_figure(cnt_shard, tmp_path):
    from hrtemflow.cli import main

    out = tmp_path / "images_cnt.png"
    assert main(["image-figure", "--family", "cnt", "--shards", str(cnt_shard[0]), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (
        main(["image-figure", "--family", "amorphous", "--shards", str(cnt_shard[0]), "--out", str(tmp_path / "x.png")])
        == 2
    )


@pytest.mark.gpu
def test_gpu_matches_cpu():
    """One view on CuPy and on NumPy: noise-free and clean images agree to 1e-4 relative."""
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except Exception:  # noqa: BLE001
        pytest.skip("no CUDA device")
    tube = tubes((8, 4))[0]
    spec_imaging = make_spec("cnt", "cnt-8-4", {}, views=1, variants=2, sizes=[64, 128])["imaging"]
    results = {}
    for device in ("cpu", "gpu"):
        view = make_view(tube, "cnt", spec_imaging["physics"], view_rng(5, 0))
        with abtem_settings():
            wave = exit_waves(view, spec_imaging["physics"], device)
            results[device] = view_images(wave, view, spec_imaging, 5, 0)
    for cpu, gpu in zip(results["cpu"], results["gpu"], strict=True):
        assert cpu["params"] == gpu["params"]
        for s in (64, 128):
            for kind in ("noise_free", "clean"):
                a, b = cpu["images"][s][kind], gpu["images"][s][kind]
                assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max(), (s, kind)
