"""Paper Figure 3: maximum compression across tasks (mean, standard deviation, minimum)."""

import pandas as pd

from sparse_frontier.figures.max_compression import max_compression_chart
from sparse_frontier.figures.save import save_all
from sparse_frontier.io import log_to_file

sm = snakemake  # noqa: F821 (injected by Snakemake)
log_to_file(sm.log[0])
save_all(max_compression_chart(pd.read_parquet(sm.input.data)), sm.output)
