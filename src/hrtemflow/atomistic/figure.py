"""What a person looks at after the MD stage: a few final structures with their measured labels.

`plot_md_family` draws up to n structures (spread over the family's groups), each titled with the
labels measured on it, and states how many samples failed and why.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ..core.atomic import atomic_file
from ..core.errors import HrtemflowError

#: view per family: a particle at a slight angle, a tube from the side (axis horizontal), a film from above
ROTATION = {"nanoalloy": "15x,20y,0z", "cnt": "0x,90y,0z", "amorphous": "0x,0y,0z"}


def sample_title(family: str, labels: dict) -> str:
    """One or two short lines of measured labels."""
    e = labels.get("energy_per_atom_eV")
    energy = f"{e:.2f} eV/atom" if isinstance(e, (int, float)) else ""
    if family == "nanoalloy":
        return (
            f"{labels.get('motif', '?')} {labels.get('n_atoms')} atoms, Co {labels.get('co_fraction', 0):.2f}\n"
            f"{labels.get('ordering')} (measure {labels.get('order_measure', 0):.2f}), {energy}"
        )
    if family == "cnt":
        return (
            f"({labels.get('n')},{labels.get('m')}) d={labels.get('diameter_A', 0):.1f} Å, "
            f"θ={labels.get('chiral_angle_deg', 0):.1f}°\n{labels.get('vacancies')} vac, {labels.get('stone_wales')} "
            f"SW, {energy}"
        )
    return (
        f"{labels.get('density_g_cm3', 0):.2f} g/cm³, {labels.get('n_atoms')} atoms\n"
        f"sp {labels.get('sp_fraction', 0):.2f} sp² {labels.get('sp2_fraction', 0):.2f} sp³ "
        f"{labels.get('sp3_fraction', 0):.2f}, {energy}"
    )


def _spread(items: list, n: int) -> list:
    """Up to n items, round-robin over groups so every group shows up."""
    by_group: dict[str, list] = {}
    for it in items:
        by_group.setdefault(it[0], []).append(it)
    out, queues = [], list(by_group.values())
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out


def plot_md_family(
    structures_paths: Sequence[str | Path],
    manifest_paths: Sequence[str | Path],
    out_png: str | Path,
    n: int = 6,
    family: str | None = None,
) -> dict:
    """Write a PNG of up to n final structures titled with their labels; return counts shown/failed."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from ase.io import read  # noqa: PLC0415
    from ase.visualize.plot import plot_atoms  # noqa: PLC0415

    records: dict[str, tuple[str, dict]] = {}
    reasons: Counter = Counter()
    n_samples = n_failed = 0
    for path in manifest_paths:
        try:
            man = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise HrtemflowError(f"manifest {path} cannot be read: {exc}") from None
        family = family or man.get("family")
        if man.get("family") != family:
            raise HrtemflowError(f"manifest {path} is of family {man.get('family')!r}, not {family!r}")
        for s in man["samples"]:
            n_samples += 1
            if s["status"] == "ok":
                records[s["id"]] = (man["group"], s["labels"])
            else:
                n_failed += 1
                reasons[(s.get("reason") or "unknown").split(":")[0]] += 1
    items = []
    for path in structures_paths:
        for atoms in read(str(path), ":", format="extxyz") if Path(path).stat().st_size else []:
            sid = atoms.info.get("sample_id")
            if sid in records:
                items.append((records[sid][0], sid, atoms, records[sid][1]))
    chosen = _spread(items, n)

    cols = min(3, max(1, len(chosen)))
    rows = max(1, -(-len(chosen) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, (_, sid, atoms, labels) in zip(axes.ravel(), chosen):
        plot_atoms(
            atoms, ax, rotation=ROTATION.get(family or "", "0x,0y,0z"), radii=0.6 if family != "nanoalloy" else 0.9
        )
        ax.set_title(f"{sid}\n{sample_title(family or '', labels)}", fontsize=8)
    if not chosen:
        axes[0, 0].text(0.5, 0.5, "no ok structure to show", ha="center", va="center", transform=axes[0, 0].transAxes)
    why = ", ".join(f"{k} ×{v}" for k, v in sorted(reasons.items())) or "none"
    fig.suptitle(
        f"{family}: {len(chosen)} of {n_samples - n_failed} ok structures shown; "
        f"{n_failed} of {n_samples} failed (reasons: {why})",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    with atomic_file(Path(out_png), suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return {"shown": len(chosen), "samples": n_samples, "failed": n_failed, "reasons": dict(reasons)}
