"""Triton vertical-slash prefill attention (paper A.1.2) and its GPU index building.

A program owns one query head and one query tile of BLOCK_M consecutive queries [p0, p1]. It
runs two phases into one online softmax:

1. verticals: the head's sorted, de-duplicated vertical keys <= p1, gathered BLOCK_N at a time,
   masked by causality only;
2. slashes: a slash at offset o covers keys [p0 - o, p1 - o] for this tile. Offsets closer than
   BLOCK_M merge into groups whose bands form one contiguous key range [p0 - max, p1 - min]
   (MInference's idea of turning diagonals into key ranges). Each range is walked in contiguous
   BLOCK_N chunks and masked *exactly*: pair (p, key) counts when p - key is a slash offset (a bit
   test in a packed bitmap) and key is not a vertical (phase 1 already counted it).

So every pair is computed once and only listed pairs count; the price of exactness is that an
isolated slash still costs a (BLOCK_M + BLOCK_N)-wide band of tensor-core work per tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ..common.triton_helpers import LOG2E, online_softmax_step

#: Bits of zero padding before offset 0 in the slash bitmap, so out-of-band (negative) offsets
#: of a tile never index before the start; must be a multiple of 32 and >= BLOCK_M + BLOCK_N.
SLASH_PAD = 256


@dataclass
class VerticalSlashIndex:
    """Index consumed by vertical_slash_attention_fwd_kernel (all int32 unless said).

    verticals:     [Hq, NV] sorted unique vertical keys, padded with S.
    vert_count:    [Hq, n_tiles] verticals <= the tile's last query position.
    vert_bitmap:   [Hq, S] uint8, 1 at vertical keys.
    slash_words:   [Hq, NW] bitmap of slash offsets, offset o at bit o + SLASH_PAD.
    group_lo/hi:   [Hq, NG] smallest / largest offset of each merged slash group, ascending.
    group_count:   [Hq, n_tiles] groups whose smallest offset <= the tile's last query position.
    """

    block_m: int
    verticals: torch.Tensor
    vert_count: torch.Tensor
    vert_bitmap: torch.Tensor
    slash_words: torch.Tensor
    group_lo: torch.Tensor
    group_hi: torch.Tensor
    group_count: torch.Tensor


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


def build_vertical_slash_index(
    vertical_idx: torch.Tensor, slash_idx: torch.Tensor, t: int, s: int, block_m: int = 64
) -> VerticalSlashIndex:
    """Vertical keys [Hq, NV] and slash offsets [Hq, NS] (int64, negative = padding) -> index."""
    hq = vertical_idx.shape[0]
    device = vertical_idx.device
    n_tiles = math.ceil(t / block_m)
    tile_last = torch.clamp((torch.arange(n_tiles, device=device) + 1) * block_m, max=t) - 1 + (s - t)
    tile_last = tile_last[None, :].expand(hq, n_tiles).contiguous()

    verts, _ = _sorted_unique(vertical_idx, s)
    vert_count = torch.searchsorted(verts, tile_last, right=True).to(torch.int32)
    vert_bitmap = torch.zeros(hq, s + 1, dtype=torch.uint8, device=device)
    vert_bitmap.scatter_(1, verts, 1)
    vert_bitmap = vert_bitmap[:, :s].contiguous()

    n_words = (s + SLASH_PAD) // 32 + 3
    offs, valid = _sorted_unique(slash_idx, s)
    slash_bits = torch.zeros(hq, n_words * 32 + 1, dtype=torch.bool, device=device)
    slash_bits.scatter_(1, torch.where(valid, offs + SLASH_PAD, n_words * 32), True)
    slash_words = _pack_bits(slash_bits[:, : n_words * 32])

    # Offsets closer than block_m make touching bands in every tile: one group, one key range.
    starts = valid.clone()
    starts[:, 1:] &= (offs[:, 1:] - offs[:, :-1]) > block_m
    group_id = torch.cumsum(starts.long(), dim=1) - 1
    n_slots = offs.shape[1] + 1
    slot = torch.where(valid, group_id, n_slots - 1)  # padding lands in a spare slot
    big = torch.full((hq, n_slots), s, dtype=torch.int64, device=device)
    group_lo = big.scatter_reduce(1, slot, torch.where(valid, offs, s), "amin")[:, :-1]
    group_hi = torch.full_like(big, -1).scatter_reduce(1, slot, torch.where(valid, offs, -1), "amax")[:, :-1]
    group_count = torch.searchsorted(group_lo.contiguous(), tile_last, right=True).to(torch.int32)
    return VerticalSlashIndex(
        block_m,
        verts.to(torch.int32).contiguous(),
        vert_count.contiguous(),
        vert_bitmap,
        slash_words.contiguous(),
        group_lo.to(torch.int32).contiguous(),
        group_hi.to(torch.int32).contiguous(),
        group_count.contiguous(),
    )


@triton.jit
def vertical_slash_attention_fwd_kernel(
    Q,
    K,
    V,
    Out,  # q/o [Hq, T, D], k/v [Hkv, S, D]; last dim contiguous
    VERTS,
    VERT_COUNT,
    VERT_BITMAP,
    SLASH_WORDS,
    GROUP_LO,
    GROUP_HI,
    GROUP_COUNT,  # VerticalSlashIndex
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
    stride_group_h,
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
        keys = tl.load(VERTS + h * stride_verts_h + slot, mask=valid, other=0)  # [BLOCK_N]
        k = tl.load(k_base + keys[:, None] * stride_ks + dims[None, :], mask=valid[:, None], other=0.0)
        v = tl.load(v_base + keys[:, None] * stride_vs + dims[None, :], mask=valid[:, None], other=0.0)
        s = tl.dot(q, tl.trans(k)) * qk_scale
        allowed = valid[None, :] & (keys[None, :] <= qpos[:, None])
        s = tl.where(allowed, s, float("-inf"))
        m_i, l_i, acc = online_softmax_step(m_i, l_i, acc, s, v)

    # Phase 2: merged slash bands, exact per-pair membership, verticals excluded.
    words_base = SLASH_WORDS + h * stride_words_h
    n_groups = tl.load(GROUP_COUNT + h * n_tiles + tile)
    for g in range(0, n_groups):
        lo_off = tl.load(GROUP_LO + h * stride_group_h + g)
        hi_off = tl.load(GROUP_HI + h * stride_group_h + g)
        key_lo = tl.maximum(p0 - hi_off, 0)
        key_hi = p1 - lo_off  # inclusive, <= p1 < S
        for ks in range(key_lo, key_hi + 1, BLOCK_N):
            keys = ks + tl.arange(0, BLOCK_N)  # [BLOCK_N] contiguous
            valid = keys <= key_hi
            k = tl.load(k_base + keys[:, None] * stride_ks + dims[None, :], mask=valid[:, None], other=0.0)
            v = tl.load(v_base + keys[:, None] * stride_vs + dims[None, :], mask=valid[:, None], other=0.0)
            s = tl.dot(q, tl.trans(k)) * qk_scale
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
            s = tl.where(allowed, s, float("-inf"))
            m_i, l_i, acc = online_softmax_step(m_i, l_i, acc, s, v)

    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    tl.store(
        Out + h * stride_oh + rows[:, None] * stride_ot + dims[None, :],
        out.to(Out.dtype.element_ty),
        mask=rows[:, None] < T,
    )


def vertical_slash_attention_from_index(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    index: VerticalSlashIndex,
    block_n: int = 64,
    num_warps: int | None = None,
    num_stages: int = 3,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention over a prebuilt index (so benchmarks can time index building apart); ``out`` an optional
    [Hq, T, D] buffer to fill."""
    if block_n > 64 or index.block_m + block_n > SLASH_PAD:
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
        q,
        k,
        v,
        out,
        index.verticals,
        index.vert_count,
        index.vert_bitmap,
        index.slash_words,
        index.group_lo,
        index.group_hi,
        index.group_count,
        q.stride(0),
        q.stride(1),
        k.stride(0),
        k.stride(1),
        v.stride(0),
        v.stride(1),
        out.stride(0),
        out.stride(1),
        index.verticals.stride(0),
        index.slash_words.stride(0),
        index.group_lo.stride(0),
        n_tiles,
        t,
        s,
        LOG2E / math.sqrt(d),
        GROUP=hq // hkv,
        BLOCK_M=index.block_m,
        BLOCK_N=block_n,
        HEAD_DIM=d,
        PAD=SLASH_PAD,
        num_warps=num_warps,
        num_stages=num_stages,
    )
    return out


def vertical_slash_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    vertical_idx: torch.Tensor,
    slash_idx: torch.Tensor,
    block_m: int = 64,
) -> torch.Tensor:
    """q [Hq, T, D], k/v [Hkv, S, D], vertical_idx [Hq, NV], slash_idx [Hq, NS] int64 -> [Hq, T, D]."""
    index = build_vertical_slash_index(vertical_idx, slash_idx, q.shape[1], k.shape[1], block_m)
    return vertical_slash_attention_from_index(q, k, v, index)
