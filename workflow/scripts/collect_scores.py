"""Gather every cell's scores into the one long table the analysis reads."""

import pandas as pd

from sparse_frontier.io import log_to_file, write_parquet
from sparse_frontier.pipeline import collect_scores

log_to_file(snakemake.log[0])  # noqa: F821 (snakemake is injected)
write_parquet(collect_scores([pd.read_parquet(p) for p in snakemake.input]), snakemake.output[0])  # noqa: F821
