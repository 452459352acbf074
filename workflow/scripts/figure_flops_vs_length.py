"""Paper Figure 12: FLOPS against sequence length per model, dense and sparse, prefill and decode."""

import pandas as pd

from sparse_frontier.figures.flops import flops_vs_length_chart
from sparse_frontier.figures.save import save_all
from sparse_frontier.io import log_to_file

sm = snakemake  # noqa: F821 (injected by Snakemake)
log_to_file(sm.log[0])
chart = flops_vs_length_chart(pd.read_parquet(sm.input.data), pd.read_parquet(sm.input.crossover))
save_all(chart, sm.output)
