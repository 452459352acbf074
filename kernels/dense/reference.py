"""Exact dense causal GQA attention in float32: the definition every method is measured against."""

from __future__ import annotations

import math

import torch


def dense_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """q [Hq, T, D], k/v [Hkv, S, D] -> [Hq, T, D] in q's dtype; queries are the last T of S keys.

    key_mask: optional [Hkv, S] bool; False hides a key from every query of that head (a query that
    sees no key gets zeros). Materialises the [Hq, T, S] float32 scores: for the CPU and for tests.
    """
    hq, t, d = q.shape
    hkv, s, _ = k.shape
    group = hq // hkv
    kf = k.float().repeat_interleave(group, dim=0)
    vf = v.float().repeat_interleave(group, dim=0)
    scores = torch.einsum("htd,hsd->hts", q.float(), kf) / math.sqrt(d)
    rows = torch.arange(t, device=q.device)[:, None] + (s - t)
    cols = torch.arange(s, device=q.device)[None, :]
    mask = (cols <= rows)[None]
    if key_mask is not None:
        mask = mask & key_mask.repeat_interleave(group, dim=0)[:, None, :]
    scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return torch.einsum("hts,hsd->htd", probs, vf).to(q.dtype)
