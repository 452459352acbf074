"""Vertical-Slash's fused importance estimation (kernels/vertical_slash/triton_scores.py) against
the PyTorch definition (``vertical_slash_scores(..., fused=False)``, paper A.1.2).

* The scores agree to float tolerance on GQA 7:1 / 2:1 / 1:1, T < S, windows longer than T and
  not multiples of the row block, several tile shapes, and key / offset ranges split over many
  programs (small splits on the CPU, so the log-sum-exp merge and the ownership of keys between
  offset blocks are exercised).
* The method's selection then agrees: wherever a head's top-n cut is separated by more than twice
  the largest score error, the chosen verticals and slashes are identical (near-ties may differ).

On a CUDA GPU these run natively in bf16 (the reference uses the same bf16 products with float32
accumulation); on the CPU under TRITON_INTERPRET=1 (in a subprocess) in float16 / float32.
"""

from __future__ import annotations

import pytest
import torch

from sparse_frontier.attention.vertical_slash import vertical_slash_scores
from sparse_frontier.kernels.vertical_slash.triton_scores import vertical_slash_scores_triton

from .kernel_env import DEVICE, DTYPE, ON_GPU, needs_kernel

# (Hq, Hkv, T, S, D, window)
GPU_CASES = [
    (28, 4, 8192, 8192, 128, 256),
    (8, 2, 3000, 5001, 128, 512),
    (4, 4, 100, 1000, 64, 256),
    (7, 1, 777, 777, 128, 300),
]
CPU_CASES = [
    (4, 2, 50, 50, 16, 20),
    (2, 1, 100, 300, 32, 64),
    (3, 3, 37, 37, 16, 256),
    (7, 1, 130, 130, 16, 100),
]
CASES = GPU_CASES if ON_GPU else CPU_CASES
# (block_m, block_n, keys_per_split, blocks_per_prog): the default, and small ones that split a row
# block's keys over several programs and its offsets over several programs.
GPU_TILES = [(64, 64, None, None), (64, 32, 1024, 7), (32, 64, 512, 3)]
CPU_TILES = [(64, 64, None, None), (16, 16, 32, 3), (32, 16, 48, 2), (16, 32, 32, 1)]
TILES = GPU_TILES if ON_GPU else CPU_TILES
# Tolerance on scores whose rows sum to 1 (bf16 products are exact in float32 on both paths, so only
# summation order and exp2 vs exp differ).
RTOL, ATOL = (2e-3, 1e-6) if ON_GPU else (1e-4, 1e-7)


def _qk(hq, hkv, t, s, d, seed, dtype=DTYPE):
    """Random q, k with logits up to ~10-20, and a few heavy keys, as trained models show."""
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    q = torch.randn(hq, t, d, generator=g, device=DEVICE) * 1.5
    k = torch.randn(hkv, s, d, generator=g, device=DEVICE) * 1.5
    k[:, :: max(1, s // 7)] += 2.0 * q[0, -1] / q[0, -1].norm() * d**0.5  # heavy hitters
    return q.to(dtype), k.to(dtype)


def _reference(q, k, window):
    # The CPU reference computes in float32 from the (rounded) inputs, like the GPU one from bf16.
    if q.is_cuda:
        return vertical_slash_scores(q, k, window, fused=False)
    return vertical_slash_scores(q.float(), k.float(), window, fused=False)


@needs_kernel
@pytest.mark.parametrize("hq,hkv,t,s,d,window", CASES)
@pytest.mark.parametrize("block_m,block_n,keys_per_split,blocks_per_prog", TILES)
def test_triton_scores_match_reference(
    hq, hkv, t, s, d, window, block_m, block_n, keys_per_split, blocks_per_prog
):
    q, k = _qk(hq, hkv, t, s, d, seed=t + s + block_m)
    vertical, slash = vertical_slash_scores_triton(
        q, k, window, block_m=block_m, block_n=block_n, keys_per_split=keys_per_split,
        blocks_per_prog=blocks_per_prog,
    )  # fmt: skip
    ref_vertical, ref_slash = _reference(q, k, window)
    torch.testing.assert_close(vertical, ref_vertical, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(slash, ref_slash, rtol=RTOL, atol=ATOL)
    # Each row is a mean of probability distributions: it sums to 1 (no key or offset lost or doubled).
    ones = torch.ones(hq, device=DEVICE)
    torch.testing.assert_close(vertical.sum(1), ones, rtol=0, atol=1e-4)
    torch.testing.assert_close(slash.sum(1), ones, rtol=0, atol=1e-4)


@needs_kernel
def test_triton_scores_float32_inputs_are_exact_products():
    hq, hkv, t, s, d, window = CASES[1]
    q, k = _qk(hq, hkv, t, s, d, seed=9, dtype=torch.float32)
    for new, ref in zip(vertical_slash_scores_triton(q, k, window), _reference(q, k, window), strict=True):
        torch.testing.assert_close(new, ref, rtol=1e-4, atol=1e-7)


@needs_kernel
@pytest.mark.parametrize("hq,hkv,t,s,d,window", CASES)
def test_triton_selection_agrees_where_scores_are_separated(hq, hkv, t, s, d, window):
    q, k = _qk(hq, hkv, t, s, d, seed=2 * s + 1)
    new, ref = vertical_slash_scores_triton(q, k, window), _reference(q, k, window)
    checked = 0
    n = max(1, s // 10)
    for a, b in zip(new, ref, strict=True):  # verticals, then slashes
        ranked = b.sort(dim=1, descending=True).values
        cut = (ranked[:, n - 1] + ranked[:, n]) / 2  # [Hq] between the n-th and (n+1)-th score
        # Where no score's error reaches the cut, every item stays on its side: the sets must agree.
        separated = ((a - b).abs() < (b - cut[:, None]).abs()).all(1)
        chosen_new, chosen_ref = a.topk(n, dim=1).indices, b.topk(n, dim=1).indices
        for h in separated.nonzero().flatten().tolist():
            assert set(chosen_new[h].tolist()) == set(chosen_ref[h].tolist()), h
            checked += 1
    assert checked >= hq  # most heads are separated at the cut on these inputs


@pytest.mark.skipif(not ON_GPU, reason="the method uses the fused scores on CUDA tensors only")
def test_method_uses_fused_scores_on_cuda():
    q, k = _qk(7, 1, 2000, 2000, 128, seed=4)
    fused = vertical_slash_scores(q, k, 256)
    for a, b in zip(fused, vertical_slash_scores_triton(q, k, 256), strict=True):
        assert torch.equal(a, b)
