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


def sliding_window_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int
) -> torch.Tensor:
    """Causal attention in which query position p sees keys p - window < j <= p (transformers'
    sliding-window layers, e.g. Gemma 3's local layers). q [Hq, T, D], k/v [Hkv, S, D], queries the
    last T of S keys -> [Hq, T, D] in q's dtype. Float32, chunked over query rows: for tests."""
    from ..common.reference import causal_row_mask, masked_attention

    t, s = q.shape[1], k.shape[1]

    def row_mask(h: int, rows: torch.Tensor) -> torch.Tensor:
        recent = torch.arange(s, device=rows.device)[None, :] > (rows + s - t - window)[:, None]
        return causal_row_mask(rows, t, s) & recent

    return masked_attention(q, k, v, row_mask)
