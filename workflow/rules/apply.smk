# Apply: run the trained bundles on every micrograph of apply.input_dir.


rule apply:
    input:
        unpack(apply_inputs),
    output:
        f"{R}/apply/summary.json",
    params:
        input_dir=CFG["apply"]["input_dir"] or "",
        bundles=lambda wc, input: [os.path.dirname(m) for m in input.models],
        pixel=f"--pixel-size {float(CFG['apply']['pixel_size_nm'])}" if CFG["apply"]["pixel_size_nm"] else "",
        out_dir=lambda wc, output: os.path.dirname(output[0]),
    log:
        f"{R}/logs/apply.log",
    threads: hjobs.JOBS["apply"].threads
    resources:
        mem_mb=hjobs.JOBS["apply"].mem_mb,
        runtime=hjobs.runtime("apply"),
    conda:
        "../../envs/learn.yaml"
    shell:
        "hrtemflow predict {params.input_dir:q} --bundles {params.bundles:q} {params.pixel} "
        "--out {params.out_dir:q} --quiet > {log:q} 2>&1"
