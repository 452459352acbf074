"""Pieces the methods share: window attention estimates, pooling, budget search.

Everything here is a pure function on tensors of one sequence, with the shapes of
``base.py`` (q [Hq, T, D], k [Hkv, S, D], query i at key position S - T + i).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: Upper bound on the float32 elements of one window-probability chunk (512 MiB),
#: so 128K-token contexts with 28 heads are scored head group by head group.
MAX_CHUNK_ELEMENTS = 1 << 27


def check_shapes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """One clear sentence for the shape mistakes an engine can make."""
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise ValueError(
            f"Attention expects q [Hq,T,D], k [Hkv,S,D], v [Hkv,S,D]; got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)} (one sequence at a time, no batch dimension)."
        )
    hq, t, d = q.shape
    hkv, s, dk = k.shape
    if v.shape[:2] != k.shape[:2] or dk != d:
        raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} must share heads and length, and q's D.")
    if hq % hkv:
        raise ValueError(f"Query heads ({hq}) must be a multiple of key/value heads ({hkv}) for GQA.")
    if t > s:
        raise ValueError(f"There are more queries ({t}) than keys ({s}); queries sit at the end of the keys.")


def matmul_f32(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, M, D] @ [B, D, N] -> [B, M, N] float32.

    On CUDA with a half-precision ``dtype`` (the model's), operands go to tensor cores in that
    dtype with float32 accumulation, as MInference does; for bf16 model inputs the products are
    then exact. Elsewhere it is a float32 matmul.
    """
    if a.is_cuda and dtype in (torch.bfloat16, torch.float16):
        return torch.bmm(a.to(dtype), b.to(dtype), out_dtype=torch.float32)
    return torch.bmm(a.float(), b.float())


