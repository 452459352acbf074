"""Block-Sparse's fused block selection (kernels/block_select) against its PyTorch reference.

The reference defines the selection (paper A.1.1: first block, causal boundary, top-n_sel of the
fully visible key blocks by pooled q.k, ties to the lower block); the method's own CPU selection
must agree with it, and the Triton kernel must pick the same blocks:

* exactly, on integer-valued pooled inputs, where every score is exact in any summation order -
  both with many ties (checks the tie rule) and with all scores of a row distinct;
* on random float inputs, exactly except where a row's cut falls between two scores closer than
  float32 rounding (the kernel sums in another order than the reference); such rows must be rare
  and the blocks they swap must really be that close.

Kernel tests run on a CUDA GPU in bf16; without one they run on small float16 cases under
TRITON_INTERPRET=1, in a subprocess (the variable must be set before triton is imported).
"""

from __future__ import annotations

import pytest
import torch

from sparse_frontier.attention.base import causal_pairs
from sparse_frontier.attention.block_sparse import (
    BlockGeometry,
    BlockSparse,
    _pool,
    block_pairs,
    blocks_per_query_block,
    select_blocks,
)
from sparse_frontier.kernels import ops
from sparse_frontier.kernels.block_select.reference import block_select_reference, block_select_scores
from sparse_frontier.kernels.block_sparse.reference import block_sparse_pairs

from .kernel_env import DEVICE, DTYPE, ON_GPU, compiles_offline, needs_kernel

# (Hq, Hkv, T, S, D, top_k): GQA 7:1, 4:1, 1:1; ragged lengths (not multiples of 16); T < S with
# S - T off the block grid (two boundary blocks); top_k 0, fractional, and above every row's reach.
GPU_CASES = [
    (28, 4, 20000, 20000, 128, 61.3),
    (8, 2, 4000, 4100, 128, 12.5),
    (4, 4, 513, 777, 64, 3.0),
    (6, 1, 300, 4100, 128, 150.7),
    (7, 1, 1, 999, 128, 9.9),
    (4, 2, 2000, 2000, 128, 0.0),
    (4, 2, 1000, 1000, 128, 1e4),
]
CPU_CASES = [
    (4, 2, 100, 130, 32, 3.3),
    (7, 1, 200, 200, 16, 5.7),
    (3, 3, 50, 300, 16, 40.0),
    (2, 1, 1, 77, 16, 2.0),
    (2, 2, 120, 120, 16, 0.0),
    (2, 1, 150, 160, 16, 1e4),
]
CASES = GPU_CASES if ON_GPU else CPU_CASES


def _geometry_and_counts(t: int, s: int, top_k: float) -> tuple[BlockGeometry, torch.Tensor]:
    geo = BlockGeometry.of(t, s, 16, DEVICE)
    return geo, blocks_per_query_block(top_k, geo)


def _kernel(q_pool, k_pool, n_sel, geo, **options) -> torch.Tensor:
    """The Triton op; on the GPU, after filling the allocator's cache with ones, so an entry the
    kernel forgets to write shows up as a wrong True (and the compact kernel's scratch buffer starts
    out full of stale values)."""
    if ON_GPU:
        junk = torch.ones(q_pool.shape[0] * geo.rows.shape[0] * geo.n_key_blocks + 4096, dtype=torch.uint8,
                          device=DEVICE)  # fmt: skip
        del junk
    from sparse_frontier.kernels.block_select.triton_block_select import block_select_triton

    return block_select_triton(q_pool, k_pool, n_sel, geo.n_full, geo.last_block, **options)


