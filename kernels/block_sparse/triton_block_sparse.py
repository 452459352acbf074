"""Triton block-sparse prefill attention (paper A.1.1) and its GPU index building.

Layout. A program owns one query head and one query tile of BLOCK_M rows, i.e. BLOCK_M // B
query blocks of the mask (B = the mask's block size: 16 in the paper; 32 and 64 are supported for
the paper's block-size ablation and MInference's 64 x 64 unit). Index building
(``build_block_sparse_index``) compacts, per head and query tile, the key blocks that any of the
tile's query blocks keeps into an ascending list with a bit per query block; the attention kernel
gathers BLOCK_N // B listed key blocks per step, so a step is one dense [BLOCK_M, BLOCK_N] tile of
tensor-core work, masked by the bits and causality. With B == BLOCK_N a step is one contiguous key
block, which Hopper's tensor-memory accelerator (TMA) loads when available.

Two choices measured on an H100 (docs/benchmarks-kernels.md): the mask enters the score product as
its accumulator (0 or -inf), so masking costs nothing after the product; and scores stay unscaled,
the scale folding into the exponent's FMA.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import triton
import triton.language as tl

from ..common.triton_helpers import (
    LOG2E,
    mask_rows_to_union_list_kernel,
    online_softmax_update,
    store_normalized,
)

#: Mask block sizes the kernel tiles (a query tile holds whole query blocks, a step whole key blocks).
KERNEL_BLOCK_SIZES = (16, 32, 64)


@dataclass
class BlockSparseIndex:
    """Per head and query tile, the key blocks to visit.

    list_start: [n_tiles] int64, offset of each tile's entries within a head's row of ``blocks``.
    blocks:     [Hq, total] int32, key-block ids, ascending within a tile.
    bits:       [Hq, total] int32, bit r set when query block r of the tile keeps that key block.
    count:      [Hq, n_tiles] int32, entries per tile.
    """

    block_m: int
    block_size: int
    list_start: torch.Tensor
    blocks: torch.Tensor
    bits: torch.Tensor
    count: torch.Tensor


def _tile_list_starts(t: int, s: int, block_m: int, block_size: int) -> tuple[np.ndarray, int]:
    """Offsets of each query tile's list: a tile can keep at most the key blocks not wholly in
    its future, so lists are packed by that causal width (half of the square at T == S)."""
    n_tiles = math.ceil(t / block_m)
    last_row = np.minimum((np.arange(n_tiles) + 1) * block_m, t) - 1
    widths = np.minimum(math.ceil(s / block_size), (s - t + last_row) // block_size + 1)
    starts = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)
    return starts, int(widths.sum())


def build_block_sparse_index(
    block_mask: torch.Tensor, t: int, s: int, block_m: int = 64, block_size: int = 16
) -> BlockSparseIndex:
    """block_mask [Hq, ceil(T/B), ceil(S/B)] bool (B = block_size) -> BlockSparseIndex for query tiles
    of block_m rows (a multiple of B)."""
    hq, n_qb, n_kb = block_mask.shape
    rows_per_tile = block_m // block_size
    n_tiles = math.ceil(t / block_m)
    starts_np, total = _tile_list_starts(t, s, block_m, block_size)
    device = block_mask.device
    list_start = torch.from_numpy(starts_np).to(device)
    blocks = torch.empty(hq, max(total, 1), dtype=torch.int32, device=device)
    bits = torch.empty_like(blocks)
    count = torch.empty(hq, n_tiles, dtype=torch.int32, device=device)
    mask_u8 = block_mask.contiguous().view(torch.uint8)
    mask_rows_to_union_list_kernel[(n_tiles, hq)](
        mask_u8,
        list_start,
        blocks,
        bits,
        count,
        mask_u8.stride(0),
        mask_u8.stride(1),
        blocks.stride(0),
        n_qb,
        n_kb,
        n_tiles,
        t,
        s,
        ROWS_PER_GROUP=rows_per_tile,
        SCAN=1024,
        CAUSAL_BLOCKS=True,
        BLOCK=block_size,
    )
    return BlockSparseIndex(block_m, block_size, list_start, blocks, bits, count)


@triton.jit
def block_sparse_attention_fwd_kernel(
    Q,
    K,
    V,
    K_DESC,
    V_DESC,  # TMA descriptors of k/v [Hkv, S, D] with box [1, BLOCK_N, D] when USE_TMA, else unused
    Out,  # q/o [Hq, T, D], k/v [Hkv, S, D]; last dim contiguous
    LIST_START,
    BLOCKS,
    BITS,
    COUNT,  # see BlockSparseIndex
    stride_qh,
    stride_qt,
    stride_kh,
    stride_ks,
    stride_vh,
    stride_vs,
    stride_oh,
    stride_ot,
    stride_list_h,
    n_tiles,
    T,
    S,
    qk_scale,
    GROUP: tl.constexpr,  # query heads per kv head
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    KEY_BLOCK: tl.constexpr,
    USE_TMA: tl.constexpr,  # needs KEY_BLOCK == BLOCK_N: one contiguous key block per step
):
    # Heads vary fastest so the query heads of one tile (same kv head) run side by side and share
    # key blocks through L2; the longest (last) query tiles are scheduled first.
    h = tl.program_id(0)
    tile = n_tiles - 1 - tl.program_id(1)
    kv_h = h // GROUP
    rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M] query index within T
    qpos = rows + (S - T)  # [BLOCK_M] absolute query position
    dims = tl.arange(0, HEAD_DIM)
    q = tl.load(
        Q + h * stride_qh + rows[:, None] * stride_qt + dims[None, :], mask=rows[:, None] < T, other=0.0
    )
    row_bit = 1 << (tl.arange(0, BLOCK_M) // KEY_BLOCK)  # [BLOCK_M] each row's query-block bit
    ALL_ROWS: tl.constexpr = (1 << (BLOCK_M // KEY_BLOCK)) - 1
    first_pos = tile * BLOCK_M + (S - T)

    start = tl.load(LIST_START + tile)
    n_entries = tl.load(COUNT + h * n_tiles + tile)
    list_base = h * stride_list_h + start
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    ENTRIES: tl.constexpr = BLOCK_N // KEY_BLOCK  # key blocks gathered per step
    for e0 in range(0, n_entries, ENTRIES):
        entry = e0 + tl.arange(0, ENTRIES)  # [ENTRIES] positions in the tile's list
        entry_ok = entry < n_entries
        kb = tl.load(BLOCKS + list_base + entry, mask=entry_ok, other=0)
        kb_bits = tl.load(BITS + list_base + entry, mask=entry_ok, other=0)  # 0: padding, never kept
        # Expand each listed key block to its KEY_BLOCK keys: [ENTRIES, KEY_BLOCK] -> [BLOCK_N].
        within = tl.arange(0, KEY_BLOCK)
        keys = tl.reshape(kb[:, None] * KEY_BLOCK + within[None, :], [BLOCK_N])
        bits = tl.reshape(kb_bits[:, None] + 0 * within[None, :], [BLOCK_N])
        if USE_TMA:  # out-of-range rows of the box come back as zeros
            key0 = tl.load(BLOCKS + list_base + e0) * KEY_BLOCK
            k = K_DESC.load([kv_h, key0, 0]).reshape([BLOCK_N, HEAD_DIM])
            v = V_DESC.load([kv_h, key0, 0]).reshape([BLOCK_N, HEAD_DIM])
        else:
            in_seq = (keys < S)[:, None]
            k = tl.load(
                K + kv_h * stride_kh + keys[:, None] * stride_ks + dims[None, :], mask=in_seq, other=0.0
            )
            v = tl.load(
                V + kv_h * stride_vh + keys[:, None] * stride_vs + dims[None, :], mask=in_seq, other=0.0
            )
        # Most chunks lie wholly in the past of the tile's first query and are kept by every query
        # block of the tile (all bits set): they need no mask. Otherwise the mask is the product's
        # accumulator, -inf where a row's query block drops the key or the key is in its future.
        if (tl.min(bits, 0) == ALL_ROWS) & (tl.max(keys, 0) <= first_pos):
            bias = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        else:
            allowed = ((bits[None, :] & row_bit[:, None]) != 0) & (keys[None, :] <= qpos[:, None])
            bias = tl.where(allowed, 0.0, float("-inf"))
        s = tl.dot(q, tl.trans(k), bias)  # [BLOCK_M, BLOCK_N] unscaled scores, -inf where masked
        m_i, l_i, acc = online_softmax_update(m_i, l_i, acc, s, v, qk_scale)
    store_normalized(Out + h * stride_oh + rows[:, None] * stride_ot + dims[None, :], acc, l_i, rows < T)


def _kv_descriptors(k: torch.Tensor, v: torch.Tensor, block_n: int):
    """TMA descriptors of k and v with a [1, block_n, D] box, or None where TMA is unavailable
    (before Hopper, under the interpreter, or with strides TMA cannot address)."""
    if not k.is_cuda or torch.cuda.get_device_capability(k.device)[0] < 9:
        return None
    try:
        from triton.tools.tensor_descriptor import TensorDescriptor
    except ImportError:
        return None
    aligned = all(
        x.data_ptr() % 16 == 0 and all(st * x.element_size() % 16 == 0 for st in x.stride()[:-1])
        for x in (k, v)
    )
    if not aligned:
        return None
    box = [1, block_n, k.shape[-1]]
    return TensorDescriptor.from_tensor(k, box), TensorDescriptor.from_tensor(v, box)


#: Tile defaults per mask block size, from benchmarks on an H100 at 128K, compression 10 and 20
#: (docs/benchmarks-kernels.md): (BLOCK_N, num_warps, num_stages).
_TILE_DEFAULTS = {16: (32, 4, 3), 32: (32, 4, 3), 64: (64, 4, 2)}


def block_sparse_attention_from_index(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    index: BlockSparseIndex,
    block_n: int | None = None,
    num_warps: int | None = None,
    num_stages: int | None = None,
    out: torch.Tensor | None = None,
    use_tma: bool | None = None,
) -> torch.Tensor:
    """Attention over a prebuilt index (so benchmarks can time index building apart); ``out`` an optional
    [Hq, T, D] buffer to fill. Tile settings default to ``_TILE_DEFAULTS`` for the index's block size;
    ``use_tma`` (default: where available) loads one contiguous key block per step through TMA and
    needs ``block_n == index.block_size``.
    """
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    hq, t, d = q.shape
    hkv, s, _ = k.shape
    out = torch.empty_like(q) if out is None else out
    n_tiles = index.count.shape[1]
    default_n, default_warps, default_stages = _TILE_DEFAULTS.get(index.block_size, (index.block_size, 4, 2))
    block_n = block_n or max(default_n, index.block_size)
    descriptors = None
    if use_tma is not False and block_n == index.block_size:
        descriptors = _kv_descriptors(k, v, block_n)
    if use_tma and descriptors is None:
        raise ValueError(
            "block_sparse_attention: use_tma needs a Hopper or newer GPU, 16-byte aligned k/v and "
            f"block_n == block_size (got block_n {block_n}, block_size {index.block_size})."
        )
    k_desc, v_desc = descriptors or (k, v)
    block_sparse_attention_fwd_kernel[(hq, n_tiles)](
        q,
        k,
        v,
        k_desc,
        v_desc,
        out,
        index.list_start,
        index.blocks,
        index.bits,
        index.count,
        q.stride(0),
        q.stride(1),
        k.stride(0),
        k.stride(1),
        v.stride(0),
        v.stride(1),
        out.stride(0),
        out.stride(1),
        index.blocks.stride(0),
        n_tiles,
        t,
        s,
        LOG2E / math.sqrt(d),
        GROUP=hq // hkv,
        BLOCK_M=index.block_m,
        BLOCK_N=block_n,
        HEAD_DIM=d,
        KEY_BLOCK=index.block_size,
        USE_TMA=descriptors is not None,
        num_warps=num_warps or (8 if index.block_m >= 128 else default_warps),
        num_stages=num_stages or default_stages,
    )
    return out


def block_sparse_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_mask: torch.Tensor,
    block_size: int = 16,
    block_m: int = 64,
) -> torch.Tensor:
    """q [Hq, T, D], k/v [Hkv, S, D], block_mask [Hq, ceil(T/B), ceil(S/B)] bool, B = block_size
    -> [Hq, T, D]."""
    if block_size not in KERNEL_BLOCK_SIZES:
        raise ValueError(
            f"block_sparse_attention: the Triton kernel supports block_size in {KERNEL_BLOCK_SIZES}, got "
            f"{block_size}; pick one of those or run on CPU tensors (the PyTorch reference takes any size)."
        )
    index = build_block_sparse_index(block_mask, q.shape[1], k.shape[1], max(block_m, block_size), block_size)
    return block_sparse_attention_from_index(q, k, v, index)
