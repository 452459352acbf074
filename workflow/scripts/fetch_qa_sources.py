"""Download one QA source from its public home, check it, and write its normalised Parquet."""

from pathlib import Path

from sparse_frontier.io import log_to_file
from sparse_frontier.tasks.qa_sources import build_source

sm = snakemake  # noqa: F821 (snakemake is injected)
log_to_file(sm.log[0])
build_source(sm.wildcards.dataset, Path(sm.output[0]), Path(sm.params.raw_dir))
