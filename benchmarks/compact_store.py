"""Bytes per image of the float32 and the compact image store (`imaging.storage`), and what the
denoiser learns from each.

    python benchmarks/compact_store.py                     # the demo's MD and imaging, once per store
    python benchmarks/compact_store.py --pair results-bench-denoise results-bench-denoise-compact

Without arguments: the demo campaign (config/config.yaml) up to its image shards, twice in temporary
folders, the same seed, `imaging.storage` float32 and compact. With --pair: two results folders that
already ran (the same campaign but for the store). Per image size and array: bytes on disk per image
(Zarr chunks after compression), and the ratio; with --pair, the denoiser's gain over the best classical
filter per family in both, with its 95 % interval. Target (issue 31): >= 4x smaller per image, and the
accuracies within their intervals.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import yaml

from _common import ROOT, emit, header, run_campaign
from hrtemflow.store import layout


def bytes_per_image(results: Path) -> dict[tuple[int, str], float]:
    """(size, array) -> bytes on disk per image, over every image shard of a results folder."""
    import zarr

    total: dict[tuple[int, str], int] = defaultdict(int)
    count: dict[int, int] = defaultdict(int)
    for shard in sorted((results / "images").rglob("*.zarr")):
        group = zarr.open_group(str(shard), mode="r")
        for name in group.group_keys():
            if not name.startswith("s") or not name[1:].isdigit():
                continue
            size = int(name[1:])
            count[size] += group[layout.image_key(size)].shape[0]
            for kind in layout.IMAGE_KINDS:
                folder = shard / layout.size_group(size) / kind
                total[(size, kind)] += sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    if not count:
        raise SystemExit(f"{results}: no image shards under {results / 'images'}")
    return {key: n / count[key[0]] for key, n in total.items()}


def size_rows(name: str, a: dict, b: dict) -> list[str]:
    rows = []
    for size in sorted({s for s, _ in a}):
        fa = {k: a[(size, k)] for k in layout.IMAGE_KINDS}
        fb = {k: b[(size, k)] for k in layout.IMAGE_KINDS}
        parts = " / ".join(f"{fa[k] / 1e3:.1f} → {fb[k] / 1e3:.1f}" for k in layout.IMAGE_KINDS)
        ratio = sum(fa.values()) / sum(fb.values())
        rows.append(
            f"| {name} | {size} | {parts} | {sum(fa.values()) / 1e3:.1f} → {sum(fb.values()) / 1e3:.1f} | "
            f"**{ratio:.2f}x** | {'yes' if ratio >= 4 else 'no'} |"
        )
    return rows


def denoise_rows(a: Path, b: Path) -> list[str]:
    rows = []
    ma, mb = (json.loads((r / "reports" / "denoise" / "metrics.json").read_text()) for r in (a, b))
    for family, fa in ma["comparison"]["families"].items():
        fb = mb["comparison"]["families"][family]
        lo, hi = fa["network_minus_best_baseline_dB_ci95"]
        gain_a, gain_b = fa["network_minus_best_baseline_dB"], fb["network_minus_best_baseline_dB"]
        lo_b, hi_b = fb["network_minus_best_baseline_dB_ci95"]
        rows.append(
            f"| {family} | {fa['best_baseline']} | {gain_a:+.2f} [{lo:+.2f} to {hi:+.2f}] | "
            f"{gain_b:+.2f} [{lo_b:+.2f} to {hi_b:+.2f}] | "
            f"{fa['network_full_test']['psnr_dB']:.2f} / {fb['network_full_test']['psnr_dB']:.2f} | "
            f"{'yes' if lo <= gain_b <= hi else 'no'} |"
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", nargs=2, metavar=("FLOAT32", "COMPACT"), help="two results folders that ran")
    args = ap.parse_args()
    table = (
        "| campaign | size (px) | image / noise_free / clean, kB per image | all three, kB | smaller by | ≥ 4x |\n"
        "|---|---:|---|---|---:|---|\n"
    )
    if args.pair:
        a, b = (Path(p) for p in args.pair)
        block = table + "\n".join(size_rows(f"{a.name} → {b.name}", bytes_per_image(a), bytes_per_image(b)))
        if (a / "reports" / "denoise" / "metrics.json").exists() and (b / "reports" / "denoise").exists():
            block += (
                "\n\nDenoiser trained and evaluated from each store: gain over the best classical filter "
                "(dB, 95 % interval from resampling test structures) and network PSNR on the whole test split.\n\n"
                "| family | best filter | gain, float32 | gain, compact | PSNR float32 / compact (dB) | "
                "compact within float32's interval |\n|---|---|---|---|---|---|\n" + "\n".join(denoise_rows(a, b))
            )
    else:
        cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
        per = {}
        with tempfile.TemporaryDirectory() as tmp:
            for storage in ("float32", "compact"):
                c = copy.deepcopy(cfg)
                c["imaging"]["storage"] = storage
                run_campaign(c, Path(tmp) / storage, "--until", "image")
                per[storage] = bytes_per_image(Path(tmp) / storage / cfg["campaign"]["results"])
        block = table + "\n".join(size_rows("demo (config/config.yaml)", per["float32"], per["compact"]))
    emit(header("Compact image store (benchmarks/compact_store.py)") + "\n" + block + "\n", "compact_store")


if __name__ == "__main__":
    main()
