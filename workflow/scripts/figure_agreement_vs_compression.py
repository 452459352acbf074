"""Score and greedy-token agreement with dense against compression, per task and method."""

import pandas as pd

from sparse_frontier.figures.agreement import agreement_chart, agreement_data
from sparse_frontier.figures.save import save_all
from sparse_frontier.io import log_to_file

sm = snakemake  # noqa: F821 (injected by Snakemake)
log_to_file(sm.log[0])
save_all(agreement_chart(agreement_data(pd.read_parquet(sm.input.cells))), sm.output)
