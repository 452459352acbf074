"""The report's page of predictions: a sample per task next to prompt tail, gold and extracted answer."""

import pandas as pd

from sparse_frontier.io import log_to_file, write_text
from sparse_frontier.report_pages import predictions_page, task_data_by_tokenizer

sm = snakemake  # noqa: F821 (injected by Snakemake)
log_to_file(sm.log[0])
page = predictions_page(
    pd.read_parquet(sm.input.scores),
    task_data_by_tokenizer(list(sm.input.data)),
    sm.params.model_tokenizers,
    sm.params.per_task,
)
write_text(page, sm.output[0])
