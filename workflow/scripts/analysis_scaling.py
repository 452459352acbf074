"""RQ4 (paper Section 4.4, Appendix C): scaling-law fits with three hold-out axes, Tables 3, 4 and 7."""

import pandas as pd

from sparse_frontier.analysis.run import scaling_step, write_step
from sparse_frontier.io import log_to_file

sm = snakemake  # noqa: F821 (injected by Snakemake)
log_to_file(sm.log[0])
p = sm.params
result = scaling_step(
    pd.read_parquet(sm.input.cells), p.params_b, p.phase_methods, p.huber_delta, p.logit_clip, p.alpha
)
write_step(result, sm.output)
