"""Independent test micrographs: whole tubes in wide fields, imaged with abTEM directly.

None of the pipeline's imaging, atomistic or store code is used (a test checks the imports): the
structures come from `ase.build.nanotube`, the amorphous carbon from a random sequential addition in
numpy, the exit wave and the lens from abTEM's own `Potential`, `PlaneWave`, `FrozenPhonons` and
`CTF`, and the detector is written here: each camera pixel integrates the simulated intensity over its
area (a top-hat, not the pipeline's Fourier crop), then MTF, shot noise, gain and dark noise.

One micrograph (`make_micrograph`):

1. an ideal (n, m) tube, `tube_length_nm` long (whole unit cells), spun about its axis, tilted out of
   the image plane by up to ±`tilt_deg` and turned in-plane to a uniform angle, both ends inside a
   square field of `field_nm` (at least the tube's length + 2 nm); optional amorphous carbon clusters
   stuck to its wall (`adsorbates`) and a film under it over the whole field (`support_film`);
2. abTEM multislice at `energy_kV` on a grid of about `sampling_A`, with `parametrization` (Lobato, the
   pipeline's default, or Kirkland) and `frozen_phonons` configurations (intensities averaged), on
   abTEM's `device` (cpu; gpu with CuPy, not yet run); a support film is a second, static slab the
   object's exit waves go on through; then abTEM's CTF: defocus (positive = underfocus), Cs, C12 at
   angle phi12, focal spread and beam convergence as abTEM's quasi-coherent envelopes; no aperture;
3. drift: the intensity convolved with a line of `drift.length_A` in a uniform direction (the exact
   transfer function of uniform motion, a sinc);
4. the camera: pixels of `pixel_size_A` x `pixel_scale` integrate the intensity over their area; an
   illumination ramp of `illumination_gradient.percent` peak to peak in a uniform direction; the MTF
   1/(1 + (f/c50)^2) (f a fraction of Nyquist); Poisson counts at `dose_e_per_A2` (on vacuum the mean
   is dose x pixel area); with `detector`, the MTF after the shot noise instead (a scintillator blurs
   the noise), a per-pixel gain, a dark offset and Gaussian read noise;
5. a float32 ImageJ TIFF with its pixel size in nm (what `hrtemflow predict` reads), and a row of
   `labels.csv`: the tube's end points in pixels of the written image (x = column, y = row, from the
   top-left corner: pixel k spans [k, k + 1)) and every drawn value.

Nanoalloy particles (`family: nanoalloy`, `particle_scene`) take the place of step 1: an Ag/Co particle
built by `ase.cluster` (icosahedron, Marks decahedron, truncated octahedron) or cut from an fcc lattice
(`fcc_sphere`), of the motif size nearest an atom count drawn from `n_atoms`, on one Vegard's-law lattice
(no MD), with `co_fraction` of its sites Co in an `ordering`: core-shell (Co on the sites
nearest its centroid), janus (Co on the sites furthest along a random direction: one plane splits the two
metals) or disordered (Co on random sites); with `relax`, minimised at 0 K by a TB-SMA energy written in
`relax.py` (each metal takes its own spacing; still no MD, no temperature); with `particles_from`, the frames
of given .extxyz files instead (a diagnostic: the bench's own MD particles); turned to a uniformly random
orientation, its centroid at least `centre_margin_nm` from the field's edges, optionally inside a ligand-like
shell of light atoms (`ligand_shell`), on a support film as above. Its label row (`PARTICLE_COLUMNS`) holds
its centre and projected radius in pixels of the written image, its ordering (the ordering bundle's class
name), motif, composition and every drawn value. A set with `draws_as` draws another set's values for each
index (the same particles, optics and noise), so the two are paired.

Seconds per micrograph on 2 cores: see docs/results/independent-images.md.
"""

from __future__ import annotations

import copy
import csv
import functools
import json
import math
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .relax import check_relax_params, relax_particle

FACTORS_FILE = Path(__file__).with_name("factors.yaml")

#: atoms per Å^3 per g/cm^3 of carbon (Avogadro / 12.011 g/mol, 1e-24 cm^3 per Å^3)
CARBON_PER_A3_PER_G_CM3 = 0.602214076 / 12.011
#: closest approach of two amorphous carbon atoms placed at random (Å): below a C-C bond
CARBON_MIN_DISTANCE_A = 1.3
#: closest approach of an adsorbed atom to the tube's wall, and of the film to the tube (Å): graphite's
#: interlayer spacing
VDW_GAP_A = 3.35
#: vacuum above and below the object along the beam (Å)
Z_MARGIN_A = 4.0
#: room around the tube's ends inside the field (Å)
FIELD_MARGIN_A = 10.0
#: fcc lattice constants (Å) at room temperature (Ag; fcc Co), mixed by Vegard's law for an alloy particle
FCC_LATTICE_A = {"Ag": 4.0853, "Co": 3.5447}
#: the chemical orderings of the nanoalloy family (the ordering bundle's class names)
ORDERINGS = ("core-shell", "janus", "disordered")
#: particle shapes: ase.cluster motifs, or an fcc ball (the sites of an fcc lattice nearest a random point)
MOTIFS = ("icosahedron", "decahedron", "truncated_octahedron", "fcc_sphere")
#: the largest particle (atoms) the motif search goes to
MAX_PARTICLE_ATOMS = 20000
#: family of the structures each classification task of a bundle names
TASK_FAMILY = {"chirality": "cnt", "ordering": "nanoalloy"}

#: the drawn optics, dose and potential every family's row carries
_OPTICS_COLUMNS = (
    "defocus_nm",
    "cs_um",
    "c12_nm",
    "phi12_deg",
    "focal_spread_nm",
    "convergence_mrad",
    "mtf_c50",
    "dose",
    "outside",
    "parametrization",
    "frozen_phonons",
)
#: the columns every family's row ends with: the support, the camera and the run
_SCENE_COLUMNS = (
    "support_nm",
    "support_atoms",
    "drift_A",
    "drift_deg",
    "gradient_percent",
    "gradient_deg",
    "gain_sigma",
    "dark_offset_counts",
    "read_noise_counts",
    "mtf_on_noise",
    "atoms",
    "grid",
    "seed",
    "seconds",
    "declared_pixel_scale",
)

LABEL_COLUMNS = (
    "file",
    "family",
    "label",
    "chirality",
    "x0",
    "y0",
    "x1",
    "y1",
    "width_px",
    "height_px",
    "pixel_size_nm",
    "field_nm",
    "tube_length_nm",
    "tube_diameter_nm",
    "angle_deg",
    "tilt_deg",
    *_OPTICS_COLUMNS,
    "adsorbate_clusters",
    "adsorbate_atoms",
    *_SCENE_COLUMNS,
)

#: a nanoalloy row: the particle's centre (cx = column, cy = row) and projected radius in pixels of the
#: written image, its ordering, shape, composition and every drawn value
PARTICLE_COLUMNS = (
    "file",
    "family",
    "label",
    "ordering",
    "motif",
    "motif_params",
    "n_atoms",
    "n_ag",
    "n_co",
    "co_fraction",
    "cx",
    "cy",
    "radius_px",
    "particle_radius_nm",
    "orientation_quat",
    "janus_axis",
    "relax_steps",
    "relax_rms_shift_A",
    "relax_energy_drop_eV_per_atom",
    "width_px",
    "height_px",
    "pixel_size_nm",
    "field_nm",
    "energy_kV",
    *_OPTICS_COLUMNS,
    "ligand_nm",
    "ligand_atoms",
    *_SCENE_COLUMNS,
)

