"""Run every cell of one length that the inference cache lacks (one model load, none if it lacks
nothing), then write this job's predictions, assembled from the cache."""

from sparse_frontier.engines import load_engine
from sparse_frontier.io import log_to_file, write_parquet
from sparse_frontier.pipeline import cells_from_config, prepare_inference, run_inference

sm = snakemake  # noqa: F821 (snakemake is injected)
log_to_file(sm.log[0])
job = prepare_inference(
    engine=sm.params.engine,
    model=sm.wildcards.model,
    model_path=sm.params.path,
    data_paths=list(sm.input.data),
    dtype=sm.params.dtype,
    gpus=int(sm.resources.gpu),
    cache_root=sm.config["inference"]["cache"],
    rope_scaling=sm.params.rope_scaling,
    max_new_tokens=sm.params.max_new_tokens,
)
predictions = run_inference(
    lambda: load_engine(sm.params.engine, sm.params.path, **job.settings),
    job.data,
    cells_from_config(sm.params.methods),
    model=sm.wildcards.model,
    batch_size=sm.config["inference"]["batch_size"],
    shard=int(sm.wildcards.shard),
    n_shards=sm.params.n_shards,
    max_new_tokens=sm.params.max_new_tokens,
    cache=job.cache,
)
write_parquet(predictions, sm.output[0])
