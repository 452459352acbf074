"""Sliding-window causal attention through SDPA, one block of queries at a time: O(T * window) work and
memory, never O(T * S).

Query block [a, b) reads only keys [a - window + 1, b), under a [b - a, window - 1 + b - a] band mask,
so a 32K-token prompt with a 512-token window costs what 64 short attentions cost. Any SDPA backend
that takes a boolean mask will do (CPU flash, CUDA memory-efficient); the mask is per block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sliding_window_attention_sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, block: int | None = None
) -> torch.Tensor:
    """q [Hq, T, D], k/v [Hkv, S, D] -> [Hq, T, D]: query position p sees keys p - window < j <= p.

    block: queries per SDPA call (default: the window, so each call reads at most 2 windows of keys).
    """
    hq, t, _ = q.shape
    hkv, s, _ = k.shape
    group = hq // hkv
    block = block or window
    out = torch.empty_like(q)
    for a in range(0, t, block):
        b = min(t, a + block)
        first = max(0, s - t + a - window + 1)  # oldest key the block's first query sees
        last = s - t + b  # one past the newest key its last query sees
        rows = torch.arange(s - t + a, s - t + b, device=q.device)[:, None]
        cols = torch.arange(first, last, device=q.device)[None, :]
        mask = (cols <= rows) & (cols > rows - window)  # [b - a, last - first]
        kb, vb = k[:, first:last], v[:, first:last]
        if q.is_cuda and group > 1:  # the CUDA backends that take a mask take no GQA: share by expansion
            kb, vb = kb.repeat_interleave(group, 0), vb.repeat_interleave(group, 0)
        out[:, a:b] = F.scaled_dot_product_attention(
            q[None, :, a:b], kb[None], vb[None], attn_mask=mask[None, None],
            enable_gqa=kb.shape[0] != hq,
        )[0]
    return out
