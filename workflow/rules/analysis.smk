# Analysis: from the long score table to the paper's tables (RQ1-RQ4, Appendix D).
# Every rule reads results/tables/scores.parquet (and the model configs) and nothing upstream;
# the logic lives in src/sparse_frontier/analysis, the scripts are glue.

from sparse_frontier.analysis import targets as analysis_paths

# A key of the config's analysis: section, with the schema's default when it is absent.
analysis_setting = lambda key, default: config.get("analysis", {}).get(key, default)


rule max_compression:
    input:
        scores="results/tables/scores.parquet",
    output:
        **analysis_paths.table_paths("max_compression"),
        **{
            f"summary_{ext}": path
            for ext, path in analysis_paths.table_paths(
                "max_compression_summary"
            ).items()
        },
        levels="results/tables/dense_comparison.parquet",
    log:
        "results/logs/analysis/max_compression.log",
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        alpha=analysis_setting("alpha", 0.05),
        min_score=analysis_setting("min_score", 0.05),
    script:
        "../scripts/analysis_max_compression.py"


localrules:
    max_compression,
