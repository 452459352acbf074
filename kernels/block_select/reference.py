"""PyTorch definition of Block-Sparse's block selection (paper Appendix A.1.1).

Given mean-pooled query blocks and key blocks, every (query head, query block) row keeps:

* the first key block (attention sinks),
* the key blocks its causal boundary crosses: ``n_full`` and ``last_block`` when
  ``n_full <= last_block`` (a row ending on a block edge crosses none),
* the ``n_sel`` best *selectable* key blocks ``1 <= j < n_full`` (fully visible ones) by the
  float32 score ``q_pool[h, i] . k_pool[h // group, j]`` (inputs upcast to float32; -0 counts
  as +0). ``n_sel`` is capped at the selectable count. Equal scores go to the lower key block.

The selection is a function of the float32 scores; a kernel that accumulates them in another
order picks the same blocks wherever the n-th and (n+1)-th best scores of a row differ by more
than that rounding (i.e. on inputs without ties).
"""

from __future__ import annotations

import torch

#: Score elements materialised at a time (float32), to keep long inputs within memory.
_CHUNK_ELEMENTS = 1 << 26


def block_select_scores(
    q_pool: torch.Tensor, k_pool: torch.Tensor, h0: int = 0, h1: int | None = None
) -> torch.Tensor:
    """Float32 scores [h1 - h0, nqb, nkb] of query heads h0..h1-1 (GQA: head h reads kv head h // group).

    q_pool [Hq, nqb, D], k_pool [Hkv, nkb, D], upcast to float32; -0 becomes +0, as in the kernel.
    """
    h1 = q_pool.shape[0] if h1 is None else h1
    group = q_pool.shape[0] // k_pool.shape[0]
    kv_of_head = torch.arange(h0, h1, device=q_pool.device) // group
    scores = torch.bmm(q_pool[h0:h1].float(), k_pool[kv_of_head].float().transpose(1, 2))
    return torch.where(scores == 0, torch.zeros_like(scores), scores)


def block_select_reference(
    q_pool: torch.Tensor,
    k_pool: torch.Tensor,
    n_sel: torch.Tensor,
    n_full: torch.Tensor,
    last_block: torch.Tensor,
) -> torch.Tensor:
    """The Block-Sparse block mask from pooled blocks.

    q_pool [Hq, nqb, D], k_pool [Hkv, nkb, D] (any float dtype); n_sel, n_full, last_block [nqb]
    integers (see the module docstring) -> block_mask [Hq, nqb, nkb] bool.
    """
    hq, nqb, _ = q_pool.shape
    nkb = k_pool.shape[1]
    device = q_pool.device
    cols = torch.arange(nkb, device=device)
    n_full, last_block = n_full.to(device).long(), last_block.to(device).long()
    selectable = (cols[None, :] >= 1) & (cols[None, :] < n_full[:, None])  # [nqb, nkb]
    n_sel = torch.minimum(n_sel.to(device).long(), selectable.sum(1))
    crossed = (n_full <= last_block)[:, None]
    on_boundary = (cols[None, :] == n_full[:, None]) | (cols[None, :] == last_block[:, None])
    forced = (cols[None, :] == 0) | (crossed & on_boundary)
    mask = torch.zeros(hq, nqb, nkb, dtype=torch.bool, device=device)
    heads_per_chunk = max(1, _CHUNK_ELEMENTS // max(1, nqb * nkb))
    for h0 in range(0, hq, heads_per_chunk):
        h1 = min(hq, h0 + heads_per_chunk)
        scores = block_select_scores(q_pool, k_pool, h0, h1)
        scores = scores.masked_fill(~selectable, float("-inf"))
        # A stable descending sort ranks equal scores by key block, lower first.
        order = scores.sort(dim=-1, descending=True, stable=True).indices
        ranked = torch.arange(nkb, device=device)[None, None, :] < n_sel[None, :, None]
        mask[h0:h1].scatter_(2, order, ranked.expand(h1 - h0, nqb, nkb))
    return mask | forced[None]
