"""The reference engine: exact dense, determinism, and eviction that really shrinks the cache."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from sparse_frontier.attention import METHODS, AttentionMethod, AttentionResult, get_method
from sparse_frontier.attention.base import causal_pairs, dense_attention
from sparse_frontier.engines import load_engine
from sparse_frontier.engines.hf import HfEngine

get_method("dense")  # loads every built-in method into the registry before parametrizing
BUILTIN_METHODS = sorted(name for name in METHODS if not name.startswith("_"))


@pytest.fixture(scope="module")
def engine(tiny_model_dir) -> HfEngine:
    return load_engine("hf", str(tiny_model_dir))


@pytest.fixture(scope="module")
def prompts(engine) -> list[list[int]]:
    texts = [
        "The special magic number for key abc-def-ghi is 4812. " * 40,
        "Grass is green, the sky is blue, and here we go again. " * 70,
    ]
    return [engine.tokenizer(t, add_special_tokens=False).input_ids for t in texts]


def test_dense_matches_transformers_greedy(engine, tiny_model_dir, prompts):
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), attn_implementation="eager")
    for prompt in prompts:
        expected = reference.generate(
            torch.tensor([prompt]), max_new_tokens=12, do_sample=False, min_new_tokens=12
        )[0, len(prompt) :].tolist()
        got = engine.generate([prompt], get_method("dense"), 12)[0]
        assert got.output_ids == expected
        assert got.density == 1.0 and got.n_prompt_tokens == len(prompt)
    # The tiny model's output must depend on its context, or every comparison here is vacuous.
    first = [engine.generate([p], get_method("dense"), 6)[0].output_ids for p in prompts]
    assert first[0] != first[1]


def test_generation_is_deterministic(engine, prompts):
    runs = [engine.generate(prompts, get_method("dense"), 10) for _ in range(2)]
    assert [g.output_ids for g in runs[0]] == [g.output_ids for g in runs[1]]


@pytest.mark.parametrize("name", BUILTIN_METHODS)
def test_compression_one_reproduces_dense(engine, prompts, name):
    dense = engine.generate(prompts, get_method("dense"), 10)
    same = engine.generate(prompts, get_method(name, 1.0), 10)
    assert [g.output_ids for g in same] == [g.output_ids for g in dense]
    assert all(g.density == pytest.approx(1.0) for g in same)


@dataclass
class _EvictOddHeads(AttentionMethod):
    """Test method: evicts a fixed, head-dependent token set after prefill (unequal budgets)."""

    name: ClassVar[str] = "_evict_test"
    phase: ClassVar[str] = "kv-compression"

    def evicted(self, n_kv_heads: int, length: int, device="cpu") -> torch.Tensor:
        keep = torch.ones(n_kv_heads, length, dtype=torch.bool, device=device)
        for head in range(n_kv_heads):
            keep[head, 5 : length - 20 : 2 + head] = False  # head 0 drops more than head 1
        return keep

    def prefill(self, q, k, v) -> AttentionResult:
        pairs = causal_pairs(q.shape[1], k.shape[1]) * q.shape[0]
        keep = self.evicted(k.shape[0], k.shape[1], k.device)
        return AttentionResult(dense_attention(q, k, v), pairs, pairs, keep=keep)


@dataclass
class _MaskOddHeads(_EvictOddHeads):
    """The same eviction done by masking the full cache: what compaction must reproduce."""

    name: ClassVar[str] = "_mask_test"
    phase: ClassVar[str] = "decode"
    prompt_length: int = 0

    def prefill(self, q, k, v) -> AttentionResult:
        return AttentionMethod.prefill(self, q, k, v)

    def decode(self, q, k, v, key_mask=None, memo=None) -> AttentionResult:
        mask = torch.ones(k.shape[0], k.shape[1], dtype=torch.bool, device=k.device)
        mask[:, : self.prompt_length] = self.evicted(k.shape[0], self.prompt_length, k.device)
        return AttentionResult(dense_attention(q, k, v, mask), 1, 1)


def test_eviction_compacts_the_cache_exactly(engine, prompts):
    prompt = prompts[1]
    evicting = engine.generate([prompt], _EvictOddHeads(), 12)[0]
    masked = engine.generate([prompt], _MaskOddHeads(prompt_length=len(prompt)), 12)[0]
    dense = engine.generate([prompt], get_method("dense"), 12)[0]
    assert evicting.output_ids == masked.output_ids
    assert evicting.output_ids != dense.output_ids  # the eviction really changed what was read
    keep = _EvictOddHeads().evicted(2, len(prompt))
    assert evicting.density == pytest.approx(keep.float().mean().item())


def test_eviction_really_shrinks_the_cache(engine, prompts):
    from sparse_frontier.engines.hf import _BufferLayer

    prompt = prompts[0]
    _, sequence = engine.prefill(prompt, _EvictOddHeads(), max_new_tokens=4)
    keep = _EvictOddHeads().evicted(2, len(prompt))
    widest = int(keep.sum(dim=1).max())
    for layer in sequence.cache.layers:
        assert isinstance(layer, _BufferLayer)
        assert layer.keys.shape[2] == widest < len(prompt)
    # Decoding appends after the kept tokens, in place: the cache grows by one per step.
    token = int(engine.step(0, sequence).argmax())
    engine.step(token, sequence)
    assert all(layer.keys.shape[2] == widest + 2 for layer in sequence.cache.layers)


def test_cache_buffers_grow_past_their_capacity(engine, prompts):
    """A sequence longer than its buffers were sized for still decodes exactly (the buffers double)."""
    prompt = prompts[0]
    logits, short = engine.prefill(prompt, get_method("dense"), max_new_tokens=0)
    _, roomy = engine.prefill(prompt, get_method("dense"), max_new_tokens=8)
    for _ in range(8):
        token = int(logits.argmax())
        logits = engine.step(token, short)
        assert torch.equal(logits, engine.step(token, roomy))
    assert short.cache.layers[0]._keys.shape[2] >= len(prompt) + 8


@pytest.mark.parametrize("name", [*BUILTIN_METHODS, "_evict_test"])
def test_decoding_together_equals_one_at_a_time(engine, prompts, name, monkeypatch):
    """A batch decodes in one forward pass per step; each prompt must get what it gets alone, with
    prompts of different lengths, per-sequence method state, and one prompt leaving the batch early."""
    method = _EvictOddHeads() if name == "_evict_test" else get_method(name, 1.0 if name == "dense" else 2.0)
    batch = [*prompts, prompts[0][:117]]
    first = engine.generate([batch[0]], method, 12)[0].output_ids
    monkeypatch.setattr(engine, "eos_ids", {first[3]})  # the first prompt stops after at most 4 tokens
    alone = [engine.generate([p], method, 12)[0] for p in batch]
    together = engine.generate(batch, method, 12)
    assert [g.output_ids for g in together] == [g.output_ids for g in alone]
    assert [g.density for g in together] == pytest.approx([g.density for g in alone])
    assert [g.n_prompt_tokens for g in together] == [len(p) for p in batch]
    assert len(together[0].output_ids) <= 4 < max(len(g.output_ids) for g in together)


def test_a_batch_step_matches_each_sequence_alone(engine, prompts):
    """The logits of one forward pass over several sequences equal each sequence's own step."""
    dense = get_method("dense")
    pairs = [engine.prefill(p, dense, 4) for p in (prompts[0], prompts[1][:300])]
    alone = torch.stack([engine.step(int(logits.argmax()), seq) for logits, seq in pairs])
    pairs = [engine.prefill(p, dense, 4) for p in (prompts[0], prompts[1][:300])]
    tokens = [[int(logits.argmax())] for logits, _ in pairs]
    with torch.inference_mode():
        together = engine._forward(tokens, [seq for _, seq in pairs])
    assert torch.allclose(together, alone, atol=1e-5, rtol=1e-5)