#: the label columns of each family's labels.csv
COLUMNS = {"cnt": LABEL_COLUMNS, "nanoalloy": PARTICLE_COLUMNS}


# ----------------------------------------------------------------------------------------- parameters


def load_factors(path: str | Path | None = None) -> dict[str, Any]:
    import yaml

    with open(path or FACTORS_FILE, encoding="utf-8") as fh:
        factors = yaml.safe_load(fh)
    if not isinstance(factors, dict) or "base" not in factors or "sets" not in factors:
        raise SystemExit(f"{path or FACTORS_FILE}: expected a mapping with `base` and `sets`")
    return factors


def read_card(bundle: str | Path) -> dict[str, Any]:
    """A bundle's card.json, read as plain JSON (nothing of hrtemflow.learn is imported)."""
    p = Path(bundle) / "card.json"
    if not p.is_file():
        raise SystemExit(f"{bundle} is not a model bundle (no card.json)")
    return json.loads(p.read_text(encoding="utf-8"))


def card_imaging(card: Mapping[str, Any], family: str) -> dict[str, Any] | None:
    """What the card says the training images of `family` were taken with (None: an older card)."""
    entries = [e for e in card.get("imaging") or [] if isinstance(e, Mapping)]
    for e in entries:
        if e.get("family") == family:
            return dict(e)
    return dict(entries[0]) if entries else None


