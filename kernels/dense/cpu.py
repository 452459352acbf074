"""Dense causal GQA attention on the CPU through torch's fused scaled_dot_product_attention.

On the CPU, SDPA's flash kernel works in blocks (no [Hq, T, S] score matrix), shares kv heads
across their query heads (``enable_gqa``, no repeated copy of the cache) and reads half-precision
inputs in their own dtype with float32 accumulation: about 10x faster than the float32 reference
for a prefill and 30x for a decode step (docs/benchmarks-engine-cpu.md). It computes the function
of ``dense_attention_reference`` to float rounding (tests/kernels/test_dense_attention.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dense_attention_cpu(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """q [Hq, T, D], k/v [Hkv, S, D] -> [Hq, T, D] in q's dtype; queries are the last T of S keys.

    key_mask: optional [Hkv, S] bool; False hides a key from every query of that head (a query that
    sees no key gets zeros, as in the reference).
    """
    hq, t, _ = q.shape
    hkv, s, _ = k.shape
    group = hq // hkv
    mask = None
    if t != s and t > 1:  # a chunk: queries are the last T positions (lower-right causal)
        rows = torch.arange(s - t, s, device=q.device)[:, None]
        mask = (torch.arange(s, device=q.device)[None, :] <= rows)[None]  # [1, T, S]
    if key_mask is not None:
        visible = key_mask.repeat_interleave(group, 0)[:, None, :]  # [Hq, 1, S]: O(S), not O(T * S)
        mask = visible if mask is None else mask & visible
    out = F.scaled_dot_product_attention(
        q[None], k[None], v[None], attn_mask=None if mask is None else mask[None],
        is_causal=t == s and t > 1, enable_gqa=group > 1,
    )[0]
    if key_mask is not None:
        blind = ~key_mask.any(1)  # [Hkv] heads that see no key: zeros, whatever the backend returns
        if bool(blind.any()):
            out = out.masked_fill(blind.repeat_interleave(group)[:, None, None], 0.0)
    return out


def decode_attention_cpu(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, visible: torch.Tensor
) -> torch.Tensor:
    """One query per head over the keys each head may read: q [Hq, 1, D], k/v [Hkv, S, D], visible
    [Hq, S] bool (e.g. Quest's selected pages) -> [Hq, 1, D]; a head that reads nothing gets zeros.
    The mask is O(Hq * S) booleans, the cache is read in place."""
    group = q.shape[0] // k.shape[0]
    out = F.scaled_dot_product_attention(
        q[None], k[None], v[None], attn_mask=visible[None, :, None, :], enable_gqa=group > 1
    )[0]
    blind = ~visible.any(1)
    return out.masked_fill(blind[:, None, None], 0.0) if bool(blind.any()) else out
