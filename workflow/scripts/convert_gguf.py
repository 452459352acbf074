"""Dequantise a fetched GGUF into a Hugging Face model folder, with its conversion record."""

import json
from pathlib import Path

from sparse_frontier.gguf_models import convert_gguf
from sparse_frontier.io import log_to_file

sm = snakemake  # noqa: F821 (snakemake is injected)
log_to_file(sm.log[0])
source = json.loads(Path(sm.input.record).read_text())
convert_gguf(sm.input.gguf, sm.output[0], dtype=sm.params.gguf["dtype"], source=source)
