"""Block-Sparse prefill (MInference's pattern; paper Table 1 and Appendix A.1.1).

The attention matrix is cut into ``block_size`` x ``block_size`` tiles (16 x 16, the paper's
choice). Every query block keeps the first key block (attention sinks) and the key blocks its
causal boundary crosses (the diagonal), and adds its top-k remaining key blocks ranked by the
dot product of mean-pooled queries and keys. The budget is uniform: every head and every query
block gets the same k (to within one block, see ``blocks_per_query_block``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import numpy as np
import torch

from ..kernels.ops import block_select, block_sparse_attention
from . import register
from .base import AttentionMethod, AttentionResult, causal_pairs, dense_attention
from .common import MAX_CHUNK_ELEMENTS, check_positive_int, check_shapes, search_float

#: Fractional part of the golden ratio: spreads the rounding of a fractional k evenly over
#: query blocks (a low-discrepancy sequence), so calibration is finer than one block per row.
_GOLDEN = 0.6180339887498949

#: Query-block bands scored separately, each against only the key blocks it can select.
_ROW_BANDS = 8


@dataclass
class BlockGeometry:
    """Where the causal boundary cuts the block grid of one (T, S) shape.

    rows:       [nqb] queries in each query block (the last one may be short).
    n_full:     [nqb] key blocks 0..n_full-1 are visible to every query of the block.
    last_block: [nqb] the last key block any query of the block can see.
    Selectable blocks are 1..n_full-1: full 16 x rows tiles, so their pair count is exact.
    """

    rows: torch.Tensor
    n_full: torch.Tensor
    last_block: torch.Tensor
    n_key_blocks: int

    @classmethod
    def of(cls, t: int, s: int, block: int, device: torch.device | str = "cpu") -> BlockGeometry:
        b = torch.arange(math.ceil(t / block), device=device)
        first_pos = (s - t) + b * block
        rows = torch.clamp(t - b * block, max=block)
        last_pos = first_pos + rows - 1
        return cls(rows, (first_pos + 1) // block, last_pos // block, math.ceil(s / block))

    @property
    def selectable(self) -> torch.Tensor:
        """[nqb] key blocks a query block can pick beyond the forced first and boundary blocks."""
        return torch.clamp(self.n_full - 1, min=0)

    @cached_property
    def host(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, selectable, phase) as numpy int64/int64/float64 arrays, for the budget search."""
        rows = self.rows.cpu().numpy().astype(np.int64)
        phase = np.modf(np.arange(1, rows.shape[0] + 1, dtype=np.float64) * _GOLDEN)[0]
        return rows, self.selectable.cpu().numpy().astype(np.int64), phase


def blocks_per_query_block(top_k: float, geometry: BlockGeometry) -> torch.Tensor:
    """[nqb] selected key blocks per query block for a fractional ``top_k``.

    Block b gets floor(top_k + phase_b) with phase_b evenly spread in [0, 1), capped at what it
    can select; each entry is non-decreasing in top_k, so the total is too (the search relies on it).
    """
    return torch.from_numpy(_chosen(top_k, geometry)).to(geometry.rows.device)


def _chosen(top_k: float, geometry: BlockGeometry) -> np.ndarray:
    _, selectable, phase = geometry.host
    return np.minimum(np.floor(top_k + phase).astype(np.int64), selectable)


def _pool(x: torch.Tensor, block: int) -> torch.Tensor:
    """[H, L, D] -> [H, ceil(L/block), D] float32 block means (a short last block averages its real rows).

    Sums accumulate in float32 without a float32 copy of x (at 128K tokens that copy is 1.8 GB).
    """
    h, n, d = x.shape
    full = n // block
    pooled = x[:, : full * block].view(h, full, block, d).sum(2, dtype=torch.float32) / block
    if n % block:
        tail = x[:, full * block :].sum(1, keepdim=True, dtype=torch.float32) / (n % block)
        pooled = torch.cat([pooled, tail], 1)
    return pooled


