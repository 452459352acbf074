"""The Triton cell count of the paper's vertical-slash kernel against its PyTorch form.

``_kernel_cells`` (attention/vertical_slash.py) is itself checked against a block-by-block tile walk
(tests/attention/test_vertical_slash.py); here the one-pass Triton walk must give the same integers
on fresh random selections: scattered, clustered, clamped at key 0, and past a block's end. Runs on
a GPU, or on the CPU under TRITON_INTERPRET=1 (test_interpreter.py), and compiles for sm_90 offline.
"""

from __future__ import annotations

import pytest
import torch

from sparse_frontier.attention.vertical_slash import KERNEL_TILE, _kernel_cells

from .kernel_env import DEVICE, compiles_offline, needs_kernel


def selection(lanes: int, s: int, t: int, n: int, spread: int, seed: int):
    """offsets [L, K] descending, -1 padded; prefix [L, S + 1]; ends [R], like kernel_cells builds them."""
    g = torch.Generator().manual_seed(seed)
    offsets = torch.full((lanes, n), -1, dtype=torch.long)
    for lane in range(lanes):
        count = int(torch.randint(0, n + 1, (1,), generator=g))
        pool = torch.randperm(min(spread, s), generator=g)[:count]  # spread: how far offsets reach
        offsets[lane, :count] = pool.sort(descending=True).values
    chosen = torch.rand(lanes, s, generator=g) < 0.05
    prefix = torch.nn.functional.pad(chosen.long().cumsum(1), (1, 0))
    ends = (s - t) + KERNEL_TILE * torch.arange(1, -(-t // KERNEL_TILE) + 1)
    return offsets, prefix, ends


@needs_kernel
@pytest.mark.parametrize("s, t", [(1000, 1000), (3001, 2500), (4096, 4096)])
@pytest.mark.parametrize("spread", [200, 100000])  # clustered near the diagonal, scattered everywhere
def test_triton_cells_equal_the_pytorch_count(s, t, spread):
    from sparse_frontier.kernels.vertical_slash.triton_cells import kernel_cells_triton

    for seed in range(3):
        offsets, prefix, ends = selection(6, s, t, 40, spread, seed)
        expected = _kernel_cells(offsets, prefix, ends, KERNEL_TILE)
        on_device = (x.to(DEVICE) for x in (offsets, prefix, ends))
        got = kernel_cells_triton(*on_device, KERNEL_TILE, block_r=16)
        assert got.cpu().tolist() == expected.tolist()


@compiles_offline[0]
@compiles_offline[1]
def test_cells_kernel_compiles_for_hopper_without_a_gpu():
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from sparse_frontier.kernels.vertical_slash.triton_cells import kernel_cells_fwd_kernel as fn

    consts = dict(TILE=64, BLOCK_R=128)
    pointers = dict(OFFSETS="*i32", PREFIX="*i32", ENDS="*i32", FIRST="*i32", LAST="*i32", OUT="*i64")
    signature = {a: "constexpr" if a in consts else pointers.get(a, "i32") for a in fn.arg_names}
    source = ASTSource(fn, signature, constexprs=consts)
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
    assert compiled.asm["cubin"]
