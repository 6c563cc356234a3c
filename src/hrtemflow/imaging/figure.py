"""Contact sheet of one family's images: what a person looks at to judge the imaging stage.

Each entry is a triplet (noisy detector image, noise-free image, clean target) of one image, captioned
with its optics (defocus, C12 and its angle, dose, fov) and the structure's label.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.atomic import atomic_file
from ..core.errors import HrtemflowError
from ..core.families import FIGURE_LABEL
from ..store.dataset import ImageDataset, open_dataset
from ..store.reader import open_shard


def _label_text(ds: ImageDataset, family: str, i: int) -> str:
    name = FIGURE_LABEL.get(family)
    if name is None or name not in ds.labels:
        return ds.sample_id[i]
    value = ds.labels[name][i]
    if family == "amorphous":
        return f"{float(value):.2f} g/cm³"
    return f"({value})" if family == "cnt" else str(value)


def _caption(ds: ImageDataset, family: str, i: int) -> str:
    p = ds.params
    return (
        f"Δf {p['defocus_A'][i] / 10:+.1f} nm  C12 {p['c12_A'][i] / 10:.1f} nm @{np.degrees(p['phi12_rad'][i]):.0f}°\n"
        f"dose {p['dose_e_per_A2'][i]:.0f} e⁻/Å²  fov {p['fov_A'][i] / 10:.1f} nm  {_label_text(ds, family, i)}"
    )


def pick(ds: ImageDataset, count: int) -> list[int]:
    """Up to `count` images, one per structure first (so the sheet shows many structures)."""
    _, first = np.unique(ds.sample_id, return_index=True)
    chosen = list(np.sort(first)[:count])
    rest = [i for i in range(len(ds)) if i not in set(chosen)]
    return [int(i) for i in chosen + rest[: max(0, count - len(chosen))]]


def contact_sheet(shard_paths: Sequence[Path], family: str, out: Path, size: int | None = None, count: int = 8) -> Path:
    """Write a PNG contact sheet of up to `count` images (two triplets per row)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    paths = [Path(p) for p in shard_paths]
    if not paths:
        raise HrtemflowError(f"image-figure: no image shards given for family {family!r}")
    sizes = None
    for path in paths:
        g = open_shard(path)
        if g.attrs.get("family") != family:
            raise HrtemflowError(f"image shard {path} is of family {g.attrs.get('family')!r}, not {family!r}")
        sizes = set(g.attrs["sizes"]) if sizes is None else sizes & set(g.attrs["sizes"])
    if not sizes:
        raise HrtemflowError("image-figure: the shards share no image size")
    size = max(sizes) if size is None else size
    ds = open_dataset(paths, size)
    chosen = pick(ds, count)
    per_row = 2
    rows = max(1, -(-len(chosen) // per_row))
    fig, axes = plt.subplots(rows, 3 * per_row, figsize=(3 * per_row * 1.9, rows * 2.35), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    if not chosen:
        axes[0, 0].text(0, 0.5, f"no images: {len(paths)} shard(s) of {family} hold no ok MD sample", fontsize=9)
    kinds = (("image", "noisy"), ("noise_free", "noise-free"), ("clean", "clean"))
    for n, i in enumerate(chosen):
        r, c0 = divmod(n, per_row)
        for j, (kind, title) in enumerate(kinds):
            ax = axes[r, 3 * c0 + j]
            ax.imshow(ds.read([i], kind)[0].T, cmap="gray", origin="lower", interpolation="nearest")
            ax.set_title(title, fontsize=7, pad=2)
        axes[r, 3 * c0].text(
            0.0, -0.04, _caption(ds, family, i), transform=axes[r, 3 * c0].transAxes, fontsize=6.5, va="top", ha="left"
        )
    n_struct = len(np.unique(ds.sample_id))
    fig.suptitle(
        f"{family}: {len(ds)} images of {n_struct} structures in {len(paths)} shard(s), {size} px (x right, y up)",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97), h_pad=2.2)
    with atomic_file(Path(out), suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(out)
