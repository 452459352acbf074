"""PyTorch definition of vertical-slash attention (paper Appendix A.1.2, after MInference).

Query head h at position p (queries are the last T of S positions) attends to
  * every vertical key position v in ``vertical_idx[h]`` with v <= p, and
  * every key p - o for each slash offset o in ``slash_idx[h]`` with o <= p,
each key once even when a vertical and a slash (or repeated entries) cover it.
Negative entries in either index are padding (so heads may keep different budgets).
"""

from __future__ import annotations

import torch

from ..common.reference import causal_row_mask, masked_attention


def index_to_bitmap(idx: torch.Tensor, size: int) -> torch.Tensor:
    """[H, N] int64 (negative = padding) -> [H, size] bool with True at every listed position."""
    bitmap = torch.zeros(idx.shape[0], size + 1, dtype=torch.bool, device=idx.device)
    # Padding goes to the spare last column, then is cut off.
    bitmap.scatter_(1, torch.where(idx < 0, size, idx), True)
    return bitmap[:, :size]


def vertical_slash_row_mask(
    rows: torch.Tensor, t: int, s: int, vertical: torch.Tensor, slash: torch.Tensor
) -> torch.Tensor:
    """[len(rows), S] bool for one head; vertical: [S] bool by key, slash: [S] bool by offset."""
    positions = rows + (s - t)
    offsets = positions[:, None] - torch.arange(s, device=rows.device)[None, :]  # [rows, S]
    on_slash = slash[offsets.clamp(min=0)]
    return (vertical[None, :] | on_slash) & causal_row_mask(rows, t, s)


def vertical_slash_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, vertical_idx: torch.Tensor, slash_idx: torch.Tensor
) -> torch.Tensor:
    """q [Hq, T, D]; k, v [Hkv, S, D]; vertical_idx [Hq, NV], slash_idx [Hq, NS] int64 -> [Hq, T, D]."""
    t, s = q.shape[1], k.shape[1]
    vertical = index_to_bitmap(vertical_idx, s)
    slash = index_to_bitmap(slash_idx, s)

    def row_mask(h: int, rows: torch.Tensor) -> torch.Tensor:
        return vertical_slash_row_mask(rows, t, s, vertical[h], slash[h])

    return masked_attention(q, k, v, row_mask)


def vertical_slash_pairs(vertical_idx: torch.Tensor, slash_idx: torch.Tensor, t: int, s: int) -> int:
    """Query-key pairs vertical-slash attention computes, all heads, each pair counted once.

    Closed form: verticals + slashes - pairs on both, where a vertical at key v and a slash at
    offset o meet at query v + o when that query exists (s - t <= v + o < s).
    """
    vertical = index_to_bitmap(vertical_idx, s).long()  # [H, S] by key
    slash = index_to_bitmap(slash_idx, s).long()  # [H, S] by offset
    positions = torch.arange(s, device=vertical_idx.device)
    first = s - t  # first query position
    # A vertical at v is seen by queries max(v, first) .. s-1.
    v_pairs = (vertical * (s - torch.clamp(positions, min=first))).sum()
    # A slash at o is seen by queries max(o, first) .. s-1.
    s_pairs = (slash * (s - torch.clamp(positions, min=first))).clamp(min=0).sum()
    # Overlap: count (v, o) with first <= v + o <= s - 1, per head, via a convolution-free sum.
    overlap = 0
    for h in range(vertical.shape[0]):
        vs = torch.nonzero(vertical[h]).flatten()
        os_ = torch.nonzero(slash[h]).flatten()
        if len(vs) == 0 or len(os_) == 0:
            continue
        sums = vs[:, None] + os_[None, :]
        overlap += int(((sums >= first) & (sums <= s - 1)).sum())
    return int(v_pairs + s_pairs) - overlap
