# Campaign summary: samples, failures and rates per family and stage.


rule summary:
    input:
        unpack(summary_inputs),
    output:
        f"{R}/summary/campaign.json",
    log:
        f"{R}/logs/summary.log",
    resources:
        runtime=hjobs.REPORT_RUNTIME_MIN,
    conda:
        "../../envs/md.yaml"
    shell:
        "hrtemflow summary --manifests {input.manifests:q} --images {input.images:q} --out {output:q} > {log:q} 2>&1"
