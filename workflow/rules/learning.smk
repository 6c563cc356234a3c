# Learning: one training and one evaluation job per task, on all image shards of its families.
# A classifier's or regressor's training also fits its out-of-distribution statistics (ood.npz, which
# predict uses); the denoiser has none, so its training is the same rule without that output.


rule train:
    wildcard_constraints:
        task="|".join(ood_task_names()),
    input:
        unpack(train_inputs),
    output:
        model=f"{R}/models/{{task}}/model.keras",
        card=f"{R}/models/{{task}}/card.json",
        ood=f"{R}/models/{{task}}/ood.npz",
    params:
        spec=lambda wc: spec_hash(f"{R}/plan/train/{wc.task}.json"),
        out_dir=lambda wc: f"{R}/models/{wc.task}",
    log:
        hpaths.job_log(R, "train", "{task}"),
    benchmark:
        hpaths.job_benchmark(R, "train", "{task}")
    threads: hjobs.JOBS["train"].threads
    resources:
        mem_mb=hjobs.JOBS["train"].mem_mb,
        runtime=hjobs.runtime("train"),
    conda:
        "../../envs/learn.yaml"
    shell:
        "hrtemflow train {input.spec:q} --out-dir {params.out_dir:q} --quiet > {log:q} 2>&1"


use rule train as train_denoiser with:
    wildcard_constraints:
        task="|".join(sorted(set(TASKS) - set(ood_task_names()))),
    output:
        model=f"{R}/models/{{task}}/model.keras",
        card=f"{R}/models/{{task}}/card.json",


rule evaluate:
    input:
        spec=f"{R}/plan/train/{{task}}.json",
        model=f"{R}/models/{{task}}/model.keras",
        card=f"{R}/models/{{task}}/card.json",
    output:
        metrics=f"{R}/reports/{{task}}/metrics.json",
        figures=report(directory(f"{R}/reports/{{task}}/figures"), patterns=["{name}.png"],
                       caption="../report/learning_figures.rst", category="3. Networks", subcategory="{task}"),
    params:
        spec=lambda wc: spec_hash(f"{R}/plan/train/{wc.task}.json"),
        model_dir=lambda wc: f"{R}/models/{wc.task}",
        out_dir=lambda wc: f"{R}/reports/{wc.task}",
    log:
        hpaths.job_log(R, "evaluate", "{task}"),
    benchmark:
        hpaths.job_benchmark(R, "evaluate", "{task}")
    threads: hjobs.JOBS["evaluate"].threads
    resources:
        mem_mb=hjobs.JOBS["evaluate"].mem_mb,
        runtime=hjobs.runtime("evaluate"),
    conda:
        "../../envs/learn.yaml"
    shell:
        "hrtemflow evaluate {input.spec:q} --model-dir {params.model_dir:q} "
        "--out-dir {params.out_dir:q} > {log:q} 2>&1"
