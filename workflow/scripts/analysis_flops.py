"""Appendix D: FLOPS of every studied cell, and FLOPS against length per model (Figure 12 data)."""

import pandas as pd

from sparse_frontier.analysis.flops import ModelShape
from sparse_frontier.analysis.run import flops_step, write_step
from sparse_frontier.io import log_to_file

sm = snakemake  # noqa: F821 (injected by Snakemake)
log_to_file(sm.log[0])
shapes = {
    model: ModelShape.from_json(path) for model, path in zip(sm.params.models, sm.input.configs, strict=True)
}
write_step(flops_step(pd.read_parquet(sm.input.cells), shapes, convention=sm.params.convention), sm.output)
