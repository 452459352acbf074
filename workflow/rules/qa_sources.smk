# QA sources (SQuAD, QuALITY, TOEFL-QA): downloaded from their public homes into resources/qa/raw/,
# checked against the published row counts, normalised to one Parquet file per dataset.
# Needs network, so it runs on the submitting machine (localrules), never on a compute node.
# The task_data rule of a qa_* task takes resources/qa/{dataset}.parquet as input (see
# sparse_frontier.tasks.qa_sources.TASK_DATASETS for the task -> dataset map).


localrules:
    qa_source,


rule qa_source:
    output:
        "resources/qa/{dataset}.parquet",
    log:
        "results/logs/qa_source/{dataset}.log",
    wildcard_constraints:
        dataset="squad|quality|toefl",
    conda:
        "../../envs/data.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        raw_dir="resources/qa/raw",
    script:
        "../scripts/fetch_qa_sources.py"
