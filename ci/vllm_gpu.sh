#!/usr/bin/env bash
# The vLLM engine on a GPU: its tests and its throughput benchmark (docs/vllm.md, "On a GPU").
#
#   bash ci/vllm_gpu.sh test                 # pytest tests/vllm_gpu
#   bash ci/vllm_gpu.sh bench LENGTH... -- [bench options]
#
# On a machine with vLLM installed this needs nothing else. On the lent H200 (no vLLM, no network),
# vLLM 0.25.0 arrives as wheels carried in two parts (../shared/notes/vllm-on-the-lent-gpu.md);
# `bash ci/vllm_gpu.sh unpack` installs them into /tmp/site, and every stage then puts /tmp/site
# on the path. A Qwen tokenizer (tokenizer.json.xz, carried with them) gives the benchmark's
# random-weight Qwen2.5-7B its real 152K vocabulary; without it the vocabulary shrinks to the
# tiny offline one (same attention shapes).
set -euo pipefail
cd "$(dirname "$0")/.."

carried=${VLLM_CARRY_DIR:-/tmp/vc}
export PYTHONPATH="/tmp/site:$PWD/src:$PWD/tests${PYTHONPATH:+:$PYTHONPATH}"
export VLLM_USE_V2_MODEL_RUNNER=0 VLLM_USE_FLASHINFER_SAMPLER=0 PYTHONUNBUFFERED=1
out=${OUT:-results/vllm-gpu}
mkdir -p "$out"

stage=${1:?usage: bash ci/vllm_gpu.sh unpack|test|bench LENGTH... [-- bench options]}
shift
case "$stage" in
  unpack)
    cat "$carried"/vllm025.tar.part* | tar -xf - -C "$carried"
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$carried"/whl/*.whl
    mkdir -p /tmp/qwen-tokenizer
    xz -dc "$carried/tokenizer.json.xz" > /tmp/qwen-tokenizer/tokenizer.json
    python3 -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__, torch.cuda.get_device_name())"
    ;;
  test)
    python3 -m pytest tests/vllm_gpu -q -rA "$@" 2>&1 | tee "$out/vllm-gpu-tests.log"
    ;;
  bench)
    lengths=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do lengths+=("$1"); shift; done
    [ "${1:-}" = "--" ] && shift
    tokenizer=()
    [ -f /tmp/qwen-tokenizer/tokenizer.json ] && tokenizer=(--tokenizer /tmp/qwen-tokenizer)
    name=$(IFS=-; echo "${lengths[*]}")
    python3 -m sparse_frontier.engines.vllm.bench --shapes tests/fixtures/models/qwen2.5-7b-instruct \
      "${tokenizer[@]}" --dtype bfloat16 --lengths "${lengths[@]}" --out "$out/vllm-bench-$name.json" "$@" \
      2>&1 | tee "$out/vllm-bench-$name.log"
    ;;
  *) echo "unknown stage '$stage'; use unpack, test or bench" >&2; exit 2 ;;
esac
