"""Quest's whole decode step on the GPU without a host synchronisation: page scores, top-n, attention.

Four launches, all sizes known on the host (the page budget n is host arithmetic), so the step can be
captured in a CUDA graph:

1. ``quest_selection_scores_kernel``: per-page upper bounds from the page summaries, read once per kv
   head (every query head of the group uses the same tile); with shared pages the group's scores are
   summed in registers, so one row per kv head is written. The current page gets +inf: it is always read.
2. ``quest_select_top_pages_kernel``: one program per row finds the n-th largest score exactly by a
   radix select over order-preserving integer keys (11 passes of 3 bits, one block-wide reduction
   each, over a row held in registers up to 8192 pages), then writes either the n selected pages as
   an ascending list or a page mask. Ties at the n-th score go to the lowest pages. No sort.
3. ``quest_page_list_attention_kernel``: split-K attention over the list: a program owns one kv head
   and PAGES_PER_PROGRAM consecutive list entries, gathers their keys and values once for the whole
   query group, and writes a partial softmax.
4. the merge of the partial softmaxes (``triton_quest.quest_decode_merge_kernel``).

Traffic at 128K tokens (Qwen2.5-7B shapes, bf16 summaries): 16.8 MB of summaries + the selected
pages' keys and values (13.4 MB at CR 20) + ~1 MB of partials, against 268 MB for dense decode.
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from ..common.triton_helpers import LOG2E, online_softmax_update
from .triton_quest import _multiprocessors, quest_decode_merge_kernel

#: Scores the selection holds in registers at once: a whole row up to 128K tokens (16 per thread).
SELECT_CHUNK = 8192
#: The selection packs four 16-bit counters in an int64: rows of at most this many pages.
MAX_SELECT_PAGES = 2**16 - 1


@triton.jit
def quest_selection_scores_kernel(
    Q,  # [Hq, 1, D]
    LOW,  # [Hkv, >= P, D] per-page channel minimum of the keys (any float dtype)
    HIGH,  # [Hkv, >= P, D] per-page channel maximum
    SCORES,  # out float32 [Hkv, P] (SHARED) or [Hq, P]
    stride_qh,
    stride_bh,
    stride_bp,
    n_pages,
    current,  # the page holding the query's own token: +inf, its summary is not read
    GROUP: tl.constexpr,
    GROUP_PAD: tl.constexpr,
    SHARED: tl.constexpr,
    BLOCK_P: tl.constexpr,
    HEAD_DIM: tl.constexpr,
):
    """Quest bounds relu(q) . high + min(q, 0) . low of BLOCK_P pages for one kv head's query group
    (float32, no tf32), summed over the group when SHARED.

    The group's sum is taken per channel first, (sum_h relu(q_h)) . high + (sum_h min(q_h, 0)) . low
    (the authors' order: bounds summed over heads per channel, then over channels): one mat-vec per
    page tile instead of a [GROUP, D] x [D, BLOCK_P] float32 product, which has no tensor-core path
    and would cost more than reading the summaries."""
    kv_h = tl.program_id(0)
    pages = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)  # [BLOCK_P]
    page_ok = pages < n_pages
    read = page_ok & (pages != current)  # the current page may still be partial: its summary is stale
    heads = tl.arange(0, GROUP_PAD)
    head_ok = heads < GROUP
    dims = tl.arange(0, HEAD_DIM)
    q = tl.load(
        Q + (kv_h * GROUP + heads)[:, None] * stride_qh + dims[None, :], mask=head_ok[:, None], other=0.0
    ).to(tl.float32)  # [GROUP_PAD, D]
    offsets = kv_h * stride_bh + pages[:, None] * stride_bp + dims[None, :]
    low = tl.load(LOW + offsets, mask=read[:, None], other=0.0).to(tl.float32)  # [BLOCK_P, D]
    high = tl.load(HIGH + offsets, mask=read[:, None], other=0.0).to(tl.float32)
    if SHARED:
        q_pos = tl.sum(tl.maximum(q, 0.0), 0)  # [D] (padded heads are 0)
        q_neg = tl.sum(tl.minimum(q, 0.0), 0)
        row = tl.sum(q_pos[None, :] * high + q_neg[None, :] * low, 1)  # [BLOCK_P]
        row = tl.where(pages == current, float("inf"), row)
        tl.store(SCORES + kv_h * n_pages + pages, row, mask=page_ok)
    else:
        scores = tl.dot(tl.maximum(q, 0.0), tl.trans(high), input_precision="ieee")
        scores += tl.dot(tl.minimum(q, 0.0), tl.trans(low), input_precision="ieee")  # [GROUP_PAD, BLOCK_P]
        scores = tl.where(pages[None, :] == current, float("inf"), scores)
        tl.store(
            SCORES + (kv_h * GROUP + heads)[:, None] * n_pages + pages[None, :],
            scores,
            mask=head_ok[:, None] & page_ok[None, :],
        )


@triton.jit
def _order_key(x):
    """float32 [N] -> int64 in [0, 2^32) with the same order (radix digits are then plain shifts);
    -0.0 and 0.0 get one key, as they compare equal."""
    b = tl.where(x == 0.0, 0.0, x).to(tl.int32, bitcast=True)
    signed = b ^ ((b >> 31) & 0x7FFFFFFF)  # negative floats: magnitude bits flipped
    return signed.to(tl.int64) - (-2147483648)  # an int32 constant: no unsigned promotion


@triton.jit
def _digit_counts(key, match, prefix, SHIFT: tl.constexpr, WIDTH: tl.constexpr):
    """Packed per-element counts of the WIDTH-bit (<= 3) digit at SHIFT of the keys that match
    ``prefix`` above it: digit d adds 1 << (16 (d % 4)) to operand d // 4, so ONE two-operand
    reduction of the result counts all eight digits (16 bits each: rows of fewer than 2^16 pages)."""
    if SHIFT + WIDTH < 32:
        match = match & ((key >> (SHIFT + WIDTH)) == (prefix >> (SHIFT + WIDTH)))
    digit = (key >> SHIFT) & ((1 << WIDTH) - 1)
    one = tl.where(match, tl.full(key.shape, 1, tl.int64) << ((digit & 3) * 16), 0)
    return tl.where(digit < 4, one, 0), tl.where(digit >= 4, one, 0)


@triton.jit
def _add2(a0, a1, b0, b1):
    return a0 + b0, a1 + b1


@triton.jit
def quest_select_top_pages_kernel(
    SCORES,  # float32 [R, P]
    LIST,  # out int32 [R, n]: the selected pages, ascending (WRITE_LIST)
    MASK,  # out uint8 [R, P]: 1 = selected (WRITE_MASK)
    n_pages,  # < 2^16 (the packed counters)
    n_select,  # 1 <= n_select <= n_pages
    WRITE_LIST: tl.constexpr,
    WRITE_MASK: tl.constexpr,
    CHUNK: tl.constexpr,  # scores per step, a power of two
    SINGLE: tl.constexpr,  # CHUNK >= n_pages: the row is read once and stays in registers
    PAIRED_REDUCE: tl.constexpr,  # both digit-count operands in one reduction (False: two tl.sum)
):
    """The n_select largest scores of one row, ties at the n-th going to the lowest pages.

    Radix select from the top digit down, 11 passes of 3 bits (2 for the first): `prefix` holds the
    bits of the n-th largest key found so far, `need` how many keys matching it are still to take.
    Each pass costs one block-wide reduction (eight digit counts packed in two int64; four-bit
    digits made ptxas spill the row held in registers), which is what bounds
    this latency-bound kernel; the row is read once when it fits one chunk (8192 pages = 128K tokens).
    """
    row = tl.program_id(0).to(tl.int64)
    base = SCORES + row * n_pages
    offs = tl.arange(0, CHUNK)
    ok0 = offs < n_pages
    key0 = _order_key(tl.load(base + offs, mask=ok0, other=0.0))
    prefix = tl.zeros([], dtype=tl.int64)
    need = tl.zeros([], dtype=tl.int64) + n_select  # (an argument equal to 1 arrives as a constant)
    # Digits: bits 31-30, then ten of 3 bits (29-27 ... 2-0).
    for p in tl.static_range(11):
        width = 2 if p == 0 else 3
        shift = 30 - 3 * p
        lo_counts, hi_counts = _digit_counts(key0, ok0, prefix, shift, width)
        if not SINGLE:
            for c0 in range(CHUNK, n_pages, CHUNK):
                ok = c0 + offs < n_pages
                key = _order_key(tl.load(base + c0 + offs, mask=ok, other=0.0))
                a_lo, a_hi = _digit_counts(key, ok, prefix, shift, width)
                lo_counts, hi_counts = lo_counts + a_lo, hi_counts + a_hi
        if PAIRED_REDUCE:
            t_lo, t_hi = tl.reduce((lo_counts, hi_counts), 0, _add2)
        else:  # the same sums; Triton's interpreter runs a custom reduce element by element in Python
            t_lo, t_hi = tl.sum(lo_counts, 0), tl.sum(hi_counts, 0)
        # The need-th largest matching key has the highest digit whose count from the top reaches need.
        best = tl.full([], -1, tl.int32)
        above = tl.zeros([], dtype=tl.int64)
        cum = tl.zeros([], dtype=tl.int64)
        for i in tl.static_range(8):
            d = 7 - i
            if d >= 4:
                count = (t_hi >> (16 * (d % 4))) & 0xFFFF
            else:
                count = (t_lo >> (16 * (d % 4))) & 0xFFFF
            hit = (best < 0) & (cum + count >= need)
            above = tl.where(hit, cum, above)
            best = tl.where(hit, d, best)
            cum += count
        need -= above
        prefix += best.to(tl.int64) << shift
    # prefix is now the n-th largest key; take every key above it and the first `need` equal to it.
    taken = tl.zeros([], dtype=tl.int64)
    ties = tl.zeros([], dtype=tl.int64)
    for c0 in range(0, n_pages, CHUNK):
        ok = c0 + offs < n_pages
        if SINGLE:
            key = key0
        else:
            key = _order_key(tl.load(base + c0 + offs, mask=ok, other=0.0))
        equal = ok & (key == prefix)
        tie_rank = ties + tl.cumsum(equal.to(tl.int64), 0) - equal.to(tl.int64)
        chosen = ok & ((key > prefix) | (equal & (tie_rank < need)))
        if WRITE_MASK:
            tl.store(MASK + row * n_pages + c0 + offs, chosen.to(tl.uint8), mask=ok)
        if WRITE_LIST:
            slot = taken + tl.cumsum(chosen.to(tl.int64), 0) - chosen.to(tl.int64)
            tl.store(LIST + row * n_select + slot, (c0 + offs).to(tl.int32), mask=chosen)
        taken += tl.sum(chosen.to(tl.int64), 0)
        ties += tl.sum(equal.to(tl.int64), 0)


@triton.jit
def quest_page_list_attention_kernel(
    Q,  # [Hq, 1, D]
    K,  # [Hkv, S, D]
    V,  # [Hkv, S, D]
    LIST,  # int32 [Hkv, n_list]: the pages each kv head's query group reads
    M_PART,  # out [Hq, n_split] running max (log2 units)
    L_PART,  # out [Hq, n_split] running sum
    O_PART,  # out [Hq, n_split, D] unnormalised output
    stride_qh,
    stride_kh,
    stride_ks,
    stride_vh,
    stride_vs,
    S,
    n_list,
    qk_scale,
    n_split,
    GROUP: tl.constexpr,
    GROUP_PAD: tl.constexpr,
    PAGE: tl.constexpr,
    PAGES_PER_PROGRAM: tl.constexpr,
    BLOCK_N: tl.constexpr,  # keys per step, a multiple of PAGE
    HEAD_DIM: tl.constexpr,
):
    kv_h = tl.program_id(0)
    split = tl.program_id(1)
    heads = tl.arange(0, GROUP_PAD)
    head_ok = heads < GROUP
    dims = tl.arange(0, HEAD_DIM)
    q = tl.load(
        Q + (kv_h * GROUP + heads)[:, None] * stride_qh + dims[None, :], mask=head_ok[:, None], other=0.0
    )  # [GROUP_PAD, D]
    m_i = tl.full([GROUP_PAD], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([GROUP_PAD], dtype=tl.float32)
    acc = tl.zeros([GROUP_PAD, HEAD_DIM], dtype=tl.float32)
    key_in_page = tl.arange(0, BLOCK_N) % PAGE
    for c0 in tl.static_range(0, PAGES_PER_PROGRAM * PAGE, BLOCK_N):
        entry = split * PAGES_PER_PROGRAM + (c0 + tl.arange(0, BLOCK_N)) // PAGE  # [BLOCK_N] list position
        listed = entry < n_list
        page = tl.load(LIST + kv_h * n_list + entry, mask=listed, other=0)
        keys = page.to(tl.int64) * PAGE + key_in_page
        key_ok = listed & (keys < S)
        k = tl.load(
            K + kv_h * stride_kh + keys[:, None] * stride_ks + dims[None, :], mask=key_ok[:, None], other=0.0
        )  # [BLOCK_N, D]
        v = tl.load(
            V + kv_h * stride_vh + keys[:, None] * stride_vs + dims[None, :], mask=key_ok[:, None], other=0.0
        )
        s = tl.where(key_ok[None, :], tl.dot(q, tl.trans(k)), float("-inf"))  # [GROUP_PAD, BLOCK_N]
        m_i, l_i, acc = online_softmax_update(m_i, l_i, acc, s, v, qk_scale)
    out_rows = (kv_h * GROUP + heads) * n_split + split
    tl.store(M_PART + out_rows, m_i, mask=head_ok)
    tl.store(L_PART + out_rows, l_i, mask=head_ok)
    tl.store(O_PART + out_rows[:, None] * HEAD_DIM + dims[None, :], acc, mask=head_ok[:, None])


def _group_pad(group: int) -> int:
    return max(16, triton.next_power_of_2(group))


def quest_selection_scores_triton(
    q: torch.Tensor, low: torch.Tensor, high: torch.Tensor, n_pages: int, current: int, shared: bool
) -> torch.Tensor:
    """q [Hq, 1, D], low/high [Hkv, >= n_pages, D] -> float32 [Hkv (shared) or Hq, n_pages] selection
    scores: Quest's bounds (summed over each kv group when ``shared``), +inf at page ``current``."""
    hq, _, d = q.shape
    hkv = low.shape[0]
    if low.stride() != high.stride() or low.stride(-1) != 1:
        low, high = low.contiguous(), high.contiguous()
    scores = torch.empty(hkv if shared else hq, n_pages, dtype=torch.float32, device=q.device)
    block_p = 64
    quest_selection_scores_kernel[(hkv, triton.cdiv(n_pages, block_p))](
        q, low, high, scores, q.stride(0), low.stride(0), low.stride(1), n_pages, current,
        GROUP=hq // hkv, GROUP_PAD=_group_pad(hq // hkv), SHARED=shared, BLOCK_P=block_p, HEAD_DIM=d,
        num_warps=4,
    )  # fmt: skip
    return scores


def quest_select_top_pages_triton(
    scores: torch.Tensor,
    n_select: int,
    as_list: bool = True,
    out: torch.Tensor | None = None,
    chunk: int | None = None,
) -> torch.Tensor:
    """scores float32 [R, P] -> the ``n_select`` best pages of each row: int32 [R, n_select] ascending
    (``as_list``) or a bool mask [R, P]. Ties at the n-th score go to the lowest pages.

    out: optional buffer to fill (tests poison it); chunk: scores per step (a power of two; tests
    force several chunks on short rows)."""
    rows, n_pages = scores.shape
    if not 1 <= n_select <= n_pages:
        raise ValueError(f"quest_select_top_pages: n_select must be in [1, {n_pages}], got {n_select}.")
    if n_pages > MAX_SELECT_PAGES:
        raise ValueError(
            f"quest_select_top_pages: at most {MAX_SELECT_PAGES} pages per row, got {n_pages}; use a "
            "larger page_size."
        )
    scores = scores.contiguous()
    if out is None:
        out = (
            torch.empty(rows, n_select, dtype=torch.int32, device=scores.device)
            if as_list
            else torch.empty(rows, n_pages, dtype=torch.bool, device=scores.device)
        )
    target = out if as_list else out.view(torch.uint8)
    chunk = chunk or min(SELECT_CHUNK, triton.next_power_of_2(n_pages))
    quest_select_top_pages_kernel[(rows,)](
        scores, target, target, n_pages, n_select,
        WRITE_LIST=as_list, WRITE_MASK=not as_list, CHUNK=chunk, SINGLE=chunk >= n_pages,
        PAIRED_REDUCE=os.environ.get("TRITON_INTERPRET") != "1", num_warps=16,
    )  # fmt: skip
    return out


def list_pages_per_program(n_list: int, n_kv_heads: int, device: torch.device) -> int:
    """Listed pages per program: about two programs per SM, 4..64 pages each (a multiple of 4 pages,
    the 64-key step)."""
    target = max(1, math.ceil(n_list * n_kv_heads / (2 * _multiprocessors(device))))
    return max(4, min(64, triton.next_power_of_2(target)))


def quest_page_list_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    page_list: torch.Tensor,
    page_size: int = 16,
    pages_per_prog: int | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """q [Hq, 1, D], k/v [Hkv, S, D], page_list int32 [Hkv, n] (distinct pages, each query head reads
    its kv head's list) -> [Hq, 1, D]. Split-K over the list, then the partial softmaxes merged."""
    block_n = 64
    if block_n % page_size:
        raise ValueError(f"quest_page_list_attention: page_size must divide {block_n}, got {page_size}.")
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    hq, _, d = q.shape
    hkv, s, _ = k.shape
    group = hq // hkv
    n_list = page_list.shape[1]
    ppp = pages_per_prog or list_pages_per_program(n_list, hkv, q.device)
    ppp = max(ppp, block_n // page_size)
    n_split = math.ceil(n_list / ppp)
    page_list = page_list.contiguous()
    m_part = torch.empty(hq, n_split, dtype=torch.float32, device=q.device)
    l_part = torch.empty_like(m_part)
    o_part = torch.empty(hq, n_split, d, dtype=torch.float32, device=q.device)
    quest_page_list_attention_kernel[(hkv, n_split)](
        q, k, v, page_list, m_part, l_part, o_part,
        q.stride(0), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        s, n_list, LOG2E / math.sqrt(d), n_split,
        GROUP=group, GROUP_PAD=_group_pad(group), PAGE=page_size, PAGES_PER_PROGRAM=ppp,
        BLOCK_N=block_n, HEAD_DIM=d, num_warps=4, num_stages=2,
    )  # fmt: skip
    out = torch.empty_like(q) if out is None else out
    dim_block = min(32, d)
    quest_decode_merge_kernel[(hq, d // dim_block)](
        m_part, l_part, o_part, out, out.stride(0), n_split,
        SPLIT_BLOCK=min(128, triton.next_power_of_2(n_split)), DIM_BLOCK=dim_block, HEAD_DIM=d, num_warps=4,
    )  # fmt: skip
    return out
