# Figures: one rule per figure, so `snakemake results/figures/<name>.png` rebuilds only that one.
# Each writes PNG, SVG and a self-contained interactive HTML; the PNG is wrapped in report(...).

from functools import partial

from sparse_frontier.analysis import targets as figure_paths

# Every final output of the analysis for the current config (the lead's rule all calls it).
analysis_targets = partial(figure_paths.analysis_targets, config)

# Named outputs png, svg, html of one figure; the PNG goes into the report with its caption
# (once: the SVG and the interactive HTML are the same figure).
report_figure = lambda name: {
    **figure_paths.figure_paths(name),
    "png": report(
        figure_paths.figure_paths(name)["png"],
        caption=f"../report/{name}.rst",
        category=figure_paths.FIGURES[name],
        labels={"figure": name},
    ),
}


rule figure_flops_vs_length:
    input:
        data="results/tables/flops_by_length.parquet",
        crossover="results/tables/flops_crossover.parquet",
    output:
        **report_figure("flops_vs_length"),
    log:
        "results/logs/figures/flops_vs_length.log",
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=5,
    script:
        "../scripts/figure_flops_vs_length.py"


rule figure_isoflops:
    input:
        data="results/tables/isoflops.parquet",
    output:
        **report_figure("isoflops"),
    log:
        "results/logs/figures/isoflops.log",
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=5,
    script:
        "../scripts/figure_isoflops.py"


rule figure_max_compression:
    input:
        data="results/tables/max_compression_summary.parquet",
    output:
        **report_figure("max_compression"),
    log:
        "results/logs/figures/max_compression.log",
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=5,
    script:
        "../scripts/figure_max_compression.py"


rule figure_score_vs_compression:
    input:
        cells="results/tables/cells.parquet",
    output:
        **report_figure("score_vs_compression"),
    log:
        "results/logs/figures/score_vs_compression.log",
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=4000,
        runtime=5,
    script:
        "../scripts/figure_score_vs_compression.py"


rule figure_agreement_vs_compression:
    input:
        cells="results/tables/cells.parquet",
    output:
        **report_figure("agreement_vs_compression"),
    log:
        "results/logs/figures/agreement_vs_compression.log",
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=5,
    script:
        "../scripts/figure_agreement_vs_compression.py"


rule figure_scaling_predictions:
    input:
        data="results/tables/scaling_predictions.parquet",
    output:
        **report_figure("scaling_predictions"),
    log:
        "results/logs/figures/scaling_predictions.log",
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=5,
    script:
        "../scripts/figure_scaling_predictions.py"


localrules:
    figure_flops_vs_length,
    figure_isoflops,
    figure_max_compression,
    figure_score_vs_compression,
    figure_agreement_vs_compression,
    figure_scaling_predictions,
