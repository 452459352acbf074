# Task data: lengths are measured in each tokenizer family's own tokens.


rule task_data:
    input:
        tokenizer=task_data_tokenizer_input,
        source=qa_source_input,
    output:
        "results/data/{tokenizer}/{task}/{length}.parquet",
    log:
        "results/logs/task_data/{tokenizer}/{task}/{length}.log",
    conda:
        "../../envs/data.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        tokenizer=tokenizer_path_param,
        samples=config["samples"],
        seed=config["seed"],
    script:
        "../scripts/task_data.py"