def _merge(into: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = copy.deepcopy(v)
    return into


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """`key=value` (dotted keys for nested entries, YAML values) -> a nested mapping."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--param {item!r}: expected key=value, e.g. field_nm=[6,6] or optics.cs_um=[-5,5]")
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(value)
    return out


def resolve_set(
    factors: Mapping[str, Any],
    name: str,
    card: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Every parameter of one set: base, then its family's base (`families`, for a family other than the
    base's), then the card's ranges, then the set's own, then overrides."""
    if name not in factors["sets"]:
        raise SystemExit(f"no set {name!r} in the factors file; sets: {', '.join(factors['sets'])}")
    family = set_family(factors, name, overrides)
    p = copy.deepcopy(dict(factors["base"]))
    if family != p.get("family", "cnt"):
        _merge(p, (factors.get("families") or {}).get(family) or {})
    p["family"] = family
    if card is not None:
        wants = TASK_FAMILY.get(str(card.get("task")))
        if wants is not None and wants != family:
            raise SystemExit(
                f"set {name!r} makes {family} micrographs, but the bundle's task {card.get('task')!r} reads {wants} "
                f"ones: pick the bundle's sets (--sets all picks them) or another bundle"
            )
        if p.get("ranges_from_card", True):
            im = card_imaging(card, family)
            if im:
                optics = im.get("optics") or {}
                for key in ("defocus_nm", "cs_um", "c12_nm", "focal_spread_nm", "convergence_mrad"):
                    if key in optics:
                        p["optics"][key] = list(optics[key])
                if "mtf_c50" in (im.get("detector") or {}):
                    p["optics"]["mtf_c50"] = list(im["detector"]["mtf_c50"])
                if "dose_e_per_A2" in (im.get("noise") or {}):
                    p["dose_e_per_A2"] = list(im["noise"]["dose_e_per_A2"])
                if "energy_kV" in im:
                    p["energy_kV"] = im["energy_kV"]
        if card.get("task") == "chirality" and card.get("classes"):
            p["chiralities"] = [[int(v) for v in c.split("-")] for c in card["classes"]]
        if card.get("task") == "ordering" and card.get("classes"):
            p["orderings"] = list(card["classes"])
        if p.get("pixel_size_A") == "bundle":
            p["pixel_size_A"] = float(card["pixel_size_A"])
    _merge(p, factors["sets"][name] or {})
    _merge(p, overrides or {})
    if p.get("pixel_size_A") == "bundle":
        raise SystemExit("pixel_size_A is 'bundle' but no bundle was given: pass --bundle or --param pixel_size_A=...")
    p["set"] = name
    if p.get("draws_as") and p["draws_as"] not in factors["sets"]:
        raise SystemExit(
            f"set {name!r}: draws_as {p['draws_as']!r} is no set of the factors file; name the set to pair with"
        )
    if family == "nanoalloy":
        check_particle_params(p)
    return p


def set_family(factors: Mapping[str, Any], name: str, overrides: Mapping[str, Any] | None = None) -> str:
    """The family a set makes (the override's, else the set's own, else the base's), refused when no
    builder makes it."""
    own = factors["sets"].get(name) or {}
    family = str((overrides or {}).get("family") or own.get("family") or factors["base"].get("family", "cnt"))
    if family not in BUILDERS:
        raise SystemExit(f"set {name!r}: family {family!r} has no scene builder; families: {', '.join(BUILDERS)}")
    return family


def check_particle_params(p: Mapping[str, Any]) -> None:
    """Refuse a nanoalloy set whose orderings, motifs, sizes or composition this generator cannot build."""
    where = f"set {p.get('set')!r}"
    orderings = list(p.get("orderings") or [])
    bad = [o for o in orderings if o not in ORDERINGS]
    if not orderings or bad:
        raise SystemExit(f"{where}: orderings {orderings} must be a non-empty list of {', '.join(ORDERINGS)}")
    motifs = list(p.get("motifs") or [])
    bad = [m for m in motifs if m not in MOTIFS]
    if not motifs or bad:
        raise SystemExit(f"{where}: motifs {motifs} must be a non-empty list of {', '.join(MOTIFS)}")
    n = p.get("n_atoms")
    if not (isinstance(n, (list, tuple)) and len(n) == 2 and all(isinstance(v, int) for v in n)):
        raise SystemExit(f"{where}: n_atoms must be [lo, hi], two whole numbers of atoms, not {n!r}")
    if not 13 <= n[0] <= n[1] <= MAX_PARTICLE_ATOMS:
        raise SystemExit(f"{where}: n_atoms {list(n)} must satisfy 13 <= lo <= hi <= {MAX_PARTICLE_ATOMS}")
    x = p.get("co_fraction")
    xs = list(x) if isinstance(x, (list, tuple)) else [x]
    if not all(isinstance(v, (int, float)) and 0.0 < float(v) < 1.0 for v in xs) or float(xs[0]) > float(xs[-1]):
        raise SystemExit(f"{where}: co_fraction {x!r} must be a fraction or a range [lo, hi] inside (0, 1)")
    if lig := p.get("ligand_shell"):
        from ase.data import atomic_numbers

        elements = lig.get("elements") or {}
        weights = [w for w in elements.values() if isinstance(w, (int, float)) and w >= 0]
        bad = [e for e in elements if e not in atomic_numbers]
        if not elements or bad or len(weights) != len(elements) or sum(weights) <= 0:
            raise SystemExit(f"{where}: ligand_shell.elements {elements!r} must map element symbols to weights > 0")
        if "thickness_nm" not in lig:
            raise SystemExit(f"{where}: ligand_shell needs thickness_nm (a number or a range [lo, hi])")
    check_relax_params(p.get("relax"), where)
    pf = p.get("particles_from")
    if pf is not None and not (isinstance(pf, Mapping) and pf.get("extxyz")):
        raise SystemExit(f"{where}: particles_from must be {{extxyz: <glob of MD .extxyz>, ids: <file or null>}}")


def _uniform(rng: np.random.Generator, v: Any) -> float:
    if isinstance(v, (list, tuple)):
        lo, hi = float(v[0]), float(v[-1])
        return float(rng.uniform(lo, hi)) if hi > lo else lo
    return float(v)


def _outside(rng: np.random.Generator, v: Any, frac: float, relative: bool) -> tuple[float, str]:
    """A value just outside the range v: within frac of its span (or, `relative`, of its ends) beyond an end."""
    lo, hi = (float(v[0]), float(v[-1])) if isinstance(v, (list, tuple)) else (float(v), float(v))
    side = "low" if rng.random() < 0.5 else "high"
    u = float(rng.uniform(0.05, 1.0)) * frac
    if relative:
        return (lo * (1.0 - u) if side == "low" else hi * (1.0 + u)), side
    span = max(hi - lo, 1e-9)
    return (lo - u * span if side == "low" else hi + u * span), side


def _at_edge(rng: np.random.Generator, v: Any, frac: float) -> tuple[float, str]:
    """A value inside the range v but within frac of its span of an end: the range's edges, where a
    network had training images on one side only."""
    if not isinstance(v, (list, tuple)) or not 0.0 < frac <= 0.5:
        raise SystemExit(f"edge: needs a range [lo, hi] and a fraction of its span in (0, 0.5], not {v!r} and {frac}")
    lo, hi = float(v[0]), float(v[-1])
    side = "low" if rng.random() < 0.5 else "high"
    u = float(rng.uniform(0.0, frac)) * (hi - lo)
    return (lo + u if side == "low" else hi - u), side


def fft_size(n: int) -> int:
    """The smallest 2^a 3^b 5^c 7^d >= n (fast FFTs)."""
    n = max(int(n), 1)
    while True:
        m = n
        for p in (2, 3, 5, 7):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def draw_tube(p: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """A tube's values: its chirality, length and orientation."""
    d: dict[str, Any] = {}
    n, m = (int(v) for v in p["chiralities"][int(rng.integers(len(p["chiralities"])))])
    d["n"], d["m"] = n, m
    d["length_A"] = 10.0 * _uniform(rng, p["tube_length_nm"])
    d["tilt_deg"] = float(rng.uniform(-1.0, 1.0)) * float(p["tilt_deg"])
    d["angle_deg"] = float(rng.uniform(0.0, 180.0))
    d["spin_rad"] = float(rng.uniform(0.0, 2.0 * math.pi))
    return d


def draw_particle(p: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """A particle's values: its ordering, motif, target size, Co fraction and orientation (a uniformly
    random rotation: a unit quaternion from four normal draws), and its ligand shell if the set has one."""
    d: dict[str, Any] = {}
    d["ordering"] = str(p["orderings"][int(rng.integers(len(p["orderings"])))])
    d["motif"] = str(p["motifs"][int(rng.integers(len(p["motifs"])))])
    lo, hi = (int(v) for v in p["n_atoms"])
    d["n_atoms_target"] = int(rng.integers(lo, hi + 1))
    d["co_fraction"] = _uniform(rng, p["co_fraction"])
    q = rng.normal(size=4)
    q = q / np.linalg.norm(q)
    d["quaternion"] = (q if q[0] >= 0 else -q).tolist()
    d["centre_margin_A"] = 10.0 * float(p.get("centre_margin_nm", 0.0))
    if lig := p.get("ligand_shell"):
        d["ligand_A"] = 10.0 * _uniform(rng, lig["thickness_nm"])
        d["ligand_density"] = _uniform(rng, lig.get("density_g_cm3", 1.0))
        d["ligand_gap_A"] = float(lig.get("gap_A", 2.0))
        d["ligand_elements"] = {str(k): float(v) for k, v in lig["elements"].items()}
    if (relax := p.get("relax")) is not None:  # deterministic: draws nothing, so other sets' draws stay as they were
        d["relax"] = dict(relax)
    if pf := p.get("particles_from"):  # a given structure instead of a built one: the rest is drawn as for any set
        frames = md_frames(str(pf["extxyz"]), str(pf.get("ids") or ""))
        d["frame"] = frames[int(rng.integers(len(frames)))]
        d["ordering"] = d["frame"][3]
    return d


@functools.cache
def md_frames(pattern: str, ids_file: str) -> tuple[tuple[str, int, str, str], ...]:
    """(file, frame index, sample id, ordering) of every particle in the extxyz files matching `pattern`
    (the pipeline's MD output, e.g. results-*/md/nanoalloy-*/*.extxyz), only the sample ids listed in
    `ids_file` when given (one per line: a bundle's test particles). The ordering is read from the sample
    id, `nanoalloy-<ordering>-<index>`: the ordering built, which the MD's measured label can differ from for a
    few particles (1 of 475 disordered ones in the transfer bench). Why: the same imaging on the bench's own
    particles says whether a transfer gap lies in the structures or in the imaging."""
    import glob

    from ase.io import read

    files = sorted(glob.glob(pattern))
    if not files:
        raise SystemExit(f"particles_from.extxyz {pattern!r} matches no file: give a glob of the MD stage's .extxyz")
    keep = set(Path(ids_file).read_text().split()) if ids_file else None
    out = []
    for f in files:
        for k, atoms in enumerate(read(f, index=":")):
            sid = str(atoms.info.get("sample_id", ""))
            if keep is None or sid in keep:
                out.append((f, k, sid, sid.split("-", 1)[-1].rsplit("-", 1)[0]))
    if not out:
        raise SystemExit(f"particles_from: none of the {len(files)} file(s) holds a sample id listed in {ids_file}")
    return tuple(out)


#: the object's own values per family (the rest of `draw` is the same for every family)
DRAWS: dict[str, Callable[[Mapping[str, Any], np.random.Generator], dict[str, Any]]] = {
    "cnt": draw_tube,
    "nanoalloy": draw_particle,
}


def draw(p: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """One micrograph's values from a resolved set: its object's, then the field, optics and factors."""
    d = DRAWS[p.get("family", "cnt")](p, rng)
    d["pixel_A"] = _uniform(rng, p["pixel_size_A"]) * _uniform(rng, p.get("pixel_scale", 1.0))
    d["field_A"] = 10.0 * _uniform(rng, p["field_nm"])
    o = p["optics"]
    d["defocus_A"] = 10.0 * _uniform(rng, o["defocus_nm"])
    d["cs_A"] = 1e4 * _uniform(rng, o["cs_um"])
    d["c12_A"] = 10.0 * _uniform(rng, o["c12_nm"])
    d["phi12_rad"] = float(rng.uniform(0.0, math.pi))
    d["focal_spread_A"] = 10.0 * _uniform(rng, o.get("focal_spread_nm", 0.0))
    d["convergence_mrad"] = _uniform(rng, o.get("convergence_mrad", 0.0))
    d["mtf_c50"] = _uniform(rng, o.get("mtf_c50", 1e6))
    d["dose"] = _uniform(rng, p["dose_e_per_A2"])
    d["outside"] = ""
    if out := p.get("outside"):
        which = ("defocus", "dose", "both")[int(rng.integers(3))]
        notes = []
        if which in ("defocus", "both"):
            value, side = _outside(rng, o["defocus_nm"], float(out.get("defocus_nm", 0.3)), relative=False)
            d["defocus_A"] = 10.0 * value
            notes.append(f"defocus-{side}")
        if which in ("dose", "both"):
            d["dose"], side = _outside(rng, p["dose_e_per_A2"], float(out.get("dose_e_per_A2", 0.5)), relative=True)
            notes.append(f"dose-{side}")
        d["outside"] = "+".join(notes)
    if edge := p.get("edge"):
        which = ("defocus", "dose", "both")[int(rng.integers(3))]
        notes = [d["outside"]] if d["outside"] else []
        if which in ("defocus", "both"):
            value, side = _at_edge(rng, o["defocus_nm"], float(edge.get("defocus_nm", 0.1)))
            d["defocus_A"] = 10.0 * value
            notes.append(f"defocus-{side}-edge")
        if which in ("dose", "both"):
            d["dose"], side = _at_edge(rng, p["dose_e_per_A2"], float(edge.get("dose_e_per_A2", 0.1)))
            notes.append(f"dose-{side}-edge")
        d["outside"] = "+".join(notes)
    d["parametrization"] = str(p.get("parametrization", "lobato"))
    d["frozen_phonons"] = int(p.get("frozen_phonons") or 0)
    d["phonon_sigma_A"] = float(p.get("phonon_sigma_A", 0.08))
    if a := p.get("adsorbates"):
        d["clusters_per_nm"] = _uniform(rng, a["clusters_per_nm"])
        d["cluster_radius_nm"] = list(a["radius_nm"]) if isinstance(a["radius_nm"], list) else [a["radius_nm"]] * 2
        d["adsorbate_density"] = float(a.get("density_g_cm3", 2.0))
    if f := p.get("support_film"):
        d["support_A"] = 10.0 * _uniform(rng, f["thickness_nm"])
        d["support_density"] = _uniform(rng, f.get("density_g_cm3", 2.0))
    if dr := p.get("drift"):
        d["drift_A"] = _uniform(rng, dr["length_A"])
        d["drift_deg"] = float(rng.uniform(0.0, 180.0))
    if g := p.get("illumination_gradient"):
        d["gradient_percent"] = _uniform(rng, g["percent"])
        d["gradient_deg"] = float(rng.uniform(0.0, 360.0))
    if det := p.get("detector"):
        d["gain_sigma"] = _uniform(rng, det.get("gain_sigma", 0.0))
        d["dark_offset_counts"] = _uniform(rng, det.get("dark_offset_counts", 0.0))
        d["read_noise_counts"] = _uniform(rng, det.get("read_noise_counts", 0.0))
        d["mtf_on_noise"] = bool(det.get("mtf_on_noise", False))
    return d


# ------------------------------------------------------------------------------------------- structures


def random_carbon(
    sample: Callable[[int], np.ndarray],
    n_target: int,
    rng: np.random.Generator,
    dmin: float = CARBON_MIN_DISTANCE_A,
    boxsize: Sequence[float] | None = None,
    rounds: int = 60,
) -> np.ndarray:
    """Amorphous carbon by random sequential addition: candidates from `sample(k)` kept when no atom
    placed so far (or earlier in the batch) is within dmin, until n_target atoms (or `rounds` batches)."""
    from scipy.spatial import cKDTree

    pts = np.empty((0, 3))
    for _ in range(rounds):
        need = n_target - len(pts)
        if need <= 0:
            break
        cand = np.asarray(sample(int(need * 1.5) + 16), dtype=np.float64)
        if boxsize is not None:
            cand = np.mod(cand, boxsize)
        if len(pts) and len(cand):
            dist, _ = cKDTree(pts, boxsize=boxsize).query(cand, distance_upper_bound=dmin)
            cand = cand[~np.isfinite(dist)]
        if not len(cand):
            continue
        pairs = cKDTree(cand, boxsize=boxsize).query_pairs(dmin, output_type="ndarray")
        keep = np.ones(len(cand), dtype=bool)
        for i, j in pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))] if len(pairs) else ():
            if keep[i] and keep[j]:
                keep[j] = False
        pts = np.concatenate([pts, cand[keep][:need]])
    return pts


def ideal_tube(n: int, m: int, length_A: float) -> tuple[np.ndarray, float, float]:
    """Positions (Å) of an ideal (n, m) tube of whole unit cells about `length_A` long, axis along z,
    centred at the origin; its length and radius."""
    from ase.build import nanotube

    period = float(nanotube(n, m, length=1).cell[2, 2])
    cells = max(1, int(round(length_A / period)))
    pos = nanotube(n, m, length=cells).positions.astype(np.float64)
    pos[:, :2] -= pos[:, :2].mean(axis=0)
    pos[:, 2] -= 0.5 * cells * period
    return pos, cells * period, float(np.hypot(pos[:, 0], pos[:, 1]).mean())


def adsorbate_clusters(
    radius_A: float, length_A: float, d: Mapping[str, Any], rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """Amorphous carbon clusters on the wall of a tube (axis z, centred): spheres of radius in
    `cluster_radius_nm` centred just outside the wall, filled at `adsorbate_density`, nothing closer to
    the wall than the graphite spacing. Positions and the number of clusters."""
    k = int(rng.poisson(d["clusters_per_nm"] * length_A / 10.0))
    if k == 0:
        return np.empty((0, 3)), 0
    r = 10.0 * rng.uniform(*d["cluster_radius_nm"], size=k)
    phi = rng.uniform(0.0, 2.0 * math.pi, size=k)
    rho = radius_A + VDW_GAP_A + 0.5 * r
    centres = np.stack([rho * np.cos(phi), rho * np.sin(phi), rng.uniform(-0.5, 0.5, size=k) * length_A], axis=1)
    vol = 4.0 / 3.0 * math.pi * r**3
    wall = radius_A + VDW_GAP_A

    def raw(count: int) -> np.ndarray:
        which = rng.choice(k, size=count, p=vol / vol.sum())
        u = rng.normal(size=(count, 3))
        u *= (r[which] * rng.random(count) ** (1.0 / 3.0) / np.linalg.norm(u, axis=1))[:, None]
        pts = centres[which] + u
        inside = (np.linalg.norm(pts[:, None, :] - centres[None], axis=2) < r[None]).sum(axis=1)
        keep = rng.random(count) < 1.0 / np.maximum(inside, 1)  # uniform over the union of the spheres
        keep &= np.hypot(pts[:, 0], pts[:, 1]) >= wall
        return pts[keep]

    trial = 20000
    accepted = len(raw(trial)) / trial  # the union's volume outside the wall, as a fraction of sum(vol)
    n_target = int(round(d["adsorbate_density"] * CARBON_PER_A3_PER_G_CM3 * vol.sum() * accepted))
    return random_carbon(raw, n_target, rng), k


def rotation(angle_deg: float, tilt_deg: float, spin_rad: float) -> np.ndarray:
    """Tube frame (axis z) -> lab frame: spun about its axis, laid along +x, tilted out of the image plane
    by tilt (towards +z, the beam), turned in-plane by angle from +x towards +y."""

    def rz(a: float) -> np.ndarray:
        c, s = math.cos(a), math.sin(a)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    def ry(a: float) -> np.ndarray:
        c, s = math.cos(a), math.sin(a)
        return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])

    return rz(math.radians(angle_deg)) @ ry(math.radians(90.0 - tilt_deg)) @ rz(spin_rad)


