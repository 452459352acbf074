"""The hf engine on a CUDA GPU at 32K tokens: nothing on the path holds an O(T * S) tensor.

A model with Qwen2.5-7B-Instruct's attention shapes (28 query / 4 KV heads, head dim 128), cut to two
layers with a small vocabulary and MLP, runs a 32K-token prompt and a few decode steps with dense
and every method. One bf16 [Hq, T, S] tensor would be 56 GiB here; the test bounds the largest
tensor any op produced to 1/32 of Hq * T * S elements (block-level selection state is 1/256 of it)
and the peak memory above the weights to 1/8 of that tensor. Skipped without a GPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from allocation_watch import LargestTensor

from sparse_frontier.attention import METHODS, get_method
from sparse_frontier.engines.hf import HfEngine
from sparse_frontier.models import build_random_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

QWEN_7B = Path(__file__).parent / "fixtures" / "models" / "qwen2.5-7b-instruct"
LENGTH = 32768
get_method("dense")  # loads every built-in method into the registry before parametrizing
BUILTIN_METHODS = sorted(name for name in METHODS if not name.startswith("_"))


@pytest.fixture(scope="module")
def engine() -> HfEngine:
    model = build_random_model(QWEN_7B, num_hidden_layers=2, vocab_size=4096, intermediate_size=2048)
    return HfEngine.from_model(model)


@pytest.mark.parametrize("name", BUILTIN_METHODS)
def test_long_prompt_holds_nothing_quadratic(engine, name):
    hq = engine.model.config.num_attention_heads
    quadratic = hq * LENGTH * LENGTH  # elements of one [Hq, T, S] tensor
    prompt = torch.randint(0, 4096, (LENGTH,), generator=torch.Generator().manual_seed(0)).tolist()
    method = get_method(name, 1.0 if name == "dense" else 5.0)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    with LargestTensor() as watch:
        logits, sequence = engine.prefill(prompt, method, max_new_tokens=4)
        for _ in range(3):
            logits = engine.step(int(logits.argmax()), sequence)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    assert watch.numel < quadratic / 32, f"{name}: {watch.op} made a tensor of {watch.numel} elements"
    assert peak < quadratic * 2 / 8, f"{name}: peak {peak / 2**30:.1f} GiB above the weights"
    assert torch.isfinite(logits).all()
    if method.phase in ("prefill", "kv-compression"):
        assert sequence.state.density() == pytest.approx(1 / 5, rel=0.05)
    if name == "snapkv":  # the cache really shrank to the budget (then grew by the decoded tokens)
        assert sequence.cache.layers[0].keys.shape[2] == round(LENGTH / 5) + 3


@pytest.mark.parametrize("name", BUILTIN_METHODS)
def test_decoding_together_matches_one_at_a_time_on_the_gpu(engine, name):
    """A batch decoded in one forward pass per step (each row through its method's GPU path: Quest's
    fused step, an evicted cache's key mask) gives each prompt the logits it gets alone."""
    method = get_method(name, 1.0 if name == "dense" else 5.0)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 4096, (n,), generator=g).tolist() for n in (4096, 3000, 5000)]
    tokens = [7, 11, 13]
    with torch.inference_mode():
        alone = torch.stack([engine.step(token, engine.prefill(p, method, 2)[1]) for p, token in
                             zip(prompts, tokens, strict=True)])
        sequences = [engine.prefill(p, method, 2)[1] for p in prompts]
        together = engine._forward([[t] for t in tokens], sequences)
    for row, (a, b) in enumerate(zip(together.float(), alone.float(), strict=True)):  # bf16 rounding apart
        assert (a - b).norm() / b.norm() < 2e-2, f"{name}: row {row}"
