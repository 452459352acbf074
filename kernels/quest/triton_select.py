"""Quest's whole decode step on the GPU without a host synchronisation: page scores, top-n, attention.

Five launches, all sizes known on the host (the page budget n is host arithmetic), so the step can be
captured in a CUDA graph:

0. a memset of the selection histogram (int32 [rows, 4096]).
1. ``quest_selection_scores_kernel``: per-page upper bounds from the page summaries, read once per kv
   head (every query head of the group uses the same tile); with shared pages the group's scores are
   summed in registers, so one row per kv head is written. The current page gets +inf: it is always
   read. Each page also adds one to its row's histogram bin of the top 12 bits of its order key
   (relaxed global atomics), spread over all the tiles.
2. ``quest_select_pages_kernel``: many programs per row (about one per SM in all). Each finds the
   row's n-th largest key exactly and redundantly: its top 12 bits from the histogram (one scan of
   4096 bins), the low 20 bits by ten 2-bit passes over the row held in registers (three int32
   counts per pass, one block reduction). Then it writes its own chunk of pages: those above the n-th
   key and the lowest-page ties at it, as slots of the ascending list (the slots before the chunk
   are counted in one more pass over the row) or as a page mask. No sort, no atomics, no host sync.
3. ``quest_page_list_attention_kernel``: split-K attention over the list: a program owns one kv head
   and PAGES_PER_PROGRAM consecutive list entries, gathers their keys and values once for the whole
   query group, and writes a partial softmax.
4. the merge of the partial softmaxes (``triton_quest.quest_decode_merge_kernel``).

The previous selection (one program per row, 11 radix passes over int64-packed digit counters)
used 4 SMs; with the scores it cost 69 us at 128K on an H200, flat in the ratio (docs/benchmarks.md).

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

#: Bins of the selection histogram: the top 12 bits of a score's order key.
SELECT_BINS = 4096
#: Scores each selection program holds in registers at once: a whole row up to 128K tokens.
SELECT_BLOCK = 8192


@triton.jit
def _order_key(x):
    """float32 -> int32 with the same (signed) order; -0.0 and 0.0 get one key, as they compare equal."""
    b = tl.where(x == 0.0, 0.0, x).to(tl.int32, bitcast=True)
    return b ^ ((b >> 31) & 0x7FFFFFFF)  # negative floats: magnitude bits flipped


@triton.jit
def _row_keys(base, pages, n_pages):
    """Order keys of a row's pages; pages past the row get the lowest int32, below every score's key
    (-inf's included), so no count ever includes them."""
    ok = pages < n_pages
    return tl.where(ok, _order_key(tl.load(base + pages, mask=ok, other=0.0)), -2147483648)


@triton.jit
def _count_top_bits(HIST, row, scores, ok):
    """Adds each score (where ``ok``) to its row's bin of the top 12 key bits; row: the scores' row
    index (broadcast against them)."""
    bins = (_order_key(scores) >> 20) + 2048  # arithmetic shift: [-2048, 2047] -> [0, 4096)
    tl.atomic_add(HIST + row * 4096 + bins, 1, mask=ok, sem="relaxed")


@triton.jit
def quest_selection_scores_kernel(
    Q,  # [Hq, 1, D]
    LOW,  # [Hkv, >= P, D] per-page channel minimum of the keys (any float dtype)
    HIGH,  # [Hkv, >= P, D] per-page channel maximum
    SCORES,  # out float32 [Hkv, P] (SHARED) or [Hq, P]
    HIST,  # int32 [rows of SCORES, 4096], zeroed: each page is counted in its top-bits bin
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
        _count_top_bits(HIST, kv_h, row, page_ok)
    else:
        scores = tl.dot(tl.maximum(q, 0.0), tl.trans(high), input_precision="ieee")
        scores += tl.dot(tl.minimum(q, 0.0), tl.trans(low), input_precision="ieee")  # [GROUP_PAD, BLOCK_P]
        scores = tl.where(pages[None, :] == current, float("inf"), scores)
        rows = (kv_h * GROUP + heads)[:, None]
        ok = head_ok[:, None] & page_ok[None, :]
        tl.store(SCORES + rows * n_pages + pages[None, :], scores, mask=ok)
        _count_top_bits(HIST, rows, scores, ok)


@triton.jit
def quest_top_bits_histogram_kernel(SCORES, HIST, n_pages, BLOCK: tl.constexpr):
    """The scores kernel's histogram for scores from elsewhere: float32 [R, P] -> HIST [R, 4096]."""
    row = tl.program_id(0)
    pages = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = pages < n_pages
    _count_top_bits(HIST, row, tl.load(SCORES + row * n_pages + pages, mask=ok, other=0.0), ok)


@triton.jit
def _add3(a0, a1, a2, b0, b1, b2):
    return a0 + b0, a1 + b1, a2 + b2


@triton.jit
def _sum3(x0, x1, x2, PAIRED: tl.constexpr):
    if PAIRED:
        return tl.reduce((x0, x1, x2), 0, _add3)
    else:  # the same sums; Triton's interpreter runs a custom reduce element by element in Python
        return tl.sum(x0, 0), tl.sum(x1, 0), tl.sum(x2, 0)


@triton.jit
def _counts_at_or_above(
    base, offs, n_pages, key0, t1, t2, t3, BLOCK: tl.constexpr, SINGLE: tl.constexpr, PAIRED: tl.constexpr
):
    """How many keys of the row are >= t1, >= t2, >= t3 (one block reduction for the three)."""
    c1, c2, c3 = _sum3(
        (key0 >= t1).to(tl.int32), (key0 >= t2).to(tl.int32), (key0 >= t3).to(tl.int32), PAIRED
    )
    if not SINGLE:
        for b0 in range(BLOCK, n_pages, BLOCK):
            key = _row_keys(base, b0 + offs, n_pages)
            a1, a2, a3 = _sum3(
                (key >= t1).to(tl.int32),
                (key >= t2).to(tl.int32),
                (key >= t3).to(tl.int32),
                PAIRED,
            )
            c1, c2, c3 = c1 + a1, c2 + a2, c3 + a3
    return c1, c2, c3


@triton.jit
def quest_select_pages_kernel(
    SCORES,  # float32 [R, P]
    HIST,  # int32 [R, 4096]: the rows' counts per top-12-bit bin of the order key
    LIST,  # out int32 [R, n]: the selected pages, ascending (WRITE_LIST)
    MASK,  # out uint8 [R, P]: 1 = selected (WRITE_MASK)
    n_pages,
    n_select,  # 1 <= n_select <= n_pages
    WRITE_LIST: tl.constexpr,
    WRITE_MASK: tl.constexpr,
    CHUNK: tl.constexpr,  # pages this program writes
    BLOCK: tl.constexpr,  # scores held in registers at once, a power of two
    SINGLE: tl.constexpr,  # BLOCK >= n_pages: the row is read once and stays in registers
    PAIRED: tl.constexpr,  # the three counts of a pass in one reduction (False: three tl.sum)
):
    """The n_select largest scores of row program_id(0), ties at the n-th going to the lowest pages,
    written for the pages of chunk program_id(1).

    Every program of a row finds the same threshold t, the n-th largest key: the largest key with
    at least n keys >= it. Its top 12 bits are the highest histogram bin holding the n-th key; the
    low 20 bits follow from the top down, two per pass, by counting the keys >= each of the three
    candidates.
    """
    row = tl.program_id(0).to(tl.int64)
    c0 = tl.program_id(1) * CHUNK
    base = SCORES + row * n_pages
    bins = tl.arange(0, 4096)
    counts = tl.load(HIST + row * 4096 + bins)
    from_top = tl.sum(counts, 0) - tl.cumsum(counts, 0) + counts  # keys in bins >= b
    top_bin = tl.max(tl.where(from_top >= n_select, bins, -1), 0)
    t = (top_bin - 2048) << 20  # at least n keys >= t; fewer than n >= t + 2^20
    offs = tl.arange(0, BLOCK)
    key0 = _row_keys(base, offs, n_pages)
    for p in tl.static_range(10):
        shift = 18 - 2 * p
        n1, n2, n3 = _counts_at_or_above(
            base,
            offs,
            n_pages,
            key0,
            t + (1 << shift),
            t + (2 << shift),
            t + (3 << shift),
            BLOCK,
            SINGLE,
            PAIRED,
        )
        t += tl.where(n3 >= n_select, 3, tl.where(n2 >= n_select, 2, tl.where(n1 >= n_select, 1, 0))) << shift
    # t is the n-th largest key: take the keys above it and the first `need` equal to it. One more
    # pass counts those above it, and those above it and equal to it in the pages before the chunk.
    before0 = offs < c0
    above, above_before, ties_before = _sum3(
        (key0 > t).to(tl.int32),
        (before0 & (key0 > t)).to(tl.int32),
        (before0 & (key0 == t)).to(tl.int32),
        PAIRED,
    )
    if not SINGLE:
        for b0 in range(BLOCK, n_pages, BLOCK):
            key = _row_keys(base, b0 + offs, n_pages)
            before = b0 + offs < c0
            a0, a1, a2 = _sum3(
                (key > t).to(tl.int32),
                (before & (key > t)).to(tl.int32),
                (before & (key == t)).to(tl.int32),
                PAIRED,
            )
            above, above_before, ties_before = above + a0, above_before + a1, ties_before + a2
    need = n_select - above  # >= 1 ties at t are taken, the lowest pages first
    pages = c0 + tl.arange(0, CHUNK)
    ok = pages < n_pages
    key = _row_keys(base, pages, n_pages)
    equal = ok & (key == t)
    tie_rank = ties_before + tl.cumsum(equal.to(tl.int32), 0) - equal.to(tl.int32)
    chosen = ok & ((key > t) | (equal & (tie_rank < need)))
    if WRITE_MASK:
        tl.store(MASK + row * n_pages + pages, chosen.to(tl.uint8), mask=ok)
    if WRITE_LIST:
        slot = (
            above_before
            + tl.minimum(ties_before, need)
            + tl.cumsum(chosen.to(tl.int32), 0)
            - chosen.to(tl.int32)
        )
        tl.store(LIST + row * n_select + slot, pages, mask=chosen)


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
) -> tuple[torch.Tensor, torch.Tensor]:
    """q [Hq, 1, D], low/high [Hkv, >= n_pages, D] -> (float32 [R, n_pages] selection scores, int32
    [R, 4096] their top-bits histogram for ``quest_select_top_pages_triton``), R = Hkv (shared) or Hq.

    Scores: Quest's bounds (summed over each kv group when ``shared``), +inf at page ``current``."""
    hq, _, d = q.shape
    hkv = low.shape[0]
    if low.stride() != high.stride() or low.stride(-1) != 1:
        low, high = low.contiguous(), high.contiguous()
    rows = hkv if shared else hq
    scores = torch.empty(rows, n_pages, dtype=torch.float32, device=q.device)
    histogram = torch.zeros(rows, SELECT_BINS, dtype=torch.int32, device=q.device)
    block_p = 64
    quest_selection_scores_kernel[(hkv, triton.cdiv(n_pages, block_p))](
        q, low, high, scores, histogram, q.stride(0), low.stride(0), low.stride(1), n_pages, current,
        GROUP=hq // hkv, GROUP_PAD=_group_pad(hq // hkv), SHARED=shared, BLOCK_P=block_p, HEAD_DIM=d,
        num_warps=4,
    )  # fmt: skip
    return scores, histogram


def select_chunk(rows: int, n_pages: int, device: torch.device) -> int:
    """Pages each selection program writes: about one program per SM over all rows, 64 at least."""
    return max(64, triton.next_power_of_2(math.ceil(rows * n_pages / _multiprocessors(device))))


def quest_select_top_pages_triton(
    scores: torch.Tensor,
    n_select: int,
    as_list: bool = True,
    out: torch.Tensor | None = None,
    histogram: torch.Tensor | None = None,
    chunk: int | None = None,
    block: int | None = None,
    paired: bool | None = None,
    num_warps: int = 8,
) -> torch.Tensor:
    """scores float32 [R, P] -> the ``n_select`` best pages of each row: int32 [R, n_select] ascending
    (``as_list``) or a bool mask [R, P]. Ties at the n-th score go to the lowest pages.

    histogram: the scores' top-bits histogram from ``quest_selection_scores_triton`` (else counted
    here, one more launch); out: optional buffer to fill (tests poison it); chunk: pages per program;
    block: scores held in registers (a power of two; tests force several blocks on short rows);
    paired: one reduction per pass for the three counts (default off only under the interpreter,
    where it is slow; a test forces it there); num_warps: of each program (benchmarks sweep it)."""
    rows, n_pages = scores.shape
    if not 1 <= n_select <= n_pages:
        raise ValueError(f"quest_select_top_pages: n_select must be in [1, {n_pages}], got {n_select}.")
    scores = scores.contiguous()
    if histogram is None:
        histogram = torch.zeros(rows, SELECT_BINS, dtype=torch.int32, device=scores.device)
        quest_top_bits_histogram_kernel[(rows, triton.cdiv(n_pages, 1024))](
            scores, histogram, n_pages, BLOCK=1024, num_warps=4
        )
    elif histogram.shape != (rows, SELECT_BINS) or histogram.dtype != torch.int32:
        raise ValueError(
            f"quest_select_top_pages: histogram must be int32 [{rows}, {SELECT_BINS}] (from "
            f"quest_selection_scores_triton), got {histogram.dtype} {list(histogram.shape)}."
        )
    if out is None:
        out = (
            torch.empty(rows, n_select, dtype=torch.int32, device=scores.device)
            if as_list
            else torch.empty(rows, n_pages, dtype=torch.bool, device=scores.device)
        )
    target = out if as_list else out.view(torch.uint8)
    chunk = chunk or select_chunk(rows, n_pages, scores.device)
    block = block or min(SELECT_BLOCK, triton.next_power_of_2(n_pages))
    quest_select_pages_kernel[(rows, triton.cdiv(n_pages, chunk))](
        scores, histogram.contiguous(), target, target, n_pages, n_select,
        WRITE_LIST=as_list, WRITE_MASK=not as_list, CHUNK=chunk, BLOCK=block, SINGLE=block >= n_pages,
        PAIRED=paired if paired is not None else os.environ.get("TRITON_INTERPRET") != "1",
        num_warps=num_warps,
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
