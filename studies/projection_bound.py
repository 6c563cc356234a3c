"""Where the nanoalloy bench loses the ordering class and the Co fraction: a ladder of inputs.

    python studies/projection_bound.py                  # after the nanoalloy bench (config/bench-nanoalloy.yaml)
    python studies/projection_bound.py --epochs 6 --extra-views 4 --rungs potential image   # quicker
    python studies/projection_bound.py --results results-bench-nanoalloy-ncsi --rungs noise_free image --bin 2
        # a 128 px bench (0.3125 Å) read at 0.625 Å pixels: how much of an image rung the shot noise takes

The nanoalloy bench's networks miss two targets of issue 5: ordering 0.76 per image (target 0.95) and
Co fraction MAE 0.088 (target 0.05). Is it the projection itself, which no microscope gets past, or
the imaging (support film, aberrations, shot noise), or the network and its training? This trains
one network and schedule (the bench's architecture) on each rung of a ladder of inputs, on the
bench's own train/val/test split:

- `species` (ordering only): the Ag and Co projected potentials in two channels, which no
  microscope separates: a bound beyond any image;
- `potential`: the particle's projected potential (abTEM's Lobato parametrisation) at the bench's
  pixel size, with no support film, aberrations, envelopes or noise: what a perfect phase-contrast
  microscope records;
- `potential_views`: the same input, trained only on the 4 orientations per particle that the image
  rungs have (each view 8 times, as its 8 optics variants): separates orientation diversity from optics;
- `phase_object`: each bench image remade from the particle alone, as the phase object exp(iσV) of
  its projected potential, through that image's own optics and detector (the bench's code and
  parameters), without noise: no support film and no propagation within the particle;
- `no_film`: the bench's own imaging code and seeds (the same views, multislice, optics, detector)
  run again without the support film, without noise;
- `noise_free`: the bench's own images without shot noise (film, optics, MTF and gain);
- `image`: the bench's own images, as the bench's networks see them;
- `image_views`: the same test images, the network trained on the train particles imaged again by
  the bench's code with 16 views x 2 optics variants each (the bench: 4 x 8; the same image count);
- `noise_free_ctf`, `image_ctf`: those images with two more channels that undo each image's
  contrast transfer from its true optics (phase flip by the sign of the weak-phase transfer, and a
  Wiener estimate of the projected potential): what knowing the optics could give;
- `image_ctf_est`: the same with defocus, C12 and φ12 as the bench's aberration regressor
  estimates them from each image (the rest of the optics from the metadata): what an experiment
  could give.

On the projection rungs, training sees each train particle in its bench views and in
`--extra-views` random orientations more (the shards hold 4 orientations per particle), and each
test view is weighted by its 8 optics variants, like the bench's per-image figures. The image rungs
use the bench's images as they are. What one rung reaches and the next does not is what that step
of the imaging loses for this network.

Each rung takes 10-21 min on 2 cores (all eleven about 2.5 h). Its figures go to
`<results>/benchmarks/projection_bound/ladder.json` as soon as it is done, and the table printed at
the end holds every rung stored there with the same settings, so rungs can be run (or rerun) in
separate calls.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from pathlib import Path

import keras
import numpy as np
from keras import layers

from common import ROOT, bin_pixels, campaign_base, emit, header, image_optics
from hrtemflow.core.ids import views_of
from hrtemflow.imaging.optics import weak_phase_transfer
from hrtemflow.learn.evaluate import by_condition, shard_param, structure_ci
from hrtemflow.learn.feed import ShardFeed, dihedral
from hrtemflow.learn.preprocess import d4, normalise
from hrtemflow.learn.table import load_table, split_table
from hrtemflow.store import layout
from hrtemflow.store.reader import images_of, read_arrays, read_rows, strings

OVERSAMPLE = 4  # the projection is made on a 4x finer grid and averaged over each pixel
KERNEL_RADIUS_A = 4.0


def _structures(res: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """sample id -> (positions, atomic numbers) of every nanoalloy MD frame."""
    from ase.io import iread

    out = {}
    for path in sorted((res / "md").glob("nanoalloy-*/*.extxyz")):
        for atoms in iread(str(path), index=":"):
            out[str(atoms.info["sample_id"])] = (atoms.get_positions(), atoms.get_atomic_numbers())
    return out


def _views(table, size: int) -> dict[str, np.ndarray]:
    """One row per distinct view (the optics variants of a view share its orientation and position),
    with its image count, so per-view figures weigh like the bench's per-image ones."""
    import zarr

    sid, euler, shift, fov, y, weight = [], [], [], [], [], []
    for k, path in enumerate(table.paths):
        m = np.flatnonzero(table.shard == k)
        if not len(m):
            continue
        g = zarr.open_group(path, mode="r")
        view_id = views_of(strings(g["image_id"])[table.row[m]])
        _, first, counts = np.unique(view_id, return_index=True, return_counts=True)
        rows = table.row[m][first]
        sid.append(table.sample_id[m][first])
        euler.append(np.asarray(g["params/euler_rad"][:])[rows])
        shift.append(np.asarray(g["params/shift_A"][:])[rows])
        fov.append(np.asarray(g["params/fov_A"][:])[rows])
        y.append(table.y[m][first])
        weight.append(counts)
    return {
        "sample_id": np.concatenate(sid),
        "euler": np.concatenate(euler),
        "shift": np.concatenate(shift),
        "fov": np.concatenate(fov),
        "y": np.concatenate(y),
        "weight": np.concatenate(weight),
    }


