# Config validation, the plan, and the paths every rule uses.
import hashlib
import os
import sys

from hrtemflow.campaign import jobs as hjobs
from hrtemflow.campaign import paths as hpaths
from hrtemflow.campaign import plan as hplan
from hrtemflow.campaign import specs as hspecs
from hrtemflow.campaign.config import load_config, potential_files
from hrtemflow.core import ids
from hrtemflow.core.atomic import canonical_json
from hrtemflow.core.errors import ConfigError
from hrtemflow.core.families import FAMILIES
from hrtemflow.core.safe_yaml import load as load_yaml
from hrtemflow.core.tasks import TASK_PATTERN, TASKS

try:
    if not config:
        # `--configfile` replaces this default instead of being merged into it
        _DEFAULT_CONFIG = os.path.join(workflow.basedir, "config", "config.yaml")
        with open(_DEFAULT_CONFIG, encoding="utf-8") as fh:
            config.update(load_yaml(fh.read(), _DEFAULT_CONFIG))
    # Snakemake parsed --configfile itself: load_config bounds the tree (core.safe_yaml.check_structure) first
    CFG = load_config(config)
except ConfigError as exc:
    sys.exit(f"hrtemflow: {exc}")

PLAN = hplan.make_plan(CFG)
R = hpaths.results_dir(CFG)
# Specs of new shards are written now (the DAG needs them); changed specs are rewritten only when a
# real run starts (onstart), so a dry run with another config leaves the files a real run compares
# alone. Every job carries its spec's content hash as a param, so Snakemake's params trigger makes a
# dry run show what a config change would rerun. A rule's shell text is Snakemake's code trigger too:
# editing it reruns every job of that rule in every existing campaign, so new knobs reach the commands
# through the spec or the job's environment (e.g. the threads Snakemake and SLURM export), not the text.
SPEC_BUILDERS = hspecs.spec_builders(PLAN)
SPEC_TEXT_CACHE = {}


SHARDS = {s.name: s for s in PLAN.shards}
IMAGING = CFG["imaging"]["enabled"]
LEARNING = bool(PLAN.tasks())
POTENTIALS = potential_files(CFG)


wildcard_constraints:
    group=ids.GROUP_PATTERN,
    shard=ids.SHARD_PATTERN,
    family="|".join(FAMILIES),
    task=TASK_PATTERN,


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


def ood_task_names():
    """The tasks whose bundles carry out-of-distribution statistics (classifiers and regressors)."""
    return [name for name, t in TASKS.items() if t.kind != "denoising"]



def final_targets():
    out = [hpaths.summary_path(CFG)]
    out += [hpaths.figure_path(CFG, "md", f) for f in PLAN.families()]
    if IMAGING:
        out += [hpaths.figure_path(CFG, "images", f) for f in PLAN.families()]
    for task in PLAN.tasks():
        out += [hpaths.train_paths(CFG, task)[k] for k in ("report", "figures")]  # a job reruns only for missing outputs that are asked for
    if CFG["apply"]["enabled"]:
        out.append(hpaths.apply_summary_path(CFG))
    return out


def image_inputs(wc):
    shard = SHARDS[wc.shard]
    p = hpaths.shard_paths(CFG, shard)
    return {
        "spec": p["image_spec"],
        "structures": p["structures"],
        "manifest": p["manifest"],
        "support": [hpaths.shard_paths(CFG, s)["structures"] for s in hplan.support_shards(PLAN, shard)],
    }


def train_inputs(wc):
    return {
        "spec": hpaths.train_paths(CFG, wc.task)["spec"],
        "shards": [hpaths.shard_paths(CFG, s)["images"] for s in PLAN.task_shards(wc.task)],
    }


def apply_inputs(wc):
    tasks = CFG["apply"]["tasks"]
    return {
        "models": [hpaths.train_paths(CFG, t)["model"] for t in tasks],
        "cards": [hpaths.train_paths(CFG, t)["card"] for t in tasks],
        "ood": [hpaths.train_paths(CFG, t)["ood"] for t in tasks if TASKS[t].kind != "denoising"],
    }


def summary_inputs(wc):
    return {
        "manifests": [hpaths.shard_paths(CFG, s)["manifest"] for s in PLAN.shards],
        "images": [hpaths.shard_paths(CFG, s)["images"] for s in PLAN.shards] if IMAGING else [],
    }


if workflow.is_main_process:
    hspecs.write_plan(PLAN, only_missing=True, texts=all_spec_texts())
