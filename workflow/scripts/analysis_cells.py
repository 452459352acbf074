"""One pass over the long score table: per-cell statistics that every later analysis step reads."""

from sparse_frontier.analysis.run import cells_step, write_step
from sparse_frontier.analysis.tables import read_scores
from sparse_frontier.io import log_to_file

sm = snakemake  # noqa: F821 (injected by Snakemake)
log_to_file(sm.log[0])
write_step(cells_step(read_scores(sm.input.scores)), sm.output)
