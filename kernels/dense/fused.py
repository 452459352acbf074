"""Dense causal GQA attention on CUDA through fused kernels: memory O(T + S), never O(T * S).

Prefill and chunks go to PyTorch's scaled_dot_product_attention restricted to its fused backends
(cuDNN, FlashAttention, memory-efficient), so a shape no fused backend takes fails loudly instead of
falling back to the math backend, which builds the [Hq, T, S] scores. One query over a cache with
hidden slots (evicted or padding, ``key_mask``) goes to the split-K decode kernel of kernels/quest
with every page selected, which reads the cache in its own dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right

#: Prefill: fastest first on Hopper (cuDNN), then FlashAttention; the math backend is left out on purpose.
PREFILL_BACKENDS = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
#: Decode: cuDNN last, because it builds an execution plan for every new shape, and a decode step's
#: cache length is new at every token (measured on an H200: about 2 ms per layer and token).
DECODE_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]


def dense_attention_fused(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """q [Hq, T, D], k/v [Hkv, S, D] (CUDA) -> [Hq, T, D] in q's dtype: the function of
    ``dense_attention_reference`` (causal, queries the last T of S keys, scale 1/sqrt(D)).

    key_mask [Hkv, S] bool is supported for one query (decode), the only place engines use it.
    """
    hq, t, _ = q.shape
    hkv, s, _ = k.shape
    if key_mask is not None:
        if t != 1:
            raise ValueError(
                f"dense attention on CUDA takes a key_mask for one query (decode) only, got {t} queries."
            )
        from ..quest.triton_quest import quest_decode_attention_triton

        all_pages = torch.ones(hq, math.ceil(s / 16), dtype=torch.bool, device=q.device)
        return quest_decode_attention_triton(q, k, v, all_pages, 16, key_mask)
    # Whole-sequence causal (T == S) and one query (T == 1, no mask) have native fused forms; a
    # chunk (1 < T < S) needs the lower-right causal bias, whose fused paths take no GQA.
    half = q.dtype in (torch.float16, torch.bfloat16)
    if t == s or t == 1:
        if not half:  # the float32-capable (memory-efficient) backend takes no GQA: share kv by expansion
            k, v = _expand(k, hq), _expand(v, hq)
        with sdpa_kernel(PREFILL_BACKENDS if t > 1 else DECODE_BACKENDS, set_priority=True):
            out = F.scaled_dot_product_attention(q[None], k[None], v[None], is_causal=t > 1, enable_gqa=half)
        return out[0]
    with sdpa_kernel(PREFILL_BACKENDS, set_priority=True):
        out = F.scaled_dot_product_attention(
            q[None], _expand(k, hq)[None], _expand(v, hq)[None], attn_mask=causal_lower_right(t, s)
        )
    return out[0]


def _expand(x: torch.Tensor, hq: int) -> torch.Tensor:
    """[Hkv, S, D] -> [Hq, S, D], each kv head repeated for its query heads (O(S) memory)."""
    return x if x.shape[0] == hq else x.repeat_interleave(hq // x.shape[0], dim=0)
