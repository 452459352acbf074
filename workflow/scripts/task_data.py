"""Generate one task's samples at one length, measured in the tokenizer family's tokens."""

from sparse_frontier.io import log_to_file, write_parquet
from sparse_frontier.models import load_tokenizer
from sparse_frontier.pipeline import build_task_data

sm = snakemake  # noqa: F821 (snakemake is injected)
log_to_file(sm.log[0])
tokenizer = load_tokenizer(sm.params.tokenizer)
length = int(sm.wildcards.length)
task_params = dict(sm.params.task_params)
if sm.input.source:
    task_params["source"] = sm.input.source[0]
data = build_task_data(sm.params.task, tokenizer, length, sm.params.samples, sm.params.seed, **task_params)
data["tokenizer"] = sm.wildcards.tokenizer
write_parquet(data, sm.output[0])
