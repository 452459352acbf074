# Analysis: from the long score table to the paper's tables (RQ1-RQ4, Appendix D).
# The long score table is read once (rule analysis_cells); every later rule reads its cell table
# (and the model configs) and nothing upstream; the logic lives in src/sparse_frontier/analysis.

from sparse_frontier.analysis import targets as analysis_paths

# A key of the config's analysis: section, with the schema's default when it is absent.
analysis_setting = lambda key, default: config.get("analysis", {}).get(key, default)


rule analysis_cells:
    input:
        scores="results/tables/scores.parquet",
    output:
        **analysis_paths.table_paths("cells"),
    log:
        "results/logs/analysis/cells.log",
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=4000,
        runtime=5,
    script:
        "../scripts/analysis_cells.py"


rule analysis_flops:
    input:
        cells="results/tables/cells.parquet",
        configs=model_configs(),
    output:
        **analysis_paths.table_paths("flops"),
        **analysis_paths.table_paths("flops_by_length"),
        **analysis_paths.table_paths("flops_crossover"),
    log:
        "results/logs/analysis/flops.log",
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        models=list(config["models"]),
        convention=analysis_setting("flops_convention", "paper"),
    script:
        "../scripts/analysis_flops.py"


rule analysis_isoflops:
    input:
        cells="results/tables/cells.parquet",
        flops="results/tables/flops.parquet",
    output:
        **analysis_paths.table_paths("isoflops"),
    log:
        "results/logs/analysis/isoflops.log",
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=4000,
        runtime=5,
    params:
        phase_methods=analysis_setting("phase_methods", {}),
    script:
        "../scripts/analysis_isoflops.py"


rule max_compression:
    input:
        cells="results/tables/cells.parquet",
    output:
        **analysis_paths.table_paths("dense_comparison"),
        **analysis_paths.table_paths("max_compression"),
        **analysis_paths.table_paths("max_compression_summary"),
    log:
        "results/logs/analysis/max_compression.log",
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=4000,
        runtime=5,
    params:
        alpha=analysis_setting("alpha", 0.05),
        min_score=analysis_setting("min_score", 0.05),
    script:
        "../scripts/analysis_max_compression.py"


rule analysis_methods:
    input:
        cells="results/tables/cells.parquet",
    output:
        **analysis_paths.table_paths("methods_by_category"),
        **analysis_paths.table_paths("methods_by_task"),
    log:
        "results/logs/analysis/methods.log",
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=4000,
        runtime=5,
    script:
        "../scripts/analysis_methods.py"


rule analysis_scaling:
    input:
        cells="results/tables/cells.parquet",
    output:
        **analysis_paths.table_paths("scaling_fits"),
        **analysis_paths.table_paths("scaling_spearman"),
        **analysis_paths.table_paths("scaling_mae"),
        **analysis_paths.table_paths("scaling_predictions"),
    log:
        "results/logs/analysis/scaling.log",
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=4000,
        runtime=5,
    params:
        params_b={name: spec["params_b"] for name, spec in config["models"].items()},
        phase_methods=analysis_setting("phase_methods", {}),
        huber_delta=analysis_setting("huber_delta", 1e-3),
        logit_clip=analysis_setting("logit_clip", 0.01),
        alpha=analysis_setting("alpha", 0.05),
    script:
        "../scripts/analysis_scaling.py"


rule summary:
    input:
        cells="results/tables/cells.parquet",
        max_compression="results/tables/max_compression_summary.parquet",
    output:
        "results/summary.md",
    log:
        "results/logs/analysis/summary.log",
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=5,
    script:
        "../scripts/summary.py"


localrules:
    analysis_cells,
    summary,
    analysis_flops,
    analysis_isoflops,
    max_compression,
    analysis_methods,
    analysis_scaling,