def _kernel(symbol: str, pixel_A: float) -> np.ndarray:
    """The species' projected potential on the fine grid (each fine pixel averaged over 4x4 points, so
    the logarithmic core integrates properly), centred, cut at KERNEL_RADIUS_A."""
    from abtem.parametrizations import LobatoParametrization

    v = LobatoParametrization().projected_potential(symbol)
    half = int(math.ceil(KERNEL_RADIUS_A / pixel_A))
    sub = (np.arange(4) + 0.5) / 4 - 0.5
    c = (np.arange(-half, half + 1)[:, None] + sub[None, :]).ravel() * pixel_A
    r = np.hypot(c[:, None], c[None, :])
    k = v(np.maximum(r, 1e-3).ravel()).reshape(2 * half + 1, 4, 2 * half + 1, 4).mean(axis=(1, 3))
    k[np.hypot(*np.meshgrid(np.arange(-half, half + 1), np.arange(-half, half + 1))) * pixel_A > KERNEL_RADIUS_A] = 0.0
    return k


def _project(
    positions: np.ndarray, numbers: np.ndarray, euler, shift, fov: float, fine: int, kernels: dict[int, np.ndarray]
) -> np.ndarray:
    """(fine, fine, n_species) projected potential per species on a periodic fine grid, the particle
    placed as the imaging stage places it: rotated about its centroid, centroid at fov/2 + shift,
    beam along z, arrays [x, y]."""
    from hrtemflow.imaging.views import rotation_matrix

    pos = (positions - positions.mean(axis=0)) @ rotation_matrix(euler).T
    xy = pos[:, :2] + fov / 2.0 + np.asarray(shift)  # outside the fov: dropped, as the imaging stage cuts
    out = np.zeros((fine, fine, len(kernels)))
    for c, (z, kern) in enumerate(kernels.items()):
        sel = numbers == z
        hist, _, _ = np.histogram2d(xy[sel, 0], xy[sel, 1], bins=fine, range=[[0, fov], [0, fov]])
        pad = np.zeros((fine, fine))
        h = kern.shape[0] // 2
        pad[: h + 1, : h + 1] = kern[h:, h:]
        pad[: h + 1, -h:] = kern[h:, :h]
        pad[-h:, : h + 1] = kern[:h, h:]
        pad[-h:, -h:] = kern[:h, :h]
        out[..., c] = np.fft.irfft2(np.fft.rfft2(hist) * np.fft.rfft2(pad), s=hist.shape)
    return out


def _render(
    positions: np.ndarray, numbers: np.ndarray, euler, shift, fov: float, size: int, kernels: dict[int, np.ndarray]
) -> np.ndarray:
    """(size, size, n_species) projected potential per species, each pixel the mean over its area."""
    proj = _project(positions, numbers, euler, shift, fov, size * OVERSAMPLE, kernels)
    return proj.reshape(size, OVERSAMPLE, size, OVERSAMPLE, -1).mean(axis=(1, 3)).astype(np.float32)


