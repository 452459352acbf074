"""PyTorch definition of Quest page-sparse decode attention (paper Appendix A.1.6).

The cache of S keys is cut into pages of ``page_size`` tokens (16 in the paper); query head h
reads every key of each page with ``page_mask[h, page]`` set, and nothing else. The single query
sits at position S - 1, so causality hides nothing.
"""

from __future__ import annotations

import torch

from ..common.reference import masked_attention


def quest_decode_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    page_mask: torch.Tensor,
    page_size: int = 16,
    key_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """q [Hq, 1, D]; k, v [Hkv, S, D]; page_mask [Hq, ceil(S/page_size)] bool -> out [Hq, 1, D].

    key_mask: optional [Hkv, S] bool; False hides a cache slot (evicted or padding) from every
    query head of that kv head, even inside a selected page.
    """
    s = k.shape[1]
    group = q.shape[0] // k.shape[0]

    def row_mask(h: int, rows: torch.Tensor) -> torch.Tensor:
        keep = page_mask[h].repeat_interleave(page_size)[:s]
        if key_mask is not None:
            keep = keep & key_mask[h // group]
        return keep[None, :].expand(len(rows), s)

    return masked_attention(q, k, v, row_mask)
