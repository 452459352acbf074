# Task data: lengths are measured in each tokenizer family's own tokens. A task's folder is its
# name, with a hash of its parameters when the config sets any to non-default values.


rule task_data:
    input:
        tokenizer=task_data_tokenizer_input,
        source=qa_source_input,
    output:
        "results/data/{tokenizer}/{task_dir}/{length}.parquet",
    log:
        "results/logs/task_data/{tokenizer}/{task_dir}/{length}.log",
    conda:
        "../../envs/data.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        tokenizer=tokenizer_path_param,
        task=task_data_task,
        task_params=task_data_params,
        samples=config["samples"],
        seed=config["seed"],
    script:
        "../scripts/task_data.py"
