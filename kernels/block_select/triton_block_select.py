"""Triton block selection for Block-Sparse (paper A.1.1): the top-k key blocks of every query block.

Same function as ``reference.block_select_reference``, without a score grid in memory and without
a sort. A program owns one query head and BLOCK_M query blocks (rows). It recomputes its rows'
pooled scores tile by tile from the pooled q/k (tensor cores, float32 accumulation); every such
*full pass* over the causal key range costs about the same, so the design counts full passes.

Both kernels below find, per row, the n-th largest selectable score t by narrowing a bracket
[lo, hi) of order-preserving float keys with the invariant count(>= lo) >= n > count(>= hi).
Counting scores at or above a threshold accumulates per tile position in registers and is reduced
once per pass, so a score costs a few instructions per threshold. A row is done when
count(>= lo) == n, or when lo and hi are adjacent floats (lo IS the n-th score; several tie at it).
Thresholds first cut the bracket in value (fast on smooth score distributions), then in the
float's integer key (guaranteed: 16 passes of 2 bits cover 32 bits), see ``_threshold``.

``scan`` (the first version, kept for comparison, 8-10 full passes at 128K):
  1. min, max, mean and variance of each row's selectable scores;
  2. a guess pass (3 thresholds around a Gaussian guess of t), then full passes cutting the bracket
     in quarters until every row of the program is done;
  3. one pass that writes the rows' masks (below).

``compact`` (the default; 2 full passes when the guess holds, plus cheap passes over a small buffer):
  1. the moments without a full pass (moments="gram"): sum_j s_j = q . S and sum_j s_j^2 = q^T G q
     from prefix sums S and Gram matrices G of the key blocks, precomputed every CHECKPOINT key
     blocks (``gram_checkpoints``), plus the few blocks from the checkpoint to each row's end; the
     bracket starts as [-B, B], B a Cauchy-Schwarz bound. moments="pass" takes the full pass above;
  2. one full pass that counts 3 thresholds around the Gaussian guess AND writes every score of the
     guessed bracket [guess - w, guess + w) to a per-row scratch buffer of ``capacity`` floats
     (w is set so that about FILL * capacity Gaussian scores fall inside). If the row's n-th score
     lies in that bracket and its scores fit the buffer, the row is *buffered*;
  3. fallback, only while some active row is not buffered and its bracket holds more than
     ``capacity`` scores: full search passes as in ``scan``; then one full pass compacts the
     brackets of the rows not yet buffered. Correctness never depends on the capacity or on the
     guess (capacity 0 degenerates into ``scan``);
  4. the search finishes over the buffers only: count(>= x) = count(>= hi at compaction) +
     buffered scores >= x, exact for every x inside the compacted bracket (all later thresholds are).
     Each buffer pass also moves the scores inside the bracket it started from to the front of the
     buffer (in place), so the passes read about 1 + 1 + 1/4 + 1/16 ... buffers, not one each;
  5. the writing pass.

The writing pass, shared: scores > t are taken; scores == t in key-block order while the row still
needs some (ties go to lower key blocks, like the reference's stable sort), plus the forced first
block and causal-boundary blocks; every mask entry of the row is written.
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
#: scan: half-width of the first bracket around the guess, in standard deviations of the row's scores.
GUESS_WIDTH = 0.1
#: compact: default buffer capacity (float32 scores per row; 470 MB of scratch at 128K tokens with 28
#: heads) and the share of it the guessed bracket is sized to fill on Gaussian scores (room for a
#: guess that is somewhat off). A CPU replay of the guess on the benchmark's 128K 'structured' rows
#: (CR 10 and 20): a bracket of 256 held every row's n-th score, one of 128 missed 7-67% of rows.
CAPACITY = 512
FILL = 0.5
#: compact: the two outer thresholds of the guess pass sit this many bracket half-widths from the guess,
#: so a row whose n-th score misses the bracket still gets a narrow fallback bracket.
OUTER = 4.0
#: compact: buffer slots read per row and step of a buffer pass. Narrow: with the score tile's width
#: the buffer pass alone pushed the kernel into register spills (ptxas -v, sm_90a, 64x32 tiles).
BUFFER_TILE = 16
#: compact, moments="gram": key blocks between the checkpoints of the prefix sums and Gram matrices.
CHECKPOINT = 64
#: Counters per program written when stats are asked for (see ``block_select_triton``).
STATS = ("full_search_passes", "compaction_passes", "buffer_passes", "rows_not_buffered_by_guess", "max_fill")


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
def _rows(
    q_ptr, nsel_ptr, nfull_ptr, last_ptr, nqb, D, stride_qh, stride_qm,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """The program's head, rows and their geometry: (h, rows, row_ok, n_full, last, selectable,
    nsel, extent, q [BLOCK_M, BLOCK_D])."""
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
    return h, rows, row_ok, n_full, last, selectable, nsel, extent, q


@triton.jit
def _guess(sum1, sum2, selectable, nsel):
    """A Gaussian guess of each row's n-th largest score from the sum and the sum of squares of its
    m selectable scores: mean + z * std with P(Z > z) = n / m (Tukey's lambda approximation of the
    normal quantile; only a starting point). Returns (guess, std, normal density at z)."""
    m = tl.maximum(selectable, 1).to(tl.float32)
    mean = sum1 / m
    std = tl.sqrt(tl.maximum(sum2 / m - mean * mean, 0.0))
    tail = tl.minimum(tl.maximum(nsel.to(tl.float32) / m, 1e-6), 1.0 - 1e-6)
    zq = 4.91 * (tl.exp(0.14 * tl.log(1.0 - tail)) - tl.exp(0.14 * tl.log(tail)))
    density = 0.3989422804 * tl.exp(-0.5 * zq * zq)
    return mean + zq * std, std, density


@triton.jit
def _moments_pass(
    q, k_base, stride_kn, n_full, nkb, D, extent,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, IEEE: tl.constexpr,
):  # fmt: skip
    """One full pass: each row's bracket keys [min, next float above max), and the sum and sum of
    squares of its selectable scores."""
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
    return _order_key(lo_v), _order_key(hi_v) + 1, sum1, sum2


@triton.jit
def _moments_gram(
    q, q_rows, row_ok, k_base, stride_kn, n_full, nkb, D, extent, selectable, kv,
    gram_ptr, gsum_ptr, bound_rows, n_ck,
    CK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    GD: tl.constexpr, IEEE: tl.constexpr,
):  # fmt: skip
    """The same sums without a full pass: sum_j s_j = q . S(n) and sum_j s_j^2 = q^T G(n) q, with
    S(n) and G(n) the sum and Gram matrix of key blocks 1..n-1, read at the checkpoint n = c * CK
    at or below every row of the program, plus the few key blocks from there to each row's n_full.
    No min/max: the bracket is [-B, B], B per row (bound_rows, from the host: a Cauchy-Schwarz
    bound |q . k| <= |q| max_j |k_j| widened by 1e-3, far above float32 rounding of the scores)."""
    first = tl.min(tl.where(selectable > 0, n_full, extent), 0)
    c0 = first // CK
    at = kv * n_ck + c0  # checkpoint row of this kv head
    # sum1 = q . S and sum2 = q^T G q in GD x GD blocks of G, float32 products. Small blocks: a
    # whole [D, D] product would take far more registers and shared memory than the search loops
    # need, and the kernel's occupancy is set by its largest stage.
    sum1 = tl.zeros([BLOCK_M], tl.float32)
    sum2 = tl.zeros([BLOCK_M], tl.float32)
    offs_c = tl.arange(0, GD)
    for e0 in range(0, BLOCK_D, GD):
        cols = e0 + offs_c
        q_e = tl.load(q_rows + cols[None, :], mask=row_ok[:, None] & (cols[None, :] < D), other=0.0)
        q_e = q_e.to(tl.float32)
        acc = tl.zeros([BLOCK_M, GD], tl.float32)
        for d0 in range(0, BLOCK_D, GD):
            dims = d0 + offs_c
            q_d = tl.load(q_rows + dims[None, :], mask=row_ok[:, None] & (dims[None, :] < D), other=0.0)
            g = tl.load(
                gram_ptr + (at * D + dims[:, None]).to(tl.int64) * D + cols[None, :],
                mask=(dims[:, None] < D) & (cols[None, :] < D),
                other=0.0,
            )
            acc += tl.dot(q_d.to(tl.float32), g, input_precision="ieee")
        sum2 += tl.sum(acc * q_e, 1)
        sum1 += tl.sum(q_e * tl.load(gsum_ptr + at * D + cols, mask=cols < D, other=0.0)[None, :], 1)
    for n0 in range(c0 * CK, extent, BLOCK_N):
        s = _score_tile(q, k_base, stride_kn, n0, n_full, nkb, D, BLOCK_N, BLOCK_D, IEEE)
        z = tl.where(s == float("-inf"), 0.0, s)
        sum1 += tl.sum(z, 1)
        sum2 += tl.sum(z * z, 1)
    bound = tl.load(bound_rows, mask=row_ok, other=1.0)
    return _order_key(-bound), _order_key(bound), sum1, sum2


@triton.jit
def _threshold(
    i: tl.constexpr, p, kl, kh, guess, width, VALUE_PASSES: tl.constexpr, KEY_SPAN_SWITCH: tl.constexpr
):
    """Key of threshold i (1..3) of search pass p for each row, inside [kl, kh]; ascending in i.
    Pass 0 brackets the guess (guess + (i - 2) * width); passes 1..VALUE_PASSES cut [lo, hi) in
    quarters by value; later ones, and brackets of few floats, in quarters by key."""
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
def _clamp_key(value, kl, kh):
    """The key of value, clamped into [kl, kh] (a threshold outside the bracket tells nothing)."""
    return tl.minimum(tl.maximum(_order_key(value), kl), kh)


@triton.jit
def _narrow(active, nsel, kl, kh, c_lo, c_hi, k, c):
    """Narrow the active rows' brackets with threshold key k (inside [kl, kh]) holding c scores
    at or above it: it becomes lo if c >= n and above lo, hi if c < n and below hi. Applied per
    threshold, in any order, the result is the tightest bracket all thresholds allow."""
    up = active & (c >= nsel) & (k > kl)
    down = active & (c < nsel) & (k < kh)
    return (
        tl.where(up, k, kl),
        tl.where(down, k, kh),
        tl.where(up, c, c_lo),
        tl.where(down, c, c_hi),
    )


@triton.jit
def _count_at_or_above(s, t1, t2, t3, a1, a2, a3):
    """Per-position counters of scores s [M, N] at or above the rows' thresholds t1..t3 [M, 1];
    kept per tile position and reduced once per pass (a reduction per tile costs far more)."""
    return a1 + (s >= t1).to(tl.int32), a2 + (s >= t2).to(tl.int32), a3 + (s >= t3).to(tl.int32)


@triton.jit
def _search_pass(
    p, q, k_base, stride_kn, n_full, nkb, D, extent, guess, width, active, nsel, kl, kh, c_lo, c_hi,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, IEEE: tl.constexpr,
    VALUE_PASSES: tl.constexpr, KEY_SPAN_SWITCH: tl.constexpr,
):  # fmt: skip
    """Search pass p over all scores: count three thresholds inside each active row's bracket and
    keep the part holding its n-th score. Returns the new (kl, kh, c_lo, c_hi, active)."""
    k1 = _threshold(1, p, kl, kh, guess, width, VALUE_PASSES, KEY_SPAN_SWITCH)
    k2 = _threshold(2, p, kl, kh, guess, width, VALUE_PASSES, KEY_SPAN_SWITCH)
    k3 = _threshold(3, p, kl, kh, guess, width, VALUE_PASSES, KEY_SPAN_SWITCH)
    c1, c2, c3, _fill = _scan_pass(
        q, k_base, stride_kn, n_full, nkb, D, extent, k1, k2, k3, guess, guess, active, k_base, 0,
        BLOCK_M, BLOCK_N, BLOCK_D, IEEE, True, False,
    )  # fmt: skip
    kl, kh, c_lo, c_hi = _narrow(active, nsel, kl, kh, c_lo, c_hi, k1, c1)
    kl, kh, c_lo, c_hi = _narrow(active, nsel, kl, kh, c_lo, c_hi, k2, c2)
    kl, kh, c_lo, c_hi = _narrow(active, nsel, kl, kh, c_lo, c_hi, k3, c3)
    active = active & (c_lo != nsel) & ((kh.to(tl.int64) - kl.to(tl.int64)) > 1)
    return kl, kh, c_lo, c_hi, active


@triton.jit
def _scan_pass(
    q, k_base, stride_kn, n_full, nkb, D, extent, k1, k2, k3,
    lo, hi, take, buf_rows, capacity,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, IEEE: tl.constexpr,
    COUNT: tl.constexpr, COMPACT: tl.constexpr,
):  # fmt: skip
    """One full pass: per row, when COUNT the counts of scores >= each of the threshold keys k1, k2,
    k3 (else zeros), and when COMPACT the number of scores in [lo, hi) of the rows in `take`, of
    which the first `capacity` are written, in key-block order, to the row's buffer (buf_rows:
    pointers to each row's buffer)."""
    t1, t2, t3 = _key_value(k1)[:, None], _key_value(k2)[:, None], _key_value(k3)[:, None]
    zero = tl.zeros([BLOCK_M, BLOCK_N], tl.int32)
    a1, a2, a3 = zero, zero, zero
    fill = tl.zeros([BLOCK_M], tl.int32)
    for n0 in range(0, extent, BLOCK_N):
        s = _score_tile(q, k_base, stride_kn, n0, n_full, nkb, D, BLOCK_N, BLOCK_D, IEEE)
        if COUNT:
            a1, a2, a3 = _count_at_or_above(s, t1, t2, t3, a1, a2, a3)
        if COMPACT:
            inside = (s >= lo[:, None]) & (s < hi[:, None]) & take[:, None]
            one = inside.to(tl.int32)
            pos = fill[:, None] + tl.cumsum(one, 1) - one  # the candidate's slot in its row's buffer
            tl.store(buf_rows[:, None] + pos, s, mask=inside & (pos < capacity))
            fill += tl.sum(one, 1)
    return tl.sum(a1, 1), tl.sum(a2, 1), tl.sum(a3, 1), fill