def _phase_object_images(table, size: int, structures: dict) -> dict[str, np.ndarray]:
    """Each image of a split remade from its particle alone as a phase object, exp(iσV) of the
    projected potential at the bench's exit-wave sampling (no film, no propagation within the
    particle), through that image's own optics and detector (hrtemflow.optics.variant_images,
    the bench's code and parameters), without shot noise."""
    import zarr
    from abtem.core.energy import energy2sigma
    from tqdm import tqdm

    from hrtemflow.imaging import optics

    x, euler, order = [], [], []
    kernels: dict[float, dict] = {}
    for k, path in enumerate(table.paths):
        m = np.flatnonzero(table.shard == k)
        if not len(m):
            continue
        g = zarr.open_group(path, mode="r")
        imaging = g.attrs["imaging"]
        sampling, aperture = (
            float(imaging["physics"]["sampling_A"]),
            float(imaging["optics"].get("objective_aperture_mrad", 0.0) or 0.0),
        )
        rows = table.row[m]
        params = {name: v[rows] for name, v in read_arrays(g, layout.PARAMS).items()}
        view_id = views_of(strings(g["image_id"])[rows])
        imgs = np.empty((len(rows), size, size), np.float32)
        for v in tqdm(np.unique(view_id), desc=f"phase objects {Path(path).stem}", unit="view", leave=False):
            members = np.flatnonzero(view_id == v)
            i0 = members[0]
            fov = float(params["fov_A"][i0])
            n = optics.nice_size(fov / sampling)
            if fov / n not in kernels:
                kernels[fov / n] = {47: _kernel("Ag", fov / n), 27: _kernel("Co", fov / n)}
            pot = _project(
                *structures[table.sample_id[m][i0]],
                params["euler_rad"][i0],
                params["shift_A"][i0],
                fov,
                n,
                kernels[fov / n],
            )
            energy = float(params["energy_eV"][i0])
            wave_fft = np.fft.fft2(np.exp(1j * energy2sigma(energy) * pot.sum(axis=-1))).astype(np.complex64)
            for i in members:
                imgs[i] = optics.variant_images(
                    wave_fft,
                    fov,
                    energy,
                    sampling,
                    [size],
                    {name: float(v[i]) for name, v in params.items() if v.ndim == 1},
                    np.random.default_rng(0),
                    aperture,
                )[size][1]
        x.append(imgs)
        euler.append(params["euler_rad"])
        order.append(m)
    order = np.concatenate(order)
    return {
        "x": normalise(np.concatenate(x))[..., None],
        "euler": np.concatenate(euler),
        "sample_id": table.sample_id[order],
        "y": table.y[order],
        "weight": np.ones(len(order), int),
        "order": order,
    }


def _render_all(views: dict, structures: dict, size: int, kernels: dict, label: str) -> np.ndarray:
    from tqdm import tqdm

    return np.stack(
        [
            _render(*structures[s], e, sh, f, size, kernels)
            for s, e, sh, f in tqdm(
                list(zip(views["sample_id"], views["euler"], views["shift"], views["fov"])),
                desc=f"projecting {label}",
                unit="view",
                leave=False,
            )
        ]
    )


def _with_extra_views(views: dict, n_extra: int, shift_fraction: float, rng: np.random.Generator) -> dict:
    """The train views plus n_extra random orientations and positions of each train particle."""
    from scipy.spatial.transform import Rotation

    sids, idx = np.unique(views["sample_id"], return_index=True)
    n = len(sids) * n_extra
    rep = np.repeat(idx, n_extra)
    fov = views["fov"][rep]
    extra = {
        "sample_id": views["sample_id"][rep],
        "y": views["y"][rep],
        "fov": fov,
        "weight": np.ones(n, int),
        "euler": Rotation.random(n, random_state=rng).as_euler("ZYZ"),
        "shift": rng.uniform(-shift_fraction, shift_fraction, size=(n, 2)) * fov[:, None],
    }
    return {k: np.concatenate([views[k], extra[k]]) for k in views}


