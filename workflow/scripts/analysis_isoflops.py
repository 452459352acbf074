"""RQ1 (paper Section 4.1): isoFLOPS points and their Pareto frontier per length and phase."""

import pandas as pd

from sparse_frontier.analysis.run import isoflops_step, write_step
from sparse_frontier.io import log_to_file

sm = snakemake  # noqa: F821 (injected by Snakemake)
log_to_file(sm.log[0])
result = isoflops_step(
    pd.read_parquet(sm.input.cells), pd.read_parquet(sm.input.flops), sm.params.phase_methods
)
write_step(result, sm.output)
