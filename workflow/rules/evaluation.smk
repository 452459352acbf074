# Evaluation: score every prediction, then gather all cells into one long table.


rule evaluate:
    input:
        prediction_shards,
    output:
        "results/scores/{model}/{length}.parquet",
    log:
        "results/logs/evaluate/{model}/{length}.log",
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        task_params=TASK_PARAMS,
    script:
        "../scripts/evaluate.py"


rule collect_scores:
    input:
        score_tables(),
    output:
        "results/tables/scores.parquet",
    log:
        "results/logs/collect_scores.log",
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    script:
        "../scripts/collect_scores.py"


localrules:
    evaluate,
    collect_scores,
    model_config,
