"""Build the tiny random-weight Qwen2 model and its offline tokenizer."""

from sparse_frontier.io import log_to_file
from sparse_frontier.models import build_tiny_model

log_to_file(snakemake.log[0])  # noqa: F821 (snakemake is injected)
build_tiny_model(snakemake.output[0], **snakemake.params.build)  # noqa: F821