def _normalise(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per (H, W, C) map over all its channels together, so the species
    channels keep their relative scale (`normalise` would standardise each channel alone)."""
    mu = x.mean(axis=(1, 2, 3), keepdims=True)
    sd = x.std(axis=(1, 2, 3), keepdims=True) + 1e-6
    return ((x - mu) / sd).astype(np.float32)


class _Feed(keras.utils.PyDataset):
    """Shuffled batches of in-memory arrays with the bench's label-preserving dihedral augmentation."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch: int, rng: np.random.Generator):
        super().__init__()
        self.x, self.y, self.batch, self.rng = x, y, batch, rng
        self.order = rng.permutation(len(x))

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch)

    def __getitem__(self, i: int):
        idx = np.sort(self.order[i * self.batch : (i + 1) * self.batch])
        xb, _ = dihedral(self.x[idx], self.rng)
        return xb, self.y[idx]

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.x))


def _model(kind: str, channels: int, size: int, n_out: int, width: int, depth: int):
    """The bench's classifier or regressor (hrtemflow.learn.models), on `channels` input channels."""
    from hrtemflow.learn.models import trunk

    inputs = keras.Input((size, size, channels), name="projection")
    x = trunk(inputs, width, depth)
    if kind == "classification":
        x = layers.Dropout(0.2)(x)
        return keras.Model(inputs, layers.Activation("softmax")(layers.Dense(n_out)(x)))
    x = layers.Dense(4 * width, activation="relu")(x)
    return keras.Model(inputs, layers.Dense(n_out)(x))


def _fit(kind: str, x: dict, y: dict, args, seed: int, tag: str):
    """Train on x['train'], keep the best on x['val']; returns the model's test outputs (TTA: 8 dihedral)."""
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    n_out = int(y["train"].max()) + 1 if kind == "classification" else 1
    model = _model(kind, x["train"].shape[-1], x["train"].shape[1], n_out, args.width, args.depth)
    steps = args.epochs * math.ceil(len(x["train"]) / args.batch_size)
    opt = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(args.learning_rate, steps))
    if kind == "classification":
        model.compile(opt, "sparse_categorical_crossentropy", metrics=["accuracy"], jit_compile=False)
        monitor = "val_accuracy"
    else:
        model.compile(opt, "mse", metrics=["mae"], jit_compile=False)
        monitor = "val_loss"
    best = keras.callbacks.ModelCheckpoint(
        str(args.out / f"best-{tag}-{kind}.weights.h5"), monitor=monitor, save_best_only=True, save_weights_only=True
    )
    hist = model.fit(
        _Feed(x["train"], y["train"], args.batch_size, rng),
        validation_data=(x["val"], y["val"]),
        epochs=args.epochs,
        callbacks=[best],
        verbose=2,
    )
    model.load_weights(best.filepath)
    outs = [model.predict(d4(x["test"], k, f), batch_size=256, verbose=0) for k in range(4) for f in (False, True)]
    return np.mean(outs, axis=0), {k: [float(v) for v in vals] for k, vals in hist.history.items()}


def _janus_axis_angle(positions: np.ndarray, numbers: np.ndarray, euler) -> float:
    """Angle (deg, 0-90) between the beam and the particle's Co-Ag axis in this view."""
    from hrtemflow.imaging.views import rotation_matrix

    axis = positions[numbers == 27].mean(axis=0) - positions[numbers == 47].mean(axis=0)
    axis = rotation_matrix(euler) @ axis
    return float(np.degrees(np.arccos(min(1.0, abs(axis[2]) / (np.linalg.norm(axis) + 1e-12)))))


RUNGS = {
    "species": "Ag and Co projected potentials, two channels (no microscope separates them)",
    "potential": "projected potential: no film, aberrations or noise",
    "potential_views": "the same, trained on the bench's 4 views per particle only (each 8 times, as its 8 optics "
    "variants)",
    "phase_object": "the particle alone as a phase object through each image's optics and detector, no noise",
    "no_film": "the bench's imaging (multislice, optics, detector) of the particle without its film, no noise",
    "noise_free": "bench images without shot noise (film, optics, MTF)",
    "image": "bench images (as the bench networks see them)",
    "image_views": "bench images, trained on 16 views x 2 optics variants per particle (the bench: 4 x 8)",
    "noise_free_ctf": "bench images without shot noise, with two more channels undoing each image's own contrast "
    "transfer (phase flip, Wiener)",
    "image_ctf": "bench images, with two more channels undoing each image's own contrast transfer (phase flip, Wiener)",
    "image_ctf_est": "the same, with defocus and C12 as the bench's aberration regressor estimates them from the image "
    "(Cs, "
    "coherence and MTF as the instrument knows them)",
}