def _rank_scores(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Pooled block scores [B, M, D] @ [B, D, N], used only to rank blocks.

    On CUDA with a half-precision model they stay in the model's dtype, as in MInference: the
    top-k then scans half the bytes (it is most of the index-building time at 128K tokens).
    Elsewhere float32.
    """
    if a.is_cuda and dtype in (torch.bfloat16, torch.float16):
        return torch.bmm(a.to(dtype), b.to(dtype))
    return torch.bmm(a, b)


def select_blocks(
    q: torch.Tensor,
    k: torch.Tensor,
    top_k: float,
    block: int = 16,
    max_elements: int = MAX_CHUNK_ELEMENTS,
    fused: bool = True,
) -> torch.Tensor:
    """The block mask of Block-Sparse attention.

    q [Hq, T, D], k [Hkv, S, D] -> block_mask [Hq, ceil(T/block), ceil(S/block)] bool: the first
    key block, the key blocks on the causal boundary, and the ``top_k`` (fractional, see
    ``blocks_per_query_block``) best remaining visible key blocks by pooled q.k score.
    On CUDA (unless ``fused=False``, kept for comparison) the fused kernel ``ops.block_select`` selects.
    """
    hq, t, d = q.shape
    hkv, s, _ = k.shape
    group = hq // hkv
    geo = BlockGeometry.of(t, s, block, q.device)
    nqb, nkb = geo.rows.shape[0], geo.n_key_blocks
    if q.is_cuda and fused:
        # Fused GPU selection (kernels/block_select): forced blocks + top-k without a score grid in
        # memory; pooled blocks in the model's dtype for half models (as below), float32 accumulation.
        dtype = q.dtype if q.dtype in (torch.bfloat16, torch.float16) else torch.float32
        pooled = _pool(q, block).to(dtype), _pool(k, block).to(dtype)
        return block_select(*pooled, blocks_per_query_block(top_k, geo), geo.n_full, geo.last_block)
    # Forced blocks: the first key block and the (one or two) blocks the causal boundary crosses.
    # Written by index into a zeroed mask: a broadcast copy of a [nqb, nkb] pattern is far slower.
    mask = torch.zeros(hq, nqb, nkb, dtype=torch.bool, device=q.device)
    mask[:, :, 0] = True
    crossed = (geo.n_full <= geo.last_block)[:, None]  # False: the row ends on a block edge
    boundary = torch.stack([geo.n_full, geo.last_block], 1).masked_fill(~crossed, 0)  # [nqb, 2]
    mask.scatter_(2, boundary[None].expand(hq, nqb, 2), True)
    n_sel = blocks_per_query_block(top_k, geo)
    k_max = int(n_sel.max()) if nqb else 0
    if k_max == 0:
        return mask
    q_pool, k_pool = _pool(q, block), _pool(k, block)  # [Hq, nqb, D], [Hkv, nkb, D] float32
    # Causality leaves the upper triangle of the block grid empty, so rows go in bands, each
    # scored only against the key blocks its last row can select (about half the work).
    n_bands = min(_ROW_BANDS, nqb)
    edges = [round(i * nqb / n_bands) for i in range(n_bands + 1)]
    n_full = geo.n_full.tolist()
    for r0, r1 in zip(edges[:-1], edges[1:], strict=True):
        cols = n_full[r1 - 1]
        stair = max(n_full[r0], 1)  # every row of the band can select all blocks 1..stair-1
        beyond = torch.arange(cols, device=q.device)[None, :] >= geo.n_full[r0:r1, None]  # [rows, cols]
        band_sel = n_sel[r0:r1]
        k_band = int(band_sel.max())
        if k_band == 0:
            continue
        # The top k_band come back unsorted (sorting them costs more than selecting). Each row
        # needs at most one fewer than it gets: n_sel is within one of k_band where not capped.
        surplus = torch.clamp(geo.selectable[r0:r1], max=k_band) - band_sel  # [rows], 0 or 1
        kv_per_chunk = max(1, max_elements // max(1, group * (r1 - r0) * cols))
        for k0 in range(0, hkv, kv_per_chunk):
            k1 = min(hkv, k0 + kv_per_chunk)
            qg = q_pool[k0 * group : k1 * group, r0:r1].reshape(k1 - k0, group * (r1 - r0), d)
            scores = _rank_scores(qg, k_pool[k0:k1, :cols].transpose(1, 2), q.dtype)
            scores = scores.view(-1, r1 - r0, cols)
            # Not selectable: block 0 (forced) and, per row, blocks from n_full on (boundary or
            # future); the latter only exist in the band's last few columns.
            scores[..., 0] = float("-inf")
            scores[..., stair:].masked_fill_(beyond[:, stair:cols], float("-inf"))
            values, top = scores.topk(k_band, dim=-1, sorted=False)  # [h, rows, k_band]
            keep = values > float("-inf")
            weakest = values.masked_fill(~keep, float("inf")).argmin(-1, keepdim=True)  # [h, rows, 1]
            keep.scatter_(-1, weakest, keep.gather(-1, weakest) & (surplus == 0)[None, :, None])
            # Dropped entries point at block 0, which is kept anyway: one scatter, no merge.
            mask[k0 * group : k1 * group, r0:r1].scatter_(2, torch.where(keep, top, 0), True)
    return mask


@register
@dataclass
class BlockSparse(AttentionMethod):
    """Block-Sparse prefill attention (Jiang et al., 2024; paper A.1.1).

    block_size: tile side in tokens (paper: 16).
    Budget parameter: ``top_k`` key blocks per query block beyond the forced ones (fractional),
    searched at call time so that computed causal pairs / all causal pairs = 1 / compression_ratio.
    Shapes: prefill(q [Hq,T,D], k [Hkv,S,D], v [Hkv,S,D]) -> out [Hq,T,D].
    """

    name: ClassVar[str] = "block_sparse"
    phase: ClassVar[str] = "prefill"
    block_size: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int(self.name, "block_size", self.block_size)

    def top_k_for(self, t: int, s: int) -> float:
        """The fractional top-k whose pair count is closest to the target density at this length.

        Score-independent (every selectable tile is a full one), so it runs on the host, once per shape.
        """
        geo = BlockGeometry.of(t, s, self.block_size)
        target = causal_pairs(t, s) / self.compression_ratio
        hi = float(geo.host[1].max()) + 1.0 if t else 0.0
        return search_float(lambda x: block_pairs(x, geo, self.block_size, s), 0.0, hi, target)

    def plan(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, float, dict]:
        """Index building: (block_mask [Hq, nqb, nkb] bool, computed pairs over all heads, budget info)."""
        t, s = q.shape[1], k.shape[1]
        top_k = self.top_k_for(t, s)
        mask = select_blocks(q, k, top_k, self.block_size)
        pairs = block_pairs(top_k, BlockGeometry.of(t, s, self.block_size), self.block_size, s)
        return mask, float(pairs * q.shape[0]), {"top_k": top_k}

    def prefill(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> AttentionResult:
        check_shapes(q, k, v)
        hq, t, _ = q.shape
        s = k.shape[1]
        total = causal_pairs(t, s) * hq
        if self.is_dense:
            return AttentionResult(dense_attention(q, k, v), total, total)
        mask, computed, info = self.plan(q, k)
        out = block_sparse_attention(q, k, v, mask, block_size=self.block_size)
        return AttentionResult(out, computed, total, info=info)


def block_pairs(top_k: float, geometry: BlockGeometry, block: int, s: int) -> int:
    """Causal query-key pairs ONE head computes with ``top_k``: all causal pairs minus skipped tiles.

    Skipped tiles are selectable ones, i.e. fully visible 16-key blocks, so each skips
    rows x block pairs exactly; nothing is counted twice. Host arithmetic (numpy): it runs
    inside the budget search, many times per call.
    """
    rows, selectable, _ = geometry.host
    skipped = (selectable - _chosen(top_k, geometry)) * rows
    return causal_pairs(int(rows.sum()), s) - int(skipped.sum()) * block
