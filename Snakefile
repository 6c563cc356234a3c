# hrtemflow: atomistic simulation -> HRTEM images -> trained networks -> real micrographs.
#
#   snakemake --cores 2                                   # the demo (config/config.yaml)
#   snakemake --profile slurm --configfile config/campaign-seed.yaml
#
# The config is validated once, here, before any job; the plan (one spec per shard) is written at
# parse time and a spec file changes only when its content does, so Snakemake reruns exactly the
# shards that a config change touches. Rules are thin calls into the `hrtemflow` package.

from snakemake.utils import min_version

min_version("9.0")


include: "workflow/rules/common.smk"
include: "workflow/rules/atomistic.smk"
include: "workflow/rules/imaging.smk"
include: "workflow/rules/learning.smk"
include: "workflow/rules/apply.smk"
include: "workflow/rules/report.smk"


onstart:
    # changed specs are rewritten only when a real run starts (never by a dry run): see common.smk
    hspecs.write_plan(PLAN, texts=all_spec_texts())


rule all:
    input:
        final_targets(),
    default_target: True
