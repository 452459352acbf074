"""Paper Figure 2: average score across tasks against FLOPS, Pareto frontier marked."""

import pandas as pd

from sparse_frontier.figures.isoflops import isoflops_chart
from sparse_frontier.figures.save import save_all
from sparse_frontier.io import log_to_file

sm = snakemake  # noqa: F821 (injected by Snakemake)
log_to_file(sm.log[0])
save_all(isoflops_chart(pd.read_parquet(sm.input.data)), sm.output)
