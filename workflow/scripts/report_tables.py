"""The report's page of result tables (RQ2, RQ3, RQ4)."""

import pandas as pd

from sparse_frontier.io import log_to_file, write_text
from sparse_frontier.report_pages import tables_page

sm = snakemake  # noqa: F821 (injected by Snakemake)
log_to_file(sm.log[0])
write_text(tables_page({name: pd.read_parquet(path) for name, path in sm.input.items()}), sm.output[0])
