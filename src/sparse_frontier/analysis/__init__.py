"""The analysis of the score table (paper Section 4, Appendices C and D); docs/analysis.md explains it.

cells        per-cell statistics: the one pass over the long score table
significance RQ2: one-tailed Welch t-test against dense, maximum compression
curves       score-compression curves, linear interpolation onto a common grid
flops        the FLOPS model (Appendix D) from a model's config.json
frontier     RQ1: isoFLOPS points and Pareto frontier; the method analysed per phase
methods      RQ3: best method per compression, per task category and per task
scaling      RQ4: scaling laws fitted with L-BFGS on a Huber loss, hold-out metrics
run          one function per pipeline step (what the Snakemake scripts call)
tables       reading the score table, writing Parquet / Markdown / LaTeX
targets      output paths of every table and figure (used by the rule files)
synthetic    score tables drawn from a known law (tests, benchmark)
benchmark    `python -m sparse_frontier.analysis.benchmark`: the paper-sized speed test
"""
