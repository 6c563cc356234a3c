"""The whole table in one command: generate every set, then score the bundle on them.

    python -m studies.independent --bundle <model dir> --sets all --n 200 --out <dir>

Writes <dir>/sets/<set>/ (mic_NNNN.tif, labels.csv, set.json), <dir>/predictions/<set>/ (the regions
and what `hrtemflow predict` wrote) and <dir>/factor_table.md + factor_table.json. Micrographs and
predictions already there are kept, so an interrupted run resumes. `--sets all` is every set of the
bundle's family (a chirality bundle: the CNT sets; an ordering bundle: the nanoalloy sets), or every set
of the factors file without a bundle; `--sets cnt` or `--sets nanoalloy` is every set of that family. The
set with every factor together is `all_factors` (CNT) or `na_all_factors` (nanoalloy). A set marked
`only_when_asked` (`na_md_particles`, which reads a results folder) is made only when named.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import generate, score


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m studies.independent", description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, help="chirality or ordering classifier bundle (model.keras + card.json)")
    ap.add_argument(
        "--sets",
        nargs="+",
        default=["all"],
        help="set names, a family (cnt, nanoalloy: its sets), or all (default: the bundle's family)",
    )
    ap.add_argument("--n", type=int, default=200, help="micrographs per set (default 200)")
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--factors", type=Path, default=generate.FACTORS_FILE, help="factors file (default: factors.yaml)")
    ap.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a parameter in every set (dotted keys, YAML values), e.g. field_nm=[6,6] optics.cs_um=[-5,5]",
    )
    ap.add_argument("--seed", type=int, default=29, help="master seed of the micrographs (default 29)")
    ap.add_argument("--jobs", type=int, default=1, help="micrographs generated at a time (processes)")
    ap.add_argument("--generate-only", action="store_true", help="make the sets, do not score")
    ap.add_argument("--score-only", action="store_true", help="score the sets already made")
    ap.add_argument("--rescore", action="store_true", help="run predict again on micrographs already predicted")
    ap.add_argument(
        "--one-process-per-image",
        action="store_true",
        help="run the hrtemflow console script once per micrograph (slower: Keras loads each time)",
    )
    return ap


def pick_sets(factors: dict, asked: list[str], card: dict | None) -> list[str]:
    """The set names asked for: names, family names (that family's sets) and `all` (the bundle's family's
    sets, every set without a bundle), in the factors file's order, each once."""
    family_of = {  # a set that reads another run's files (only_when_asked) is made when named, not by all or a family
        name: generate.set_family(factors, name)
        for name, own in factors["sets"].items()
        if not (own or {}).get("only_when_asked")
    }
    names: list[str] = []
    for item in asked:
        if item == "all":
            wants = generate.TASK_FAMILY.get(str(card.get("task"))) if card else None
            group = [n for n, f in family_of.items() if wants is None or f == wants]
        elif item in generate.BUILDERS:
            group = [n for n, f in family_of.items() if f == item]
        elif item in factors["sets"]:  # named: made even when only_when_asked
            group = [item]
        else:
            raise SystemExit(
                f"unknown set {item!r}; the factors file has {', '.join(factors['sets'])} "
                f"(or name a family: {', '.join(generate.BUILDERS)}, or all)"
            )
        names += [n for n in group if n not in names]
    if not names:
        raise SystemExit(f"no set of the factors file matches {' '.join(asked)}")
    return names


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    factors = generate.load_factors(args.factors)
    card = generate.read_card(args.bundle) if args.bundle else None
    names = pick_sets(factors, args.sets, card)
    if not args.generate_only and card is None:
        raise SystemExit("scoring needs --bundle (or pass --generate-only)")
    overrides = generate.parse_overrides(args.param)
    sets_root = args.out / "sets"
    if not args.score_only:
        for name in names:
            params = generate.resolve_set(factors, name, card, overrides)
            print(f"set {name}: {args.n} micrograph(s)", flush=True)
            generate.generate_set(params, args.n, sets_root / name, seed=args.seed, jobs=args.jobs)
    if not args.generate_only:
        score.score_sets(
            args.bundle,
            sets_root,
            args.out,
            names,
            one_process_per_image=args.one_process_per_image,
            rescore=args.rescore,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
