"""One image shard from its spec: read the MD shard, make every view's images, write the store.

Per structure the shard makes K = `views_per_structure` views (`views`), one multislice exit wave
each, then M = `variants_per_view` optics/detector/noise variants per exit wave (`multislice`,
`optics`). Failed MD samples are skipped and counted; the store is written atomically by
`hrtemflow.store.writer` with the layout of `hrtemflow.store.layout`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..core.atomic import canonical_json
from ..core.errors import HrtemflowError
from ..core.families import FAMILIES, FILM_FAMILIES
from ..core.ids import image_id
from ..core.runtime import versions
from ..store.codec import STORAGES
from ..store.layout import GAIN_PARAMS
from ..store.writer import empty_params, labels_to_arrays, shard_writer
from .multislice import abtem_settings, exit_waves, require_device, view_images
from .views import make_view, view_rng

SCHEMA_VERSION = 1

CONVENTIONS = {
    "defocus": "abTEM defocus = -C10 (Å); positive = underfocus",
    "astigmatism": "C12 (Å) with angle phi12 of period pi; learn (C12 cos 2phi12, C12 sin 2phi12)",
    "aberration_phase": "chi = 2pi/lambda [a^2/2 (C10 + C12 cos2(phi-phi12)) + a^3/3 (C21 cos(phi-phi21) + C23 "
    "cos3(phi-phi23)) + a^4/4 C30], a = lambda k; phi21 period 2pi, phi23 period 2pi/3",
    "focal_spread": "abTEM focal_spread: 1/e width (= sqrt(2) sigma), E_t = exp(-(pi lambda D k^2 / 2)^2) on the wave; "
    "with optics.temporal_coherence defocus_average, images averaged over defocus ~ N(defocus, "
    "sigma^2) instead (every electron kept)",
    "convergence": "abTEM angular_spread (mrad), E_s = exp(-(theta/2)^2 |grad_a chi|^2), quasi-coherent",
    "support_film": "physics support_film: true = every view on an amorphous film from the support shards, 2 A "
    "after the object along the beam; a share in (0, 1) = each view on a film with that probability, stored per image "
    "as params support_film (1 on a film, 0 not)",
    "recorded_pixel_scale": "params recorded_pixel_scale (only with detector.recorded_pixel_scale): the image detected "
    "(MTF, shot noise) on a grid of round(size / scale) pixels over the same field, then Fourier-resampled (periodic "
    "crop or zero-pad, mean kept) to size; counts per pixel are those of the recorded pixel",
    "phase_plate": "params phase_plate_rad (only with optics.phase_plate_deg): the wave below |k| = 1/(15 nm) times "
    "exp(i phase), after exp(-i chi); +pi/2 images a weak phase object as 1 + 2 sigma V at focus",
    "intensity": "electron counts per pixel; on vacuum mean = dose x pixel area; image is Poisson at that dose before "
    "gain",
    "gain": "y = brightness (mu + contrast (x - mu) + background mu), mu = mean expected counts; clean has no gain",
    "mtf": "MTF = 1/(1+(f/c50)^2), f = fraction of the output pixel's Nyquist frequency; applied before shot noise",
    "clean": "same view, no aberrations, envelopes, aperture, MTF, noise or gain; counts at the image's dose",
    "axes": "arrays indexed [x, y] as abTEM (first axis x); azimuths from +x towards +y",
    "euler": "euler_rad (e0,e1,e2): R = Rz(e0) Ry(e1) Rz(e2) about the centroid (scipy intrinsic ZYZ), beam along +z",
    "pixel_size": "pixel_size_A = fov_A / size",
    "units": "Å, eV, e-/Å^2, rad (convergence in mrad)",
}


_SPEC_KEYS = ("kind", "spec_version", "family", "group", "shard", "md", "imaging")
_IMAGING_KEYS = (
    "device",
    "views_per_structure",
    "variants_per_view",
    "sizes",
    "physics",
    "optics",
    "detector",
    "noise",
)


def check_spec(spec: Mapping, base: Path = Path(".")) -> None:
    """Raise HrtemflowError listing every problem of an imaging spec and its input files."""
    problems = []
    if not isinstance(spec, Mapping):
        raise HrtemflowError("the imaging spec must be a JSON object (written by `hrtemflow plan`)")
    for key in _SPEC_KEYS:
        if key not in spec:
            problems.append(f"missing key {key!r}")
    if problems:
        raise HrtemflowError(
            "imaging spec is invalid: " + "; ".join(problems) + " (regenerate it with `hrtemflow plan`)"
        )
    if spec["kind"] != "images":
        problems.append(f"kind is {spec['kind']!r}, expected 'images' (is this an MD spec?)")
    if spec["spec_version"] != SCHEMA_VERSION:
        problems.append(
            f"spec_version {spec['spec_version']} is not {SCHEMA_VERSION}; regenerate the plan with this hrtemflow"
        )
    if spec["family"] not in FAMILIES:
        problems.append(f"family {spec['family']!r} is not one of {', '.join(FAMILIES)}")
    img = spec["imaging"]
    for key in _IMAGING_KEYS:
        if key not in img:
            problems.append(f"imaging.{key} is missing")
    if not problems:
        if img.get("storage", "float32") not in STORAGES:
            problems.append(f"imaging.storage {img['storage']!r} is not one of {', '.join(STORAGES)}")
        if img["device"] not in ("cpu", "gpu"):
            problems.append(f"imaging.device {img['device']!r} is not 'cpu' or 'gpu'")
        sizes = img["sizes"]
        if not sizes or any((not isinstance(s, int)) or s < 2 for s in sizes):
            problems.append(f"imaging.sizes {sizes} must be pixel counts >= 2")
        phys = img["physics"]
        for key in (
            "energy_kV",
            "sampling_A",
            "slice_thickness_A",
            "parametrization",
            "fov_nm",
            "shift_fraction",
            "tilt_deg",
        ):
            if key not in phys:
                problems.append(f"imaging.physics.{key} is missing")
        if "sampling_A" in phys and "fov_nm" in phys and sizes:
            # the image (band limit 2 x 1/(3 sampling)) must fill the output band (Nyquist size/(2 fov))
            fov_min = 10.0 * float(phys["fov_nm"][0])
            if fov_min / float(phys["sampling_A"]) < 0.75 * max(sizes):
                problems.append(
                    f"imaging.physics.sampling_A {phys['sampling_A']} Å is too coarse for {max(sizes)} px over "
                    f"{fov_min:g} Å: "
                    "the multislice grid needs at least 3/4 of the output pixels (sampling <= "
                    f"{fov_min / (0.75 * max(sizes)):.3f} Å)"
                )
    md = spec["md"]
    for key in ("structures", "manifest"):
        if not isinstance(md, Mapping) or key not in md:
            problems.append(f"md.{key} is missing")
    if not problems:
        manifest = base / md["manifest"]
        if not manifest.is_file():
            problems.append(f"MD manifest {md['manifest']} does not exist; run the MD stage first (`hrtemflow md`)")
        else:
            try:
                records = json.loads(manifest.read_text(encoding="utf-8"))["samples"]
                if any(r["status"] == "ok" for r in records) and not (base / md["structures"]).is_file():
                    problems.append(f"MD structures {md['structures']} do not exist but the manifest lists ok samples")
            except (ValueError, KeyError, TypeError) as exc:
                problems.append(f"MD manifest {md['manifest']} is not a valid md-manifest ({exc})")
        support = spec.get("support")
        if support:
            for path in support.get("structures", []):
                if not (base / path).is_file():
                    problems.append(f"support film structures {path} do not exist; run the amorphous MD shards first")
    if problems:
        raise HrtemflowError(
            "imaging spec " + str(spec.get("shard", "?")) + " cannot run:\n  - " + "\n  - ".join(problems)
        )
    require_device(img["device"])


def read_frames(path: Path) -> list:
    """All frames of an extxyz file ([] for an empty file: a shard whose samples all failed)."""
    import ase.io  # noqa: PLC0415

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return []
    return list(ase.io.read(path, index=":", format="extxyz"))


def read_md(spec: Mapping, base: Path = Path(".")) -> tuple[list[dict], list, int]:
    """(ok manifest records, their structures in the same order, number of failed samples)."""
    manifest = json.loads((base / spec["md"]["manifest"]).read_text(encoding="utf-8"))
    records = manifest["samples"]
    ok = [r for r in records if r.get("status") == "ok"]
    failed = len(records) - len(ok)
    frames = {f.info.get("sample_id"): f for f in read_frames(base / spec["md"]["structures"])} if ok else {}
    missing = [r["id"] for r in ok if r["id"] not in frames]
    if missing:
        raise HrtemflowError(
            f"{spec['md']['structures']}: no structure for ok sample(s) {', '.join(missing[:5])}; the MD shard is "
            "inconsistent, rerun it"
        )
    return ok, [frames[r["id"]] for r in ok], failed


def read_films(spec: Mapping, base: Path = Path(".")) -> list:
    """Support films (amorphous structures) for a nanoalloy or CNT shard, or []."""
    support = spec.get("support")
    if spec["family"] not in FILM_FAMILIES or not support or not spec["imaging"]["physics"].get("support_film", False):
        return []
    films = [f for path in support.get("structures", []) for f in read_frames(base / path)]
    if not films:
        raise HrtemflowError(
            "support_film is on but the amorphous shards hold no ok structure; rerun them or set "
            f"imaging.families.{spec['family']}.support_film: false"
        )
    return films


def spec_sha256(spec: Mapping) -> str:
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# the shard


def run_shard(spec: dict, out: Path, threads: int = 1, progress: bool = True, base: Path = Path(".")) -> dict:
    """Make one image shard from an imaging spec: read the MD shard, skip failed samples, write the
    Zarr store atomically (`hrtemflow.store.writer`). Returns counts and the wall time."""
    from tqdm import tqdm  # noqa: PLC0415

    t0 = time.perf_counter()
    check_spec(spec, base)
    img = spec["imaging"]
    family = spec["family"]
    records, structures, n_failed = read_md(spec, base)
    films = read_films(spec, base)
    n_views, n_variants, sizes = int(img["views_per_structure"]), int(img["variants_per_view"]), sorted(img["sizes"])
    per_sample = n_views * n_variants
    n = len(records) * per_sample
    attrs = {
        "schema_version": SCHEMA_VERSION,
        "kind": "images",
        "family": family,
        "group": spec["group"],
        "shard": spec["shard"],
        "spec_sha256": spec_sha256(spec),
        "versions": versions(),
        "sizes": sizes,
        "n_samples": len(records),
        "n_failed_skipped": n_failed,
        "n_images": n,
        "views_per_structure": n_views,
        "variants_per_view": n_variants,
        "device": img["device"],
        "imaging": copy.deepcopy(dict(img)),
        "conventions": CONVENTIONS,
    }
    sample_ids = np.repeat(np.array([r["id"] for r in records], dtype=str), per_sample)
    image_ids = np.array(
        [image_id(r["id"], v, o) for r in records for v in range(n_views) for o in range(n_variants)], dtype=str
    )
    params: dict[str, list] = {}
    storage = str(img.get("storage", "float32"))  # in a spec only when compact: older specs mean float32
    writer_ = shard_writer(Path(out), n, sizes, rows_per_block=per_sample, attrs=attrs, storage=storage)
    with writer_ as writer, abtem_settings(threads):
        bar = tqdm(
            list(zip(records, structures, strict=True)), desc=spec["shard"], unit="structure", disable=not progress
        )
        for i, (record, atoms) in enumerate(bar):
            block: dict[int, dict[str, list]] = {
                s: {"image": [], "noise_free": [], "clean": [], "pixel_size_A": [], "gain": []} for s in sizes
            }
            for v in range(n_views):
                view = make_view(atoms, family, img["physics"], view_rng(record["seed"], v), films)
                wave = exit_waves(view, img["physics"], img["device"])
                for item in view_images(wave, view, img, record["seed"], v):
                    for name, value in item["params"].items():
                        params.setdefault(name, []).append(value)
                    gain = tuple(float(item["params"][k]) for k in GAIN_PARAMS)
                    for s in sizes:
                        for name, value in item["images"][s].items():
                            block[s][name].append(value)
                        block[s]["gain"].append(gain)
            writer.write_block(i * per_sample, {s: {k: np.asarray(v) for k, v in d.items()} for s, d in block.items()})
        writer.write_index(
            sample_ids,
            image_ids,
            {k: np.asarray(v, dtype=np.float64) for k, v in params.items()} if n else empty_params(),
            labels_to_arrays([r.get("labels", {}) for r in records], per_sample),
        )
    return {
        "shard": spec["shard"],
        "n_samples": len(records),
        "n_failed_skipped": n_failed,
        "n_images": n,
        "wall_s": round(time.perf_counter() - t0, 3),
    }
