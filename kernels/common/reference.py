"""Exact masked attention in PyTorch: the definition every kernel family reduces to.

Each family's ``reference.py`` only says *which* query-key pairs are computed (a boolean
mask over a chunk of query rows); this module turns such a mask into attention output.
Work is chunked over heads and query rows so an 8K-token prompt never materialises more
than ``[rows_per_chunk, S]`` float32 scores at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

#: Query rows scored at once per head; 512 x 8K float32 scores = 16 MiB.
ROWS_PER_CHUNK = 512


def masked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    row_mask: Callable[[int, torch.Tensor], torch.Tensor],
    rows_per_chunk: int = ROWS_PER_CHUNK,
) -> torch.Tensor:
    """Softmax attention restricted to the pairs ``row_mask`` allows.

    q: [Hq, T, D]; k, v: [Hkv, S, D] with Hq a multiple of Hkv (query head h reads kv head
    h // (Hq // Hkv)). Queries are the last T of the S positions.
    row_mask(h, rows) -> [len(rows), S] bool: the keys query rows ``rows`` (indices into T)
    of head h may see. The caller includes causality in it.
    Returns [Hq, T, D] in q's dtype; scale 1/sqrt(D); softmax in float32; a row that may
    see no key at all gets zeros (the convention of dense_attention with a key mask).
    """
    hq, t, d = q.shape
    hkv, s, _ = k.shape
    group = hq // hkv
    scale = 1.0 / math.sqrt(d)
    out = torch.empty_like(q)
    for h in range(hq):
        kf = k[h // group].float()  # [S, D]
        vf = v[h // group].float()  # [S, D]
        for start in range(0, t, rows_per_chunk):
            rows = torch.arange(start, min(t, start + rows_per_chunk), device=q.device)
            scores = (q[h, rows].float() @ kf.T) * scale  # [rows, S]
            mask = row_mask(h, rows)
            scores = scores.masked_fill(~mask, float("-inf"))
            probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)
            out[h, rows] = (probs @ vf).to(q.dtype)
    return out


def causal_row_mask(rows: torch.Tensor, t: int, s: int) -> torch.Tensor:
    """[len(rows), S] bool: key position <= query position, queries being the last t of s."""
    positions = rows + (s - t)
    return torch.arange(s, device=rows.device)[None, :] <= positions[:, None]
