# sparse-frontier: reproduce and extend "The Sparse Frontier" (Nawrot et al., 2025).
# Entry point only; the rules live in workflow/rules/, the logic in src/sparse_frontier/.

from pathlib import Path

from snakemake.utils import min_version, validate

from sparse_frontier.analysis.summary import print_summary
from sparse_frontier.preflight import check_config

min_version("9.0")


# The default study, unless --configfile names another (which then replaces it, not merges:
# a paper-grid run must not inherit the tiny model).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


# A misspelt key or bad value stops here in one sentence (with the closest valid name);
# Snakemake's validation then fills in the defaults.
check_config(config, Path(workflow.basedir) / "config/schema.yaml")
validate(config, schema="config/schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/qa_sources.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/inference.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        "results/tables/scores.parquet",
        # The intermediates too: a missing one is rebuilt, and what depends on it redone.
        prediction_files(),
        score_tables(),
        analysis_targets(),
        report_pages(),


onsuccess:
    print_summary("results/summary.md")
