# Figures: one rule per figure, so `snakemake results/figures/<name>.png` rebuilds only that one.
# Each writes PNG, SVG and a self-contained interactive HTML, all wrapped in report(...).

from functools import partial

from sparse_frontier.analysis import targets as figure_paths

# Every final output of the analysis for the current config (the lead's rule all calls it).
analysis_targets = partial(figure_paths.analysis_targets, config)

# Named outputs png, svg, html of one figure, each in report(...) with its caption.
report_figure = lambda name: {
    ext: report(
        path,
        caption=f"../report/{name}.rst",
        category=figure_paths.FIGURES[name],
        labels={"figure": name, "format": ext},
    )
    for ext, path in figure_paths.figure_paths(name).items()
}


rule figure_score_vs_compression:
    input:
        scores="results/tables/scores.parquet",
    output:
        **report_figure("score_vs_compression"),
    log:
        "results/logs/figures/score_vs_compression.log",
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    script:
        "../scripts/figure_score_vs_compression.py"


localrules:
    figure_score_vs_compression,
