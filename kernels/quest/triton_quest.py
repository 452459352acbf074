"""Triton Quest decode attention (paper A.1.6): split-K over the pages any head of a GQA group reads.

Decode is bound by reading the cache. Heads of one kv head share its pages, so index building
(``build_quest_index``) lists, per kv head, the union of the pages its query heads selected with a
bit per query head; one program per (kv head, split) loads each listed page once for the whole
group and masks rows by the bits. A second kernel merges the splits' partial softmaxes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ..common.triton_helpers import (
    LOG2E,
    mask_rows_to_union_list_kernel,
    multiprocessor_count,
    online_softmax_step,
)


def _multiprocessors(device: torch.device) -> int:
    """SMs to fill; the CPU interpreter gets a small stand-in so tests still exercise several splits."""
    return multiprocessor_count(device.index or 0) if device.type == "cuda" else 2


@dataclass
class QuestIndex:
    """pages: [Hkv, P] int32 union page ids (first count entries valid), bits: [Hkv, P] int32 head bits,
    count: [Hkv, 1] int32."""

    pages: torch.Tensor
    bits: torch.Tensor
    count: torch.Tensor


def build_quest_index(page_mask: torch.Tensor, n_kv_heads: int) -> QuestIndex:
    """page_mask [Hq, P] bool -> per kv head the union of its query heads' pages (ascending)."""
    hq, n_pages = page_mask.shape
    group = hq // n_kv_heads
    if group > 31:
        raise ValueError(
            f"quest_decode_attention: at most 31 query heads per kv head are supported, got {group}."
        )
    mask_u8 = page_mask.contiguous().view(torch.uint8)
    pages = torch.empty(n_kv_heads, n_pages, dtype=torch.int32, device=page_mask.device)
    bits = torch.empty_like(pages)
    count = torch.empty(n_kv_heads, 1, dtype=torch.int32, device=page_mask.device)
    list_start = torch.zeros(1, dtype=torch.int64, device=page_mask.device)
    mask_rows_to_union_list_kernel[(1, n_kv_heads)](
        mask_u8,
        list_start,
        pages,
        bits,
        count,
        group * mask_u8.stride(0),
        mask_u8.stride(0),
        pages.stride(0),
        group,
        n_pages,
        1,
        1,
        1,
        ROWS_PER_GROUP=group,
        SCAN=1024,
        CAUSAL_BLOCKS=False,
        BLOCK=1,
    )
    return QuestIndex(pages, bits, count)