@triton.jit
def _buffer_pass(
    buf_rows, fill, rows_on, c_base, k1, k2, k3, lo, hi,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SHRINK: tl.constexpr,
):  # fmt: skip
    """A search pass over the buffers only: count(>= k) = c_base + buffered scores >= k per row
    (rows_on: the rows to read; their `fill` scores are all in the buffer). When SHRINK, the pass
    also moves the scores inside [lo, hi) (the bracket the pass started from) to the front of the
    row's buffer and returns how many there are, so the next pass reads only those. In place: a
    score goes to a slot at or before its own, and the slot's old score was loaded first (the
    slot's index comes from a prefix count over the loaded scores up to it)."""
    t1, t2, t3 = _key_value(k1)[:, None], _key_value(k2)[:, None], _key_value(k3)[:, None]
    zero = tl.zeros([BLOCK_M, BLOCK_N], tl.int32)
    a1, a2, a3 = zero, zero, zero
    kept = tl.zeros([BLOCK_M], tl.int32)
    fill_on = tl.where(rows_on, fill, 0)
    for c0 in range(0, tl.max(fill_on, 0), BLOCK_N):
        cols = c0 + tl.arange(0, BLOCK_N)
        stored = cols[None, :] < fill_on[:, None]
        s = tl.load(buf_rows[:, None] + cols[None, :], mask=stored, other=float("-inf"))
        a1, a2, a3 = _count_at_or_above(s, t1, t2, t3, a1, a2, a3)
        if SHRINK:
            keep = stored & (s >= lo[:, None]) & (s < hi[:, None])
            one = keep.to(tl.int32)
            pos = kept[:, None] + tl.cumsum(one, 1) - one
            tl.store(buf_rows[:, None] + pos, s, mask=keep)
            kept += tl.sum(one, 1)
    return c_base + tl.sum(a1, 1), c_base + tl.sum(a2, 1), c_base + tl.sum(a3, 1), kept


