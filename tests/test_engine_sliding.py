"""Sliding-window layers stay sliding in the hf engine: a small random Gemma-3-shaped model (local layers
with a 24-token window, one global layer) run through the project's attention equals stock transformers,
and a sparse method acts on the global layer only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from sparse_frontier.attention import get_method
from sparse_frontier.engines.hf import HfEngine

WINDOW = 24
LAYER_TYPES = ["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"]


@pytest.fixture(scope="module")
def gemma():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
        vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=WINDOW,
        layer_types=LAYER_TYPES, max_position_embeddings=1024, query_pre_attn_scalar=24,
    )
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config).eval()
    with torch.no_grad():  # random weights of a larger scale, so outputs depend on the distant context
        for p in model.parameters():
            p.mul_(4.0 if p.dim() > 1 else 1.0)
    return model


def prompt(n: int, seed: int) -> list[int]:
    return torch.randint(3, 512, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def stock(model, ids: list[int], new: int, implementation: str) -> tuple[torch.Tensor, list[int]]:
    """transformers' own attention: prefill logits of the last prompt token and greedy tokens."""
    model.set_attn_implementation(implementation)
    inputs = torch.tensor([ids], device=model.device)
    with torch.no_grad():
        logits = model(inputs).logits[0, -1]
        out = model.generate(inputs, max_new_tokens=new, min_new_tokens=new, do_sample=False)
    return logits, out[0, len(ids):].tolist()


@pytest.mark.parametrize("length", [20, 150])
def test_dense_equals_stock_transformers_on_a_gemma3_shaped_model(gemma, length):
    ids = prompt(length, seed=length)
    expected_logits, expected = stock(gemma, ids, 12, "eager")
    engine = HfEngine.from_model(gemma)
    logits, _ = engine.prefill(ids, get_method("dense"), 12)
    assert torch.allclose(logits, expected_logits, atol=1e-4, rtol=1e-4)
    assert engine.generate([ids], get_method("dense"), 12)[0].output_ids == expected
    if length > 2 * WINDOW:
        # Without the window the model computes something else: the comparison above has teeth.
        gemma.config.layer_types = ["full_attention"] * 4
        try:
            full_logits, _ = stock(gemma, ids, 1, "eager")
        finally:
            gemma.config.layer_types = list(LAYER_TYPES)
        assert not torch.allclose(full_logits, expected_logits, atol=1e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_dense_equals_stock_transformers_on_the_gpu(gemma):
    """The engine's CUDA path (fused dense, the sliding window through SDPA on CUDA, its cache) against
    stock transformers on the same GPU and on the CPU, float32, 100 windows deep. Positions past 2048
    need more than TF32's 11 significant bits: a GPU computing the rotary angles in TF32 fails here."""
    import copy

    ids = prompt(2500, seed=7)
    cpu_logits, _ = stock(gemma, ids, 1, "sdpa")
    model = copy.deepcopy(gemma).cuda()
    expected_logits, expected = stock(model, ids, 12, "sdpa")
    assert torch.allclose(expected_logits.cpu(), cpu_logits, atol=1e-3, rtol=1e-3)
    engine = HfEngine.from_model(model)
    logits, _ = engine.prefill(ids, get_method("dense"), 12)
    assert torch.allclose(logits, expected_logits, atol=1e-3, rtol=1e-3)
    assert engine.generate([ids], get_method("dense"), 12)[0].output_ids == expected


@pytest.mark.parametrize("name", ["snapkv", "quest", "block_sparse"])
def test_a_method_acts_on_the_global_layers_only(gemma, name):
    ids = prompt(400, seed=1)
    engine = HfEngine.from_model(gemma)
    method = get_method(name, 2.0)
    logits, sequence = engine.prefill(ids, method, 8)
    for _ in range(8):  # decode runs past the window on every layer, eviction included
        logits = engine.step(int(logits.argmax()), sequence)
    assert torch.isfinite(logits).all()
    cache = sequence.cache.layers
    for layer, kind in enumerate(LAYER_TYPES):
        held = cache[layer].keys.shape[2]
        if kind == "sliding_attention":
            assert held < WINDOW  # a local layer's cache holds its window only
        elif name == "snapkv":
            assert held == method.token_capacity(400) + 8  # the global layer evicted to its budget
        else:
            assert held == 400 + 8
    # The density is the global layer's: compression near the target, not diluted by the local layers.
    assert 1 / sequence.state.density() == pytest.approx(2.0, rel=0.1)


@pytest.mark.parametrize("name", ["dense", "snapkv"])
def test_decoding_together_keeps_each_window(gemma, name):
    """Sequences shorter and longer than the window decoded in one batch: each gets what it gets alone."""
    engine = HfEngine.from_model(gemma)
    method = get_method(name, 1.0 if name == "dense" else 2.0)
    batch = [prompt(20, seed=2), prompt(150, seed=3), prompt(400, seed=4)]
    alone = [engine.generate([p], method, 10)[0].output_ids for p in batch]
    assert [g.output_ids for g in engine.generate(batch, method, 10)] == alone


def test_attention_soft_capping_is_refused_with_a_sentence():
    from types import SimpleNamespace

    from sparse_frontier.engines.hf import _Batch, _Sequence, _SequenceState, _sparse_attention

    q = torch.zeros(1, 2, 3, 8)
    batch = _Batch([_Sequence(None, _SequenceState(get_method("dense")), 0)])
    with pytest.raises(NotImplementedError, match="soft-caps its attention logits"):
        _sparse_attention(SimpleNamespace(layer_idx=0), q, [q], [q], None, softcap=50.0, sparse_batch=batch)


GEMMA3 = os.environ.get("SPARSE_FRONTIER_GEMMA3", "")


@pytest.mark.slow
@pytest.mark.skipif(not (GEMMA3 and (Path(GEMMA3) / "config.json").exists()),
                    reason="set SPARSE_FRONTIER_GEMMA3 to a Gemma 3 270M Hugging Face folder")
def test_dense_equals_stock_transformers_on_gemma3_270m():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(GEMMA3)
    text = "The grass is green. The sky is blue. " * 100 + "The special magic number is 7261. " + (
        "Here we go. " * 20) + "What is the special magic number? The special magic number is"
    ids = [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > 2 * 512  # past the local layers' window
    model = AutoModelForCausalLM.from_pretrained(GEMMA3, dtype=torch.float32).eval()
    expected_logits, expected = stock(model, ids, 8, "eager")
    engine = HfEngine.from_model(model, tok)
    logits, _ = engine.prefill(ids, get_method("dense"), 8)
    assert torch.allclose(logits, expected_logits, atol=1e-3, rtol=1e-4)
    assert engine.generate([ids], get_method("dense"), 8)[0].output_ids == expected
