# Inference: one job per (model, length) loads the model once and runs every cell it owns
# (dense + methods x compression ratios x tasks).


include: "resources.smk"


rule inference:
    input:
        data=inference_data,
        model=inference_model_input,
    output:
        "results/predictions/{model}/{length}.parquet",
    log:
        "results/logs/inference/{model}/{length}.log",
    benchmark:
        "results/benchmarks/inference/{model}/{length}.tsv"
    conda:
        "../../envs/inference.yaml"
    resources:
        gpu=inference_gpus,
        mem_mb=inference_mem_mb,
        runtime=inference_runtime,
    params:
        path=model_path_param,
        engine=config["engine"],
        methods=config["methods"],
        settings=config["inference"],
    script:
        "../scripts/inference.py"
