# Config validation, the plan, and the paths every rule uses.
import hashlib
import os
import sys

import yaml

from hrtemflow import plan as hplan
from hrtemflow.config import load_config, potential_files
from hrtemflow.errors import ConfigError
from hrtemflow.io import canonical_json

if not config:
    # `--configfile` replaces this default instead of being merged into it
    with open(os.path.join(workflow.basedir, "config", "config.yaml")) as fh:
        config.update(yaml.safe_load(fh))

try:
    CFG = load_config(config)
except ConfigError as exc:
    sys.exit(f"hrtemflow: {exc}")

PLAN = hplan.make_plan(CFG)
R = hplan.results_dir(CFG)
# Specs of new shards are written now (the DAG needs them); changed specs are rewritten only when a
# real run starts (onstart), so a dry run with another config leaves the files a real run compares
# alone. Every job carries its spec's content hash as a param, so Snakemake's params trigger makes a
# dry run show what a config change would rerun. A rule's shell text is Snakemake's code trigger too:
# editing it reruns every job of that rule in every existing campaign, so new knobs reach the commands
# through the spec or the job's environment (e.g. the threads Snakemake and SLURM export), not the text.
SPEC_BUILDERS = hplan.spec_builders(PLAN)
SPEC_TEXT_CACHE = {}


SHARDS = {s.name: s for s in PLAN.shards}
IMAGING = CFG["imaging"]["enabled"]
LEARNING = bool(PLAN.tasks())
POTENTIALS = potential_files(CFG)


wildcard_constraints:
    group=r"[a-z0-9]+(-[a-z0-9]+)*",
    shard=r"[a-z0-9]+(-[a-z0-9]+)*-s\d{5}",
    family=r"nanoalloy|cnt|amorphous",
    task=r"chirality|ordering|aberrations|denoise|structure",


def spec_text(path):
    if path not in SPEC_TEXT_CACHE:
        SPEC_TEXT_CACHE[path] = canonical_json(SPEC_BUILDERS[path]())
    return SPEC_TEXT_CACHE[path]


def all_spec_texts():
    return {path: spec_text(path) for path in SPEC_BUILDERS}


def spec_hash(path):
    """Content hash of a planned spec file: a rule param, so a dry run sees a changed spec."""
    return hashlib.sha256(spec_text(path).encode()).hexdigest()[:16]


def family_shards(family):
    return PLAN.of_family(family)


def families():
    return [f for f in ("nanoalloy", "cnt", "amorphous") if PLAN.of_family(f)]


def final_targets():
    out = [f"{R}/summary/campaign.json"]
    out += [f"{R}/figures/md_{f}.png" for f in families()]
    if IMAGING:
        out += [f"{R}/figures/images_{f}.png" for f in families()]
    for task in PLAN.tasks():
        out += [hplan.train_paths(CFG, task)[k] for k in ("report", "figures")]  # a job reruns only for missing outputs that are asked for
    if CFG["apply"]["enabled"]:
        out.append(f"{R}/apply/summary.json")
    return out


def image_inputs(wc):
    shard = SHARDS[wc.shard]
    p = hplan.paths(CFG, shard)
    return {
        "spec": p["image_spec"],
        "structures": p["structures"],
        "manifest": p["manifest"],
        "support": [hplan.paths(CFG, s)["structures"] for s in hplan.support_shards(PLAN, shard)],
    }


def train_inputs(wc):
    return {
        "spec": hplan.train_paths(CFG, wc.task)["spec"],
        "shards": [hplan.paths(CFG, s)["images"] for s in PLAN.task_shards(wc.task)],
    }


def apply_inputs(wc):
    return {
        "models": [hplan.train_paths(CFG, t)["model"] for t in CFG["apply"]["tasks"]],
        "cards": [hplan.train_paths(CFG, t)["card"] for t in CFG["apply"]["tasks"]],
    }


def summary_inputs(wc):
    return {
        "manifests": [hplan.paths(CFG, s)["manifest"] for s in PLAN.shards],
        "images": [hplan.paths(CFG, s)["images"] for s in PLAN.shards] if IMAGING else [],
    }


if workflow.is_main_process:
    hplan.write_plan(PLAN, only_missing=True, texts=all_spec_texts())
