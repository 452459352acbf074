"""Score every prediction of one (model, length) and measure its agreement with dense."""

import pandas as pd

from sparse_frontier.agreement import add_dense_agreement
from sparse_frontier.io import log_to_file, write_parquet
from sparse_frontier.pipeline import score_predictions

log_to_file(snakemake.log[0])  # noqa: F821 (snakemake is injected)
predictions = pd.concat([pd.read_parquet(p) for p in snakemake.input], ignore_index=True)  # noqa: F821
scores = add_dense_agreement(score_predictions(predictions, dict(snakemake.params.task_params)))  # noqa: F821
write_parquet(scores, snakemake.output[0])  # noqa: F821
