"""The results of the study in one page: results/summary.md (printed at the end of a run)."""

import pandas as pd

from sparse_frontier.analysis.summary import study_summary
from sparse_frontier.io import log_to_file, write_text

sm = snakemake  # noqa: F821 (injected by Snakemake)
log_to_file(sm.log[0])
summary = study_summary(pd.read_parquet(sm.input.cells), pd.read_parquet(sm.input.max_compression))
write_text(summary, sm.output[0])
