"""Paper Figure 4: score against compression per task, one line per method, dense as reference."""

import pandas as pd

from sparse_frontier.figures.save import save_all
from sparse_frontier.figures.score_compression import score_vs_compression_chart, score_vs_compression_data
from sparse_frontier.io import log_to_file

sm = snakemake  # noqa: F821 (injected by Snakemake)
log_to_file(sm.log[0])
save_all(score_vs_compression_chart(score_vs_compression_data(pd.read_parquet(sm.input.cells))), sm.output)