@triton.jit
def _write_mask(
    q, k_base, stride_kn, n_full, nkb, D, extent, last, nsel, row_ok, kl, c_lo, c_hi, out_rows,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, IEEE: tl.constexpr,
):  # fmt: skip
    """The writing pass. Scores > t = value(kl) are taken; scores == t in key-block order up to
    `allow` (when count(>= t) == n every tied score fits: allow = n is enough)."""
    t = _key_value(kl)
    allow = tl.where(c_lo == nsel, nsel, nsel - c_hi)
    taken_ties = tl.zeros([BLOCK_M], tl.int32)
    crossed = n_full <= last
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


@triton.jit
def _block_select_scan_kernel(
    q_ptr, k_ptr, nsel_ptr, nfull_ptr, last_ptr, out_ptr,
    nqb, nkb, D, group,
    stride_qh, stride_qm, stride_kh, stride_kn, stride_oh, stride_om,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    VALUE_PASSES: tl.constexpr, MAX_PASSES: tl.constexpr, KEY_SPAN_SWITCH: tl.constexpr,
    GUESS_WIDTH: tl.constexpr, IEEE: tl.constexpr,
):  # fmt: skip
    """``scan``: every search pass is a full pass (see the module docstring)."""
    h, rows, row_ok, n_full, last, selectable, nsel, extent, q = _rows(
        q_ptr, nsel_ptr, nfull_ptr, last_ptr, nqb, D, stride_qh, stride_qm, BLOCK_M, BLOCK_D
    )
    k_base = k_ptr + (h // group) * stride_kh
    kl, kh, sum1, sum2 = _moments_pass(
        q, k_base, stride_kn, n_full, nkb, D, extent, BLOCK_M, BLOCK_N, BLOCK_D, IEEE
    )
    guess, std, density = _guess(sum1, sum2, selectable, nsel)
    width = GUESS_WIDTH * std
    c_lo = selectable  # scores >= lo: all of them
    c_hi = tl.zeros([BLOCK_M], tl.int32)  # scores >= hi: none
    active = (nsel > 0) & (nsel < selectable)
    for p in range(0, MAX_PASSES):
        if tl.sum(active.to(tl.int32), 0) > 0:
            kl, kh, c_lo, c_hi, active = _search_pass(
                p, q, k_base, stride_kn, n_full, nkb, D, extent, guess, width, active, nsel,
                kl, kh, c_lo, c_hi, BLOCK_M, BLOCK_N, BLOCK_D, IEEE, VALUE_PASSES, KEY_SPAN_SWITCH,
            )  # fmt: skip
    out_rows = out_ptr + h * stride_oh + rows[:, None] * stride_om
    _write_mask(
        q, k_base, stride_kn, n_full, nkb, D, extent, last, nsel, row_ok, kl, c_lo, c_hi, out_rows,
        BLOCK_M, BLOCK_N, BLOCK_D, IEEE,
    )  # fmt: skip


@triton.jit
def _block_select_compact_kernel(
    q_ptr, k_ptr, nsel_ptr, nfull_ptr, last_ptr, out_ptr, buf_ptr, stats_ptr,
    gram_ptr, gsum_ptr, bound_ptr, n_ck,
    nqb, nkb, D, group, capacity,
    stride_qh, stride_qm, stride_kh, stride_kn, stride_oh, stride_om,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    VALUE_PASSES: tl.constexpr, MAX_PASSES: tl.constexpr, KEY_SPAN_SWITCH: tl.constexpr,
    FILL: tl.constexpr, OUTER: tl.constexpr, IEEE: tl.constexpr, STATS: tl.constexpr,
    GRAM: tl.constexpr, CK: tl.constexpr, GRAM_COLS: tl.constexpr, BUF_N: tl.constexpr,
    SHRINK: tl.constexpr,
):  # fmt: skip
    """``compact``: a guess pass that also compacts, full search passes only as a fallback, the
    rest of the search over per-row buffers (see the module docstring)."""
    h, rows, row_ok, n_full, last, selectable, nsel, extent, q = _rows(
        q_ptr, nsel_ptr, nfull_ptr, last_ptr, nqb, D, stride_qh, stride_qm, BLOCK_M, BLOCK_D
    )
    k_base = k_ptr + (h // group) * stride_kh
    buf_rows = (h * nqb + rows).to(tl.int64) * capacity + buf_ptr
    if GRAM:
        kl, kh, sum1, sum2 = _moments_gram(
            q, q_ptr + h * stride_qh + rows[:, None] * stride_qm, row_ok, k_base, stride_kn, n_full, nkb, D,
            extent, selectable, h // group, gram_ptr, gsum_ptr, bound_ptr + h * nqb + rows, n_ck,
            CK, BLOCK_M, BLOCK_N, BLOCK_D, GRAM_COLS, IEEE,
        )  # fmt: skip
    else:
        kl, kh, sum1, sum2 = _moments_pass(
            q, k_base, stride_kn, n_full, nkb, D, extent, BLOCK_M, BLOCK_N, BLOCK_D, IEEE
        )
    guess, std, density = _guess(sum1, sum2, selectable, nsel)
    c_lo = selectable  # scores >= lo: all of them
    c_hi = tl.zeros([BLOCK_M], tl.int32)  # scores >= hi: none
    active = (nsel > 0) & (nsel < selectable)

    # Guess pass: about FILL * capacity Gaussian scores lie within w of the guess (density * 2w / std
    # of the m scores); count 3 thresholds and compact the bracket [guess - w, guess + w).
    m = tl.maximum(selectable, 1).to(tl.float32)
    w = (FILL * capacity) * std / (2.0 * m * density)
    k_out_lo = _clamp_key(guess - OUTER * w, kl, kh)
    k_lo = tl.maximum(_clamp_key(guess - w, kl, kh), k_out_lo)
    k_hi = tl.maximum(_clamp_key(guess + w, kl, kh), k_lo)
    k_out_hi = tl.maximum(_clamp_key(guess + OUTER * w, kl, kh), k_hi)
    c_out_lo, c_hi_g, c_out_hi, fill = _scan_pass(
        q, k_base, stride_kn, n_full, nkb, D, extent, k_out_lo, k_hi, k_out_hi,
        _key_value(k_lo), _key_value(k_hi), active, buf_rows, capacity,
        BLOCK_M, BLOCK_N, BLOCK_D, IEEE, True, True,
    )  # fmt: skip
    # Buffer slots are written by the threads holding a score tile and read back by others.
    tl.debug_barrier()
    buffered = active & (c_hi_g < nsel) & (nsel <= c_hi_g + fill) & (fill <= capacity)
    c_base = c_hi_g  # buffered rows: count(>= x) = c_base + buffered scores >= x
    kl, kh, c_lo, c_hi = _narrow(active, nsel, kl, kh, c_lo, c_hi, k_out_lo, c_out_lo)
    kl, kh, c_lo, c_hi = _narrow(active, nsel, kl, kh, c_lo, c_hi, k_lo, c_hi_g + fill)
    kl, kh, c_lo, c_hi = _narrow(active, nsel, kl, kh, c_lo, c_hi, k_hi, c_hi_g)
    kl, kh, c_lo, c_hi = _narrow(active, nsel, kl, kh, c_lo, c_hi, k_out_hi, c_out_hi)
    active = active & (c_lo != nsel) & ((kh.to(tl.int64) - kl.to(tl.int64)) > 1)
    n_missed = tl.sum((active & ~buffered).to(tl.int32), 0)

    # Fallback: full search passes while a row that is not buffered has too many candidates. (Search
    # passes here have p >= 1: _threshold gets no guess, so guess and std need not stay live.)
    p = tl.program_id(0) * 0 + 1  # search pass index (threshold schedule), shared by both loops
    n_full_passes = p * 0
    for _pass in range(1, MAX_PASSES):
        if tl.sum((active & ~buffered & (c_lo - c_hi > capacity)).to(tl.int32), 0) > 0:
            kl, kh, c_lo, c_hi, active = _search_pass(
                p, q, k_base, stride_kn, n_full, nkb, D, extent, 0.0, 0.0, active, nsel, kl, kh, c_lo, c_hi,
                BLOCK_M, BLOCK_N, BLOCK_D, IEEE, VALUE_PASSES, KEY_SPAN_SWITCH,
            )  # fmt: skip
            p += 1
            n_full_passes += 1
    # Compaction of the rest: every active row not yet buffered now holds <= capacity candidates.
    late = active & ~buffered
    n_compactions = p * 0
    if tl.sum(late.to(tl.int32), 0) > 0:
        _c1, _c2, _c3, late_fill = _scan_pass(
            q, k_base, stride_kn, n_full, nkb, D, extent, kl, kl, kl,
            _key_value(kl), _key_value(kh), late, buf_rows, capacity,
            BLOCK_M, BLOCK_N, BLOCK_D, IEEE, False, True,
        )  # fmt: skip
        tl.debug_barrier()
        fill = tl.where(late, late_fill, fill)
        c_base = tl.where(late, c_hi, c_base)
        buffered = buffered | late
        n_compactions += 1
    # The rest of the search reads the buffers only.
    max_fill = tl.max(tl.where(buffered, fill, 0), 0)
    n_buffer_passes = p * 0
    for _pass in range(1, MAX_PASSES):
        if tl.sum(active.to(tl.int32), 0) > 0:
            k1 = _threshold(1, p, kl, kh, 0.0, 0.0, VALUE_PASSES, KEY_SPAN_SWITCH)
            k2 = _threshold(2, p, kl, kh, 0.0, 0.0, VALUE_PASSES, KEY_SPAN_SWITCH)
            k3 = _threshold(3, p, kl, kh, 0.0, 0.0, VALUE_PASSES, KEY_SPAN_SWITCH)
            c1, c2, c3, kept = _buffer_pass(
                buf_rows, fill, active, c_base, k1, k2, k3, _key_value(kl), _key_value(kh),
                BLOCK_M, BUF_N, SHRINK,
            )  # fmt: skip
            if SHRINK:  # the buffers now hold the scores in [lo, hi): count(>= x) = count(>= hi) + those
                fill = tl.where(active, kept, fill)
                c_base = tl.where(active, c_hi, c_base)
                tl.debug_barrier()
            kl, kh, c_lo, c_hi = _narrow(active, nsel, kl, kh, c_lo, c_hi, k1, c1)
            kl, kh, c_lo, c_hi = _narrow(active, nsel, kl, kh, c_lo, c_hi, k2, c2)
            kl, kh, c_lo, c_hi = _narrow(active, nsel, kl, kh, c_lo, c_hi, k3, c3)
            active = active & (c_lo != nsel) & ((kh.to(tl.int64) - kl.to(tl.int64)) > 1)
            p += 1
            n_buffer_passes += 1
    out_rows = out_ptr + h * stride_oh + rows[:, None] * stride_om
    _write_mask(
        q, k_base, stride_kn, n_full, nkb, D, extent, last, nsel, row_ok, kl, c_lo, c_hi, out_rows,
        BLOCK_M, BLOCK_N, BLOCK_D, IEEE,
    )  # fmt: skip
    if STATS:
        stat = stats_ptr + (tl.program_id(1) * tl.num_programs(0) + tl.program_id(0)) * 5
        tl.store(stat, n_full_passes)
        tl.store(stat + 1, n_compactions)
        tl.store(stat + 2, n_buffer_passes)
        tl.store(stat + 3, n_missed)
        tl.store(stat + 4, max_fill)


def gram_checkpoints(k_pool: torch.Tensor, every: int = CHECKPOINT) -> tuple[torch.Tensor, ...]:
    """Prefix sums of the selectable key blocks (1..n-1) at n = 0, every, 2 * every, ...:
    k_pool [Hkv, nkb, D] -> (gram [Hkv, C, D, D], sums [Hkv, C, D], max block norm [Hkv]), float32,
    C = nkb // every + 1. Used by the compact kernel's moments without a full pass."""
    hkv, nkb, d = k_pool.shape
    n_ck = nkb // every + 1
    kf = torch.zeros(hkv, n_ck * every, d, dtype=torch.float32, device=k_pool.device)
    kf[:, 1:nkb] = k_pool[:, 1:].float()  # block 0 is never selectable
    chunks = kf.view(hkv, n_ck, every, d)[:, :-1]  # the last chunk is only ever partly needed
    gram = torch.zeros(hkv, n_ck, d, d, dtype=torch.float32, device=k_pool.device)
    sums = torch.zeros(hkv, n_ck, d, dtype=torch.float32, device=k_pool.device)
    gram[:, 1:] = torch.cumsum(chunks.transpose(-1, -2) @ chunks, dim=1)
    sums[:, 1:] = torch.cumsum(chunks.sum(2), dim=1)
    return gram, sums, kf.norm(dim=-1).amax(-1)


def block_select_triton(
    q_pool: torch.Tensor,
    k_pool: torch.Tensor,
    n_sel: torch.Tensor,
    n_full: torch.Tensor,
    last_block: torch.Tensor,
    block_m: int = 64,
    block_n: int = 32,
    num_warps: int = 4,
    algorithm: str = "compact",
    capacity: int = CAPACITY,
    moments: str = "gram",
    shrink: bool = True,
    stats: torch.Tensor | None = None,
    scratch: torch.Tensor | None = None,
) -> torch.Tensor:
    """q_pool [Hq, nqb, D], k_pool [Hkv, nkb, D] (one float dtype; float32 is multiplied in IEEE
    float32, half types on tensor cores with float32 accumulation); n_sel, n_full, last_block [nqb]
    integers -> block_mask [Hq, nqb, nkb] bool, as ``block_select_reference``.

    block_m / block_n / num_warps: query / key blocks per score tile and warps. algorithm: "compact"
    (the default) or "scan" (the first version, kept for comparison); capacity: compact's buffer, in
    float32 scores per row (it takes Hq * nqb * capacity * 4 bytes of scratch; 0 makes every row
    take the fallback); moments: compact's source of the row moments, "gram" (the default: prefix
    Gram matrices, no full pass) or "pass" (a full pass, which also gives each row's min and max).
    shrink: compact's buffer passes also move the scores still inside the bracket to the front of
    the buffer, so each pass reads only what the last one left (False: every pass rereads the
    whole buffer). Tuning knobs only: the result depends on none of them.
    stats: optional int32 tensor [Hq * cdiv(nqb, block_m), len(STATS)] (compact only) that receives
    per-program counters named in ``STATS``, e.g. how many full search passes the fallback took.
    scratch: optional contiguous float32 tensor of at least Hq * nqb * min(capacity, nkb - 1)
    elements for compact's buffers (row r of head h at offset (h * nqb + r) * capacity); allocated
    here when not given."""
    if algorithm not in ("compact", "scan"):
        raise ValueError(f"block_select_triton: algorithm must be 'compact' or 'scan', got {algorithm!r}.")
    if moments not in ("gram", "pass"):
        raise ValueError(f"block_select_triton: moments must be 'gram' or 'pass', got {moments!r}.")
    if capacity < 0:
        raise ValueError(f"block_select_triton: capacity must be >= 0 scores per row, got {capacity}.")
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
    common = dict(
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=max(16, triton.next_power_of_2(d)),
        VALUE_PASSES=VALUE_PASSES, MAX_PASSES=MAX_PASSES, KEY_SPAN_SWITCH=KEY_SPAN_SWITCH,
        IEEE=q_pool.dtype == torch.float32, num_warps=num_warps,
    )  # fmt: skip
    strides = (
        q_pool.stride(0), q_pool.stride(1), k_pool.stride(0), k_pool.stride(1),
        out_bytes.stride(0), out_bytes.stride(1),
    )  # fmt: skip
    if algorithm == "scan":
        _block_select_scan_kernel[grid](
            q_pool, k_pool, n_sel, n_full, last_block, out_bytes, nqb, nkb, d, hq // hkv, *strides,
            GUESS_WIDTH=GUESS_WIDTH, **common,
        )  # fmt: skip
        return out
    # A capacity above the longest row buys nothing; the scratch is sized to what can be used.
    capacity = min(capacity, max(nkb - 1, 0))
    need = hq * nqb * capacity
    if scratch is None:
        buf = torch.empty(max(1, need), dtype=torch.float32, device=device)
    elif (
        scratch.dtype != torch.float32
        or scratch.device != out.device
        or not scratch.is_contiguous()
        or (scratch.numel() < max(1, need))
    ):
        raise ValueError(
            f"block_select_triton: scratch must be a contiguous float32 tensor of at least {max(1, need)} "
            f"elements on {out.device}; got {scratch.dtype} {tuple(scratch.shape)} on {scratch.device}."
        )
    else:
        buf = scratch
    if stats is not None:
        want = (hq * grid[0], len(STATS))
        if tuple(stats.shape) != want or stats.dtype != torch.int32 or stats.device != out.device:
            raise ValueError(
                f"block_select_triton: stats must be an int32 tensor of shape {list(want)} on {out.device}; "
                f"got {stats.dtype} {tuple(stats.shape)} on {stats.device}."
            )
    if moments == "gram":
        gram, sums, kmax = gram_checkpoints(k_pool)
        # Per-row bound on |score| (Cauchy-Schwarz), widened by 1e-3: the bracket the search starts from.
        kv_of_head = torch.arange(hq, device=device) // (hq // hkv)
        q_norm = torch.linalg.vector_norm(q_pool, dim=-1, dtype=torch.float32)  # no float32 copy of q
        bound = q_norm * kmax[kv_of_head][:, None] * 1.001 + 1e-30
        gram = (gram, sums, bound.contiguous())
    else:
        gram = (buf, buf, buf)
    _block_select_compact_kernel[grid](
        q_pool, k_pool, n_sel, n_full, last_block, out_bytes, buf, stats if stats is not None else buf,
        *gram, nkb // CHECKPOINT + 1, nqb, nkb, d, hq // hkv, capacity, *strides,
        FILL=FILL, OUTER=OUTER, STATS=stats is not None, GRAM=moments == "gram", CK=CHECKPOINT,
        GRAM_COLS=min(32, common["BLOCK_D"]), BUF_N=BUFFER_TILE,
        SHRINK=shrink, **common,
    )  # fmt: skip
    return out
