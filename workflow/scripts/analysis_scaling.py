"""RQ4 (paper Section 4.4, Appendix C): scaling-law fits with three hold-out axes, Tables 3, 4 and 7."""

import os

# L-BFGS-B calls BLAS on 8x8 problems: extra BLAS threads only contend (15x slower on a busy 2-core box).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pandas as pd  # noqa: E402 (after the thread settings, which BLAS reads when it loads)

from sparse_frontier.analysis.run import scaling_step, write_step  # noqa: E402
from sparse_frontier.io import log_to_file  # noqa: E402

sm = snakemake  # noqa: F821 (injected by Snakemake)
log_to_file(sm.log[0])
p = sm.params
cells = pd.read_parquet(sm.input.cells)
write_step(scaling_step(cells, p.params_b, p.phase_methods, p.huber_delta, p.logit_clip, p.alpha), sm.output)