def quaternion_matrix(q: Sequence[float]) -> np.ndarray:
    """The rotation of a unit quaternion (w, x, y, z)."""
    w, x, y, z = (float(v) for v in q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def motif_positions(motif: str, params: tuple[int, ...], lattice_A: float) -> np.ndarray:
    """Positions (Å) of one ase.cluster motif: Icosahedron(shells), Decahedron(p, q, r) (a Marks
    decahedron), Octahedron(length, cutoff) (truncated at its corners)."""
    from ase.cluster import Decahedron, Icosahedron, Octahedron

    if motif == "icosahedron":
        atoms = Icosahedron("Ag", params[0], latticeconstant=lattice_A)
    elif motif == "decahedron":
        atoms = Decahedron("Ag", *params, latticeconstant=lattice_A)
    elif motif == "truncated_octahedron":
        atoms = Octahedron("Ag", params[0], params[1], latticeconstant=lattice_A)
    else:
        raise ValueError(f"no ase.cluster motif {motif!r}; motifs: {', '.join(MOTIFS)}")
    return atoms.positions.astype(np.float64)


@functools.cache
def _motif_count(motif: str, params: tuple[int, ...]) -> int:
    return len(motif_positions(motif, params, 4.0))


def motif_sizes(motif: str, most: int) -> list[tuple[int, tuple[int, ...]]]:
    """(atoms, parameters) of the motif's sizes, from the smallest up to the first of each kind above
    `most` atoms: icosahedra of 2, 3, ... shells; octahedra of edge length L cut at (L - 1) / 3
    rounded down and up (the truncated octahedron and its neighbours); decahedra (p, q, r) with
    q = p - 1, p, p + 1 (q >= 1) and r = 0, 1, 2 re-entrant layers."""
    out: list[tuple[int, tuple[int, ...]]] = []
    if motif == "icosahedron":
        k = 2
        while not out or out[-1][0] <= most:
            out.append((_motif_count(motif, (k,)), (k,)))
            k += 1
    elif motif == "truncated_octahedron":
        length = 3
        while not out or min(n for n, _ in out[-2:]) <= most:
            for cut in sorted({(length - 1) // 3, -(-(length - 1) // 3)}):
                out.append((_motif_count(motif, (length, cut)), (length, cut)))
            length += 1
    elif motif == "decahedron":
        p = 2
        while p == 2 or _motif_count(motif, (p, max(1, p - 1), 0)) <= most:
            for q in range(max(1, p - 1), p + 2):
                out += [(_motif_count(motif, (p, q, r)), (p, q, r)) for r in (0, 1, 2)]
            p += 1
    else:
        raise ValueError(f"no ase.cluster motif {motif!r}; motifs: {', '.join(MOTIFS)}")
    return sorted(out)


def fcc_ball(n: int, lattice_A: float, rng: np.random.Generator) -> np.ndarray:
    """The n sites of an fcc lattice nearest a random point of its unit cell: a roughly spherical
    particle of exactly n atoms with the facets and steps a cut crystal has."""
    radius = (3.0 * n / (4.0 * math.pi) * lattice_A**3 / 4.0) ** (1.0 / 3.0)
    m = int(math.ceil(radius / lattice_A)) + 2
    cells = np.stack(np.meshgrid(*[np.arange(-m, m + 1)] * 3, indexing="ij"), axis=-1).reshape(-1, 1, 3)
    basis = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]])
    sites = ((cells + basis[None]).reshape(-1, 3)) * lattice_A
    origin = rng.random(3) * lattice_A
    return sites[np.argsort(np.linalg.norm(sites - origin, axis=1), kind="stable")[:n]]


