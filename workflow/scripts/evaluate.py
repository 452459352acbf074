"""Score every prediction of one (model, length)."""

import pandas as pd

from sparse_frontier.io import log_to_file, write_parquet
from sparse_frontier.pipeline import score_predictions

log_to_file(snakemake.log[0])  # noqa: F821 (snakemake is injected)
write_parquet(score_predictions(pd.read_parquet(snakemake.input[0])), snakemake.output[0])  # noqa: F821
