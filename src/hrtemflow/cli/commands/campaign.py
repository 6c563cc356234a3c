"""Campaign-level commands: validate, plan, summary, install-profile."""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

from ...core.atomic import plain_json, write_if_changed, write_json_atomic
from ...core.errors import HrtemflowError


def _validate(args: argparse.Namespace) -> int:
    from ...campaign.config import load_config  # noqa: PLC0415

    for path in args.config:
        cfg = load_config(path, base=args.base)
        print(f"{path}: valid (campaign {cfg['campaign']['name']!r}, results in {cfg['campaign']['results']}/)")
    return 0


def _plan(args: argparse.Namespace) -> int:
    from ...campaign.config import load_config  # noqa: PLC0415
    from ...campaign.estimate import cost_summary, format_costs  # noqa: PLC0415
    from ...campaign.plan import class_rows, format_summary, make_plan, summary_rows  # noqa: PLC0415
    from ...campaign.specs import write_plan  # noqa: PLC0415

    if args.submit_limit < 1 or (
        args.quota_tb is not None and not (math.isfinite(args.quota_tb) and args.quota_tb > 0)
    ):
        raise HrtemflowError("--submit-limit must be >= 1 and --quota-tb a positive number of terabytes")
    cfg = load_config(args.config, base=args.base)
    plan = make_plan(cfg)
    if args.summary or args.json:
        costs = cost_summary(plan, submit_limit=args.submit_limit, quota_tb=args.quota_tb)
        if args.json:
            print(
                json.dumps(
                    plain_json(
                        {
                            "campaign": cfg["campaign"]["name"],
                            "families": summary_rows(plan),
                            "tasks": plan.tasks(),
                            "classes": class_rows(plan),
                            **costs,
                        }
                    ),
                    indent=1,
                )
            )
        else:
            print(format_summary(plan))
            print(format_costs(costs))
    if not args.dry:
        counts = write_plan(plan, args.base)
        print(
            f"plan: {counts['written']} spec(s) written, {counts['unchanged']} unchanged, {counts['removed']} removed "
            f"under {Path(args.base) / cfg['campaign']['results'] / 'plan'}",
            file=sys.stderr if args.json else sys.stdout,
        )
    return 0


def _summary(args: argparse.Namespace) -> int:
    from ...report.summary import campaign_summary, format_table  # noqa: PLC0415

    summary = campaign_summary(args.manifests, args.images or [])
    write_json_atomic(Path(args.out), summary)
    print(format_table(summary))
    return 0


def _config_doc(args: argparse.Namespace) -> int:
    from ...campaign.reference import schema_markdown  # noqa: PLC0415

    text = schema_markdown()
    out = Path(args.out)
    if args.check:
        current = out.read_text(encoding="utf-8") if out.is_file() else None
        if current != text:
            print(f"{out} is out of date with the schema; run `hrtemflow config-doc --out {out}`")
            return 1
        print(f"{out} is up to date")
        return 0
    print(f"{'wrote' if write_if_changed(out, text) else 'unchanged'}: {out}")
    return 0


def profile_destination() -> Path:
    """Where Snakemake looks for a profile given by name: the user's config folder."""
    from snakemake.common import get_appdirs  # noqa: PLC0415 (snakemake loads only for this verb)

    return Path(get_appdirs().user_config_dir)


def _install_profile(args: argparse.Namespace) -> int:

    source = Path(args.source)
    if not (source / "config.v9+.yaml").is_file():
        raise HrtemflowError(
            f"{source} holds no Snakemake profile (config.v9+.yaml); run this from the hrtemflow repository or pass "
            "--source"
        )
    dest = Path(args.dest) if args.dest else profile_destination() / args.name
    if dest.exists() and not args.force:
        raise HrtemflowError(f"{dest} already exists; pass --force to replace it (your edits there would be lost)")
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(source, dest)
    print(
        f"installed the SLURM profile to {dest}\nnow `snakemake --profile {args.name if not args.dest else dest}` "
        "finds it; "
        f"edit the partitions and account marked PLACEHOLDER in {dest / 'config.v9+.yaml'}"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check campaign config files against the schema (nothing runs)")
    p.add_argument("config", nargs="+", help="config YAML file(s)")
    p.add_argument("--base", default=".", help="working directory the config's relative paths refer to")
    p.set_defaults(func=_validate)

    p = sub.add_parser("plan", help="write the shard specs of a campaign (only those whose content changed)")
    p.add_argument("config", help="config YAML file")
    p.add_argument(
        "--summary",
        action="store_true",
        help="print samples, shards and jobs per family and stage, each classifier's classes (a tube's with its "
        "diameter and chiral angle), and the estimated cost: core-hours, GPU-hours, bytes and job lengths per stage, "
        "with warnings",
    )
    p.add_argument("--json", action="store_true", help="the summary and its estimated cost as JSON, for scripts")
    p.add_argument("--submit-limit", type=int, default=5000, help="warn above this many jobs (default 5,000)")
    p.add_argument("--quota-tb", type=float, default=None, help="warn when the products exceed this many terabytes")
    p.add_argument("--dry", action="store_true", help="write nothing (with --summary: just count)")
    p.add_argument("--base", default=".", help="working directory (results are written under it)")
    p.set_defaults(func=_plan)

    p = sub.add_parser("summary", help="campaign summary: samples, failures and rates per family")
    p.add_argument("--manifests", nargs="+", required=True, help="MD manifest files")
    p.add_argument("--images", nargs="*", default=[], help="image shard stores")
    p.add_argument("--out", required=True, help="summary JSON to write")
    p.set_defaults(func=_summary)

    p = sub.add_parser(
        "config-doc", help="write the config reference (config/README.md) from the schema's descriptions"
    )
    p.add_argument("--out", default="config/README.md", help="Markdown file to write (default: config/README.md)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if the file differs from a regeneration")
    p.set_defaults(func=_config_doc)

    p = sub.add_parser("install-profile", help="make `snakemake --profile slurm` find hrtemflow's SLURM profile")
    p.add_argument("--source", default="profiles/slurm", help="profile folder to install (default: profiles/slurm)")
    p.add_argument("--name", default="slurm", help="profile name (default: slurm)")
    p.add_argument("--dest", help="install to this folder instead of Snakemake's user config folder")
    p.add_argument("--force", action="store_true", help="replace an existing profile of that name")
    p.set_defaults(func=_install_profile)
