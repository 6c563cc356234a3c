# MD: one job per shard of samples; one LAMMPS instance per job.


rule md:
    input:
        spec=f"{R}/plan/md/{{group}}/{{shard}}.json",
        potential=lambda wc: POTENTIALS[SHARDS[wc.shard].family],
    output:
        structures=f"{R}/md/{{group}}/{{shard}}.extxyz",
        manifest=f"{R}/md/{{group}}/{{shard}}.manifest.json",
    params:
        spec=lambda wc: spec_hash(f"{R}/plan/md/{wc.group}/{wc.shard}.json"),
    log:
        hpaths.job_log(R, "md", "{group}/{shard}"),
    benchmark:
        hpaths.job_benchmark(R, "md", "{group}/{shard}")
    threads: hjobs.JOBS["md"].threads
    resources:
        mem_mb=hjobs.JOBS["md"].mem_mb,
        runtime=hjobs.runtime("md"),
    conda:
        "../../envs/md.yaml"
    shell:
        "hrtemflow md {input.spec:q} --structures {output.structures:q} "
        "--manifest {output.manifest:q} --threads {threads} --no-progress > {log:q} 2>&1"


rule md_figure:
    input:
        structures=lambda wc: [hpaths.shard_paths(CFG, s)["structures"] for s in family_shards(wc.family)],
        manifests=lambda wc: [hpaths.shard_paths(CFG, s)["manifest"] for s in family_shards(wc.family)],
    output:
        report(f"{R}/figures/md_{{family}}.png", caption="../report/md_figure.rst", category="1. Structures"),
    log:
        f"{R}/logs/figures/md_{{family}}.log",
    resources:
        runtime=hjobs.REPORT_RUNTIME_MIN,
    conda:
        "../../envs/md.yaml"
    shell:
        "hrtemflow md-figure --family {wildcards.family} --structures {input.structures:q} "
        "--manifests {input.manifests:q} --out {output:q} > {log:q} 2>&1"