#: Wiener regularisation of the CTF channels, relative to the transfer's peak of 2 (chosen on 64 test
#: images: it correlates best with the projected potential under the bench's noise)
WIENER_EPS = 0.1


def _images(table, size: int, key: str, bin_by: int = 1) -> dict[str, np.ndarray]:
    """Every image of a split as the bench stores it (key: image or noise_free), with its view's orientation;
    `bin_by` > 1 sums bin_by x bin_by pixels (the counts of a detector with pixels that much larger)."""
    import zarr

    x, euler, order = [], [], []
    for k, path in enumerate(table.paths):
        m = np.flatnonzero(table.shard == k)
        if not len(m):
            continue
        g = zarr.open_group(path, mode="r")
        rows = read_rows(images_of(g, layout.image_key(size, key)), table.row[m])  # float32, any storage
        x.append(bin_pixels(rows, bin_by))
        euler.append(np.asarray(g["params/euler_rad"][:])[table.row[m]])
        order.append(m)
    order = np.concatenate(order)
    return {
        "x": normalise(np.concatenate(x))[..., None],
        "euler": np.concatenate(euler),
        "sample_id": table.sample_id[order],
        "y": table.y[order],
        "weight": np.ones(len(order), int),
        "order": order,
    }


def _aberration_estimates(res: Path, table, size: int) -> np.ndarray:
    """Defocus, C12 and φ12 of every image of `table` as the bench's aberration regressor predicts
    them (`hrtemflow predict`'s pass: 8-fold test-time augmentation), (N, 3) in Å, Å, rad."""
    from hrtemflow.learn.bundle import load_checked
    from hrtemflow.learn.inference import feed_outputs, make_net

    model, card = load_checked(res / "models" / "aberrations")
    offset, scale = card.scaling()
    net = make_net(model, card.kind, card.task, card.normalisation)
    y = offset + scale * feed_outputs(net, ShardFeed(table, size, batch_size=256)).mean(axis=1)
    return np.stack([y[:, 0], np.maximum(y[:, 3], 0.0), 0.5 * np.arctan2(y[:, 2], y[:, 1])], axis=1)


def _with_ctf_channels(sets: dict, splits: dict, estimated: dict | None = None) -> None:
    """Add to each split's images the phase-flipped image (sign of H: unitary, so the noise stays
    white) and the Wiener estimate of the projected potential, from the image's own optics, or with
    defocus, C12 and φ12 taken from `estimated` (split -> (N, 3), table order): what an aberration
    estimate could give a network. Both are linear, so they are taken of the standardised image the
    network sees."""
    for name, table in splits.items():
        params = image_optics(table)
        if estimated is not None:
            for p, est in zip(params, estimated[name]):
                p.update(zip(("defocus_A", "c12_A", "phi12_rad"), map(float, est)))
        x = sets[name]["x"][..., 0]
        flip, wiener = np.empty_like(x), np.empty_like(x)
        for j, i in enumerate(sets[name]["order"]):
            h = weak_phase_transfer(params[i], x.shape[1], params[i]["fov_A"])
            f = np.fft.fft2(x[j])
            flip[j] = np.fft.ifft2(f * np.sign(h)).real
            wiener[j] = np.fft.ifft2(f * h / (h * h + WIENER_EPS)).real
        sets[name]["x"] = np.concatenate(
            [sets[name]["x"], np.stack([normalise(flip), normalise(wiener)], axis=-1)], axis=-1
        )


