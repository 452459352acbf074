"""Load one model once and run every cell of one length: dense and methods x ratios x tasks."""

import pandas as pd

from sparse_frontier.engines import load_engine
from sparse_frontier.io import log_to_file, write_parquet
from sparse_frontier.pipeline import cells_from_config, engine_settings, run_inference

sm = snakemake  # noqa: F821 (snakemake is injected)
log_to_file(sm.log[0])
data = pd.concat([pd.read_parquet(path) for path in sm.input.data], ignore_index=True)
settings = engine_settings(
    sm.params.engine,
    dtype=sm.params.settings["dtype"],
    length=int(sm.wildcards.length),
    tasks=sorted(data.task.unique()),
    gpus=int(sm.resources.gpu),
    model_path=sm.params.path,
    rope_scaling=sm.params.rope_scaling,
    max_new_tokens=sm.params.settings.get("max_new_tokens"),
)
engine = load_engine(sm.params.engine, sm.params.path, **settings)
cells = cells_from_config(sm.params.methods)
batch_size = sm.params.settings["batch_size"]
predictions = run_inference(
    engine,
    data,
    cells,
    model=sm.wildcards.model,
    batch_size=batch_size,
    shard=int(sm.wildcards.shard),
    n_shards=sm.params.n_shards,
    max_new_tokens=sm.params.settings.get("max_new_tokens"),
)
write_parquet(predictions, sm.output[0])