@triton.jit
def quest_decode_partial_kernel(
    Q,
    K,
    V,  # q [Hq, 1, D]; k/v [Hkv, S, D]
    PAGES,
    BITS,
    COUNT,  # QuestIndex
    KEY_MASK,  # uint8 [Hkv, S]: 0 hides a cache slot (read only when HAS_KEY_MASK)
    M_PART,
    L_PART,
    O_PART,  # out: [Hq, N_SPLIT] running max (log2), sum; [Hq, N_SPLIT, D] unnormalised acc
    stride_qh,
    stride_kh,
    stride_ks,
    stride_vh,
    stride_vs,
    stride_pages_h,
    S,
    qk_scale,
    n_split,
    HAS_KEY_MASK: tl.constexpr,
    GROUP: tl.constexpr,
    GROUP_PAD: tl.constexpr,
    PAGE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HEAD_DIM: tl.constexpr,
):
    kv_h = tl.program_id(0)
    split = tl.program_id(1)
    n_pages = tl.load(COUNT + kv_h)
    pages_per_step: tl.constexpr = BLOCK_N // PAGE
    # Even share of the listed pages per split, in whole steps.
    per_split = tl.cdiv(tl.cdiv(n_pages, n_split), pages_per_step) * pages_per_step
    e0 = split * per_split
    e1 = tl.minimum(e0 + per_split, n_pages)
    heads = tl.arange(0, GROUP_PAD)  # [GROUP_PAD] query heads of this kv head (padded)
    head_ok = heads < GROUP
    dims = tl.arange(0, HEAD_DIM)
    q = tl.load(
        Q + (kv_h * GROUP + heads)[:, None] * stride_qh + dims[None, :], mask=head_ok[:, None], other=0.0
    )
    m_i = tl.full([GROUP_PAD], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([GROUP_PAD], dtype=tl.float32)
    acc = tl.zeros([GROUP_PAD, HEAD_DIM], dtype=tl.float32)
    for c0 in range(e0 * PAGE, e1 * PAGE, BLOCK_N):
        slot = c0 + tl.arange(0, BLOCK_N)
        entry = slot // PAGE
        valid = entry < e1
        page = tl.load(PAGES + kv_h * stride_pages_h + entry, mask=valid, other=0)
        bits = tl.load(BITS + kv_h * stride_pages_h + entry, mask=valid, other=0)
        keys = page * PAGE + slot % PAGE  # [BLOCK_N]
        key_ok = valid & (keys < S)
        if HAS_KEY_MASK:
            key_ok = key_ok & (tl.load(KEY_MASK + kv_h * S + keys, mask=key_ok, other=0) != 0)
        k = tl.load(
            K + kv_h * stride_kh + keys[:, None] * stride_ks + dims[None, :], mask=key_ok[:, None], other=0.0
        )
        v = tl.load(
            V + kv_h * stride_vh + keys[:, None] * stride_vs + dims[None, :], mask=key_ok[:, None], other=0.0
        )
        s = tl.dot(q, tl.trans(k)) * qk_scale  # [GROUP_PAD, BLOCK_N]
        allowed = (((bits[None, :] >> heads[:, None]) & 1) != 0) & key_ok[None, :]
        s = tl.where(allowed, s, float("-inf"))
        m_i, l_i, acc = online_softmax_step(m_i, l_i, acc, s, v)
    out_rows = (kv_h * GROUP + heads) * n_split + split
    tl.store(M_PART + out_rows, m_i, mask=head_ok)
    tl.store(L_PART + out_rows, l_i, mask=head_ok)
    tl.store(O_PART + out_rows[:, None] * HEAD_DIM + dims[None, :], acc, mask=head_ok[:, None])


@triton.jit
def quest_decode_merge_kernel(
    M_PART,
    L_PART,
    O_PART,
    Out,  # partials as written above; o [Hq, 1, D]
    stride_oh,
    n_split,
    SPLIT_PAD: tl.constexpr,
    HEAD_DIM: tl.constexpr,
):
    h = tl.program_id(0)
    splits = tl.arange(0, SPLIT_PAD)
    ok = splits < n_split
    m = tl.load(M_PART + h * n_split + splits, mask=ok, other=float("-inf"))  # [SPLIT_PAD]
    l_part = tl.load(L_PART + h * n_split + splits, mask=ok, other=0.0)
    dims = tl.arange(0, HEAD_DIM)
    acc = tl.load(
        O_PART + (h * n_split + splits)[:, None] * HEAD_DIM + dims[None, :], mask=ok[:, None], other=0.0
    )
    m_max = tl.max(m, 0)
    m_safe = tl.where(m_max == float("-inf"), 0.0, m_max)
    w = tl.exp2(m - m_safe)  # [SPLIT_PAD]; 0 for splits that saw nothing
    l_total = tl.sum(l_part * w, 0)
    out = tl.sum(acc * w[:, None], 0) / tl.where(l_total > 0, l_total, 1.0)
    tl.store(Out + h * stride_oh + dims, out.to(Out.dtype.element_ty))


def quest_decode_attention_from_index(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    index: QuestIndex,
    page_size: int = 16,
    key_mask: torch.Tensor | None = None,
    block_n: int = 64,
    n_split: int | None = None,
    num_warps: int = 4,
    num_stages: int = 3,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Decode attention over a prebuilt QuestIndex (so benchmarks can time index building apart).

    key_mask: optional [Hkv, S] bool, False hides a slot; out: optional [Hq, 1, D] buffer to fill.
    """
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    hq, _, d = q.shape
    hkv, s, _ = k.shape
    group = hq // hkv
    if n_split is None:
        # Enough programs to cover the SMs several times, but no split smaller than one step.
        steps = math.ceil(index.pages.shape[1] * page_size / block_n)
        n_split = max(1, min(steps, 4 * _multiprocessors(q.device) // hkv))
    m_part = torch.empty(hq, n_split, dtype=torch.float32, device=q.device)
    l_part = torch.empty_like(m_part)
    o_part = torch.empty(hq, n_split, d, dtype=torch.float32, device=q.device)
    key_mask_u8 = m_part if key_mask is None else key_mask.contiguous().view(torch.uint8)
    quest_decode_partial_kernel[(hkv, n_split)](
        q,
        k,
        v,
        index.pages,
        index.bits,
        index.count,
        key_mask_u8,
        m_part,
        l_part,
        o_part,
        q.stride(0),
        k.stride(0),
        k.stride(1),
        v.stride(0),
        v.stride(1),
        index.pages.stride(0),
        s,
        LOG2E / math.sqrt(d),
        n_split,
        HAS_KEY_MASK=key_mask is not None,
        GROUP=group,
        GROUP_PAD=max(16, triton.next_power_of_2(group)),
        PAGE=page_size,
        BLOCK_N=block_n,
        HEAD_DIM=d,
        num_warps=num_warps,
        num_stages=num_stages,
    )
    out = torch.empty_like(q) if out is None else out
    quest_decode_merge_kernel[(hq,)](
        m_part,
        l_part,
        o_part,
        out,
        out.stride(0),
        n_split,
        SPLIT_PAD=triton.next_power_of_2(n_split),
        HEAD_DIM=d,
        num_warps=4,
    )
    return out


def quest_decode_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    page_mask: torch.Tensor,
    page_size: int = 16,
    key_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """q [Hq, 1, D], k/v [Hkv, S, D], page_mask [Hq, ceil(S/16)] bool, key_mask [Hkv, S] -> [Hq, 1, D]."""
    if 64 % page_size:
        raise ValueError(
            f"quest_decode_attention: page_size must divide 64 for the Triton kernel, got {page_size}."
        )
    index = build_quest_index(page_mask, k.shape[0])
    return quest_decode_attention_from_index(q, k, v, index, page_size, key_mask)
