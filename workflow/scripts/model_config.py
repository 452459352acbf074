"""Record a model's Hugging Face config.json for the FLOPS model."""

import json

from sparse_frontier.io import log_to_file, write_text
from sparse_frontier.models import load_model_config

log_to_file(snakemake.log[0])  # noqa: F821 (snakemake is injected)
config = load_model_config(snakemake.params.path)  # noqa: F821
write_text(json.dumps(config, indent=2, sort_keys=True), snakemake.output[0])  # noqa: F821
