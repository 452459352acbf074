# sparse-frontier: reproduce and extend "The Sparse Frontier" (Nawrot et al., 2025).
# Entry point only; the rules live in workflow/rules/, the logic in src/sparse_frontier/.

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, schema="config/schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/inference.smk"
include: "workflow/rules/evaluation.smk"


rule all:
    default_target: True
    input:
        "results/tables/scores.parquet",
