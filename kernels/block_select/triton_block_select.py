"""Triton block selection for Block-Sparse (paper A.1.1): the top-k key blocks of every query block.

Same function as ``reference.block_select_reference``, without a score grid in memory and without
a sort. A program owns one query head and BLOCK_M query blocks (rows). It recomputes its rows'
pooled scores tile by tile from the pooled q/k (tensor cores, float32 accumulation) in a few passes:

1. min, max, mean and variance of each row's selectable scores;
2. a per-row search for the n-th largest score. Each pass counts, per row, the scores at or above
   three thresholds inside the row's bracket [lo, hi) and keeps the part holding the n-th score
   (invariant: count(>= lo) >= n > count(>= hi)). Counts accumulate per tile position in registers
   and are reduced once per pass, so a score costs a few instructions per pass. The first pass
   brackets a Gaussian guess of the n-th score (mean + z * std, z the normal quantile of n / m);
   the next ones cut the bracket in quarters by value (fast on smooth score distributions), the
   last ones in the float's order-preserving integer key (guaranteed: 16 passes cover 32 bits).
   A row is done when count(>= lo) == n, or when lo and hi are adjacent floats, i.e. lo IS the
   n-th score and several scores tie at it;
3. one pass that writes the row's mask: scores > lo, then scores == lo in key-block order while the
   row still needs some (ties go to lower key blocks, like the reference's stable sort), plus the
   forced first block and causal-boundary blocks; every mask entry of the row is written.

Search passes stop as soon as every row of the program is done.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

#: Passes (after the guess) that cut in value before switching to integer keys.
VALUE_PASSES = 10
#: The guess pass, the value passes, then 16 key passes (2 bits each) always suffice; one spare.
MAX_PASSES = 1 + VALUE_PASSES + 16 + 1
#: Brackets narrower than this many floats are cut in key space right away.
KEY_SPAN_SWITCH = 4096
#: Half-width of the first bracket around the guess, in standard deviations of the row's scores.
GUESS_WIDTH = 0.1


@triton.jit
def _order_key(x):
    """float32 -> int32 with the same order (negative floats get their magnitude bits flipped)."""
    b = x.to(tl.int32, bitcast=True)
    return b ^ ((b >> 31) & 0x7FFFFFFF)


@triton.jit
def _key_value(key):
    """Inverse of _order_key (the map is an involution)."""
    b = key ^ ((key >> 31) & 0x7FFFFFFF)
    return b.to(tl.float32, bitcast=True)


@triton.jit
def _score_tile(
    q, k_base, stride_kn, n0, n_full, nkb, D, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, IEEE: tl.constexpr
):
    """[BLOCK_M, BLOCK_N] float32 scores of key blocks n0.. for the program's rows, -inf where not
    selectable (block 0, blocks from the row's n_full on, past the end)."""
    cols = n0 + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    kt = tl.load(
        k_base + cols[:, None] * stride_kn + offs_d[None, :],
        mask=(cols[:, None] < nkb) & (offs_d[None, :] < D),
        other=0.0,
    )
    if IEEE:
        s = tl.dot(q, tl.trans(kt), input_precision="ieee")
    else:
        s = tl.dot(q, tl.trans(kt))
    valid = (cols[None, :] >= 1) & (cols[None, :] < n_full[:, None])
    return tl.where(valid, s, float("-inf"))


@triton.jit
def _threshold(
    i: tl.constexpr, p, kl, kh, guess, width, VALUE_PASSES: tl.constexpr, KEY_SPAN_SWITCH: tl.constexpr
):
    """Key of threshold i (1..3) of search pass p for each row, inside [kl, kh]; ascending in i."""
    kl64 = kl.to(tl.int64)
    kh64 = kh.to(tl.int64)
    span = kh64 - kl64
    lo = _key_value(kl)
    hi = _key_value(kh)
    by_value = tl.where(p == 0, guess + width * (i - 2), lo + (hi - lo) * (i / 4))
    by_key = kl64 + (span * i) // 4
    use_key = (p > VALUE_PASSES) | (span <= KEY_SPAN_SWITCH)
    key = tl.where(use_key, by_key, _order_key(by_value).to(tl.int64))
    return tl.minimum(tl.maximum(key, kl64), kh64).to(tl.int32)


@triton.jit
def _block_select_kernel(
    q_ptr, k_ptr, nsel_ptr, nfull_ptr, last_ptr, out_ptr,
    nqb, nkb, D, group,
    stride_qh, stride_qm, stride_kh, stride_kn, stride_oh, stride_om,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    VALUE_PASSES: tl.constexpr, MAX_PASSES: tl.constexpr, KEY_SPAN_SWITCH: tl.constexpr,
    GUESS_WIDTH: tl.constexpr, IEEE: tl.constexpr,
):  # fmt: skip
    # Later query blocks see more key blocks: launch them first so the tail of the grid is short.
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)
    h = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < nqb
    n_full = tl.load(nfull_ptr + rows, mask=row_ok, other=0).to(tl.int32)
    last = tl.load(last_ptr + rows, mask=row_ok, other=-1).to(tl.int32)
    selectable = tl.maximum(n_full - 1, 0)
    nsel = tl.minimum(tl.load(nsel_ptr + rows, mask=row_ok, other=0).to(tl.int32), selectable)
    extent = tl.max(n_full, 0)  # key blocks 0..extent-1 hold every selectable block of these rows
    offs_d = tl.arange(0, BLOCK_D)
    q = tl.load(
        q_ptr + h * stride_qh + rows[:, None] * stride_qm + offs_d[None, :],
        mask=row_ok[:, None] & (offs_d[None, :] < D),
        other=0.0,
    )
    k_base = k_ptr + (h // group) * stride_kh

    # Pass 1: each row's bracket [min, next float above max), and the moments for the guess.
    hi_v = tl.full([BLOCK_M], float("-inf"), tl.float32)
    lo_v = tl.full([BLOCK_M], float("inf"), tl.float32)
    sum1 = tl.zeros([BLOCK_M], tl.float32)
    sum2 = tl.zeros([BLOCK_M], tl.float32)
    for n0 in range(0, extent, BLOCK_N):
        s = _score_tile(q, k_base, stride_kn, n0, n_full, nkb, D, BLOCK_N, BLOCK_D, IEEE)
        z = tl.where(s == float("-inf"), 0.0, s)
        hi_v = tl.maximum(hi_v, tl.max(s, 1))
        lo_v = tl.minimum(lo_v, tl.min(tl.where(s == float("-inf"), float("inf"), s), 1))
        sum1 += tl.sum(z, 1)
        sum2 += tl.sum(z * z, 1)
    # -0 -> +0: the bracket's keys must not split the value 0 (counts compare values).
    hi_v = tl.where(hi_v == 0.0, 0.0, hi_v)
    lo_v = tl.where(lo_v == 0.0, 0.0, lo_v)
    kl = _order_key(lo_v)
    kh = _order_key(hi_v) + 1
    c_lo = selectable  # scores >= lo: all of them
    c_hi = tl.zeros([BLOCK_M], tl.int32)  # scores >= hi: none
    active = (nsel > 0) & (nsel < selectable)
    # Gaussian guess of the n-th largest of m scores: mean + z * std with P(Z > z) = n / m
    # (Tukey's lambda approximation of the normal quantile; only a starting point).
    m = tl.maximum(selectable, 1).to(tl.float32)
    mean = sum1 / m
    std = tl.sqrt(tl.maximum(sum2 / m - mean * mean, 0.0))
    tail = tl.minimum(tl.maximum(nsel.to(tl.float32) / m, 1e-6), 1.0 - 1e-6)
    zq = 4.91 * (tl.exp(0.14 * tl.log(1.0 - tail)) - tl.exp(0.14 * tl.log(tail)))
    guess = mean + zq * std
    width = GUESS_WIDTH * std

    # Pass 2: narrow each active row's bracket around its n-th score, three thresholds a pass.
    for p in range(0, MAX_PASSES):
        if tl.sum(active.to(tl.int32), 0) > 0:
            k1 = _threshold(1, p, kl, kh, guess, width, VALUE_PASSES, KEY_SPAN_SWITCH)
            k2 = _threshold(2, p, kl, kh, guess, width, VALUE_PASSES, KEY_SPAN_SWITCH)
            k3 = _threshold(3, p, kl, kh, guess, width, VALUE_PASSES, KEY_SPAN_SWITCH)
            t1 = _key_value(k1)[:, None]
            t2 = _key_value(k2)[:, None]
            t3 = _key_value(k3)[:, None]
            a1 = tl.zeros([BLOCK_M, BLOCK_N], tl.int32)
            a2 = tl.zeros([BLOCK_M, BLOCK_N], tl.int32)
            a3 = tl.zeros([BLOCK_M, BLOCK_N], tl.int32)
            for n0 in range(0, extent, BLOCK_N):
                s = _score_tile(q, k_base, stride_kn, n0, n_full, nkb, D, BLOCK_N, BLOCK_D, IEEE)
                a1 += (s >= t1).to(tl.int32)
                a2 += (s >= t2).to(tl.int32)
                a3 += (s >= t3).to(tl.int32)
            c1 = tl.sum(a1, 1)
            c2 = tl.sum(a2, 1)
            c3 = tl.sum(a3, 1)
            # Counts fall as thresholds rise: the highest threshold still holding n scores is the
            # new lo, the lowest one holding fewer the new hi.
            new_kl = tl.where(c3 >= nsel, k3, tl.where(c2 >= nsel, k2, tl.where(c1 >= nsel, k1, kl)))
            new_c_lo = tl.where(c3 >= nsel, c3, tl.where(c2 >= nsel, c2, tl.where(c1 >= nsel, c1, c_lo)))
            new_kh = tl.where(c1 < nsel, k1, tl.where(c2 < nsel, k2, tl.where(c3 < nsel, k3, kh)))
            new_c_hi = tl.where(c1 < nsel, c1, tl.where(c2 < nsel, c2, tl.where(c3 < nsel, c3, c_hi)))
            kl = tl.where(active, new_kl, kl)
            c_lo = tl.where(active, new_c_lo, c_lo)
            kh = tl.where(active, new_kh, kh)
            c_hi = tl.where(active, new_c_hi, c_hi)
            active = active & (c_lo != nsel) & ((kh.to(tl.int64) - kl.to(tl.int64)) > 1)

    # Pass 3: write the rows' masks. Scores > t are taken; scores == t are taken in key-block order
    # up to `allow` (when count(>= t) == n every tied score fits: allow = n is enough).
    t = _key_value(kl)
    allow = tl.where(c_lo == nsel, nsel, nsel - c_hi)
    taken_ties = tl.zeros([BLOCK_M], tl.int32)
    crossed = n_full <= last
    out_rows = out_ptr + h * stride_oh + rows[:, None] * stride_om
    for n0 in range(0, nkb, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        if n0 < extent:
            s = _score_tile(q, k_base, stride_kn, n0, n_full, nkb, D, BLOCK_N, BLOCK_D, IEEE)
            tie = (s == t[:, None]).to(tl.int32)
            rank = taken_ties[:, None] + tl.cumsum(tie, 1) - tie
            sel = (s > t[:, None]) | ((tie != 0) & (rank < allow[:, None]))
            sel = sel & (nsel[:, None] > 0)
            taken_ties += tl.sum(tie, 1)
        else:
            sel = tl.zeros([BLOCK_M, BLOCK_N], tl.int1)
        on_boundary = (cols[None, :] == n_full[:, None]) | (cols[None, :] == last[:, None])
        keep = sel | (cols[None, :] == 0) | (crossed[:, None] & on_boundary)
        tl.store(out_rows + cols[None, :], keep.to(tl.uint8), mask=row_ok[:, None] & (cols[None, :] < nkb))


def block_select_triton(
    q_pool: torch.Tensor,
    k_pool: torch.Tensor,
    n_sel: torch.Tensor,
    n_full: torch.Tensor,
    last_block: torch.Tensor,
    block_m: int = 64,
    block_n: int = 32,
    num_warps: int = 4,
) -> torch.Tensor:
    """q_pool [Hq, nqb, D], k_pool [Hkv, nkb, D] (one float dtype; float32 is multiplied in IEEE
    float32, half types on tensor cores with float32 accumulation); n_sel, n_full, last_block [nqb]
    integers -> block_mask [Hq, nqb, nkb] bool, as ``block_select_reference``.

    block_m / block_n: query / key blocks per score tile. Tuning knobs only: the result does not
    depend on them (64 x 32 with 4 warps was the fastest of 7 shapes on an H100 at 128K tokens,
    docs/benchmarks-kernels.md)."""
    hq, nqb, d = q_pool.shape
    hkv, nkb, _ = k_pool.shape
    q_pool, k_pool = q_pool.contiguous(), k_pool.contiguous()
    out = torch.empty(hq, nqb, nkb, dtype=torch.bool, device=q_pool.device)
    if out.numel() == 0:
        return out
    device = q_pool.device
    n_sel, n_full, last_block = (
        x.to(device=device, dtype=torch.int32).contiguous() for x in (n_sel, n_full, last_block)
    )
    out_bytes = out.view(torch.uint8)
    grid = (triton.cdiv(nqb, block_m), hq)
    _block_select_kernel[grid](
        q_pool, k_pool, n_sel, n_full, last_block, out_bytes,
        nqb, nkb, d, hq // hkv,
        q_pool.stride(0), q_pool.stride(1), k_pool.stride(0), k_pool.stride(1),
        out_bytes.stride(0), out_bytes.stride(1),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=max(16, triton.next_power_of_2(d)),
        VALUE_PASSES=VALUE_PASSES, MAX_PASSES=MAX_PASSES, KEY_SPAN_SWITCH=KEY_SPAN_SWITCH,
        GUESS_WIDTH=GUESS_WIDTH, IEEE=q_pool.dtype == torch.float32, num_warps=num_warps,
    )  # fmt: skip
    return out
