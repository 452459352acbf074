"""PyTorch definition of block-sparse attention (paper Appendix A.1.1).

The attention matrix of each query head is cut into BLOCK x BLOCK tiles (16 in the paper);
``block_mask[h, i, j]`` says whether query block i (queries i*BLOCK .. i*BLOCK+BLOCK-1, counted
within the T queries) attends to key block j (keys j*BLOCK ..). Inside a kept block the causal
mask still applies element by element, so a kept diagonal block is lower-triangular.
"""

from __future__ import annotations

import torch

from ..common.reference import causal_row_mask, masked_attention


def block_sparse_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: torch.Tensor, block_size: int = 16
) -> torch.Tensor:
    """q [Hq, T, D]; k, v [Hkv, S, D]; block_mask [Hq, ceil(T/B), ceil(S/B)] bool -> out [Hq, T, D]."""
    t, s = q.shape[1], k.shape[1]

    def row_mask(h: int, rows: torch.Tensor) -> torch.Tensor:
        keep = block_mask[h][rows // block_size]  # [rows, ceil(S/B)]
        keep = keep.repeat_interleave(block_size, dim=1)[:, :s]  # [rows, S]
        return keep & causal_row_mask(rows, t, s)

    return masked_attention(q, k, v, row_mask)


def block_sparse_pairs(block_mask: torch.Tensor, t: int, s: int, block_size: int = 16) -> int:
    """Query-key pairs block-sparse attention computes (causal pairs inside kept blocks), all heads.

    block_mask: [Hq, ceil(T/B), ceil(S/B)] bool. Exact, so it can be compared with the causal total.
    """
    offset = s - t
    qb = torch.arange(block_mask.shape[1], device=block_mask.device)
    kb = torch.arange(block_mask.shape[2], device=block_mask.device)
    q_lo = qb * block_size + offset  # first query position of each query block
    q_hi = torch.clamp((qb + 1) * block_size, max=t) - 1 + offset  # last query position
    k_lo = kb * block_size
    k_hi = torch.clamp((kb + 1) * block_size, max=s) - 1
    # For query position p the block contributes clamp(min(p, k_hi) - k_lo + 1, 0, k_hi - k_lo + 1)
    # keys; summed over the block's rows in closed form by looping the (small) row offset.
    total = torch.zeros(block_mask.shape[1:], dtype=torch.int64, device=block_mask.device)
    for r in range(block_size):
        p = q_lo + r
        valid = p <= q_hi
        n = torch.clamp(torch.minimum(p[:, None], k_hi[None, :]) - k_lo[None, :] + 1, min=0)
        total += torch.where(valid[:, None], n, torch.zeros_like(n))
    return int((block_mask.long() * total[None]).sum())


def block_sparse_tile_lists_reference(
    block_mask: torch.Tensor, t: int, s: int, block_m: int, block_size: int = 16
) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    """What the GPU index builder must produce, written plainly (for tests).

    For head h and query tile i (query blocks i*R .. i*R+R-1, R = block_m // block_size):
    ``(blocks, bits)``, the ascending key blocks that some query block of the tile keeps and can
    causally see (some key <= its last query position), and for each a bit per query block.
    """
    hq, n_qb, n_kb = block_mask.shape
    rows_per_tile = block_m // block_size
    kb = torch.arange(n_kb, device=block_mask.device)
    lists = []
    for h in range(hq):
        per_tile = []
        for tile in range(-(-t // block_m)):
            bits = torch.zeros(n_kb, dtype=torch.int64, device=block_mask.device)
            for r in range(rows_per_tile):
                qb = tile * rows_per_tile + r
                if qb >= n_qb:
                    break
                last_pos = (s - t) + min(qb * block_size + block_size - 1, t - 1)
                keep = block_mask[h, qb] & (kb * block_size <= last_pos)
                bits |= keep.long() << r
            kept = bits.nonzero().flatten()
            per_tile.append((kept, bits[kept]))
        lists.append(per_tile)
    return lists
