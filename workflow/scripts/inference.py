"""Load one model once and run every cell of one length: dense and methods x ratios x tasks."""

import pandas as pd

from sparse_frontier.engines import load_engine
from sparse_frontier.io import log_to_file, write_parquet
from sparse_frontier.pipeline import cells_from_config, run_inference

sm = snakemake  # noqa: F821 (snakemake is injected)
log_to_file(sm.log[0])
data = pd.concat([pd.read_parquet(path) for path in sm.input.data], ignore_index=True)
settings = dict(sm.params.settings)
batch_size = settings.pop("batch_size")
engine = load_engine(sm.params.engine, sm.params.path, **settings)
predictions = run_inference(
    engine, data, cells_from_config(sm.params.methods), model=sm.wildcards.model, batch_size=batch_size
)
write_parquet(predictions, sm.output[0])
