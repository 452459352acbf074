"""Scaling-law validation: predicted against true accuracy of the held-out points."""

import pandas as pd

from sparse_frontier.figures.save import save_all
from sparse_frontier.figures.scaling import scaling_predictions_chart
from sparse_frontier.io import log_to_file

sm = snakemake  # noqa: F821 (injected by Snakemake)
log_to_file(sm.log[0])
save_all(scaling_predictions_chart(pd.read_parquet(sm.input.data)), sm.output)
