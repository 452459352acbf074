"""RQ2 (paper Section 4.2): the maximum compression a one-tailed Welch t-test cannot tell from dense."""

import logging

from sparse_frontier.analysis.significance import dense_comparison, max_compression, max_compression_summary
from sparse_frontier.analysis.tables import read_scores, write_table
from sparse_frontier.io import log_to_file

sm = snakemake  # noqa: F821 (injected by Snakemake)
log_to_file(sm.log[0])
alpha, min_score = sm.params.alpha, sm.params.min_score
comparison = dense_comparison(read_scores(sm.input.scores), alpha=alpha, min_score=min_score)
table = max_compression(comparison, alpha=alpha)
for note, n in table.loc[table["note"] != "", "note"].value_counts().items():
    logging.warning("%d comparisons: %s", n, note)
write_table(comparison, sm.output.levels)
caption = f"Maximum compression not significantly worse than dense (one-tailed Welch, alpha={alpha})."
write_table(table, sm.output.parquet, sm.output.md, sm.output.tex, caption=caption)
caption = "Maximum compression across tasks: mean, standard deviation and minimum (paper Figure 3)."
out = sm.output
write_table(
    max_compression_summary(table), out.summary_parquet, out.summary_md, out.summary_tex, caption=caption
)
