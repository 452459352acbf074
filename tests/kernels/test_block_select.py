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

from .kernel_env import DEVICE, DTYPE, ON_GPU, needs_kernel

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


def _kernel(q_pool, k_pool, n_sel, geo, **tiles) -> torch.Tensor:
    """The Triton op; on the GPU, after filling the allocator's cache with ones, so an entry the
    kernel forgets to write shows up as a wrong True."""
    if ON_GPU:
        junk = torch.ones(q_pool.shape[0] * geo.rows.shape[0] * geo.n_key_blocks + 4096, dtype=torch.uint8,
                          device=DEVICE)  # fmt: skip
        del junk
    from sparse_frontier.kernels.block_select.triton_block_select import block_select_triton

    return block_select_triton(q_pool, k_pool, n_sel, geo.n_full, geo.last_block, **tiles)


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
@pytest.mark.parametrize("distinct", [True, False])
@pytest.mark.parametrize("hq,hkv,t,s,d,top_k", CASES)
def test_kernel_exact_on_integer_scores(hq, hkv, t, s, d, top_k, distinct):
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
    assert torch.equal(_kernel(qp, kp, n_sel, geo), ref)


# Tile shapes and counting modes must not change the result.
TILES = [
    {},
    {"block_m": 64, "block_n": 64, "num_warps": 4},
    {"block_m": 32, "block_n": 128, "num_warps": 4},
    {"block_m": 128, "block_n": 32, "num_warps": 8},
]


@needs_kernel
@pytest.mark.parametrize("tiles", TILES, ids=["default", "64x64", "32x128", "128x32"])
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
