"""Triton building blocks shared by the sparse attention kernels.

Every sparse kernel here is FlashAttention's online softmax over a *list* of key tiles
instead of a contiguous range; the list and the per-element mask are what differ, so the
softmax step and the union-list builder live here once.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634


@functools.cache
def multiprocessor_count(device_index: int) -> int:
    """Streaming multiprocessors of a CUDA device (sizes split-K grids)."""
    return torch.cuda.get_device_properties(device_index).multi_processor_count


@triton.jit
def online_softmax_update(m_i, l_i, acc, s, v, scale):
    """One FlashAttention update with *unscaled* scores ``s`` [M, N] (-inf where masked) and
    ``scale`` = log2(e) / sqrt(D); m_i is kept in log2 units. Scaling inside the exponent lets the
    compiler fuse scale and subtraction into one FMA per score (measured ~5% of kernel time on an
    H100 against scaling the scores first). Rows that have seen no key keep m = -inf, l = 0, acc = 0.
    """
    m_new = tl.maximum(m_i, tl.max(s, 1) * scale)  # [M]
    # A row with every key masked so far has m_new = -inf; subtracting 0 keeps exp2 at 0, not NaN.
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2(m_i - m_safe)  # [M]
    p = tl.exp2(s * scale - m_safe[:, None])  # [M, N]
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
    return m_new, l_i, acc


@triton.jit
def store_normalized(ptrs, acc, l_i, row_ok):
    """The attention output acc / l [M, D] to ``ptrs`` [M, D] where ``row_ok`` [M]; rows that saw
    no key (l = 0) store zeros."""
    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    tl.store(ptrs, out.to(ptrs.dtype.element_ty), mask=row_ok[:, None])


@triton.jit
def mask_rows_to_union_list_kernel(
    MASK,  # uint8 [n_heads, n_rows, n_cols]: the boolean mask being compacted
    LIST_START,  # int64 [n_groups]: where each row group's list starts inside a head's LIST row
    LIST,  # int32 [n_heads, list_len]: out, the columns kept by any row of the group, ascending
    BITS,  # int32 [n_heads, list_len]: out, bit r set when row r of the group keeps that column
    COUNT,  # int32 [n_heads, n_groups]: out, list length of each group
    stride_mask_h,
    stride_mask_r,
    stride_list_h,
    n_rows,
    n_cols,
    n_groups,
    T,
    S,
    ROWS_PER_GROUP: tl.constexpr,
    SCAN: tl.constexpr,
    CAUSAL_BLOCKS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Compact the columns kept by a group of mask rows into one ascending list per group.

    Rows of a group share a kernel tile (block-sparse: the 16-row query blocks of one query
    tile; Quest: the query heads of one kv head), so the attention kernel loads each listed
    key block once and masks rows by BITS. With CAUSAL_BLOCKS, row r is a query block of
    BLOCK queries (the last T of S positions) and key blocks wholly in its future are dropped.
    """
    g = tl.program_id(0)
    h = tl.program_id(1)
    start = tl.load(LIST_START + g)
    width = n_cols
    if CAUSAL_BLOCKS:
        last_row = tl.minimum((g + 1) * ROWS_PER_GROUP * BLOCK, T) - 1
        width = tl.minimum(n_cols, (S - T + last_row) // BLOCK + 1)
    count = tl.full([], 0, tl.int32)
    for c0 in range(0, width, SCAN):
        cols = c0 + tl.arange(0, SCAN)  # [SCAN]
        in_range = cols < width
        bits = tl.zeros([SCAN], dtype=tl.int32)
        for r in tl.static_range(ROWS_PER_GROUP):
            row = g * ROWS_PER_GROUP + r
            keep = tl.load(
                MASK + h * stride_mask_h + row * stride_mask_r + cols,
                mask=in_range & ((cols * 0 + row) < n_rows),
                other=0,
            )
            keep = keep != 0
            if CAUSAL_BLOCKS:
                row_last_pos = S - T + tl.minimum(row * BLOCK + BLOCK - 1, T - 1)
                keep = keep & (cols * BLOCK <= row_last_pos)
            bits = bits | (keep.to(tl.int32) << r)
        selected = bits != 0
        pos = count + tl.cumsum(selected.to(tl.int32), 0) - 1  # [SCAN] slot of each kept column
        tl.store(LIST + h * stride_list_h + start + pos, cols, mask=selected)
        tl.store(BITS + h * stride_list_h + start + pos, bits, mask=selected)
        count += tl.sum(selected.to(tl.int32), 0)
    tl.store(COUNT + h * n_groups + g, count)
