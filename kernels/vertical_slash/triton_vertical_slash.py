"""Triton vertical-slash prefill attention (paper A.1.2) and its GPU index building.

A program owns one query head and one query tile of BLOCK_M consecutive queries [p0, p1]. It
runs two phases into one online softmax:

1. verticals: the head's sorted, de-duplicated vertical keys <= p1, gathered BLOCK_N at a time,
   masked by causality only (and not at all for chunks wholly in the tile's past);
2. slashes: a slash at offset o covers keys [p0 - o, p1 - o] for this tile. Offsets closer than
   BLOCK_M merge into groups whose bands form one contiguous key range [p0 - max, p1 - min]
   (MInference's idea of turning diagonals into key ranges). Every group's range is cut into
   BLOCK_N-key chunks; the index lists all chunks of all groups flat, so one pipelined loop walks
   them. A chunk is masked *exactly*: pair (p, key) counts when p - key is a slash offset (a bit
   test in a packed bitmap) and key is not a vertical (phase 1 counted it). A chunk whose offsets
   are all slashes and that holds no vertical skips the mask (the index flags such chunks).

So every pair is computed once and only listed pairs count; the price of exactness is that an
isolated slash still costs a BLOCK_M x BLOCK_N tile of tensor-core work per query tile.

The index is defined by ``build_vertical_slash_index_torch`` (PyTorch, sorts); on CUDA tensors
``build_vertical_slash_index`` builds the identical tensors in one Triton launch (triton_index.py).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ..common.triton_helpers import LOG2E, online_softmax_update, store_normalized
from .triton_index import build_vertical_slash_index_triton, index_sizes

#: Bits of zero padding before offset 0 in the slash bitmap, so out-of-band (negative) offsets
#: of a tile never index before the start; must be a multiple of 32 and >= BLOCK_M + BLOCK_N.
SLASH_PAD = 256


@dataclass
class VerticalSlashIndex:
    """Index consumed by vertical_slash_attention_fwd_kernel (int32 unless said).

    verticals:    [Hq, NV] sorted unique vertical keys, padded with S.
    vert_count:   [Hq, n_tiles] verticals <= the tile's last query position.
    vert_bitmap:  [Hq, S] uint8, 1 at vertical keys.
    vert_prefix:  [Hq, S + 1] verticals at keys < x (a chunk holds none when two entries agree).
    slash_words:  [Hq, NW] bitmap of slash offsets, offset o at bit o + SLASH_PAD.
    chunk_start:  [Hq, NC] chunk f of a tile starts at key p0 - chunk_start[f] (its group's largest
                  offset minus f's BLOCK_N steps into the group);
    chunk_end:    [Hq, NC] and covers keys up to p1 - chunk_end[f] (its group's smallest offset);
    chunk_full:   [Hq, NC] int8, 1 when every offset such a chunk can meet in a full tile is a slash.
    chunk_count:  [Hq, n_tiles] chunks of the groups that reach this tile (a prefix of the list).
    """

    block_m: int
    block_n: int
    verticals: torch.Tensor
    vert_count: torch.Tensor
    vert_bitmap: torch.Tensor
    vert_prefix: torch.Tensor
    slash_words: torch.Tensor
    chunk_start: torch.Tensor
    chunk_end: torch.Tensor
    chunk_full: torch.Tensor
    chunk_count: torch.Tensor


def _sorted_unique(idx: torch.Tensor, fill: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[H, N] int64 with negative padding -> (ascending unique values padded with ``fill``, valid [H, N])."""
    vals = torch.sort(torch.where(idx < 0, fill, idx), dim=1).values
    dup = torch.zeros_like(vals, dtype=torch.bool)
    dup[:, 1:] = vals[:, 1:] == vals[:, :-1]
    vals = torch.sort(torch.where(dup, fill, vals), dim=1).values
    return vals, vals < fill


def _pack_bits(bitmap: torch.Tensor) -> torch.Tensor:
    """[H, 32 * NW] bool -> [H, NW] int32, bit j of word w = bitmap[32 * w + j]."""
    h, n = bitmap.shape
    weights = torch.bitwise_left_shift(
        torch.ones(32, dtype=torch.int64, device=bitmap.device), torch.arange(32, device=bitmap.device)
    )
    words = (bitmap.view(h, n // 32, 32).long() * weights).sum(-1)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def _prefix(bitmap: torch.Tensor) -> torch.Tensor:
    """[H, N] bool/uint8 -> [H, N + 1] int32 running count (entry x counts positions < x)."""
    counts = torch.zeros(bitmap.shape[0], bitmap.shape[1] + 1, dtype=torch.int32, device=bitmap.device)
    counts[:, 1:] = torch.cumsum(bitmap.int(), dim=1)
    return counts


def build_vertical_slash_index(
    vertical_idx: torch.Tensor,
    slash_idx: torch.Tensor,
    t: int,
    s: int,
    block_m: int = 64,
    block_n: int = 32,
    use_triton: bool | None = None,
) -> VerticalSlashIndex:
    """Vertical keys [Hq, NV] and slash offsets [Hq, NS] (int64, negative = padding, entries < S) -> index.

    ``use_triton`` (default: for CUDA tensors, or anywhere under TRITON_INTERPRET=1) builds it with
    the one-launch kernel of triton_index.py; otherwise with ``build_vertical_slash_index_torch``,
    the PyTorch definition. Both give the same tensors, entry for entry.
    """
    if use_triton is None:
        use_triton = vertical_idx.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"
    if not use_triton:
        return build_vertical_slash_index_torch(vertical_idx, slash_idx, t, s, block_m, block_n)
    fields = build_vertical_slash_index_triton(vertical_idx, slash_idx, t, s, block_m, block_n, SLASH_PAD)
    return VerticalSlashIndex(block_m, block_n, *fields)


def build_vertical_slash_index_torch(
    vertical_idx: torch.Tensor,
    slash_idx: torch.Tensor,
    t: int,
    s: int,
    block_m: int = 64,
    block_n: int = 32,
) -> VerticalSlashIndex:
    """The PyTorch definition of the index (reference for the Triton builder; ~130 small launches).

    Plain PyTorch on the index tensors' device (O(Hq x (NV + NS + S)) work), no host sync.
    """
    hq = vertical_idx.shape[0]
    device = vertical_idx.device
    sizes = index_sizes(vertical_idx.shape[1], slash_idx.shape[1], t, s, block_m, block_n, SLASH_PAD)
    n_tiles = sizes["n_tiles"]
    tile_last = torch.clamp((torch.arange(n_tiles, device=device) + 1) * block_m, max=t) - 1 + (s - t)
    tile_last = tile_last[None, :].expand(hq, n_tiles).contiguous()

    verts, _ = _sorted_unique(vertical_idx, s)
    vert_count = torch.searchsorted(verts, tile_last, right=True).to(torch.int32)
    vert_bitmap = torch.zeros(hq, s + 1, dtype=torch.uint8, device=device)
    vert_bitmap.scatter_(1, verts, 1)
    vert_bitmap = vert_bitmap[:, :s].contiguous()

    n_words = sizes["n_words"]
    offs, valid = _sorted_unique(slash_idx, s)
    slash_bits = torch.zeros(hq, n_words * 32 + 1, dtype=torch.bool, device=device)
    slash_bits.scatter_(1, torch.where(valid, offs + SLASH_PAD, n_words * 32), True)
    slash_words = _pack_bits(slash_bits[:, : n_words * 32])
    slash_prefix = _prefix(slash_bits[:, SLASH_PAD : SLASH_PAD + s])  # [Hq, S + 1] by offset

    # Offsets closer than block_m make touching bands in every tile: one group, one key range.
    starts = valid.clone()
    starts[:, 1:] &= (offs[:, 1:] - offs[:, :-1]) > block_m
    group_id = torch.cumsum(starts.long(), dim=1) - 1
    n_slots = offs.shape[1] + 1
    slot = torch.where(valid, group_id, n_slots - 1)  # padding lands in a spare slot
    big = torch.full((hq, n_slots), s, dtype=torch.int64, device=device)
    group_lo = big.scatter_reduce(1, slot, torch.where(valid, offs, s), "amin")[:, :-1]
    group_hi = torch.full_like(big, -1).scatter_reduce(1, slot, torch.where(valid, offs, -1), "amax")[:, :-1]
    group_ok = group_lo < s
    # A full tile meets keys [p0 - hi, p1 - lo] of a group: hi - lo + block_m keys.
    group_chunks = torch.where(group_ok, (group_hi - group_lo + block_m + block_n - 1) // block_n, 0)
    chunk_prefix = torch.zeros(hq, group_chunks.shape[1] + 1, dtype=torch.int64, device=device)
    chunk_prefix[:, 1:] = torch.cumsum(group_chunks, dim=1)
    n_chunks = sizes["n_chunks"]  # a bound, so no host sync (see index_sizes)
    flat = torch.arange(n_chunks, device=device)[None, :].expand(hq, n_chunks).contiguous()
    chunk_group = torch.clamp(
        torch.searchsorted(chunk_prefix, flat, right=True) - 1, max=group_lo.shape[1] - 1
    )
    step = flat - chunk_prefix.gather(1, chunk_group)
    chunk_start = group_hi.gather(1, chunk_group) - step * block_n
    chunk_end = group_lo.gather(1, chunk_group)
    # Offsets a chunk meets in a full tile: [start - block_n + 1, start + block_m - 1].
    lo = chunk_start - block_n + 1
    hi = torch.clamp(chunk_start + block_m - 1, max=s - 1)
    covered = slash_prefix.gather(1, (hi + 1).clamp(0, s)) - slash_prefix.gather(1, lo.clamp(0, s))
    chunk_full = ((lo >= 0) & (covered == hi - lo + 1) & (chunk_start + block_m - 1 <= s - 1)).to(torch.int8)
    group_count = torch.searchsorted(group_lo.contiguous(), tile_last, right=True)
    chunk_count = chunk_prefix.gather(1, group_count).to(torch.int32)
    return VerticalSlashIndex(
        block_m,
        block_n,
        verts.to(torch.int32).contiguous(),
        vert_count.contiguous(),
        vert_bitmap,
        _prefix(vert_bitmap),
        slash_words.contiguous(),
        chunk_start.to(torch.int32).contiguous(),
        chunk_end.to(torch.int32).contiguous(),
        chunk_full.contiguous(),
        chunk_count.contiguous(),
    )


@triton.jit
def vertical_slash_attention_fwd_kernel(
    Q,  # [Hq, T, D]
    K,  # [Hkv, S, D]
    V,  # [Hkv, S, D]
    Out,  # [Hq, T, D]
    VERTS,  # VerticalSlashIndex fields, see there
    VERT_COUNT,
    VERT_BITMAP,
    VERT_PREFIX,
    SLASH_WORDS,
    CHUNK_START,
    CHUNK_END,
    CHUNK_FULL,
    CHUNK_COUNT,
    stride_qh,
    stride_qt,
    stride_kh,
    stride_ks,
    stride_vh,
    stride_vs,
    stride_oh,
    stride_ot,
    stride_verts_h,
    stride_words_h,
    stride_chunk_h,
    n_tiles,
    T,
    S,
    qk_scale,
    GROUP: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    PAD: tl.constexpr,
):
    h = tl.program_id(0)
    tile = n_tiles - 1 - tl.program_id(1)  # longest tiles first
    kv_h = h // GROUP
    rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M] query index within T
    qpos = rows + (S - T)  # [BLOCK_M] absolute positions
    p0 = tile * BLOCK_M + (S - T)
    p1 = tl.minimum(tile * BLOCK_M + BLOCK_M, T) - 1 + (S - T)
    full_tile = (p1 - p0 + 1) == BLOCK_M
    dims = tl.arange(0, HEAD_DIM)
    q = tl.load(
        Q + h * stride_qh + rows[:, None] * stride_qt + dims[None, :], mask=rows[:, None] < T, other=0.0
    )
    k_base = K + kv_h * stride_kh
    v_base = V + kv_h * stride_vh
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    # Phase 1: vertical keys (sorted, unique) visible to some row of the tile.
    n_vert = tl.load(VERT_COUNT + h * n_tiles + tile)
    for c0 in range(0, n_vert, BLOCK_N):
        slot = c0 + tl.arange(0, BLOCK_N)
        valid = slot < n_vert
        keys = tl.load(VERTS + h * stride_verts_h + slot, mask=valid, other=0)  # [BLOCK_N] ascending
        k = tl.load(k_base + keys[:, None] * stride_ks + dims[None, :], mask=valid[:, None], other=0.0)
        v = tl.load(v_base + keys[:, None] * stride_vs + dims[None, :], mask=valid[:, None], other=0.0)
        # The mask is the product's accumulator (0 or -inf), as in the block-sparse kernel.
        if (c0 + BLOCK_N <= n_vert) & (tl.max(keys, 0) <= p0):  # every pair is causal
            bias = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        else:
            bias = tl.where(valid[None, :] & (keys[None, :] <= qpos[:, None]), 0.0, float("-inf"))
        s = tl.dot(q, tl.trans(k), bias)  # [BLOCK_M, BLOCK_N] unscaled scores
        m_i, l_i, acc = online_softmax_update(m_i, l_i, acc, s, v, qk_scale)

    # Phase 2: slash chunks, exact per-pair membership, verticals excluded.
    words_base = SLASH_WORDS + h * stride_words_h
    prefix_base = VERT_PREFIX + h * (S + 1)
    n_chunks = tl.load(CHUNK_COUNT + h * n_tiles + tile)
    for f in range(0, n_chunks):
        ks = p0 - tl.load(CHUNK_START + h * stride_chunk_h + f)  # first key of the chunk (may be < 0)
        key_hi = p1 - tl.load(CHUNK_END + h * stride_chunk_h + f)  # last key of its group's range, < S
        keys = ks + tl.arange(0, BLOCK_N)  # [BLOCK_N] contiguous
        valid = (keys >= 0) & (keys <= key_hi)
        k = tl.load(k_base + keys[:, None] * stride_ks + dims[None, :], mask=valid[:, None], other=0.0)
        v = tl.load(v_base + keys[:, None] * stride_vs + dims[None, :], mask=valid[:, None], other=0.0)
        whole = (ks >= 0) & (ks + BLOCK_N - 1 <= key_hi) & full_tile
        verts_in = tl.load(prefix_base + tl.minimum(tl.maximum(ks + BLOCK_N, 0), S)) - tl.load(
            prefix_base + tl.minimum(tl.maximum(ks, 0), S)
        )
        flagged = tl.load(CHUNK_FULL + h * stride_chunk_h + f) != 0
        if flagged & whole & (verts_in == 0):
            bias = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        else:
            is_vert = tl.load(VERT_BITMAP + h * S + keys, mask=valid, other=1)
            # Bit (p - key) of the slash bitmap, read through the 3 words that hold the row's
            # window of BLOCK_N offsets [p - ks - BLOCK_N + 1, p - ks] (shifted by PAD >= 0).
            word0 = (qpos - ks - (BLOCK_N - 1) + PAD) >> 5  # [BLOCK_M]
            w0 = tl.load(words_base + word0)
            w1 = tl.load(words_base + word0 + 1)
            w2 = tl.load(words_base + word0 + 2)
            off = qpos[:, None] - keys[None, :] + PAD  # [BLOCK_M, BLOCK_N], >= 0
            rel = (off >> 5) - word0[:, None]
            word = tl.where(rel == 0, w0[:, None], tl.where(rel == 1, w1[:, None], w2[:, None]))
            on_slash = ((word >> (off & 31)) & 1) != 0
            allowed = on_slash & valid[None, :] & (is_vert[None, :] == 0) & (off >= PAD)
            bias = tl.where(allowed, 0.0, float("-inf"))
        s = tl.dot(q, tl.trans(k), bias)
        m_i, l_i, acc = online_softmax_update(m_i, l_i, acc, s, v, qk_scale)

    store_normalized(Out + h * stride_oh + rows[:, None] * stride_ot + dims[None, :], acc, l_i, rows < T)


def vertical_slash_attention_from_index(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    index: VerticalSlashIndex,
    num_warps: int | None = None,
    num_stages: int = 2,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention over a prebuilt index (so benchmarks can time index building apart); ``out`` an optional
    [Hq, T, D] buffer to fill. BLOCK_M / BLOCK_N come from the index (the chunk list depends on them).

    Defaults from benchmarks/sweep_tiles.py on an H100 at 128K (docs/benchmarks-kernels.md): BLOCK_M 64,
    BLOCK_N 32, 4 warps, 2 stages."""
    if index.block_n > 64 or index.block_m + index.block_n > SLASH_PAD:
        raise ValueError(
            "vertical_slash_attention: BLOCK_N must be <= 64 and BLOCK_M + BLOCK_N <= SLASH_PAD."
        )
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    hq, t, d = q.shape
    hkv, s, _ = k.shape
    out = torch.empty_like(q) if out is None else out
    n_tiles = index.vert_count.shape[1]
    if num_warps is None:
        num_warps = 8 if index.block_m >= 128 else 4
    vertical_slash_attention_fwd_kernel[(hq, n_tiles)](
        q, k, v, out,
        index.verticals, index.vert_count, index.vert_bitmap, index.vert_prefix, index.slash_words,
        index.chunk_start, index.chunk_end, index.chunk_full, index.chunk_count,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        out.stride(0), out.stride(1), index.verticals.stride(0), index.slash_words.stride(0),
        index.chunk_start.stride(0), n_tiles, t, s, LOG2E / math.sqrt(d),
        GROUP=hq // hkv, BLOCK_M=index.block_m, BLOCK_N=index.block_n, HEAD_DIM=d, PAD=SLASH_PAD,
        num_warps=num_warps, num_stages=num_stages,
    )  # fmt: skip
    return out


def vertical_slash_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    vertical_idx: torch.Tensor,
    slash_idx: torch.Tensor,
    block_m: int = 64,
    block_n: int = 32,
) -> torch.Tensor:
    """q [Hq, T, D], k/v [Hkv, S, D], vertical_idx [Hq, NV], slash_idx [Hq, NS] int64 -> [Hq, T, D]."""
    index = build_vertical_slash_index(vertical_idx, slash_idx, q.shape[1], k.shape[1], block_m, block_n)
    return vertical_slash_attention_from_index(q, k, v, index)