def window_probs(
    q: torch.Tensor,
    k: torch.Tensor,
    window: int,
    max_elements: int = MAX_CHUNK_ELEMENTS,
    flipped: bool = False,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Causal attention probabilities of the last ``window`` queries, one head group at a time.

    The approximation window of Vertical-Slash, FlexPrefill and SnapKV (paper A.1.2, A.1.4):
    recent queries predict which keys matter to everyone.

    Yields (first_query_head, probs) with probs [h, W, S] float32, W = min(window, T); row w is
    the query at key position S - W + w. Chunks cover whole GQA groups so k is never repeated.
    ``flipped``: probs [h, W, S + W] instead, column m holding key S - 1 - m and the last W
    columns zero: the layout diagonal sums need (``vertical_slash_scores``), made without copies.
    """
    hq, t, d = q.shape
    hkv, s, _ = k.shape
    group = hq // hkv
    w = min(window, t)
    qw = q[:, t - w :]
    rows = torch.arange(s - w, s, device=q.device)[:, None]
    # Only a W-wide band of columns can be hidden, so masks touch that band, not all S columns.
    if flipped:
        # Column m is key S-1-m (hidden when S-1-m > row, i.e. m < W-1-w) or padding (m >= S).
        band = torch.arange(min(w, s), device=q.device)[None, :]
        hidden_band = (s - 1 - band) > rows  # [W, min(W, S)], columns 0..W-1
        keys = torch.cat([k.flip(1), k.new_zeros(hkv, w, d)], 1)
    else:
        band = torch.arange(s - w, s, device=q.device)[None, :]
        hidden_band = band > rows  # [W, W], columns S-W..S-1
        keys = k
    n_cols = keys.shape[1]
    kv_per_chunk = max(1, max_elements // max(1, group * w * n_cols))
    scale = 1.0 / math.sqrt(d)
    for k0 in range(0, hkv, kv_per_chunk):
        k1 = min(hkv, k0 + kv_per_chunk)
        qg = qw[k0 * group : k1 * group].reshape(k1 - k0, group * w, d)
        scores = matmul_f32(qg, keys[k0:k1].transpose(1, 2), q.dtype).mul_(scale)  # [hk, g*W, cols]
        scores = scores.view((k1 - k0) * group, w, n_cols)
        if flipped:
            scores[..., : hidden_band.shape[1]].masked_fill_(hidden_band, float("-inf"))
            scores[..., s:] = float("-inf")
        else:
            scores[..., s - w :].masked_fill_(hidden_band, float("-inf"))
        yield k0 * group, torch.softmax(scores, dim=-1)


def smooth(scores: torch.Tensor, kernel: int) -> torch.Tensor:
    """1D average pooling along the last axis with 'same' output length (SnapKV, paper A.1.4).

    scores [..., S] -> [..., S]. Windows are clipped at the ends (no zero padding counted), so the
    first and last tokens are not penalised for sitting next to the border.
    """
    if kernel <= 1:
        return scores
    flat = scores.reshape(-1, 1, scores.shape[-1])
    pad = kernel // 2
    summed = F.avg_pool1d(flat, kernel, stride=1, padding=pad, count_include_pad=True) * kernel
    ones = torch.ones_like(flat[:1])
    counts = F.avg_pool1d(ones, kernel, stride=1, padding=pad, count_include_pad=True) * kernel
    return (summed / counts)[..., : scores.shape[-1]].reshape(scores.shape)


@dataclass(frozen=True)
class HeadGroup:
    """How this process's heads relate to the layer's: the cross-rank reductions of a budget search.

    Under tensor parallelism (vLLM, ``tensor_parallel_size > 1``) each rank holds a contiguous
    slice of every layer's heads (rank r: heads r*H_local .. (r+1)*H_local - 1). Methods whose
    budget is ONE decision over all heads of a layer (Vertical-Slash's and FlexPrefill's search
    on the layer's pair count, Ada-SnapKV's layer-wide top-k; paper A.1.2, A.1.3, A.1.5) reduce
    their per-head quantities through this group, so every rank takes the decision one process
    holding all heads would take.

    sum:    tensor -> the same-shape elementwise sum over the ranks (identity for one rank).
    gather: [H_local, ...] -> [H_local * size, ...], the ranks' tensors stacked in rank order.
    rank, size: this rank and the number of ranks sharing the heads.
    Every rank must call ``sum``/``gather`` in the same order (collectives); the searches do,
    because every branch they take depends only on reduced values and on shapes.
    """

    sum: Callable[[torch.Tensor], torch.Tensor]
    gather: Callable[[torch.Tensor], torch.Tensor]
    rank: int = 0
    size: int = 1


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


#: One process holds every head (the HF engine, vLLM at tensor parallel 1): no communication.
LOCAL_HEADS = HeadGroup(_identity, _identity)
_head_group = LOCAL_HEADS


def set_head_group(group: HeadGroup | None) -> None:
    """Install this process's head group (None: all heads are local). The vLLM worker calls it."""
    global _head_group
    _head_group = LOCAL_HEADS if group is None else group


def head_group() -> HeadGroup:
    """The head group budget searches reduce through (``LOCAL_HEADS`` unless a worker installed one)."""
    return _head_group


#: Budget searches stop once the count is this close to the target (relative): far inside the
#: 5% the methods promise, and it saves most of the bisection steps at long lengths.
SEARCH_RTOL = 1e-3


def _search(
    count: Callable, lo: float, hi: float, target: float, integer: bool, iterations: int, rtol: float
) -> float:
    """Shared bracketing search: interpolation steps alternating with bisection steps.

    count is non-decreasing; returns the point whose count is closest to target (or within
    rtol of it). Interpolation converges in a few steps on the near-linear pair counts; the
    bisection steps keep the worst case logarithmic.
    """
    c_lo, c_hi = count(lo), count(hi)
    if c_lo >= target:
        return lo
    if c_hi <= target:
        return hi
    a, b = lo, hi  # invariant: count(a) < target <= count(b)
    for step in range(iterations):
        if integer and b - a <= 1:
            break
        mid = a + (b - a) * (target - c_lo) / (c_hi - c_lo) if step % 2 == 0 else 0.5 * (a + b)
        if integer:
            mid = min(max(round(mid), a + 1), b - 1)
        c_mid = count(mid)
        if abs(c_mid - target) <= rtol * target:
            return mid
        if c_mid < target:
            a, c_lo = mid, c_mid
        else:
            b, c_hi = mid, c_mid
    return a if target - c_lo <= c_hi - target else b


def search_int(
    count: Callable[[int], float], lo: int, hi: int, target: float, rtol: float = SEARCH_RTOL
) -> int:
    """The n in [lo, hi] whose ``count(n)`` is closest to ``target`` (or within rtol).

    count must not decrease with n.
    """
    return int(_search(count, lo, hi, target, True, 2 * max(hi - lo, 1).bit_length() + 2, rtol))


def search_int_batched(
    counts: Callable[[list[int]], list[float]],
    lo: int,
    hi: int,
    target: float,
    start: int | None = None,
    shape: torch.Tensor | None = None,
    first: tuple[float, ...] = (1.0,),
    batch: int = 6,
    rtol: float = SEARCH_RTOL,
) -> int:
    """``search_int`` for counts that are costly per call but cheap to evaluate a few at a time:
    ``counts`` takes a list of candidates and returns their counts (one batched evaluation, one
    host round trip, per round). count must not decrease with n.

    Each round guesses the crossing and evaluates at most ``batch`` candidates: the guess, the
    bracket's midpoint (so the worst case stays logarithmic) and points around the guess at the
    expected error (near and far); a bracket of at most ``batch`` unknowns is evaluated whole. With
    ``batch`` 1 (where a count costs in proportion to the candidates, as on the CPU) a round takes the
    guess, or the midpoint after a round that did not halve the bracket. The guess is a secant on
    ``shape`` (a cheap non-decreasing proxy of count for every n in 0..hi, e.g. an overlap-free
    count; default n itself): exact when count is an affine function of shape, so a good proxy needs 2-3 small
    rounds. The first round tries where shape crosses ``first`` times the target (the range the
    count-to-shape ratio is expected in), or ``start`` and points around it. The ends lo and hi
    are evaluated only when the answer may lie there.
    """
    if lo >= hi:
        return lo
    shape_of = (lambda n: float(n)) if shape is None else (lambda n: float(shape[n]))

    def shape_inverse(u: float) -> int:  # first n whose shape reaches u
        if shape is None:
            return round(u)
        return int(
            torch.searchsorted(shape[: hi + 1], torch.tensor([u], dtype=shape.dtype, device=shape.device))
        )

    known: dict[int, float] = {}
    # Virtual ends: count(lo - 1) < target <= count(hi + 1); never evaluated.
    a, b = lo - 1, hi + 1
    guess = shape_inverse(target) if start is None else start
    error = max(1.0, 0.05 * abs(guess - lo))
    opening = [shape_inverse(target * f) for f in first] if start is None and shape is not None else []
    if batch < len(opening):
        opening = [opening[len(opening) // 2]]  # the middle one
    halved = True
    for _ in range(128):
        if opening:
            candidates = sorted({min(max(x, lo), hi) for x in opening})
            opening = []
        elif b - a - 1 <= batch:
            candidates = list(range(a + 1, b))
        else:
            p = min(max(guess, a + 1), b - 1)
            near = max(1, round(error / 4))
            far = max(near + 1, round(error))
            mid = (a + b) // 2
            ranked = [p, mid, p - near, p + near, p - far, p + far] if batch > 1 or halved else [mid]
            candidates = sorted(list(dict.fromkeys(x for x in ranked if a < x < b))[:batch])
        width = b - a
        known.update(zip(candidates, counts(candidates), strict=True))
        close = [n for n in candidates if abs(known[n] - target) <= rtol * abs(target)]
        if close:
            return min(close, key=lambda n: abs(known[n] - target))
        a = max([a, *(n for n in candidates if known[n] < target)])
        b = min([b, *(n for n in candidates if known[n] >= target)])
        if b - a <= 1:
            if a < lo:
                return lo
            if b > hi:
                return hi
            return a if target - known[a] <= known[b] - target else b
        halved = 2 * (b - a) <= width
        previous = guess
        guess = _secant(a, b, known, target, lo, hi, shape_of, shape_inverse)
        # The next guess's error: a sixteenth of a two-sided bracket (the secant's curvature error),
        # else about how far this round moved it.
        two_sided = a >= lo and b <= hi
        error = max(1.0, (b - a) / 16 if two_sided else min((b - a) / 2, 2.0 * abs(guess - previous)))
    return min(known, key=lambda n: abs(known[n] - target))


def _secant(a, b, known, target, lo, hi, shape_of, shape_inverse) -> int:
    """The crossing's guess from the bracket [a, b]: linear in shape between two known ends, or,
    with one end virtual, the known end's count scaled along shape (count proportional to shape)."""
    if a >= lo and b <= hi:
        ua, ub, ca, cb = shape_of(a), shape_of(b), known[a], known[b]
        u = ua + (ub - ua) * (target - ca) / (cb - ca)
    else:
        x = a if a >= lo else b
        ux, cx = shape_of(x), known[x]
        if ux <= 0 or cx <= 0:
            return (a + b) // 2
        u = ux * target / cx
    return shape_inverse(u)


def search_float(
    count: Callable[[float], float],
    lo: float,
    hi: float,
    target: float,
    iterations: int = 40,
    rtol: float = SEARCH_RTOL,
) -> float:
    """The x in [lo, hi] whose ``count(x)`` is closest to ``target`` (or within rtol), count a
    non-decreasing step function; ``iterations`` bounds the steps."""
    return float(_search(count, lo, hi, target, False, iterations, rtol))


def check_positive_int(name: str, field_name: str, value: int, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}: {field_name} must be an integer >= {minimum}, got {value!r}.")
