# Models: the tiny offline model is built; every model's config.json is recorded for FLOPS.


rule build_tiny_model:
    output:
        directory("results/models/{model}"),
    log:
        "results/logs/build_tiny_model/{model}.log",
    conda:
        "../../envs/inference.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        build=model_build_params,
    script:
        "../scripts/build_tiny_model.py"


rule model_config:
    input:
        inference_model_input,
    output:
        "results/model_configs/{model}.json",
    log:
        "results/logs/model_config/{model}.log",
    conda:
        "../../envs/inference.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        path=model_path_param,
    script:
        "../scripts/model_config.py"
