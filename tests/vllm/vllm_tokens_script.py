"""Greedy tokens from a separate vLLM process, for tests that need a second ``LLM``.

    python vllm_tokens_script.py stock MODEL_DIR PROMPTS_JSON OUT_JSON
        stock vLLM (run with VLLM_PLUGINS set so the sparse_frontier plugin is not loaded)
    python vllm_tokens_script.py tp2 MODEL_DIR PROMPTS_JSON OUT_JSON
        VllmEngine with tensor_parallel_size=2, several methods

OUT_JSON: {"stock": tokens} or {"heads": [...], "<method>@<ratio>": tokens, ...}.
"""

from __future__ import annotations

import json
import sys

METHODS = [("block_sparse", 5.0), ("dense", 1.0), ("snapkv", 5.0), ("quest", 5.0),
           ("vertical_slash", 5.0), ("flexprefill", 5.0), ("ada_snapkv", 5.0)]


def main(mode: str, model_dir: str, prompts_path: str, out_path: str, max_new_tokens: int = 12) -> None:
    with open(prompts_path) as f:
        prompts = json.load(f)
    result: dict = {}
    if mode == "stock":
        from vllm import LLM, SamplingParams
        from vllm.inputs import TokensPrompt

        llm = LLM(model=model_dir, dtype="float32", max_model_len=4096, max_num_batched_tokens=4096,
                  enforce_eager=True, enable_prefix_caching=False, enable_chunked_prefill=False, seed=0)
        outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts],
                            SamplingParams(temperature=0.0, max_tokens=max_new_tokens), use_tqdm=False)
        result["stock"] = [list(o.outputs[0].token_ids) for o in outs]
        result["backend"] = llm.collective_rpc(_backend_name)
    else:
        from sparse_frontier.attention import get_method
        from sparse_frontier.engines.vllm import VllmEngine

        # The first method arrives through additional_config, not by RPC.
        engine = VllmEngine(model_dir, tensor_parallel_size=2, dtype="float32", max_model_len=4096,
                            method=get_method(*METHODS[0]))
        result["heads"] = engine.local_heads()
        for name, ratio in METHODS:
            gens = engine.generate(prompts, get_method(name, ratio), max_new_tokens)
            result.setdefault("switches_after", []).append(engine.switches)
            result[f"{name}@{ratio}"] = [g.output_ids for g in gens]
            result[f"{name}@{ratio}:density"] = [g.density for g in gens]
        engine.close()
    with open(out_path, "w") as f:
        json.dump(result, f)


def _backend_name(worker) -> str:
    from vllm.config import get_layers_from_vllm_config
    from vllm.model_executor.layers.attention import Attention

    layers = get_layers_from_vllm_config(worker.vllm_config, Attention)
    return type(next(iter(layers.values())).impl).__name__


if __name__ == "__main__":
    main(*sys.argv[1:5])
