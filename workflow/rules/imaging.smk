# Imaging: one job per MD shard; one multislice per view, many optics variants per exit wave.


rule image:
    input:
        unpack(image_inputs),
    output:
        directory(f"{R}/images/{{group}}/{{shard}}.zarr"),
    params:
        spec=lambda wc: spec_hash(f"{R}/plan/images/{wc.group}/{wc.shard}.json"),
    log:
        hpaths.job_log(R, "image", "{group}/{shard}"),
    benchmark:
        hpaths.job_benchmark(R, "image", "{group}/{shard}")
    threads: hjobs.JOBS["image"].threads
    resources:
        mem_mb=hjobs.JOBS["image"].mem_mb,
        runtime=hjobs.runtime("image"),
        gpu=1 if CFG["imaging"]["device"] == "gpu" else 0,
    conda:
        "../../envs/imaging.yaml"
    shell:
        "hrtemflow image {input.spec:q} --out {output:q} --threads {threads} --no-progress > {log:q} 2>&1"


rule image_figure:
    input:
        lambda wc: [hpaths.shard_paths(CFG, s)["images"] for s in family_shards(wc.family)],
    output:
        report(f"{R}/figures/images_{{family}}.png", caption="../report/image_figure.rst", category="2. Images"),
    log:
        f"{R}/logs/figures/images_{{family}}.log",
    resources:
        runtime=hjobs.REPORT_RUNTIME_MIN,
    conda:
        "../../envs/imaging.yaml"
    shell:
        "hrtemflow image-figure --family {wildcards.family} --shards {input:q} --out {output:q} > {log:q} 2>&1"
