"""The one-launch Triton vertical-slash index builder against the PyTorch builder, field by field.

``build_vertical_slash_index_torch`` defines the index the attention kernel reads (sorted unique
verticals, per-tile counts, bitmaps, running counts, packed slash bits, slash groups cut into
chunks); the Triton builder must reproduce every tensor exactly, padding entries included, for
scattered / clustered / banded / duplicated / empty selections, ragged T < S, and several tile
shapes. Small walk blocks (``block=64``) make the kernel carry its running counts across many
blocks even at the interpreter's small lengths. The attention kernel over the Triton index is
checked against the attention reference in test_triton_kernels.py (which builds through it).

On a CUDA GPU these run natively; on the CPU under TRITON_INTERPRET=1 (in a subprocess).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sparse_frontier.kernels.vertical_slash.triton_index import build_vertical_slash_index_triton
from sparse_frontier.kernels.vertical_slash.triton_vertical_slash import (
    SLASH_PAD,
    VerticalSlashIndex,
    build_vertical_slash_index,
    build_vertical_slash_index_torch,
)

from .kernel_env import DEVICE, ON_GPU, needs_kernel

# (Hq, T, S, NV, NS)
GPU_CASES = [
    (28, 16384, 16384, 800, 900),
    (4, 5000, 7001, 300, 2000),
    (8, 1, 4097, 50, 60),
    (3, 999, 999, 1, 1),
]
CPU_CASES = [
    (3, 100, 100, 7, 9),
    (2, 200, 330, 20, 40),
    (4, 37, 53, 5, 1),
    (2, 1, 77, 3, 4),
    (2, 257, 257, 9, 260),
]
CASES = GPU_CASES if ON_GPU else CPU_CASES
PATTERNS = ["scattered", "clustered", "band", "empty"]


def _selection(hq, s, nv, ns, pattern, seed):
    """vertical_idx [Hq, NV], slash_idx [Hq, NS] int64 with -1 padding and duplicates."""
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    vertical = torch.randint(-3, s, (hq, nv), generator=g, device=DEVICE)
    slash = torch.randint(-3, s, (hq, ns), generator=g, device=DEVICE)
    if pattern == "clustered":  # runs of neighbouring offsets (groups), repeated, plus far ones
        base = torch.randint(0, max(1, s // 3), (hq, 1), generator=g, device=DEVICE)
        slash = torch.clamp(base + torch.arange(ns, device=DEVICE)[None, :] % (ns // 2 + 1), max=s - 1)
        slash[:, ::5] = torch.randint(0, s, slash[:, ::5].shape, generator=g, device=DEVICE)
    elif pattern == "band":  # every offset below NS: chunks wholly inside are flagged full
        slash = torch.arange(ns, device=DEVICE)[None, :].repeat(hq, 1).clamp(max=s - 1)
        vertical[1:] = -1
    elif pattern == "empty":  # head 0 has nothing at all; the others only padding verticals
        vertical[:] = -1
        slash[0] = -1
    if nv > 1:
        vertical[-1, : nv // 2] = vertical[-1, nv // 2 : 2 * (nv // 2)]  # duplicates
    return vertical, slash


def _assert_same_index(new: VerticalSlashIndex, ref: VerticalSlashIndex) -> None:
    for field in dataclasses.fields(VerticalSlashIndex):
        a, b = getattr(new, field.name), getattr(ref, field.name)
        if not isinstance(a, torch.Tensor):
            assert a == b, field.name
            continue
        assert a.dtype == b.dtype and a.shape == b.shape, (field.name, a.dtype, b.dtype, a.shape, b.shape)
        diff = (a != b).nonzero()
        assert len(diff) == 0, f"{field.name}: {len(diff)} entries differ, first at {diff[:3].tolist()}"


@needs_kernel
@pytest.mark.parametrize("hq,t,s,nv,ns", CASES)
@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("block_m,block_n", [(64, 32), (128, 64), (16, 16)])
def test_triton_index_equals_torch_index(hq, t, s, nv, ns, pattern, block_m, block_n):
    vertical, slash = _selection(hq, s, nv, ns, pattern, seed=hq * t + s + block_m)
    ref = build_vertical_slash_index_torch(vertical, slash, t, s, block_m, block_n)
    walk = 64 if not ON_GPU else 1024  # several walk blocks per head, so carries are exercised
    fields = build_vertical_slash_index_triton(vertical, slash, t, s, block_m, block_n, SLASH_PAD, block=walk)
    _assert_same_index(VerticalSlashIndex(block_m, block_n, *fields), ref)


@needs_kernel
def test_default_builder_is_the_triton_one():
    hq, t, s, nv, ns = CASES[1]
    vertical, slash = _selection(hq, s, nv, ns, "clustered", seed=3)
    ref = build_vertical_slash_index_torch(vertical, slash, t, s)
    _assert_same_index(build_vertical_slash_index(vertical, slash, t, s), ref)
    _assert_same_index(build_vertical_slash_index(vertical, slash, t, s, use_triton=False), ref)


def test_index_fields_mean_what_they_say():
    """The PyTorch definition itself, on a hand-checked case (so both builders cannot share a bug)."""
    vertical = torch.tensor([[9, 3, -1, 3, 0]])
    slash = torch.tensor([[0, 1, 70, -1, 200]])
    t = s = 260
    index = build_vertical_slash_index_torch(vertical, slash, t, s, block_m=64, block_n=32)
    assert index.verticals.tolist() == [[0, 3, 9, s, s]]
    assert index.vert_count[0].tolist() == [3, 3, 3, 3, 3]
    assert index.vert_prefix[0, :11].tolist() == [0, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3]
    assert index.vert_bitmap[0].nonzero().flatten().tolist() == [0, 3, 9]
    words = index.slash_words[0].tolist()
    bits = [32 * w + j for w in range(len(words)) for j in range(32) if words[w] >> j & 1]
    assert [b - SLASH_PAD for b in bits] == [0, 1, 70, 200]
    # Offsets {0, 1} and {70} are 69 > 64 apart: three groups, {0,1}, {70}, {200}; a group with
    # offsets lo..hi needs ceil((hi - lo + 64) / 32) chunks: 3, 2, 2; the tile ending at position 63
    # reaches only the first group, those ending at 127 and 191 the first two, later tiles all three.
    assert index.chunk_count[0].tolist() == [3, 5, 5, 7, 7]
    assert index.chunk_start[0, :7].tolist() == [1, -31, -63, 70, 38, 200, 168]
    assert index.chunk_end[0, :7].tolist() == [0, 0, 0, 70, 70, 200, 200]
    assert index.chunk_full[0, :7].tolist() == [0] * 7
