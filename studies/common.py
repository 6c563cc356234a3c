"""What the studies share: where the repository is, the machine line every result carries, and the
small image helpers two studies use. Studies use hrtemflow's public names only."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from hrtemflow.core.runtime import machine_line  # noqa: E402
from hrtemflow.learn.table import Table  # noqa: E402
from hrtemflow.store import layout  # noqa: E402
from hrtemflow.store.reader import open_shard, read_arrays  # noqa: E402

OUT = ROOT / "studies" / "out"


def header(title: str) -> str:
    return f"### {title}\n\n{machine_line()}\n"


def emit(block: str, name: str) -> None:
    """Print the markdown block and keep a copy in studies/out/ (ignored by git)."""
    print(block)
    OUT.mkdir(exist_ok=True)
    (OUT / f"{name}.md").write_text(block)


def campaign_base(results: Path, spec: dict) -> Path:
    """The working directory a campaign ran in: the folder its train spec's shard paths are relative to
    (the repository for the benches, or the folder above a results folder kept elsewhere)."""
    first = spec["shards"][0]
    for base in (ROOT, results.parent, Path.cwd()):
        if (base / first).exists():
            return base
    raise SystemExit(
        f"the shards of {results} ({first}, ...) are neither under {ROOT} nor under {results.parent}; "
        "run the study from the campaign's working directory"
    )


def bin_pixels(a: np.ndarray, b: int) -> np.ndarray:
    """b x b pixels summed over the last two axes (whose sizes b divides): the counts of a detector with
    pixels b times larger, at the same dose."""
    if b == 1:
        return a
    n, m = a.shape[-2] // b, a.shape[-1] // b
    return a.reshape(*a.shape[:-2], n, b, m, b).sum(axis=(-3, -1))


def image_optics(table: Table) -> list[dict[str, float]]:
    """Each image's stored scalar parameters (what hrtemflow.imaging.optics takes), in table order."""
    out: list[dict[str, float]] = [{} for _ in range(len(table))]
    for k, path in enumerate(table.paths):
        m = np.flatnonzero(table.shard == k)
        if len(m):
            params = read_arrays(open_shard(path), layout.PARAMS)
            for i in m:
                out[i] = {name: float(v[table.row[i]]) for name, v in params.items() if v.ndim == 1}
    return out