def _reimaged_shards(table, out: Path, change) -> tuple[str, ...]:
    """The split's image shards made again by the imaging stage's own code (`imaging.run_shard`,
    same spec and seeds, so the same views and variants where they overlap), with `change(spec)`
    applied to the spec; made once, kept under `out`."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    paths = []
    todo = []
    for path in table.paths:
        p = Path(path)
        spec_path = p.parents[2] / "plan" / "images" / p.parent.name / f"{p.stem}.json"
        target = out / p.parent.name / p.name
        paths.append(str(target))
        if not target.is_dir():
            spec = json.loads(spec_path.read_text())
            change(spec)
            todo.append(
                (spec, target, p.parents[3])
            )  # the campaign's working directory: the spec's paths are relative to it
    if todo:
        # spawn, not fork: this process already runs TensorFlow's thread pools
        with ProcessPoolExecutor(
            max_workers=os.cpu_count() or 1, mp_context=multiprocessing.get_context("spawn")
        ) as pool:
            for done in pool.map(_run_shard, todo):
                print(f"  imaged again ({out.name}): {done['shard']} ({done['wall_s']:.0f} s)", flush=True)
    return tuple(paths)


def _no_film(spec: dict) -> None:
    spec["support"] = None


def _more_views(spec: dict) -> None:
    """4x the views, 1/4 the optics variants: the same 32 images per particle, 16 orientations."""
    img = spec["imaging"]
    img["views_per_structure"] = 4 * int(img["views_per_structure"])
    img["variants_per_view"] = max(1, int(img["variants_per_view"]) // 4)


def _run_shard(job: tuple[dict, Path, Path]) -> dict:
    from hrtemflow.imaging.shard import run_shard

    spec, target, base = job
    target.parent.mkdir(parents=True, exist_ok=True)
    return run_shard(spec, target, threads=1, progress=False, base=base)


def _projections(views: dict, species: np.ndarray, rung: str) -> dict[str, np.ndarray]:
    x = _normalise(species) if rung == "species" else normalise(species.sum(axis=-1))[..., None]
    return {"x": x, **{k: views[k] for k in ("euler", "sample_id", "y", "weight")}}


def _row(rung: str, out: dict) -> str:
    """One markdown row of the ladder table from a rung's stored figures."""
    o = out["ordering"]
    co = out.get("co_fraction")
    cells = [
        f"{rung}: {RUNGS[rung]}",
        f"{o['accuracy']:.3f} [{o['ci95'][0]:.3f}–{o['ci95'][1]:.3f}]",
        ", ".join(f"{r:.2f}" for r in o["recall"].values()),
        ", ".join(f"{v:.2f}" for v in o["janus_accuracy_by_axis_angle_deg"].values()),
        f"{co['mae']:.3f} [{co['ci95'][0]:.3f}–{co['ci95'][1]:.3f}]" if co else "—",
        " / ".join(", ".join(f"{b['accuracy']:.2f}" for b in o["by_condition"][c]["bins"]) for c in ("defocus", "dose"))
        if "by_condition" in o
        else "—",
    ]
    return f"| {' | '.join(cells)} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--results", type=Path, default=ROOT / "results-bench-nanoalloy", help="the nanoalloy bench's results folder"
    )
    ap.add_argument(
        "--rungs", nargs="+", choices=list(RUNGS), default=list(RUNGS), help="inputs to train on (default: all)"
    )
    ap.add_argument(
        "--extra-views", type=int, default=28, help="random orientations per train particle beyond its bench views"
    )
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--learning-rate", type=float, default=3e-3)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--bin",
        type=int,
        default=1,
        dest="bin_by",
        help="image rungs only (noise_free, image): sum BIN x BIN pixels, e.g. 2 to read a 128 px bench at a 64 px "
        "bench's pixel size",
    )
    args = ap.parse_args()
    res = args.results.resolve()
    if not (res / "plan" / "train" / "ordering.json").is_file():
        raise SystemExit(
            f"{res} holds no nanoalloy bench (plan/train/ordering.json); run "
            "`python benchmarks/learning_accuracy.py nanoalloy` first, or pass --results"
        )
    args.out = res / "benchmarks" / "projection_bound"
    args.out.mkdir(parents=True, exist_ok=True)

    import zarr

    t0 = time.perf_counter()
    spec = json.loads((res / "plan" / "train" / "ordering.json").read_text())
    size, classes = spec["image_size"], spec["classes"]
    if args.bin_by < 1 or size % args.bin_by:
        raise SystemExit(
            f"--bin {args.bin_by}: the bench's {size} px images split into whole bins only (a divisor of {size})"
        )
    if args.bin_by > 1 and (unbinnable := set(args.rungs) - {"noise_free", "image"}):
        raise SystemExit(
            f"--bin applies to the image rungs noise_free and image only, not {', '.join(sorted(unbinnable))}"
        )
    splits = split_table(load_table(spec, base=campaign_base(res, spec)), spec["split"])
    structures = _structures(res)
    co_of = {
        sid: float(np.mean(numbers == 27)) for sid, (_, numbers) in structures.items()
    }  # = labels/co_fraction (to its 6 digits)
    bench = {t: json.loads((res / "reports" / t / "metrics.json").read_text()) for t in ("ordering", "structure")}
    shift_fraction = float(
        zarr.open_group(splits["train"].paths[0], mode="r").attrs["imaging"]["physics"]["shift_fraction"]
    )

    species = views = None
    n_bench_views = 0
    if {"species", "potential", "potential_views"} & set(args.rungs):
        rng = np.random.default_rng(args.seed)
        views = {name: _views(t, size) for name, t in splits.items()}
        n_bench_views = len(views["train"]["y"])  # the extra views come after these
        views["train"] = _with_extra_views(views["train"], args.extra_views, shift_fraction, rng)
        px = float(views["test"]["fov"][0]) / (size * OVERSAMPLE)
        kernels = {47: _kernel("Ag", px), 27: _kernel("Co", px)}
        species = {name: _render_all(v, structures, size, kernels, name) for name, v in views.items()}

    hyper = {
        k: getattr(args, k) for k in ("epochs", "batch_size", "learning_rate", "width", "depth", "seed", "extra_views")
    }
    if args.bin_by > 1:  # recorded only when used, so the ladders stored before the option still match
        hyper["bin"] = args.bin_by
    ladder = args.out / "ladder.json"
    details = json.loads(ladder.read_text()) if ladder.is_file() else {}
    if (
        details.get("hyper") != hyper
    ):  # rungs of an earlier run with the same settings are kept; others are not comparable
        details = {"hyper": hyper}
    for rung in args.rungs:
        t_rung = time.perf_counter()
        if rung in ("species", "potential"):
            sets = {k: _projections(views[k], species[k], rung) for k in splits}
        elif rung == "potential_views":  # orientation diversity of the image rungs, no optics
            sets = {k: _projections(views[k], species[k], "potential") for k in ("val", "test")}
            rep = np.repeat(np.arange(n_bench_views), views["train"]["weight"][:n_bench_views])
            sets["train"] = _projections(
                {k: v[rep] for k, v in views["train"].items()}, species["train"][rep], "potential"
            )
        elif rung == "phase_object":
            sets = {k: _phase_object_images(t, size, structures) for k, t in splits.items()}
        elif rung == "no_film":
            paths = _reimaged_shards(splits["train"], args.out / "no_film", _no_film)
            sets = {k: _images(dataclasses.replace(t, paths=paths), size, "noise_free") for k, t in splits.items()}
        elif rung == "image_views":  # trained on 16 views x 2 variants per particle, tested on the bench's test images
            paths = _reimaged_shards(splits["train"], args.out / "more_views", _more_views)
            more = split_table(
                load_table({**spec, "shards": list(paths)}, base=campaign_base(res, spec)), spec["split"]
            )
            sets = {
                "train": _images(more["train"], size, "image"),
                **{k: _images(splits[k], size, "image") for k in ("val", "test")},
            }
        elif rung in ("image_ctf", "noise_free_ctf"):
            key = rung.removesuffix("_ctf")
            sets = {k: _images(t, size, key) for k, t in splits.items()}
            _with_ctf_channels(sets, splits)
        elif rung == "image_ctf_est":
            sets = {k: _images(t, size, "image") for k, t in splits.items()}
            estimated = {k: _aberration_estimates(res, t, size) for k, t in splits.items()}
            truth = {n: np.concatenate([shard_param(t, n) for t in splits.values()]) for n in ("defocus_A", "c12_A")}
            est = np.concatenate(list(estimated.values()))
            print(
                f"  aberration estimates: defocus MAE {np.abs(est[:, 0] - truth['defocus_A']).mean() / 10:.2f} nm, "
                f"C12 MAE {np.abs(est[:, 1] - truth['c12_A']).mean() / 10:.2f} nm (all splits)",
                flush=True,
            )
            _with_ctf_channels(sets, splits, estimated)
        else:
            sets = {k: _images(t, size, rung, args.bin_by) for k, t in splits.items()}
        test, w = sets["test"], sets["test"]["weight"]
        sid_w = np.repeat(test["sample_id"], w)
        x = {k: v["x"] for k, v in sets.items()}
        probs, hist = _fit("classification", x, {k: v["y"] for k, v in sets.items()}, args, args.seed, rung)
        correct = (probs.argmax(1) == test["y"]).astype(float)
        acc = float(np.average(correct, weights=w))
        ci = structure_ci(np.repeat(correct, w), sid_w)
        recall = {
            c: float(np.average(correct[test["y"] == i], weights=w[test["y"] == i])) for i, c in enumerate(classes)
        }
        janus = np.flatnonzero(test["y"] == classes.index("janus"))
        ang = np.array([_janus_axis_angle(*structures[test["sample_id"][i]], test["euler"][i]) for i in janus])
        by_angle = {
            f"{lo}-{lo + 30}": float(np.average(correct[janus][b], weights=w[janus][b]))
            for lo in (0, 30, 60)
            if (b := (ang >= lo) & (ang < lo + 30)).any()
        }
        out = {
            "ordering": {
                "accuracy": acc,
                "ci95": ci,
                "recall": recall,
                "janus_accuracy_by_axis_angle_deg": by_angle,
                "history": hist,
            }
        }
        if "order" in test:  # image rungs: accuracy by the image's own dose, |defocus| and C12, as the bench reports it
            in_table = np.empty(len(correct))
            in_table[test["order"]] = correct
            out["ordering"]["by_condition"] = by_condition(in_table, splits["test"])
        if rung != "species":
            co = {k: np.array([co_of[s] for s in v["sample_id"]]) for k, v in sets.items()}
            mean, scale = co["train"].mean(), co["train"].std()
            pred, hist = _fit(
                "regression", x, {k: ((v - mean) / scale)[:, None] for k, v in co.items()}, args, args.seed, rung
            )
            err = np.abs(pred[:, 0] * scale + mean - co["test"])
            mae = float(np.average(err, weights=w))
            ci = structure_ci(np.repeat(err, w), sid_w)
            out["co_fraction"] = {
                "mae": mae,
                "ci95": ci,
                "mae_of_train_mean": float(np.average(np.abs(co["test"] - mean), weights=w)),
                "history": hist,
            }
        out["n"] = {k: len(v["y"]) for k, v in sets.items()}
        out["wall_min"] = (time.perf_counter() - t_rung) / 60
        details[rung] = out
        ladder.write_text(json.dumps(details, indent=1))  # each rung kept as soon as it is done

    co_bench = bench["structure"]["targets"]["co_fraction"]
    lines = [
        header("Where the nanoalloy bench loses ordering and Co fraction (studies/projection_bound.py)"),
        "",
        f"The nanoalloy bench's split ({len(np.unique(splits['test'].sample_id))} test particles, "
        f"{len(splits['test'])} test images); "
        f"one network for every rung (width {args.width}, depth {args.depth}, {args.epochs} epochs, cosine schedule "
        "from "
        f"{args.learning_rate}, dihedral augmentation, best validation epoch, 8-fold test-time augmentation). "
        "Projection rungs: "
        f"{args.extra_views} random orientations per train particle beyond its 4 bench views. Wall "
        f"{sum(details[r]['wall_min'] for r in RUNGS if r in details):.1f} min for the rungs below "
        f"({(time.perf_counter() - t0) / 60:.1f} min in this run). Bench networks for comparison: ordering "
        f"{bench['ordering']['accuracy']:.3f}, "
        f"Co fraction MAE {co_bench['mae']:.3f} (predicting the train mean: {co_bench['mae_predict_train_mean']:.3f}).",
        "",
        "| input | ordering accuracy [95 %] | recall "
        + " / ".join(classes)
        + " | Janus by beam–axis angle 0–30 / 30–60 / 60–90° | Co fraction MAE [95 %] "
        "| ordering by \\|defocus\\| quartile / by dose quartile |",
        "|---|---|---|---|---|---|",
    ]
    lines += [_row(rung, details[rung]) for rung in RUNGS if rung in details]
    with_bins = [
        details[r]["ordering"]["by_condition"]
        for r in RUNGS
        if r in details and "by_condition" in details[r]["ordering"]
    ]
    if with_bins:
        edges = {
            c: ", ".join(f"{b['range'][0]:.0f}–{b['range'][1]:.0f}" for b in with_bins[0][c]["bins"])
            for c in ("defocus", "dose")
        }
        lines += ["", f"Quartiles of the test images: |defocus| {edges['defocus']} nm; dose {edges['dose']} e-/Å²."]
    emit("\n".join(lines) + "\n", "projection_bound")


if __name__ == "__main__":
    main()
