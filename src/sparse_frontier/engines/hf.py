"""The reference engine: Hugging Face ``transformers`` with the methods plugged in.

Every attention call of the model goes through ``_sparse_attention``, registered as
an attention implementation, which hands one sequence's q/k/v to the configured
method. Generation is a greedy loop of our own (not ``generate``) because the
eviction methods shrink the cache: positions are passed explicitly, so RoPE stays
right however many tokens the cache holds.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import torch

from ..attention import AttentionMethod
from .base import Generation

log = logging.getLogger(__name__)

ATTN_IMPLEMENTATION = "sparse_frontier"


@dataclass
class _SequenceState:
    """What one sequence's attention calls share: the method and the work they counted."""

    method: AttentionMethod
    prefill_computed: float = 0.0
    prefill_total: float = 0.0
    #: prefill work under each counting, for methods that report several (AttentionResult.counts)
    prefill_counts: dict[str, float] = field(default_factory=dict)
    decode_computed: float = 0.0
    decode_total: float = 0.0
    kept: float = 0.0
    cached: float = 0.0
    #: per layer: [Hkv, S] bool mask of readable cache slots (eviction with per-head budgets)
    key_masks: dict[int, torch.Tensor] = field(default_factory=dict)
    #: per layer: [Hkv, S] bool keep mask returned by an eviction method's prefill
    keeps: dict[int, torch.Tensor] = field(default_factory=dict)

    def density(self) -> float:
        phase = self.method.phase
        if phase == "prefill":
            return self.prefill_computed / self.prefill_total
        if phase == "decode":
            return self.decode_computed / self.decode_total if self.decode_total else 1.0
        if phase == "kv-compression":
            return self.kept / self.cached
        return 1.0


def _sparse_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention interface: query [1, Hq, T, D], key/value [1, Hkv, S, D]."""
    state: _SequenceState | None = kwargs.get("sparse_state")
    if state is None:
        raise RuntimeError(
            "The sparse_frontier attention needs `sparse_state`; run the model through HfEngine."
        )
    if query.shape[0] != 1:
        raise ValueError("HfEngine runs one sequence at a time (batch size 1).")
    q, k, v = query[0], key[0], value[0]
    head_dim = q.shape[-1]
    if scaling is not None and not math.isclose(scaling, head_dim**-0.5):
        # Methods scale by 1/sqrt(D); fold a model's own scale (e.g. Gemma's) into q.
        q = q * (scaling * math.sqrt(head_dim))
    layer = module.layer_idx
    method = state.method
    if q.shape[1] > 1:
        if k.shape[1] != q.shape[1]:
            raise ValueError("Prefill must start from an empty cache (no prefix caching, no chunking).")
        result = method.prefill(q, k, v)
        state.prefill_computed += result.computed
        state.prefill_total += result.total
        for counting, work in result.counts.items():
            state.prefill_counts[counting] = state.prefill_counts.get(counting, 0.0) + work
        if result.keep is not None:
            state.keeps[layer] = result.keep
    else:
        key_mask = state.key_masks.get(layer)
        if key_mask is not None and key_mask.shape[1] < k.shape[1]:
            grown = key_mask.new_ones(key_mask.shape[0], k.shape[1] - key_mask.shape[1])
            key_mask = torch.cat([key_mask, grown], dim=1)
            state.key_masks[layer] = key_mask
        result = method.decode(q, k, v, key_mask)
        state.decode_computed += result.computed
        state.decode_total += result.total
    return result.out.transpose(0, 1).unsqueeze(0), None


def _register_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_IMPLEMENTATION, _sparse_attention)


def _compact_cache(cache, state: _SequenceState) -> None:
    """Apply an eviction method's keep masks: gather kept tokens to the front of each layer.

    Heads may keep different numbers of tokens (Ada-SnapKV); the cache is then as long
    as the largest head's budget and a per-head key mask hides the padding.
    """
    for layer, keep in state.keeps.items():
        cache_layer = cache.layers[layer]
        keys, values = cache_layer.keys, cache_layer.values  # [1, Hkv, S, D]
        keep = keep.to(keys.device)
        counts = keep.sum(dim=1)  # [Hkv]
        state.kept += float(counts.sum())
        state.cached += float(keep.numel())
        width = int(counts.max())
        # Stable sort puts kept slots first, in their original order.
        order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices[:, :width]
        index = order[None, :, :, None].expand(1, -1, -1, keys.shape[-1])
        cache_layer.keys = torch.gather(keys, 2, index).contiguous()
        cache_layer.values = torch.gather(values, 2, index).contiguous()
        if bool((counts != width).any()):
            state.key_masks[layer] = torch.arange(width, device=keep.device)[None, :] < counts[:, None]
    state.keeps.clear()


class HfEngine:
    """Greedy generation with ``transformers``, one prompt at a time, on CPU or one GPU."""

    name = "hf"

    def __init__(self, model_dir: str, dtype: str = "float32", device: str | None = None):
        from transformers import AutoModelForCausalLM

        from ..models import _check_source, load_tokenizer

        _check_source(str(model_dir))
        _register_attention()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = load_tokenizer(str(model_dir))
        self.model = AutoModelForCausalLM.from_pretrained(
            str(model_dir), dtype=getattr(torch, dtype), attn_implementation=ATTN_IMPLEMENTATION
        ).to(self.device)
        self.model.eval()
        self.eos_ids = self._eos_ids()

    def _eos_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id
        ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    @torch.inference_mode()
    def generate(
        self, prompts: list[list[int]], method: AttentionMethod, max_new_tokens: int
    ) -> list[Generation]:
        return [self._generate_one(prompt, method, max_new_tokens) for prompt in prompts]

    def _forward(self, ids: list[int], start: int, cache, state: _SequenceState) -> torch.Tensor:
        input_ids = torch.tensor([ids], device=self.device)
        positions = torch.arange(start, start + len(ids), device=self.device)[None]
        out = self.model(
            input_ids=input_ids,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            sparse_state=state,
            logits_to_keep=1,
        )
        return out.logits[0, -1]

    def _generate_one(self, prompt: list[int], method: AttentionMethod, max_new_tokens: int) -> Generation:
        from transformers import DynamicCache

        if not prompt:
            raise ValueError("Cannot generate from an empty prompt.")
        state = _SequenceState(method)
        cache = DynamicCache(config=self.model.config)
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)

        start = time.perf_counter()
        logits = self._forward(prompt, 0, cache, state)
        if state.keeps:
            _compact_cache(cache, state)
        sync()
        prefill_ms = (time.perf_counter() - start) * 1e3

        output: list[int] = []
        start = time.perf_counter()
        position = len(prompt)
        while True:
            token = int(logits.argmax())
            output.append(token)
            if token in self.eos_ids or len(output) >= max_new_tokens:
                break
            logits = self._forward([token], position, cache, state)
            position += 1
        sync()
        decode_ms = (time.perf_counter() - start) * 1e3

        text = self.tokenizer.decode(output, skip_special_tokens=True)
        densities = {c: work / state.prefill_total for c, work in state.prefill_counts.items()}
        return Generation(output, text, state.density(), len(prompt), prefill_ms, decode_ms, densities)
