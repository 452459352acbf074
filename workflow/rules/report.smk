# Pages of the Snakemake report beside the figures: the result tables, and a sample of
# predictions per task next to their prompts (`snakemake --report report.html`).


rule report_tables:
    input:
        max_compression_summary="results/tables/max_compression_summary.parquet",
        max_compression="results/tables/max_compression.parquet",
        methods_by_category="results/tables/methods_by_category.parquet",
        methods_by_task="results/tables/methods_by_task.parquet",
        scaling_fits="results/tables/scaling_fits.parquet",
        scaling_spearman="results/tables/scaling_spearman.parquet",
        scaling_mae="results/tables/scaling_mae.parquet",
    output:
        report(
            REPORT_PAGES["tables"],
            caption="../report/tables.rst",
            category="Tables",
        ),
    log:
        "results/logs/report/tables.log",
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=5,
    script:
        "../scripts/report_tables.py"


rule report_predictions:
    input:
        scores="results/tables/scores.parquet",
        data=task_data_files(),
    output:
        report(
            REPORT_PAGES["predictions"],
            caption="../report/predictions.rst",
            category="Predictions",
        ),
    log:
        "results/logs/report/predictions.log",
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=4000,
        runtime=5,
    params:
        model_tokenizers=model_tokenizers(),
        per_task=3,
    script:
        "../scripts/report_predictions.py"


localrules:
    report_tables,
    report_predictions,
