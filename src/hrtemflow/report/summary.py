"""Campaign summary: what the MD produced and what imaging made of it, per family.

Counts must add up downstream: every ok MD sample is imaged, every failed one is skipped and counted.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from ..core.errors import HrtemflowError
from .cost import cost_report, format_cost_report


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise HrtemflowError(f"cannot read {path}: {exc}; rerun the job that makes it") from None


def _image_attrs(store: Path) -> dict:
    from ..store.reader import open_shard  # noqa: PLC0415 (zarr only when images are summarised)

    return dict(open_shard(Path(store)).attrs)


def campaign_summary(manifests: list[str | Path], images: list[str | Path]) -> dict[str, Any]:
    fam: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"samples": 0, "ok": 0, "failed": 0, "reasons": Counter(), "shards": 0}
    )
    for path in manifests:
        m = _read_json(Path(path))
        f = fam[m["family"]]
        f["shards"] += 1
        for s in m["samples"]:
            f["samples"] += 1
            if s["status"] == "ok":
                f["ok"] += 1
            else:
                f["failed"] += 1
                f["reasons"][(s.get("reason") or "unknown").split(":")[0]] += 1
    img: dict[str, Counter] = defaultdict(Counter)
    for store in images:
        a = _image_attrs(Path(store))
        c = img[a["family"]]
        c["shards"] += 1
        c["structures_imaged"] += int(a.get("n_samples", 0))
        c["structures_skipped"] += int(a.get("n_failed_skipped", 0))
        c["images"] += int(a.get("n_images", 0))
    out: dict[str, Any] = {"families": {}}
    for name in sorted(set(fam) | set(img)):
        f = fam[name]
        entry = {
            "md": {
                "shards": f["shards"],
                "samples": f["samples"],
                "ok": f["ok"],
                "failed": f["failed"],
                "failure_rate": round(f["failed"] / f["samples"], 6) if f["samples"] else 0.0,
                "failure_reasons": dict(sorted(f["reasons"].items())),
            }
        }
        if name in img:
            entry["images"] = dict(img[name])
            entry["images"]["consistent"] = (
                img[name]["structures_imaged"] == f["ok"] and img[name]["structures_skipped"] == f["failed"]
            )
        out["families"][name] = entry
    tot = Counter()
    for e in out["families"].values():
        tot.update({k: e["md"][k] for k in ("samples", "ok", "failed")})
    out["total"] = dict(tot) | {"failure_rate": round(tot["failed"] / tot["samples"], 6) if tot["samples"] else 0.0}
    if manifests:  # <results>/md/<group>/<shard>.manifest.json: the plan and Snakemake's benchmark files are beside
        results = Path(manifests[0]).resolve().parents[2]
        if (results / "plan").is_dir():
            out["cost"] = cost_report(results)
    return out


def format_table(summary: dict[str, Any]) -> str:
    head = f"{'family':<10} {'samples':>8} {'ok':>8} {'failed':>7} {'rate':>7} {'images':>9}  reasons"
    lines = [head, "-" * len(head)]
    for name, e in summary["families"].items():
        md = e["md"]
        n_img = e.get("images", {}).get("images", "-")
        reasons = ", ".join(f"{k} x{v}" for k, v in md["failure_reasons"].items()) or "-"
        lines.append(
            f"{name:<10} {md['samples']:>8} {md['ok']:>8} {md['failed']:>7} {md['failure_rate']:>7.1%} {n_img!s:>9}  "
            f"{reasons}"
        )
    if summary.get("cost"):
        lines += ["", format_cost_report(summary["cost"])]
    return "\n".join(lines)
