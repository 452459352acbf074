"""Vertical-Slash importance estimation on the GPU without the [H, W, S] probability matrix.

The method (paper A.1.2, MInference) scores keys and diagonals from the causal attention of the
last W queries (row w at position P_w = S - W + w):

    vertical[h, j] = (1/W) sum_w p[h, w, j]            slash[h, o] = (1/W) sum_w p[h, w, P_w - o]

The PyTorch definition (``sparse_frontier.attention.vertical_slash.vertical_slash_scores``) builds
p in float32: 28 heads x 256 rows x 128K keys = 3.7 GB written and re-read several times. Here:

1. ``window_lse_kernel``: each program owns BLOCK_M window rows of one query head and a range of
   keys, and keeps FlashAttention's running max and sum (log2 units); programs over other key ranges
   of the same rows write their own (max, sum), merged in pass 2.
2. ``window_scores_kernel``: each program owns BLOCK window rows of one query head and a range of
   offset steps. For offsets [o0, o0 + BLOCK) the rows need keys P_w - o, all inside the band of
   2 BLOCK keys [P_w0 - o0 - BLOCK + 1, P_w0 - o0 + BLOCK]. The band's upper half is the previous
   step's lower half, so a step multiplies the rows with BLOCK new keys only (tensor cores) and
   keeps the probabilities p = exp2(s - lse) of both halves in registers. Summing the lower half
   over rows gives the vertical (column) sums of its keys (consecutive steps own consecutive key
   blocks, so each key is summed once; step 0's upper half holds the keys above P_w0); a per-row
   skew of the band (``tl.gather``: row w, column w + BLOCK - 1 - j, from the half it falls in)
   lines the diagonals up in columns, so a second row sum gives the slash sums of offsets o0 + j.
   Each row block writes its own partial sums (no atomics: the result is deterministic); the
   wrapper adds the row blocks' partials.

The two passes multiply 2 x W x S x D per head (a few hundred GFLOP at 128K, 28 heads) and write
2 x (W / BLOCK) x S floats per head: no [H, W, S] matrix, no sort.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ..common.triton_helpers import LOG2E


@triton.jit
def window_lse_kernel(
    Q,  # [Hq, T, D]
    K,  # [Hkv, S, D]
    M_OUT,  # [n_split, Hq, W] float32: running max of each key range (log2 units)
    L_OUT,  # [n_split, Hq, W] float32: sum of exp2(s - max) over that range
    stride_qh, stride_qt, stride_kh, stride_ks,
    Hq, T, S, W, n_wb, keys_per_split, qk_scale,
    GROUP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    DOT: tl.constexpr,
):  # fmt: skip
    h = tl.program_id(0) // n_wb
    wb = tl.program_id(0) % n_wb
    split = tl.program_id(1)
    w = wb * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M] window rows
    pos = w + (S - W)  # absolute positions
    dims = tl.arange(0, HEAD_DIM)
    q_rows = Q + h * stride_qh + (w + (T - W))[:, None] * stride_qt  # query T - W + w
    q = tl.load(q_rows + dims[None, :], mask=(w < W)[:, None], other=0.0)  # [BLOCK_M, D]
    k_base = K + (h // GROUP) * stride_kh
    last = tl.minimum(wb * BLOCK_M + BLOCK_M, W) - 1 + (S - W)  # the block's last position
    k_lo = split * keys_per_split
    k_hi = tl.minimum(k_lo + keys_per_split, last + 1)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    for k0 in range(k_lo, k_hi, BLOCK_N):
        keys = k0 + tl.arange(0, BLOCK_N)
        in_range = keys < k_hi
        k = tl.load(k_base + keys[:, None] * stride_ks + dims[None, :], mask=in_range[:, None], other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=DOT) * qk_scale  # [BLOCK_M, BLOCK_N]
        s = tl.where((keys[None, :] <= pos[:, None]) & in_range[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        l_i = l_i * tl.exp2(m_i - m_safe) + tl.sum(tl.exp2(s - m_safe[:, None]), 1)
        m_i = m_new
    out = split * Hq * W + h * W + w
    tl.store(M_OUT + out, m_i, mask=w < W)
    tl.store(L_OUT + out, l_i, mask=w < W)


@triton.jit
def _window_probs(
    q, k_base, keys, pos, row_ok, lse, stride_ks, S, qk_scale, HEAD_DIM: tl.constexpr, DOT: tl.constexpr
):
    """Probabilities exp2(s - lse) [rows, len(keys)] of the rows at ``pos`` on ``keys``; 0 where hidden."""
    dims = tl.arange(0, HEAD_DIM)
    key_ok = (keys >= 0) & (keys < S)
    k = tl.load(k_base + keys[:, None] * stride_ks + dims[None, :], mask=key_ok[:, None], other=0.0)
    s = tl.dot(q, tl.trans(k), input_precision=DOT) * qk_scale
    visible = key_ok[None, :] & (keys[None, :] <= pos[:, None]) & row_ok[:, None]
    return tl.where(visible, tl.exp2(s - lse[:, None]), 0.0)


@triton.jit
def window_scores_kernel(
    Q,  # [Hq, T, D]
    K,  # [Hkv, S, D]
    M_IN,  # [n_split, Hq, W] from window_lse_kernel
    L_IN,
    VERT_OUT,  # [n_wb, Hq, S] float32, zero-filled: this row block's sum of p over rows, per key
    SLASH_OUT,  # [n_wb, Hq, S] float32, zero-filled: ... per offset
    stride_qh, stride_qt, stride_kh, stride_ks,
    Hq, T, S, W, n_wb, n_split, blocks_per_prog,
    qk_scale,
    GROUP: tl.constexpr, BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    """Program: BLOCK window rows of one head x a range of offset steps of BLOCK offsets each.

    Step i covers offsets [o0, o0 + BLOCK), o0 = i BLOCK; its rows need the band of keys
    [p0 - o0 - BLOCK + 1, p0 - o0 + BLOCK] (p0: the block's first position). The band's upper half
    is the previous step's lower half, so each step multiplies only BLOCK new keys.
    """
    h = tl.program_id(0) // n_wb
    wb = tl.program_id(0) % n_wb
    r = tl.arange(0, BLOCK)  # local row, and local offset / key within a half band
    w = wb * BLOCK + r
    row_ok = w < W
    pos = w + (S - W)
    p0 = wb * BLOCK + (S - W)  # the block's first position
    last = tl.minimum(wb * BLOCK + BLOCK, W) - 1 + (S - W)
    dims = tl.arange(0, HEAD_DIM)
    q_rows = Q + h * stride_qh + (w + (T - W))[:, None] * stride_qt  # query T - W + w
    q = tl.load(q_rows + dims[None, :], mask=row_ok[:, None], other=0.0)  # [BLOCK, D]
    k_base = K + (h // GROUP) * stride_kh

    # Merge the key ranges' (max, sum) into each row's log-sum-exp (log2 units).
    m = tl.full([BLOCK], float("-inf"), dtype=tl.float32)
    for i in range(0, n_split):
        m = tl.maximum(m, tl.load(M_IN + i * Hq * W + h * W + w, mask=row_ok, other=float("-inf")))
    m_safe = tl.where(m == float("-inf"), 0.0, m)
    total = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(0, n_split):
        m_part = tl.load(M_IN + i * Hq * W + h * W + w, mask=row_ok, other=float("-inf"))
        l_part = tl.load(L_IN + i * Hq * W + h * W + w, mask=row_ok, other=0.0)
        total += l_part * tl.exp2(m_part - m_safe)
    lse = m_safe + tl.log2(tl.where(total > 0, total, 1.0))

    # Row w's offset o0 + j sits at band column c = w + BLOCK - 1 - j: in the lower half when c < BLOCK.
    c = r[:, None] + (BLOCK - 1) - r[None, :]  # [BLOCK, BLOCK]
    in_lower = c < BLOCK
    at_lower = tl.where(in_lower, c, 0)
    at_upper = tl.where(in_lower, 0, c - BLOCK)
    out_base = wb * Hq * S + h * S
    first = tl.program_id(1) * blocks_per_prog
    end = tl.minimum(first + blocks_per_prog, tl.cdiv(last + 1, BLOCK))
    # The first step's upper half; at step 0 these keys lie above p0 and belong to no later step.
    keys = p0 - first * BLOCK + 1 + r
    p_upper = _window_probs(q, k_base, keys, pos, row_ok, lse, stride_ks, S, qk_scale, HEAD_DIM, DOT)
    tl.store(VERT_OUT + out_base + keys, tl.sum(p_upper, 0), mask=(keys < S) & (r * 0 + first == 0))
    for step in range(first, end):
        o0 = step * BLOCK
        keys = p0 - o0 - (BLOCK - 1) + r  # the band's lower half: this step owns these keys
        p_lower = _window_probs(q, k_base, keys, pos, row_ok, lse, stride_ks, S, qk_scale, HEAD_DIM, DOT)
        tl.store(VERT_OUT + out_base + keys, tl.sum(p_lower, 0), mask=(keys >= 0) & (keys < S))
        diag = tl.where(in_lower, tl.gather(p_lower, at_lower, 1), tl.gather(p_upper, at_upper, 1))
        offs = o0 + r
        tl.store(SLASH_OUT + out_base + offs, tl.sum(diag, 0), mask=offs < S)
        p_upper = p_lower


def vertical_slash_scores_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    window: int,
    block_m: int = 64,
    block_n: int = 64,
    keys_per_split: int | None = None,
    blocks_per_prog: int | None = None,
    num_warps: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """q [Hq, T, D], k [Hkv, S, D] -> (vertical [Hq, S], slash [Hq, S]) float32, each the mean over
    the last min(window, T) queries of their causal attention probabilities (per key / per offset).

    Same definition as the PyTorch ``vertical_slash_scores``; products of q and k in their dtype with
    float32 accumulation (as the PyTorch path does on CUDA), softmax in float32.
    block_m: window rows per program (and offsets per step of pass 2); block_n: keys per step of pass 1.
    ``keys_per_split`` / ``blocks_per_prog`` size the two grids (defaults: ~4 programs per SM at 128K).
    """
    hq, t, d = q.shape
    hkv, s, _ = k.shape
    if d & (d - 1) or d < 16:
        raise ValueError(f"vertical_slash_scores_triton: head dim {d} must be a power of two >= 16.")
    w = min(window, t)
    q, k = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k))
    n_wb = math.ceil(w / block_m)
    keys_per_split = keys_per_split or max(block_n, 4096)
    keys_per_split = math.ceil(keys_per_split / block_n) * block_n
    n_split = math.ceil(s / keys_per_split)
    n_steps = math.ceil(s / block_m)  # offset steps of block_m offsets
    blocks_per_prog = blocks_per_prog or 64
    scale = LOG2E / math.sqrt(d)
    dot = "ieee" if q.dtype == torch.float32 else "tf32"  # float32 inputs: exact products, as torch.bmm
    f32 = dict(dtype=torch.float32, device=q.device)
    m_part = torch.empty(n_split, hq, w, **f32)
    l_part = torch.empty(n_split, hq, w, **f32)
    common = (q.stride(0), q.stride(1), k.stride(0), k.stride(1), hq, t, s, w, n_wb)
    window_lse_kernel[(hq * n_wb, n_split)](
        q, k, m_part, l_part, *common, keys_per_split, scale,
        GROUP=hq // hkv, BLOCK_M=block_m, BLOCK_N=block_n, HEAD_DIM=d, DOT=dot, num_warps=num_warps,
    )  # fmt: skip
    partial = torch.zeros(2, n_wb, hq, s, **f32)  # keys / offsets a row block never reaches stay 0
    window_scores_kernel[(hq * n_wb, math.ceil(n_steps / blocks_per_prog))](
        q, k, m_part, l_part, partial[0], partial[1], *common, n_split, blocks_per_prog, scale,
        GROUP=hq // hkv, BLOCK=block_m, HEAD_DIM=d, DOT=dot, num_warps=num_warps,
    )  # fmt: skip
    scores = partial.sum(1) / w  # [2, Hq, S]
    return scores[0], scores[1]
