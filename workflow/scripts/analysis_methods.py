"""RQ3 (paper Section 4.3): the best method per compression, per task category and per task."""

import pandas as pd

from sparse_frontier.analysis.run import methods_step, write_step
from sparse_frontier.io import log_to_file

sm = snakemake  # noqa: F821 (injected by Snakemake)
log_to_file(sm.log[0])
write_step(methods_step(pd.read_parquet(sm.input.cells)), sm.output)
