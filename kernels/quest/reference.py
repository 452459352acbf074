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


def quest_page_scores_reference(q: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Quest's upper bound of q.k over each page (Tang et al., 2024), as in paper A.1.6.

    q [Hq, 1, D]; low, high [Hkv, P, D] per-page channel-wise min / max of the keys (a page with no
    visible key has low = +inf) -> [Hq, P] float32 scores, -inf for empty pages.
    sum_d max(q_d * low_d, q_d * high_d) = relu(q) . high + min(q, 0) . low, since low <= high.
    """
    hq, _, d = q.shape
    hkv, p, _ = low.shape
    qg = q.float().reshape(hkv, hq // hkv, d)
    empty = torch.isinf(low).all(-1)  # [Hkv, P]
    low = low.float().masked_fill(empty[..., None], 0.0)
    high = high.float().masked_fill(empty[..., None], 0.0)
    scores = torch.bmm(qg.clamp(min=0), high.transpose(1, 2)) + torch.bmm(
        qg.clamp(max=0), low.transpose(1, 2)
    )
    return scores.masked_fill(empty[:, None, :], float("-inf")).reshape(hq, p)
