"""Triton Quest decode attention (paper A.1.6): split-K over the cache, one page range per program.

Decode is bound by reading the cache, so the kernel reads each selected page once per kv head:
a program owns one kv head and a range of PAGES_PER_PROGRAM pages, ORs the page masks of the
query heads that share the kv head (GQA) into a bit per head, compacts the selected pages in
registers (prefix sum + one-hot gather), and streams only those pages, masking each query head's
scores by its own bit. No separate index is built: the page mask is the index. A second kernel
merges the programs' partial softmaxes.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ..common.triton_helpers import LOG2E, multiprocessor_count, online_softmax_update


def _multiprocessors(device: torch.device) -> int:
    """SMs to fill; the CPU interpreter gets a small stand-in so tests still exercise several programs."""
    return multiprocessor_count(device.index or 0) if device.type == "cuda" else 2


@triton.jit
def quest_decode_partial_kernel(
    Q,  # [Hq, 1, D]
    K,  # [Hkv, S, D]
    V,  # [Hkv, S, D]
    PAGE_MASK,  # uint8 [Hq, P]: 1 = the query head reads the page
    KEY_MASK,  # uint8 [Hkv, S]: 0 hides a cache slot (read only when HAS_KEY_MASK)
    M_PART,  # out [Hq, n_split] running max (log2 units)
    L_PART,  # out [Hq, n_split] running sum
    O_PART,  # out [Hq, n_split, D] unnormalised output
    stride_qh,
    stride_kh,
    stride_ks,
    stride_vh,
    stride_vs,
    stride_mask_h,
    S,
    n_pages,
    qk_scale,
    n_split,
    HAS_KEY_MASK: tl.constexpr,
    GROUP: tl.constexpr,  # query heads per kv head
    GROUP_PAD: tl.constexpr,  # GROUP rounded up to a tl.dot-able row count (>= 16)
    PAGE: tl.constexpr,
    PAGES_PER_PROGRAM: tl.constexpr,
    BLOCK_N: tl.constexpr,  # keys per step, a multiple of PAGE
    HEAD_DIM: tl.constexpr,
):
    kv_h = tl.program_id(0)
    split = tl.program_id(1)
    heads = tl.arange(0, GROUP_PAD)  # [GROUP_PAD]
    head_ok = heads < GROUP
    dims = tl.arange(0, HEAD_DIM)

    # Which pages of this range any head of the group reads, with a bit per head.
    pages = split * PAGES_PER_PROGRAM + tl.arange(0, PAGES_PER_PROGRAM)  # [PAGES_PER_PROGRAM]
    page_ok = pages < n_pages
    bits = tl.zeros([PAGES_PER_PROGRAM], dtype=tl.int32)
    for r in tl.static_range(GROUP):
        keep = tl.load(PAGE_MASK + (kv_h * GROUP + r) * stride_mask_h + pages, mask=page_ok, other=0)
        bits = bits | ((keep != 0).to(tl.int32) << r)
    selected = bits != 0
    slot_of_page = tl.cumsum(selected.to(tl.int32), 0) - 1  # [PAGES_PER_PROGRAM] compacted position
    n_selected = tl.sum(selected.to(tl.int32), 0)

    q = tl.load(
        Q + (kv_h * GROUP + heads)[:, None] * stride_qh + dims[None, :], mask=head_ok[:, None], other=0.0
    )
    m_i = tl.full([GROUP_PAD], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([GROUP_PAD], dtype=tl.float32)
    acc = tl.zeros([GROUP_PAD, HEAD_DIM], dtype=tl.float32)
    key_in_page = tl.arange(0, BLOCK_N) % PAGE
    for c0 in range(0, n_selected * PAGE, BLOCK_N):
        slot = (c0 + tl.arange(0, BLOCK_N)) // PAGE  # [BLOCK_N] compacted page slot of each key
        # One-hot gather: the page (and its head bits) sitting at each key's slot.
        hit = (slot_of_page[None, :] == slot[:, None]) & selected[None, :]  # [BLOCK_N, PAGES_PER_PROGRAM]
        page = tl.sum(tl.where(hit, pages[None, :], 0), 1)  # [BLOCK_N]
        key_bits = tl.sum(tl.where(hit, bits[None, :], 0), 1)  # [BLOCK_N]
        keys = page * PAGE + key_in_page
        key_ok = (slot < n_selected) & (keys < S)
        if HAS_KEY_MASK:
            key_ok = key_ok & (tl.load(KEY_MASK + kv_h * S + keys, mask=key_ok, other=0) != 0)
        k = tl.load(
            K + kv_h * stride_kh + keys[:, None] * stride_ks + dims[None, :], mask=key_ok[:, None], other=0.0
        )
        v = tl.load(
            V + kv_h * stride_vh + keys[:, None] * stride_vs + dims[None, :], mask=key_ok[:, None], other=0.0
        )
        allowed = (((key_bits[None, :] >> heads[:, None]) & 1) != 0) & key_ok[None, :]
        s = tl.where(allowed, tl.dot(q, tl.trans(k)), float("-inf"))  # [GROUP_PAD, BLOCK_N] unscaled
        m_i, l_i, acc = online_softmax_update(m_i, l_i, acc, s, v, qk_scale)
    out_rows = (kv_h * GROUP + heads) * n_split + split
    tl.store(M_PART + out_rows, m_i, mask=head_ok)
    tl.store(L_PART + out_rows, l_i, mask=head_ok)
    tl.store(O_PART + out_rows[:, None] * HEAD_DIM + dims[None, :], acc, mask=head_ok[:, None])


@triton.jit
def quest_decode_merge_kernel(
    M_PART,  # [Hq, n_split]
    L_PART,  # [Hq, n_split]
    O_PART,  # [Hq, n_split, D]
    Out,  # [Hq, 1, D]
    stride_oh,
    n_split,
    SPLIT_BLOCK: tl.constexpr,
    DIM_BLOCK: tl.constexpr,
    HEAD_DIM: tl.constexpr,
):
    """Merge split partial softmaxes: out = sum_i 2^(m_i - m) acc_i / sum_i 2^(m_i - m) l_i.

    One program per (head, DIM_BLOCK slice of the head dim), so the merge spreads over many SMs.
    """
    h = tl.program_id(0)
    dims = tl.program_id(1) * DIM_BLOCK + tl.arange(0, DIM_BLOCK)
    m_run = tl.full([], float("-inf"), dtype=tl.float32)
    l_run = tl.zeros([], dtype=tl.float32)
    acc = tl.zeros([DIM_BLOCK], dtype=tl.float32)
    for s0 in range(0, n_split, SPLIT_BLOCK):
        splits = s0 + tl.arange(0, SPLIT_BLOCK)
        ok = splits < n_split
        m = tl.load(M_PART + h * n_split + splits, mask=ok, other=float("-inf"))  # [SPLIT_BLOCK]
        l_part = tl.load(L_PART + h * n_split + splits, mask=ok, other=0.0)
        o = tl.load(
            O_PART + (h * n_split + splits)[:, None] * HEAD_DIM + dims[None, :], mask=ok[:, None], other=0.0
        )
        m_new = tl.maximum(m_run, tl.max(m, 0))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        w = tl.exp2(m - m_safe)  # [SPLIT_BLOCK]; 0 for splits that saw nothing
        alpha = tl.exp2(m_run - m_safe)
        l_run = l_run * alpha + tl.sum(l_part * w, 0)
        acc = acc * alpha + tl.sum(o * w[:, None], 0)
        m_run = m_new
    out = acc / tl.where(l_run > 0, l_run, 1.0)
    tl.store(Out + h * stride_oh + dims, out.to(Out.dtype.element_ty))


def pages_per_program(n_pages: int, n_kv_heads: int, device: torch.device) -> int:
    """Page range per program: about four programs per SM, 16..256 pages each (64 at 128K on an
    H100, the best of 16/32/64/128 measured there, docs/benchmarks-kernels.md)."""
    target = max(1, math.ceil(n_pages * n_kv_heads / (4 * _multiprocessors(device))))
    return max(16, min(256, triton.next_power_of_2(target)))


def quest_decode_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    page_mask: torch.Tensor,
    page_size: int = 16,
    key_mask: torch.Tensor | None = None,
    block_n: int = 64,
    pages_per_prog: int | None = None,
    num_warps: int = 4,
    num_stages: int = 2,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """q [Hq, 1, D], k/v [Hkv, S, D], page_mask [Hq, P] bool, key_mask [Hkv, S] bool | None -> [Hq, 1, D].

    out: optional [Hq, 1, D] buffer to fill (tests poison it with NaN).
    """
    if block_n % page_size:
        raise ValueError(f"quest_decode_attention: page_size must divide {block_n}, got {page_size}.")
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    hq, _, d = q.shape
    hkv, s, _ = k.shape
    group = hq // hkv
    if group > 31:
        raise ValueError(f"quest_decode_attention: at most 31 query heads per kv head, got {group}.")
    n_pages = page_mask.shape[1]
    ppp = pages_per_prog or pages_per_program(n_pages, hkv, q.device)
    n_split = math.ceil(n_pages / ppp)
    mask_u8 = page_mask.contiguous().view(torch.uint8)
    m_part = torch.empty(hq, n_split, dtype=torch.float32, device=q.device)
    l_part = torch.empty_like(m_part)
    o_part = torch.empty(hq, n_split, d, dtype=torch.float32, device=q.device)
    key_mask_u8 = mask_u8 if key_mask is None else key_mask.contiguous().view(torch.uint8)
    quest_decode_partial_kernel[(hkv, n_split)](
        q, k, v, mask_u8, key_mask_u8, m_part, l_part, o_part,
        q.stride(0), k.stride(0), k.stride(1), v.stride(0), v.stride(1), mask_u8.stride(0),
        s, n_pages, LOG2E / math.sqrt(d), n_split,
        HAS_KEY_MASK=key_mask is not None, GROUP=group, GROUP_PAD=max(16, triton.next_power_of_2(group)),
        PAGE=page_size, PAGES_PER_PROGRAM=ppp, BLOCK_N=block_n, HEAD_DIM=d,
        num_warps=num_warps, num_stages=num_stages,
    )  # fmt: skip
    out = torch.empty_like(q) if out is None else out
    dim_block = min(32, d)
    quest_decode_merge_kernel[(hq, d // dim_block)](
        m_part, l_part, o_part, out, out.stride(0), n_split,
        SPLIT_BLOCK=min(128, triton.next_power_of_2(n_split)), DIM_BLOCK=dim_block, HEAD_DIM=d, num_warps=4,
    )  # fmt: skip
    return out


@triton.jit
def quest_page_scores_kernel(
    Q,  # [Hq, 1, D]
    LOW,  # [Hkv, P, D] float32 per-page channel minimum (+inf for a page with no visible key)
    HIGH,  # [Hkv, P, D] float32 per-page channel maximum
    SCORES,  # out [Hq, P] float32
    stride_qh,
    stride_bh,
    stride_bp,
    n_pages,
    GROUP: tl.constexpr,
    GROUP_PAD: tl.constexpr,
    BLOCK_P: tl.constexpr,
    HEAD_DIM: tl.constexpr,
):
    """Quest's page upper bounds for the query heads of one kv head over BLOCK_P pages, as two
    small matrix products: relu(q) . high + min(q, 0) . low (exact float32, no tf32)."""
    kv_h = tl.program_id(0)
    pages = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)  # [BLOCK_P]
    page_ok = pages < n_pages
    heads = tl.arange(0, GROUP_PAD)
    head_ok = heads < GROUP
    dims = tl.arange(0, HEAD_DIM)
    q = tl.load(
        Q + (kv_h * GROUP + heads)[:, None] * stride_qh + dims[None, :], mask=head_ok[:, None], other=0.0
    )
    q = q.to(tl.float32)  # [GROUP_PAD, D]
    offsets = kv_h * stride_bh + pages[:, None] * stride_bp + dims[None, :]
    low = tl.load(LOW + offsets, mask=page_ok[:, None], other=0.0)  # [BLOCK_P, D]
    high = tl.load(HIGH + offsets, mask=page_ok[:, None], other=0.0)
    empty = tl.max(low, 1) == float("inf")  # [BLOCK_P]: all channels +inf
    low = tl.where(empty[:, None], 0.0, low)
    high = tl.where(empty[:, None], 0.0, high)
    scores = tl.dot(tl.maximum(q, 0.0), tl.trans(high), input_precision="ieee")
    scores += tl.dot(tl.minimum(q, 0.0), tl.trans(low), input_precision="ieee")  # [GROUP_PAD, BLOCK_P]
    scores = tl.where(empty[None, :], float("-inf"), scores)
    tl.store(
        SCORES + (kv_h * GROUP + heads)[:, None] * n_pages + pages[None, :],
        scores,
        mask=head_ok[:, None] & page_ok[None, :],
    )


def quest_page_scores_triton(q: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """q [Hq, 1, D]; low/high [Hkv, P, D] float32 page bounds -> [Hq, P] float32 Quest scores.

    Same function as quest.reference.quest_page_scores_reference, one launch, reading each page
    summary once per kv head (GQA heads share it).
    """
    hq, _, d = q.shape
    hkv, n_pages, _ = low.shape
    group = hq // hkv
    # Views of larger buffers (Quest's kept page summaries) are read in place when both share strides.
    in_place = low.dtype == high.dtype == torch.float32 and low.stride() == high.stride()
    if not (in_place and low.stride(-1) == 1):
        low, high = low.float().contiguous(), high.float().contiguous()
    scores = torch.empty(hq, n_pages, dtype=torch.float32, device=q.device)
    block_p = 32
    quest_page_scores_kernel[(hkv, triton.cdiv(n_pages, block_p))](
        q, low, high, scores, q.stride(0), low.stride(0), low.stride(1), n_pages,
        GROUP=group, GROUP_PAD=max(16, triton.next_power_of_2(group)), BLOCK_P=block_p, HEAD_DIM=d,
        num_warps=4,
    )  # fmt: skip
    return scores