def _stats(q_pool, n_sel, geo, block_m: int = 64) -> torch.Tensor:
    """A zeroed stats tensor for the compact kernel (one row of counters per program)."""
    from sparse_frontier.kernels.block_select.triton_block_select import STATS

    programs = q_pool.shape[0] * -(-geo.rows.shape[0] // block_m)
    return torch.zeros(programs, len(STATS), dtype=torch.int32, device=DEVICE)


def _stat(stats: torch.Tensor, name: str) -> torch.Tensor:
    from sparse_frontier.kernels.block_select.triton_block_select import STATS

    return stats[:, STATS.index(name)]


def _selectable(geo: BlockGeometry) -> torch.Tensor:
    cols = torch.arange(geo.n_key_blocks, device=geo.n_full.device)
    return (cols[None, :] >= 1) & (cols[None, :] < geo.n_full[:, None])


def assert_same_selection(out, ref, q_pool, k_pool, geo, max_row_fraction=0.01, rel=2e-5) -> None:
    """out == ref, except rows whose differing blocks all score within float32 rounding of each other."""
    assert out.shape == ref.shape and out.dtype == torch.bool
    assert torch.equal(out.sum(-1), ref.sum(-1)), "a row selected a different number of blocks"
    diff = out != ref
    if not diff.any():
        return
    assert not (diff & ~_selectable(geo)[None]).any(), "forced or unselectable blocks differ"
    rows = diff.any(-1)
    assert rows.float().mean() <= max_row_fraction, f"{int(rows.sum())} rows differ: not rounding"
    scores = block_select_scores(q_pool, k_pool)[rows]  # [n, nkb]
    d = diff[rows]
    top = scores.masked_fill(~d, float("-inf")).amax(-1)
    bottom = scores.masked_fill(~d, float("inf")).amin(-1)
    scale = scores.masked_fill(~_selectable(geo)[rows.nonzero()[:, 1]], 0).abs().amax(-1)
    assert torch.all(top - bottom <= rel * scale), "the kernel swapped blocks whose scores are not a near-tie"


def _int_pooled(hq, hkv, nqb, nkb, d, distinct: bool, seed: int):
    """Integer-valued pooled blocks whose scores are exact in any summation order (|score| < 2^24).

    distinct: every score of a row differs (dims 0-1 encode a per-kv-head permutation of the key
    blocks below a 512x-scaled random part, so the permutation breaks every tie); else values in
    [-3, 3], so rows are full of ties.
    """
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(-3, 4, (hq, nqb, d), generator=g).float()
    k = torch.randint(-3, 4, (hkv, nkb, d), generator=g).float()
    if distinct:
        assert nkb <= 512
        q = q.clamp(-2, 2) * 512
        k = k.clamp(-2, 2)
        q[..., 0], q[..., 1] = 16.0, 1.0
        perm = torch.stack([torch.randperm(nkb, generator=g) for _ in range(hkv)]).float()
        k[..., 0], k[..., 1] = torch.div(perm, 16, rounding_mode="floor"), perm % 16
    return q.to(DEVICE, DTYPE), k.to(DEVICE, DTYPE)


def _float_pooled(hq, hkv, t, s, d, seed: int):
    """Random token-level q, k pooled as the method pools them, in the kernel's dtype."""
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    q = torch.randn(hq, t, d, generator=g, device=DEVICE).to(DTYPE)
    k = torch.randn(hkv, s, d, generator=g, device=DEVICE).to(DTYPE)
    return _pool(q, 16).to(DTYPE), _pool(k, 16).to(DTYPE)


# --- the reference: agrees with the method's own (CPU) selection and with its budget ---------------


@pytest.mark.parametrize("hq,hkv,t,s,d,top_k", CPU_CASES)
def test_reference_matches_method_selection_on_cpu(hq, hkv, t, s, d, top_k):
    g = torch.Generator().manual_seed(t + s)
    q, k = torch.randn(hq, t, d, generator=g), torch.randn(hkv, s, d, generator=g)
    geo = BlockGeometry.of(t, s, 16)
    n_sel = blocks_per_query_block(top_k, geo)
    qp, kp = _pool(q, 16), _pool(k, 16)
    ref = block_select_reference(qp, kp, n_sel, geo.n_full, geo.last_block)
    assert_same_selection(select_blocks(q, k, top_k), ref, qp, kp, geo)
    # Exactly the closed-form budget of the method: density accounting relies on it.
    assert block_sparse_pairs(ref, t, s) == hq * block_pairs(top_k, geo, 16, s)
    assert torch.equal(ops.block_select(qp, kp, n_sel, geo.n_full, geo.last_block), ref)


def test_reference_tie_rule_and_counts():
    # One head, 4 query blocks over 64 keys: row 3 sees blocks 0..3 (n_full 4), selectable 1..3.
    q = torch.ones(1, 4, 2)
    k = torch.tensor([[[9.0, 0], [1, 0], [1, 0], [1, 0]]])  # blocks 1-3 tie
    geo = BlockGeometry.of(64, 64, 16)
    mask = block_select_reference(q, k, torch.tensor([0, 0, 1, 2]), geo.n_full, geo.last_block)
    # Row 2 sees blocks 0..2 (n_full 2, its diagonal block 2 forced): only block 1 is selectable.
    assert mask[0, 3].tolist() == [True, True, True, True]  # first, two ties (1, 2), its own diagonal (3)
    assert mask[0, 2].tolist() == [True, True, True, False]
    mask = block_select_reference(q, k, torch.tensor([0, 0, 0, 1]), geo.n_full, geo.last_block)
    assert mask[0, 3].tolist() == [True, True, False, True]  # the tie goes to the lower block


def test_op_rejects_bad_inputs():
    qp, kp = torch.zeros(4, 3, 16), torch.zeros(3, 5, 16)
    n = torch.zeros(3, dtype=torch.int64)
    with pytest.raises(ValueError, match="multiple of kv heads"):
        ops.block_select(qp, kp, n, n, n)
    with pytest.raises(ValueError, match="shape \\[3\\]"):
        ops.block_select(qp, kp[:2], n[:2], n, n)
    with pytest.raises(ValueError, match="one float dtype"):
        ops.block_select(qp, kp[:2].half(), n, n, n)
    with pytest.raises(ValueError, match="expected q_pool"):
        ops.block_select(qp[0], kp, n, n, n)


# --- the kernel against the reference ------------------------------------------------------------


@needs_kernel
@pytest.mark.parametrize("algorithm", ["compact", "scan"])
@pytest.mark.parametrize("distinct", [True, False])
@pytest.mark.parametrize("hq,hkv,t,s,d,top_k", CASES)
def test_kernel_exact_on_integer_scores(hq, hkv, t, s, d, top_k, distinct, algorithm):
    geo, n_sel = _geometry_and_counts(t, s, top_k)
    nqb, nkb = geo.rows.shape[0], geo.n_key_blocks
    if distinct and nkb > 512:
        pytest.skip("the distinct-score construction encodes key blocks below 512")
    qp, kp = _int_pooled(hq, hkv, nqb, nkb, d, distinct, seed=nqb * 31 + nkb)
    if distinct:
        scores = block_select_scores(qp, kp).masked_fill(~_selectable(geo)[None], float("nan"))
        ranked = scores.sort(-1).values
        assert not (ranked[..., 1:] == ranked[..., :-1]).any(), "test construction has ties"
    ref = block_select_reference(qp, kp, n_sel, geo.n_full, geo.last_block)
    assert torch.equal(_kernel(qp, kp, n_sel, geo, algorithm=algorithm), ref)


# Tile shapes, algorithms and buffer capacities must not change the result.
TILES = [
    {},
    {"block_m": 64, "block_n": 64, "num_warps": 4},
    {"block_m": 32, "block_n": 128, "num_warps": 4},
    {"block_m": 128, "block_n": 32, "num_warps": 8},
    {"algorithm": "scan"},
    {"capacity": 0},
    {"capacity": 2, "block_m": 32, "block_n": 64},
    {"shrink": False},
]


@needs_kernel
@pytest.mark.parametrize(
    "tiles", TILES, ids=["default", "64x64", "32x128", "128x32", "scan", "cap0", "cap2", "noshrink"]
)
@pytest.mark.parametrize("hq,hkv,t,s,d,top_k", CASES)
def test_kernel_matches_reference_on_random_inputs(hq, hkv, t, s, d, top_k, tiles):
    geo, n_sel = _geometry_and_counts(t, s, top_k)
    qp, kp = _float_pooled(hq, hkv, t, s, d, seed=t * 3 + s)
    ref = block_select_reference(qp, kp, n_sel, geo.n_full, geo.last_block)
    assert_same_selection(_kernel(qp, kp, n_sel, geo, **tiles), ref, qp, kp, geo)


@needs_kernel
@pytest.mark.parametrize("dtype", [DTYPE, torch.float32])
def test_kernel_random_counts_per_row(dtype):
    """Arbitrary per-row budgets (not the method's smooth ones), including 0 and 'all'; float32
    pooled blocks take the kernel's IEEE float32 products."""
    hq, hkv, t, s, d = (8, 2, 3000, 3000, 128) if ON_GPU else (4, 2, 250, 250, 16)
    geo = BlockGeometry.of(t, s, 16, DEVICE)
    g = torch.Generator(device=DEVICE).manual_seed(5)
    n_sel = (torch.rand(geo.rows.shape[0], generator=g, device=DEVICE) * (geo.n_full + 2)).long()
    qp, kp = (x.to(dtype) for x in _float_pooled(hq, hkv, t, s, d, seed=11))
    ref = block_select_reference(qp, kp, n_sel, geo.n_full, geo.last_block)
    assert_same_selection(_kernel(qp, kp, n_sel, geo), ref, qp, kp, geo)


@needs_kernel
@pytest.mark.skipif(not ON_GPU, reason="the method's CUDA path")
@pytest.mark.parametrize("s,ratio", [(4096, 5), (5001, 20), (20000, 10)])
def test_method_on_gpu_uses_exact_budget(s, ratio):
    """BlockSparse on CUDA selects through the kernel: exactly the budget the method reports,
    and the blocks the reference picks from the same pooled bf16 blocks."""
    g = torch.Generator(device="cuda").manual_seed(s)
    q = torch.randn(28, s, 128, generator=g, device="cuda").bfloat16()
    k = torch.randn(4, s, 128, generator=g, device="cuda").bfloat16()
    method = BlockSparse(compression_ratio=ratio)
    mask, computed, info = method.plan(q, k)
    assert block_sparse_pairs(mask, s, s) == computed
    assert computed / (28 * causal_pairs(s, s)) == pytest.approx(1 / ratio, rel=0.05)
    geo = BlockGeometry.of(s, s, 16, "cuda")
    qp, kp = _pool(q, 16).bfloat16(), _pool(k, 16).bfloat16()
    ref = block_select_reference(
        qp, kp, blocks_per_query_block(info["top_k"], geo), geo.n_full, geo.last_block
    )
    assert_same_selection(mask, ref, qp, kp, geo)


# --- the compact kernel's paths -------------------------------------------------------------------
# capacity 0: no row is ever buffered, every row takes the full-scan fallback; 1 and 3: guessed
# brackets overflow and the fallback narrows them until they fit, then compacts them late; 17: some
# rows fit at once; the default: (nearly) every row fits at once on these short rows.
CAPACITIES = [0, 1, 3, 17, None]


@needs_kernel
@pytest.mark.parametrize("capacity", CAPACITIES, ids=lambda c: f"cap{c}")
@pytest.mark.parametrize("distinct", [True, False], ids=["distinct", "ties"])
@pytest.mark.parametrize("hq,hkv,t,s,d,top_k", CASES[:3])
def test_kernel_compact_exact_at_any_capacity(hq, hkv, t, s, d, top_k, distinct, capacity):
    geo, n_sel = _geometry_and_counts(t, s, top_k)
    nqb, nkb = geo.rows.shape[0], geo.n_key_blocks
    if distinct and nkb > 512:
        pytest.skip("the distinct-score construction encodes key blocks below 512")
    qp, kp = _int_pooled(hq, hkv, nqb, nkb, d, distinct, seed=nqb * 7 + nkb + 1)
    ref = block_select_reference(qp, kp, n_sel, geo.n_full, geo.last_block)
    options = {} if capacity is None else {"capacity": capacity}
    assert torch.equal(_kernel(qp, kp, n_sel, geo, **options), ref)


@needs_kernel
def test_kernel_compact_takes_each_path():
    """The fast path is really taken, and so is each fallback step, with exact masks throughout:
    with a buffer as long as the longest row, the guessed bracket is the whole row, so no row needs
    a full search pass or a late compaction; with a 2-score buffer, rows overflow, the fallback
    runs full search passes, compacts late, and the search finishes over the buffers."""
    hq, hkv, t, s, d = (8, 2, 3000, 3000, 128) if ON_GPU else (4, 2, 250, 250, 16)
    geo = BlockGeometry.of(t, s, 16, DEVICE)
    g = torch.Generator(device=DEVICE).manual_seed(3)
    n_sel = (torch.rand(geo.rows.shape[0], generator=g, device=DEVICE) * geo.n_full).long()
    qp, kp = _float_pooled(hq, hkv, t, s, d, seed=13)
    ref = block_select_reference(qp, kp, n_sel, geo.n_full, geo.last_block)

    roomy = _stats(qp, n_sel, geo)
    out = _kernel(qp, kp, n_sel, geo, capacity=geo.n_key_blocks, stats=roomy)
    assert_same_selection(out, ref, qp, kp, geo)
    assert _stat(roomy, "full_search_passes").sum() == 0 and _stat(roomy, "compaction_passes").sum() == 0
    assert _stat(roomy, "rows_not_buffered_by_guess").sum() == 0
    assert _stat(roomy, "buffer_passes").max() > 0

    tight = _stats(qp, n_sel, geo)
    out = _kernel(qp, kp, n_sel, geo, capacity=2, stats=tight)
    assert_same_selection(out, ref, qp, kp, geo)
    for name in ("full_search_passes", "compaction_passes", "buffer_passes", "rows_not_buffered_by_guess"):
        assert _stat(tight, name).max() > 0, name
    assert _stat(tight, "max_fill").max() <= 2


@needs_kernel
@pytest.mark.parametrize("capacity", [0, 2, None], ids=lambda c: f"cap{c}")
def test_kernel_rows_of_ties_at_the_cut(capacity):
    """Cuts inside tie groups larger than the buffer, and rows whose scores are all equal (zero
    spread, so a zero-width guessed bracket): ties go to the lower key blocks, exactly n per row."""
    hq, nqb = 3, 40
    geo = BlockGeometry.of(nqb * 16, nqb * 16, 16, DEVICE)
    nkb = geo.n_key_blocks
    g = torch.Generator().manual_seed(17)
    q = torch.ones(hq, nqb, 16)
    q[1] = 0.0  # head 1: every score of every row is 0
    k = (torch.rand(1, nkb, 16, generator=g) < 0.5).float()
    k[..., 1:] = 0.0  # scores are 0 or 1: two big tie groups per row
    n_sel = (torch.rand(nqb, generator=g) * geo.n_full.cpu()).long().to(DEVICE)
    qp, kp = q.to(DEVICE, DTYPE), k.to(DEVICE, DTYPE)
    ref = block_select_reference(qp, kp, n_sel, geo.n_full, geo.last_block)
    options = {} if capacity is None else {"capacity": capacity}
    assert torch.equal(_kernel(qp, kp, n_sel, geo, **options), ref)


@needs_kernel
@pytest.mark.parametrize("moments", ["gram", "pass"])
def test_kernel_guess_bracket_holds_most_rows(moments):
    """The fast path's premise, for both sources of the row moments: on Gaussian-like scores the
    Gaussian guess brackets nearly every row's n-th score within the buffer (a wrong mean or
    variance, e.g. a prefix sum read at the wrong checkpoint, sends most rows to the fallback)."""
    hq, hkv, t, d, capacity = (8, 2, 20000, 128, 256) if ON_GPU else (4, 2, 2000, 64, 32)
    geo, n_sel = _geometry_and_counts(t, t, t / 16 / 10)
    qp, kp = _float_pooled(hq, hkv, t, t, d, seed=1)
    stats = _stats(qp, n_sel, geo)
    out = _kernel(qp, kp, n_sel, geo, capacity=capacity, moments=moments, stats=stats)
    assert_same_selection(out, block_select_reference(qp, kp, n_sel, geo.n_full, geo.last_block), qp, kp, geo)
    active_rows = hq * int(((n_sel > 0) & (n_sel < geo.n_full - 1)).sum())
    assert _stat(stats, "rows_not_buffered_by_guess").sum() <= 0.05 * active_rows
    assert _stat(stats, "buffer_passes").max() > 0


@needs_kernel
@pytest.mark.parametrize("capacity", [4, 16])
def test_kernel_overflowing_rows_beside_buffered_rows(capacity):
    """Rows whose guessed bracket overflows the buffer sit between rows that it fits: an overflow
    must not spill into a neighbour's buffer, and the masks stay exact. Even query blocks score 80%
    of the key blocks 1 and the rest 0, with n = 31% of the row: the Gaussian guess lands on 1
    (mean 0.8 + z 0.5 * std 0.4), so the guessed bracket holds the whole tie group of 1s; odd ones
    score a distinct integer >= 2 per key block and fit the buffer. The scratch starts as NaN with
    a NaN tail after the last row: every slot written must hold a score of its own row."""
    nqb, d = 96, 16
    geo = BlockGeometry.of(nqb * 16, nqb * 16, 16, DEVICE)
    nkb = geo.n_key_blocks
    g = torch.Generator().manual_seed(capacity)
    k = torch.zeros(1, nkb, d)
    k[0, :, 0] = (torch.rand(nkb, generator=g) < 0.8).float()
    k[0, :, 1] = torch.randperm(nkb, generator=g).float() + 2
    q = torch.zeros(2, nqb, d)
    q[:, 0::2, 0] = 1.0
    q[:, 1::2, 1] = 1.0
    q[1] = -q[1]  # head 1 ranks the other way round
    sel = (geo.n_full - 1).clamp(min=0).cpu()
    n_sel = torch.where(torch.arange(nqb) % 2 == 0, (sel * 0.31).long(), sel // 4).to(DEVICE)
    qp, kp = q.to(DEVICE, DTYPE), k.to(DEVICE, DTYPE)
    ref = block_select_reference(qp, kp, n_sel, geo.n_full, geo.last_block)
    stats = _stats(qp, n_sel, geo, block_m=32)
    scratch = torch.full((2 * nqb * capacity + 64,), float("nan"), device=DEVICE)
    out = _kernel(qp, kp, n_sel, geo, capacity=capacity, stats=stats, scratch=scratch, block_m=32, block_n=16)
    assert torch.equal(out, ref)
    assert _stat(stats, "rows_not_buffered_by_guess").max() > 0
    assert scratch[2 * nqb * capacity :].isnan().all(), "a row wrote past the end of the buffers"
    buffers = scratch[: 2 * nqb * capacity].view(2, nqb, capacity)
    scores = block_select_scores(qp, kp).masked_fill(~_selectable(geo)[None], float("nan"))
    written = ~buffers.isnan()
    assert written.any()
    own = (buffers[..., :, None] == scores[..., None, :]).any(-1)  # [2, nqb, capacity]
    assert own[written].all(), "a row's buffer holds a score that is not its own"


@needs_kernel
@pytest.mark.parametrize("capacity", [0, None], ids=lambda c: f"cap{c}")
def test_kernel_scores_at_the_bound(capacity):
    """Scores equal to the starting bracket's Cauchy-Schwarz bound |q| max|k| (q parallel to the
    longest key block) and to its negative: the bracket must still hold them all, and n = 1 (a tie
    at the top) and n = all-but-one pick the right blocks."""
    nqb, d = 40, 16
    geo = BlockGeometry.of(nqb * 16, nqb * 16, 16, DEVICE)
    nkb = geo.n_key_blocks
    g = torch.Generator().manual_seed(9)
    k = torch.randint(-1, 2, (1, nkb, d), generator=g).float()
    k[0, 5], k[0, 7], k[0, 9], k[0, 11] = 3.0, 3.0, -3.0, -3.0  # the longest blocks, each twice: ties
    q = torch.ones(2, nqb, d)
    q[1, ::2] = -1.0  # some rows score block 9 highest
    sel = (geo.n_full - 1).clamp(min=0).cpu()
    n_sel = torch.where(torch.arange(nqb) % 3 == 0, sel.clamp(max=1), (sel - 1).clamp(min=0)).to(DEVICE)
    qp, kp = q.to(DEVICE, DTYPE), k.to(DEVICE, DTYPE)
    ref = block_select_reference(qp, kp, n_sel, geo.n_full, geo.last_block)
    options = {} if capacity is None else {"capacity": capacity}
    assert torch.equal(_kernel(qp, kp, n_sel, geo, **options), ref)


@needs_kernel
@pytest.mark.parametrize("capacity", [3, None], ids=lambda c: f"cap{c}")
def test_kernel_scores_on_adjacent_floats(capacity):
    """Every score of a row is a distinct float32 next to the others (1 + i * 2^-23): brackets are
    a few floats wide from the start, so the search cuts in key space and its thresholds land
    exactly on scores. Float32 pooled blocks (IEEE products, exact here)."""
    nqb, d = 50, 16
    geo = BlockGeometry.of(nqb * 16, nqb * 16, 16, DEVICE)
    nkb = geo.n_key_blocks
    g = torch.Generator().manual_seed(4)
    k = torch.zeros(2, nkb, d, dtype=torch.float64)
    for h in range(2):
        k[h, :, 0] = 1.0 + torch.randperm(nkb, generator=g).double() * 2.0**-23
    q = torch.zeros(4, nqb, d, dtype=torch.float64)
    q[..., 0] = 1.0
    n_sel = (torch.rand(nqb, generator=g) * geo.n_full.cpu()).long().to(DEVICE)
    qp, kp = q.float().to(DEVICE), k.float().to(DEVICE)
    ref = block_select_reference(qp, kp, n_sel, geo.n_full, geo.last_block)
    options = {} if capacity is None else {"capacity": capacity}
    assert torch.equal(_kernel(qp, kp, n_sel, geo, **options), ref)


def test_gram_checkpoints_are_prefix_sums():
    from sparse_frontier.kernels.block_select.triton_block_select import gram_checkpoints

    g = torch.Generator().manual_seed(2)
    k = torch.randn(2, 150, 8, generator=g, dtype=torch.float64).half()
    gram, sums, kmax = gram_checkpoints(k, every=16)
    assert gram.shape == (2, 150 // 16 + 1, 8, 8) and sums.shape == (2, 150 // 16 + 1, 8)
    kd = k.double()
    for c in range(gram.shape[1]):
        part = kd[:, 1 : c * 16]  # key block 0 is never selectable
        torch.testing.assert_close(gram[:, c].double(), part.transpose(1, 2) @ part, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(sums[:, c].double(), part.sum(1), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(kmax.double(), kd[:, 1:].norm(dim=-1).amax(-1), rtol=1e-6, atol=0)


def test_kernel_options_are_checked():
    from sparse_frontier.kernels.block_select.triton_block_select import block_select_triton

    qp, kp, n = torch.zeros(2, 3, 16), torch.zeros(1, 3, 16), torch.ones(3, dtype=torch.int64)
    with pytest.raises(ValueError, match="algorithm must be"):
        block_select_triton(qp, kp, n, n, n, algorithm="sort")
    with pytest.raises(ValueError, match="moments must be"):
        block_select_triton(qp, kp, n, n, n, moments="sample")
    with pytest.raises(ValueError, match="scratch must be a contiguous float32 tensor of at least"):
        block_select_triton(qp, kp, n, n, n, capacity=1, scratch=torch.zeros(5))
    with pytest.raises(ValueError, match="capacity must be >= 0"):
        block_select_triton(qp, kp, n, n, n, capacity=-1)
    with pytest.raises(ValueError, match="stats must be an int32 tensor of shape \\[2, 5\\]"):
        block_select_triton(qp, kp, n, n, n, stats=torch.zeros(3, 5, dtype=torch.int32))


@compiles_offline[0]
@compiles_offline[1]
@pytest.mark.parametrize(
    "name,dtype,options",
    [
        ("scan", "bf16", {}),
        ("compact", "bf16", {"GRAM": True, "STATS": False}),
        ("compact", "fp32", {"GRAM": False, "STATS": True}),
    ],
    ids=["scan", "compact", "compact-fp32-pass-stats"],
)
def test_compiles_for_hopper_without_a_gpu(name, dtype, options):
    """Both selection kernels lower to sm_90 machine code offline (no GPU needed): the interpreter
    runs Python, so it misses what only the compiler rejects (e.g. a loop-carried name rebound to
    another type inside a branch)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from sparse_frontier.kernels.block_select import triton_block_select as m

    fn = m._block_select_scan_kernel if name == "scan" else m._block_select_compact_kernel
    consts = dict(
        BLOCK_M=64, BLOCK_N=32, BLOCK_D=128, VALUE_PASSES=m.VALUE_PASSES, MAX_PASSES=m.MAX_PASSES,
        KEY_SPAN_SWITCH=m.KEY_SPAN_SWITCH, IEEE=dtype == "fp32",
    )  # fmt: skip
    if name == "scan":
        consts["GUESS_WIDTH"] = m.GUESS_WIDTH
    else:
        consts.update(
            FILL=m.FILL, OUTER=m.OUTER, CK=m.CHECKPOINT, GRAM_COLS=32, BUF_N=m.BUFFER_TILE, SHRINK=True,
            **options,
        )
    pointers = dict(
        q_ptr=f"*{dtype}", k_ptr=f"*{dtype}", nsel_ptr="*i32", nfull_ptr="*i32", last_ptr="*i32",
        out_ptr="*u8", buf_ptr="*fp32", stats_ptr="*i32", gram_ptr="*fp32", gsum_ptr="*fp32",
        bound_ptr="*fp32",
    )  # fmt: skip
    signature = {a: "constexpr" if a in consts else pointers.get(a, "i32") for a in fn.arg_names}
    source = ASTSource(fn, signature, constexprs=consts)
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
    assert compiled.asm["cubin"]