def test_missing_model_path_is_one_clear_sentence(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_engine("hf", str(tmp_path / "no-such-model"))
    with pytest.raises(ValueError, match="Unknown engine 'tgi'"):
        load_engine("tgi", str(tmp_path))


def test_rope_scaling_reaches_the_loaded_model(tiny_model_dir, prompts):
    import math

    from sparse_frontier.context import rope_overrides
    from sparse_frontier.models import load_model_config

    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    overrides = rope_overrides(load_model_config(str(tiny_model_dir)), yarn, 65536)
    scaled = load_engine("hf", str(tiny_model_dir), hf_overrides=overrides)
    plain = load_engine("hf", str(tiny_model_dir))
    config = scaled.model.config
    assert config.rope_parameters["rope_type"] == "yarn" and config.rope_parameters["factor"] == 4.0
    assert config.rope_parameters["rope_theta"] == plain.model.config.rope_parameters["rope_theta"]
    assert config.max_position_embeddings == 131072
    # the rotary embedding the layers use is YaRN's: stretched low frequencies, scaled attention
    rotary, reference = scaled.model.model.rotary_emb, plain.model.model.rotary_emb
    assert rotary.attention_scaling == pytest.approx(0.1 * math.log(4.0) + 1.0)
    assert reference.attention_scaling == 1.0
    assert rotary.inv_freq[-1] < reference.inv_freq[-1]
    assert torch.equal(rotary.inv_freq[0], reference.inv_freq[0])  # high frequencies unchanged
    out = scaled.generate(prompts[:1], get_method("dense"), 4)[0]
    assert len(out.output_ids) == 4


def test_forced_agreement_compares_step_by_step(engine, prompts):
    dense = engine.generate([prompts[0]], get_method("dense"), 8)[0].output_ids
    assert engine.forced_agreement(prompts[0], get_method("dense"), dense) == [True] * len(dense)
    # Forced on another prompt's continuation, the greedy tokens differ somewhere.
    other = engine.generate([prompts[1]], get_method("dense"), 8)[0].output_ids
    assert not all(engine.forced_agreement(prompts[0], get_method("dense"), other))