def particle_sites(motif: str, target: int, lattice_A: float, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Positions (Å) of a particle of `motif` (the motif size nearest `target` atoms, the smaller on a tie;
    an fcc ball has exactly `target`), and its size parameters as text."""
    if motif == "fcc_sphere":
        return fcc_ball(target, lattice_A, rng), str(target)
    _, params = min(motif_sizes(motif, target), key=lambda c: (abs(c[0] - target), c[0]))
    return motif_positions(motif, params, lattice_A), "-".join(str(v) for v in params)


def order_sites(
    pos: np.ndarray, n_co: int, ordering: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None]:
    """Which sites are Co, and the Janus axis (None for the others): core-shell, the n_co sites nearest
    the centroid; janus, the n_co sites furthest along a random direction (one plane splits the metals);
    disordered, n_co random sites. Ties (a symmetric motif has whole shells at one distance) go at random."""
    n = len(pos)
    axis = None
    if ordering == "core-shell":
        key = np.linalg.norm(pos - pos.mean(axis=0), axis=1)
    elif ordering == "janus":
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        key = -(pos - pos.mean(axis=0)) @ axis
    elif ordering == "disordered":
        key = rng.random(n)
    else:
        raise ValueError(f"unknown ordering {ordering!r}; orderings: {', '.join(ORDERINGS)}")
    order = np.lexsort((rng.permutation(n), np.round(key, 6)))
    is_co = np.zeros(n, dtype=bool)
    is_co[order[:n_co]] = True
    return is_co, axis


def alloy_particle(d: Mapping[str, Any], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """An Ag/Co particle on one Vegard's-law lattice (no MD: ideal sites), or the given MD frame: positions
    (Å, its centroid at the origin), atomic numbers, and what was built (motif parameters, counts, Janus axis)."""
    if "frame" in d:
        from ase.io import read

        atoms = read(d["frame"][0], index=int(d["frame"][1]))
        numbers = atoms.numbers.copy()
        n_co = int((numbers == 27).sum())
        built = {"motif_params": d["frame"][2], "n_atoms": len(atoms), "n_co": n_co, "n_ag": len(atoms) - n_co}
        return atoms.positions - atoms.positions.mean(axis=0), numbers, {**built, "lattice_A": 0.0, "axis": None}
    x = float(d["co_fraction"])
    lattice = (1.0 - x) * FCC_LATTICE_A["Ag"] + x * FCC_LATTICE_A["Co"]
    pos, params = particle_sites(d["motif"], int(d["n_atoms_target"]), lattice, rng)
    pos = pos - pos.mean(axis=0)
    n = len(pos)
    n_co = min(max(int(round(x * n)), 1), n - 1)
    is_co, axis = order_sites(pos, n_co, d["ordering"], rng)
    numbers = np.where(is_co, 27, 47)
    built = {"motif_params": params, "n_atoms": n, "n_co": n_co, "n_ag": n - n_co, "lattice_A": lattice, "axis": axis}
    if "relax" in d:
        pos, info = relax_particle(pos, numbers, **d["relax"])
        pos = pos - pos.mean(axis=0)
        built.update(info)
    return pos, numbers, built


def ligand_shell(metal: np.ndarray, d: Mapping[str, Any], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A ligand-like shell: light atoms (element weights `ligand_elements`) placed at random, no two
    closer than a C-C bond, at `ligand_density`, where the nearest metal atom is between `ligand_gap_A`
    and that plus `ligand_A` away. Positions and atomic numbers."""
    from ase.data import atomic_masses, atomic_numbers
    from scipy.spatial import cKDTree

    tree = cKDTree(metal)
    gap, thick = float(d["ligand_gap_A"]), float(d["ligand_A"])
    centre = metal.mean(axis=0)
    reach = float(np.linalg.norm(metal - centre, axis=1).max()) + gap + thick

    def ball(k: int) -> np.ndarray:
        u = rng.normal(size=(k, 3))
        return centre + u * (reach * rng.random(k) ** (1.0 / 3.0) / np.linalg.norm(u, axis=1))[:, None]

    def shell(k: int) -> np.ndarray:
        pts = ball(k)
        dist, _ = tree.query(pts)
        return pts[(dist >= gap) & (dist <= gap + thick)]

    symbols = list(d["ligand_elements"])
    weights = np.array([d["ligand_elements"][e] for e in symbols], dtype=np.float64)
    weights /= weights.sum()
    z = np.array([atomic_numbers[e] for e in symbols])
    mean_mass = float(weights @ atomic_masses[z])
    trial = 20000
    volume = 4.0 / 3.0 * math.pi * reach**3 * len(shell(trial)) / trial
    n_target = int(round(d["ligand_density"] * 0.602214076 / mean_mass * volume))
    pts = random_carbon(shell, n_target, rng)
    return pts, rng.choice(z, size=len(pts), p=weights)


@dataclass
class Scene:
    """Atoms in the field (x, y in [0, field), z along the beam from 0), and what each object is."""

    positions: np.ndarray
    numbers: np.ndarray
    field_A: float
    depth_A: float
    objects: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    #: a support film's atoms (z from 0 in its own slab, under the object) and its slab's depth
    film: np.ndarray | None = None
    film_depth_A: float = 0.0


def cnt_scene(d: dict[str, Any], rng: np.random.Generator) -> Scene:
    """One whole tube (and its adsorbates) in the field; its end points in Å of the field."""
    pos, length, radius = ideal_tube(d["n"], d["m"], d["length_A"])
    ads, clusters = adsorbate_clusters(radius, length, d, rng) if "clusters_per_nm" in d else (np.empty((0, 3)), 0)
    rot = rotation(d["angle_deg"], d["tilt_deg"], d["spin_rad"])
    ends = np.array([[0.0, 0.0, -0.5 * length], [0.0, 0.0, 0.5 * length]]) @ rot.T
    allpos = np.concatenate([pos, ads]) @ rot.T
    reach = max(np.ptp(ends[:, 0]), np.ptp(ends[:, 1])) + 2.0 * (radius + FIELD_MARGIN_A)
    pixel = d["pixel_A"]
    npx = int(math.ceil(max(d["field_A"], reach) / pixel))
    field_A = npx * pixel
    slack = 0.5 * (field_A - reach)
    centre = 0.5 * field_A + rng.uniform(-slack, slack, size=2) if slack > 0 else np.full(2, 0.5 * field_A)
    shift = np.array([centre[0], centre[1], Z_MARGIN_A - allpos[:, 2].min()])
    allpos += shift
    ends += shift
    d.update(field_A=field_A, npx=npx, length_A=length, radius_A=radius)
    obj = {
        "family": "cnt",
        "label": f"{d['n']}-{d['m']}",
        "chirality": f"{d['n']}-{d['m']}",
        "ends_A": ends[:, :2].tolist(),
        "tube_length_nm": length / 10.0,
        "tube_diameter_nm": 2.0 * radius / 10.0,
    }
    return Scene(
        np.mod(allpos, [field_A, field_A, np.inf]),
        np.full(len(allpos), 6),
        field_A,
        float(allpos[:, 2].max()) + Z_MARGIN_A,
        [obj],
        {"adsorbate_clusters": clusters, "adsorbate_atoms": len(ads)},
    )


def particle_scene(d: dict[str, Any], rng: np.random.Generator) -> Scene:
    """One particle (and its ligand shell) turned to its orientation, its centroid at a uniform point of
    the field at least `centre_margin_A` (and its reach + FIELD_MARGIN_A) in from every edge; the field is
    widened where that does not fit. Its centre and projected radius in Å of the field."""
    metal, numbers, built = alloy_particle(d, rng)
    rot = quaternion_matrix(d["quaternion"])
    metal = metal @ rot.T
    lig, lig_numbers = ligand_shell(metal, d, rng) if "ligand_A" in d else (np.empty((0, 3)), np.empty(0, int))
    allpos = np.concatenate([metal, lig])
    margin = max(d["centre_margin_A"], float(np.hypot(allpos[:, 0], allpos[:, 1]).max()) + FIELD_MARGIN_A)
    pixel = d["pixel_A"]
    npx = int(math.ceil(max(d["field_A"], 2.0 * margin) / pixel))
    field_A = npx * pixel
    centre = rng.uniform(margin, field_A - margin, size=2)
    allpos += np.array([centre[0], centre[1], Z_MARGIN_A - allpos[:, 2].min()])
    d.update(field_A=field_A, npx=npx)
    axis = built["axis"]
    obj = {
        "family": "nanoalloy",
        "label": d["ordering"],
        "ordering": d["ordering"],
        "motif": "md" if "frame" in d else d["motif"],
        "motif_params": built["motif_params"],
        "n_atoms": built["n_atoms"],
        "n_ag": built["n_ag"],
        "n_co": built["n_co"],
        "centre_A": centre.tolist(),
        "radius_A": float(np.hypot(metal[:, 0], metal[:, 1]).max()),
        "particle_radius_A": float(np.linalg.norm(metal, axis=1).max()),
        "janus_axis": (rot @ axis).tolist() if axis is not None else None,
        **{k: v for k, v in built.items() if k.startswith("relax_")},
    }
    return Scene(
        allpos,
        np.concatenate([numbers, lig_numbers]).astype(int),
        field_A,
        float(allpos[:, 2].max()) + Z_MARGIN_A,
        [obj],
        {"ligand_atoms": len(lig)},
    )


#: scene builder per family
BUILDERS: dict[str, Callable[[dict[str, Any], np.random.Generator], Scene]] = {
    "cnt": cnt_scene,
    "nanoalloy": particle_scene,
}


def add_support_film(scene: Scene, d: Mapping[str, Any], rng: np.random.Generator) -> int:
    """An amorphous carbon film of `support_A` under the object (the beam's exit side), the whole field: a slab
    of its own after the object's (the object's slab ends Z_MARGIN_A below its lowest atom; the film starts
    VDW_GAP_A - Z_MARGIN_A into its slab, so the gap between them is VDW_GAP_A)."""
    f, t = scene.field_A, d["support_A"]
    z0 = VDW_GAP_A - Z_MARGIN_A
    n_target = int(round(d["support_density"] * CARBON_PER_A3_PER_G_CM3 * f * f * t))
    box = (f, f, 1e9)
    scene.film = random_carbon(lambda k: rng.random((k, 3)) * [f, f, t] + [0.0, 0.0, z0], n_target, rng, boxsize=box)
    scene.film_depth_A = z0 + t + Z_MARGIN_A
    return len(scene.film)


# ---------------------------------------------------------------------------------------------- imaging


def exit_intensity(scene: Scene, d: Mapping[str, Any], p: Mapping[str, Any], seed: int) -> tuple[np.ndarray, float]:
    """abTEM: multislice through the scene and its CTF; the intensity on the simulation grid, indexed
    [x, y] (1 on vacuum), averaged over the frozen-phonon configurations; and the grid spacing (Å).

    A support film is a second slab the object's exit waves go on through: its potential is built once,
    static (an amorphous film's thermal motion changes nothing an image shows), for every configuration."""
    import abtem
    from ase import Atoms

    f = scene.field_A
    grid = fft_size(math.ceil(f / float(p["sampling_A"])))
    atoms = Atoms(numbers=scene.numbers, positions=scene.positions, cell=[f, f, scene.depth_A], pbc=True)
    device = str(p.get("device", "cpu"))
    settings = {
        "device": device,
        "diagnostics.progress_bar": False,
        "fftw.planning_effort": "FFTW_ESTIMATE",  # each field has its own grid: a measured plan is not reused
    }
    with abtem.config.set(settings):
        scatterer: Any = atoms
        if d["frozen_phonons"] > 0:
            scatterer = abtem.FrozenPhonons(
                atoms, num_configs=d["frozen_phonons"], sigmas=d["phonon_sigma_A"], seed=seed % 2**31
            )
        potential = abtem.Potential(
            scatterer,
            gpts=(grid, grid),
            slice_thickness=float(p["slice_thickness_A"]),
            parametrization=d["parametrization"],
            projection="infinite",
            device=device,
        )
        energy = 1e3 * float(p["energy_kV"])
        ctf = abtem.CTF(
            energy=energy,
            defocus=d["defocus_A"],
            Cs=d["cs_A"],
            astigmatism=d["c12_A"],
            astigmatism_angle=d["phi12_rad"],
            focal_spread=d["focal_spread_A"],
            angular_spread=d["convergence_mrad"],
        )
        waves = abtem.PlaneWave(energy=energy, device=device).multislice(potential)
        if scene.film is not None and len(scene.film):
            film = Atoms(numbers=np.full(len(scene.film), 6), positions=scene.film, cell=[f, f, scene.film_depth_A])
            film.pbc = True
            slab = abtem.Potential(
                film,
                gpts=(grid, grid),
                slice_thickness=float(p["slice_thickness_A"]),
                parametrization=d["parametrization"],
                projection="infinite",
                device=device,
            )
            waves = waves.multislice(slab.build().compute())
        image = waves.apply_ctf(ctf).intensity().compute().to_cpu()
    arr = np.asarray(image.array, dtype=np.float64)
    return arr.reshape(-1, grid, grid).mean(axis=0), f / grid


def drift_blur(image: np.ndarray, spacing: float, length_A: float, angle_deg: float) -> np.ndarray:
    """Uniform motion over `length_A` in direction angle (from +x towards +y) during the exposure: the
    image convolved with a centred line, i.e. multiplied in Fourier space by sinc(L k.u)."""
    kx = np.fft.fftfreq(image.shape[0], d=spacing)[:, None]
    ky = np.fft.fftfreq(image.shape[1], d=spacing)[None, :]
    a = math.radians(angle_deg)
    transfer = np.sinc(length_A * (kx * math.cos(a) + ky * math.sin(a)))
    return np.fft.ifft2(np.fft.fft2(image) * transfer).real


def integrate_pixels(image: np.ndarray, spacing: float, pixel: float, npx: int) -> np.ndarray:
    """The mean of a piecewise-constant image (sample i covers [i, i + 1) x spacing) over camera pixels
    [j, j + 1) x pixel, j < npx, along both axes: the area integral a real pixel makes."""
    out = image
    for axis in (0, 1):
        out = np.moveaxis(out, axis, 0)
        g = out.shape[0]
        cum = np.concatenate([np.zeros((1,) + out.shape[1:]), np.cumsum(out, axis=0)]) * spacing
        edges = np.arange(npx + 1) * pixel / spacing  # in samples
        i = np.clip(np.floor(edges).astype(int), 0, g - 1)
        frac = np.clip(edges - i, 0.0, None)[:, None]
        at = cum[i] + frac * spacing * out[i]  # the integral from 0 to each edge
        out = np.moveaxis((at[1:] - at[:-1]) / pixel, 0, axis)
    return out


def mtf(image: np.ndarray, c50: float) -> np.ndarray:
    """Detector MTF 1/(1 + (f/c50)^2), f the radial spatial frequency as a fraction of Nyquist."""
    fy = np.fft.fftfreq(image.shape[0])[:, None] / 0.5
    fx = np.fft.fftfreq(image.shape[1])[None, :] / 0.5
    return np.fft.ifft2(np.fft.fft2(image) / (1.0 + (fx**2 + fy**2) / c50**2)).real


def camera(intensity_xy: np.ndarray, spacing: float, d: Mapping[str, Any], rng: np.random.Generator) -> np.ndarray:
    """Intensity on the simulation grid [x, y] -> the recorded image [row = y, column = x] in counts."""
    pixel, npx = d["pixel_A"], d["npx"]
    img = integrate_pixels(intensity_xy, spacing, pixel, npx).T  # [y, x]
    if "gradient_percent" in d:
        y, x = (np.mgrid[0:npx, 0:npx] + 0.5) / npx
        a = math.radians(d["gradient_deg"])
        u = x * math.cos(a) + y * math.sin(a)
        img = img * (1.0 + 0.01 * d["gradient_percent"] * (u - u.mean()) / max(np.ptp(u), 1e-12))
    expected = np.clip(img * d["dose"] * pixel**2, 0.0, None)
    if d.get("mtf_on_noise"):
        counts = mtf(rng.poisson(expected).astype(np.float64), d["mtf_c50"])
    else:
        counts = rng.poisson(np.clip(mtf(expected, d["mtf_c50"]), 0.0, None)).astype(np.float64)
    if "gain_sigma" in d:
        counts = counts * rng.normal(1.0, d["gain_sigma"], size=counts.shape)
        counts = counts + d["dark_offset_counts"] + rng.normal(0.0, d["read_noise_counts"], size=counts.shape)
    return counts.astype(np.float32)


def write_tiff(path: Path, image: np.ndarray, pixel_A: float) -> None:
    """A float32 ImageJ TIFF with its resolution in pixels per nm and unit 'nm'."""
    import tifffile

    px_nm = pixel_A / 10.0
    tmp = path.with_name(path.name + ".part")
    tifffile.imwrite(
        tmp, np.asarray(image, np.float32), imagej=True, resolution=(1.0 / px_nm, 1.0 / px_nm), metadata={"unit": "nm"}
    )
    tmp.replace(path)


# ------------------------------------------------------------------------------------------ micrographs


def tube_fields(obj: Mapping[str, Any], d: Mapping[str, Any], half: float) -> dict[str, Any]:
    """A tube's label values: its end points in pixels of the written image, length and orientation."""
    (ax, ay), (bx, by) = [((x + half) / d["pixel_A"], (y + half) / d["pixel_A"]) for x, y in obj["ends_A"]]
    return {
        "chirality": obj.get("chirality", ""),
        "x0": round(ax, 2),
        "y0": round(ay, 2),
        "x1": round(bx, 2),
        "y1": round(by, 2),
        "tube_length_nm": round(obj.get("tube_length_nm", 0.0), 4),
        "tube_diameter_nm": round(obj.get("tube_diameter_nm", 0.0), 4),
        "angle_deg": round(d["angle_deg"], 3),
        "tilt_deg": round(d["tilt_deg"], 3),
    }


def particle_fields(obj: Mapping[str, Any], d: Mapping[str, Any], half: float) -> dict[str, Any]:
    """A particle's label values: its centre and projected radius in pixels of the written image, its
    ordering, shape, composition and orientation."""
    (x, y), pixel = obj["centre_A"], d["pixel_A"]
    axis = obj.get("janus_axis")
    return {
        "ordering": obj["ordering"],
        "motif": obj["motif"],
        "motif_params": obj["motif_params"],
        "n_atoms": obj["n_atoms"],
        "n_ag": obj["n_ag"],
        "n_co": obj["n_co"],
        "co_fraction": round(obj["n_co"] / obj["n_atoms"], 4),
        "cx": round((x + half) / pixel, 2),
        "cy": round((y + half) / pixel, 2),
        "radius_px": round(obj["radius_A"] / pixel, 2),
        "particle_radius_nm": round(obj["particle_radius_A"] / 10.0, 4),
        "orientation_quat": " ".join(f"{v:.6f}" for v in d["quaternion"]),
        "janus_axis": " ".join(f"{v:.6f}" for v in axis) if axis is not None else "",
        "relax_steps": obj.get("relax_steps", 0),
        "relax_rms_shift_A": obj.get("relax_rms_shift_A", 0.0),
        "relax_energy_drop_eV_per_atom": obj.get("relax_energy_drop_eV_per_atom", 0.0),
    }


#: an object's own label values per family
OBJECT_FIELDS: dict[str, Callable[[Mapping[str, Any], Mapping[str, Any], float], dict[str, Any]]] = {
    "cnt": tube_fields,
    "nanoalloy": particle_fields,
}


def micrograph_seed(seed: int, set_name: str, index: int) -> int:
    return int(np.random.SeedSequence([int(seed), zlib.crc32(set_name.encode()), int(index)]).generate_state(1)[0])


def set_micrograph_seed(p: Mapping[str, Any], seed: int, index: int) -> int:
    """The seed of a resolved set's micrograph `index`: its own name's, or with `draws_as` the paired set's."""
    return micrograph_seed(seed, p.get("draws_as") or p["set"], index)


def make_micrograph(p: Mapping[str, Any], index: int, out_dir: Path, seed: int) -> list[dict[str, Any]]:
    """One micrograph of the resolved set p: its TIFF and its label rows (one per object)."""
    t0 = time.perf_counter()
    s = set_micrograph_seed(p, seed, index)
    rng = np.random.default_rng(s)
    d = draw(p, rng)
    scene = BUILDERS[p.get("family", "cnt")](d, rng)
    support_atoms = add_support_film(scene, d, rng) if "support_A" in d else 0
    intensity, spacing = exit_intensity(scene, d, p, s)
    if "drift_A" in d:
        intensity = drift_blur(intensity, spacing, d["drift_A"], d["drift_deg"])
    image = camera(intensity, spacing, d, rng)
    name = f"mic_{index:04d}.tif"
    write_tiff(out_dir / name, image, d["pixel_A"])
    seconds = time.perf_counter() - t0
    half = 0.5 * spacing  # sample i of the simulation grid covers [i, i + 1) x spacing of the image
    common = {
        "file": name,
        "width_px": image.shape[1],
        "height_px": image.shape[0],
        "pixel_size_nm": d["pixel_A"] / 10.0,
        "field_nm": round(scene.field_A / 10.0, 4),
        "energy_kV": float(p["energy_kV"]),
        "defocus_nm": round(d["defocus_A"] / 10.0, 4),
        "cs_um": round(d["cs_A"] / 1e4, 4),
        "c12_nm": round(d["c12_A"] / 10.0, 4),
        "phi12_deg": round(math.degrees(d["phi12_rad"]), 3),
        "focal_spread_nm": round(d["focal_spread_A"] / 10.0, 4),
        "convergence_mrad": round(d["convergence_mrad"], 4),
        "mtf_c50": round(d["mtf_c50"], 4),
        "dose": round(d["dose"], 2),
        "outside": d["outside"],
        "parametrization": d["parametrization"],
        "frozen_phonons": d["frozen_phonons"],
        "adsorbate_clusters": scene.info.get("adsorbate_clusters", 0),
        "adsorbate_atoms": scene.info.get("adsorbate_atoms", 0),
        "ligand_nm": round(d.get("ligand_A", 0.0) / 10.0, 4),
        "ligand_atoms": scene.info.get("ligand_atoms", 0),
        "support_nm": round(d.get("support_A", 0.0) / 10.0, 4),
        "support_atoms": support_atoms,
        "drift_A": round(d.get("drift_A", 0.0), 4),
        "drift_deg": round(d.get("drift_deg", 0.0), 3),
        "gradient_percent": round(d.get("gradient_percent", 0.0), 3),
        "gradient_deg": round(d.get("gradient_deg", 0.0), 3),
        "gain_sigma": round(d.get("gain_sigma", 0.0), 5),
        "dark_offset_counts": round(d.get("dark_offset_counts", 0.0), 3),
        "read_noise_counts": round(d.get("read_noise_counts", 0.0), 3),
        "mtf_on_noise": int(bool(d.get("mtf_on_noise", False))),
        "atoms": len(scene.positions),
        "grid": intensity.shape[0],
        "seed": s,
        "seconds": round(seconds, 2),
        "declared_pixel_scale": 1.0,  # the file declares the pixel it was simulated at (a derived set changes it)
    }
    rows = []
    for obj in scene.objects:
        own = OBJECT_FIELDS[obj["family"]](obj, d, half)
        values = {**common, "family": obj["family"], "label": obj["label"], **own}
        rows.append({k: values[k] for k in COLUMNS[obj["family"]]})
    (out_dir / f"mic_{index:04d}.json").write_text(json.dumps(rows))
    return rows


def _one(args: tuple[Mapping[str, Any], int, str, int]) -> list[dict[str, Any]]:
    p, i, out, seed = args
    return make_micrograph(p, i, Path(out), seed)


def generate_set(
    p: Mapping[str, Any], n: int, out_dir: str | Path, *, seed: int = 29, jobs: int = 1, echo=print
) -> Path:
    """n micrographs of the resolved set p in out_dir, its labels.csv and set.json. A micrograph already
    there (its .tif and .json) is kept: an interrupted set resumes."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    todo = [i for i in range(n) if not ((out / f"mic_{i:04d}.tif").is_file() and (out / f"mic_{i:04d}.json").is_file())]
    t0 = time.perf_counter()
    if p.get("derived_from"):
        derive_micrographs(p, todo, out)
    elif jobs > 1 and len(todo) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(jobs) as pool:
            for k, _ in enumerate(pool.map(_one, [(p, i, str(out), seed) for i in todo]), start=1):
                echo(f"  {p['set']}: {k}/{len(todo)} micrographs ({time.perf_counter() - t0:.0f} s)")
    else:
        for k, i in enumerate(todo, start=1):
            rows = make_micrograph(p, i, out, seed)
            echo(f"  {p['set']}: {rows[0]['file']} {rows[0]['label']} in {rows[0]['seconds']:.1f} s ({k}/{len(todo)})")
    rows = [r for i in range(n) for r in json.loads((out / f"mic_{i:04d}.json").read_text())]
    with open(out / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(COLUMNS[p.get("family", "cnt")]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    (out / "set.json").write_text(json.dumps({"set": p["set"], "n": n, "seed": seed, "parameters": p}, indent=1))
    return out / "labels.csv"


def derive_micrographs(p: Mapping[str, Any], indices: Sequence[int], out: Path) -> None:
    """Another set's micrographs (`derived_from`, a sibling folder) written again with only their declared
    pixel size changed, by `declared_pixel_scale`: a magnification calibrated that far off, with the same
    pixels. The rows keep every drawn value; pixel_size_nm is what the file now declares."""
    import tifffile

    source = out.parent / str(p["derived_from"])
    scale = float(p["declared_pixel_scale"])
    if not scale > 0:
        raise SystemExit(f"set {p['set']}: declared_pixel_scale must be a positive factor, not {scale}")
    for i in indices:
        tif, rows_file = source / f"mic_{i:04d}.tif", source / f"mic_{i:04d}.json"
        if not (tif.is_file() and rows_file.is_file()):
            raise SystemExit(
                f"set {p['set']} re-declares the micrographs of {p['derived_from']}, which has no {tif.name}: "
                f"generate {p['derived_from']} with at least as many micrographs first (--sets {p['derived_from']})"
            )
        rows = json.loads(rows_file.read_text())
        pixel_A = 10.0 * float(rows[0]["pixel_size_nm"]) * scale
        write_tiff(out / tif.name, tifffile.imread(tif), pixel_A)
        for r in rows:
            r["pixel_size_nm"], r["declared_pixel_scale"] = pixel_A / 10.0, scale
        (out / rows_file.name).write_text(json.dumps(rows))


def read_labels(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
