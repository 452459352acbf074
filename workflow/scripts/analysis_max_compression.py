"""RQ2 (paper Section 4.2): the maximum compression a one-tailed Welch t-test cannot tell from dense."""

import pandas as pd

from sparse_frontier.analysis.run import max_compression_step, write_step
from sparse_frontier.io import log_to_file

sm = snakemake  # noqa: F821 (injected by Snakemake)
log_to_file(sm.log[0])
write_step(
    max_compression_step(pd.read_parquet(sm.input.cells), sm.params.alpha, sm.params.min_score), sm.output
)
