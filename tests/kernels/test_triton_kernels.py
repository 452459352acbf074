"""Triton kernels against their PyTorch references on fresh random inputs.

On a CUDA GPU: bf16, long and ragged lengths, GQA ratios. Without one, the same tests run on
small float16 cases when TRITON_INTERPRET=1 is set (test_interpreter.py does that in a
subprocess), and are skipped otherwise. Every output buffer is pre-filled with NaN, so an
element the kernel forgets to write fails the test.
"""

from __future__ import annotations

import math

import pytest
import torch

from sparse_frontier.kernels.block_sparse.reference import (
    block_sparse_attention_reference,
    block_sparse_tile_lists_reference,
)
from sparse_frontier.kernels.block_sparse.triton_block_sparse import (
    block_sparse_attention_from_index,
    build_block_sparse_index,
)
from sparse_frontier.kernels.quest.reference import (
    quest_decode_attention_reference,
    quest_page_scores_reference,
)
from sparse_frontier.kernels.quest.triton_quest import quest_decode_attention_triton, quest_page_scores_triton
from sparse_frontier.kernels.vertical_slash.reference import vertical_slash_attention_reference
from sparse_frontier.kernels.vertical_slash.triton_vertical_slash import (
    build_vertical_slash_index,
    vertical_slash_attention_from_index,
)

from .kernel_env import DEVICE, DTYPE, ON_GPU, needs_kernel

pytestmark = needs_kernel
# ||out - ref|| / ||ref|| with the reference in float32 on the same (rounded) inputs.
REL_TOL = 1e-2 if ON_GPU else 2e-3

# (Hq, Hkv, T, S, D): GQA 7:1 (Qwen2.5-7B), 4:1, 1:1; lengths that are not multiples of 16; T < S.
GPU_PREFILL = [
    (28, 4, 1000, 1000, 128),
    (8, 2, 2048, 2048, 128),
    (4, 4, 513, 777, 64),
    (6, 1, 300, 4100, 128),
]
CPU_PREFILL = [(4, 2, 37, 53, 32), (2, 1, 100, 100, 16), (2, 1, 200, 330, 16)]
GPU_DECODE = [(28, 4, 1, 131_077, 128), (8, 2, 1, 5000, 128), (4, 4, 1, 333, 64)]
CPU_DECODE = [(4, 2, 1, 53, 32), (7, 1, 1, 300, 16)]
PREFILL = GPU_PREFILL if ON_GPU else CPU_PREFILL
DECODE = GPU_DECODE if ON_GPU else CPU_DECODE


def _inputs(hq, hkv, t, s, d, seed):
    g = torch.Generator(device=DEVICE).manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g, device=DEVICE).to(DTYPE)

    return rand(hq, t, d), rand(hkv, s, d), rand(hkv, s, d), g


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    assert not torch.isnan(out).any(), "the kernel left NaN (unwritten or poisoned) elements"
    return float((out.float() - ref.float()).norm() / ref.float().norm().clamp(min=1e-12))


def _upcast(*xs):
    return [x.float() for x in xs]


# (block_size, block_m, use_tma): the paper's 16 in both tile heights, and the ablation's coarser
# blocks; with block_size == BLOCK_N a step is one contiguous key block, loaded by TMA on Hopper.
BLOCK_SPARSE_TILINGS = [(16, 64, None), (16, 128, None), (32, 64, None), (64, 64, False), (64, 64, None)]


def test_block_sparse_rejects_a_block_size_it_cannot_tile():
    from sparse_frontier.kernels.block_sparse.triton_block_sparse import block_sparse_attention_triton

    q, k, v, _ = _inputs(2, 1, 96, 96, 16, seed=0)
    with pytest.raises(ValueError, match="block_size in"):
        block_sparse_attention_triton(q, k, v, torch.ones(2, 2, 2, dtype=torch.bool), block_size=48)


@pytest.mark.parametrize("block_size,block_m,use_tma", BLOCK_SPARSE_TILINGS)
@pytest.mark.parametrize("hq,hkv,t,s,d", PREFILL)
def test_block_sparse_matches_reference(hq, hkv, t, s, d, block_size, block_m, use_tma):
    q, k, v, g = _inputs(hq, hkv, t, s, d, seed=t + s + block_m + block_size)
    nqb, nkb = math.ceil(t / block_size), math.ceil(s / block_size)
    density = torch.rand(hq, 1, 1, generator=g, device=DEVICE) * 0.5  # each head its own density
    block_mask = torch.rand(hq, nqb, nkb, generator=g, device=DEVICE) < density
    block_mask[0] = False  # a head that sees nothing must give zeros
    block_mask[1, :, 0] = True
    index = build_block_sparse_index(block_mask, t, s, block_m, block_size)
    out = torch.full_like(q, float("nan"))
    block_sparse_attention_from_index(q, k, v, index, out=out, use_tma=use_tma)
    ref = block_sparse_attention_reference(*_upcast(q, k, v), block_mask, block_size)
    assert _rel_err(out, ref) < REL_TOL
    assert torch.all(out[0] == 0)


HOPPER = ON_GPU and torch.cuda.get_device_capability()[0] >= 9


@pytest.mark.skipif(not HOPPER, reason="TMA needs a Hopper or newer GPU")
def test_block_sparse_tma_path_is_taken_and_exact():
    """use_tma=True raises unless TMA runs; the TMA path must equal the pointer path bit for bit."""
    hq, hkv, t, s, d = GPU_PREFILL[0]
    q, k, v, g = _inputs(hq, hkv, t, s, d, seed=3)
    block_mask = torch.rand(hq, math.ceil(t / 64), math.ceil(s / 64), generator=g, device=DEVICE) < 0.4
    index = build_block_sparse_index(block_mask, t, s, 64, 64)
    tma = block_sparse_attention_from_index(q, k, v, index, use_tma=True)
    pointers = block_sparse_attention_from_index(q, k, v, index, use_tma=False)
    assert torch.equal(tma, pointers)


@pytest.mark.parametrize("block_m", [64, 128])
@pytest.mark.parametrize("hq,hkv,t,s,d", PREFILL)
def test_block_sparse_index_matches_reference(hq, hkv, t, s, d, block_m):
    g = torch.Generator(device=DEVICE).manual_seed(t * 7 + s)
    block_mask = torch.rand(hq, math.ceil(t / 16), math.ceil(s / 16), generator=g, device=DEVICE) < 0.3
    index = build_block_sparse_index(block_mask, t, s, block_m)
    expected = block_sparse_tile_lists_reference(block_mask, t, s, block_m)
    count, starts = index.count.cpu(), index.list_start.cpu()
    blocks, bits = index.blocks.cpu().long(), index.bits.cpu().long()
    for h in range(hq):
        for tile, (kept, kept_bits) in enumerate(expected[h]):
            n, start = int(count[h, tile]), int(starts[tile])
            assert torch.equal(blocks[h, start : start + n], kept.cpu()), (h, tile)
            assert torch.equal(bits[h, start : start + n], kept_bits.cpu()), (h, tile)


@pytest.mark.parametrize("hq,hkv,t,s,d", PREFILL)
@pytest.mark.parametrize("pattern", ["scattered", "clustered", "band"])
@pytest.mark.parametrize("tiles", [(64, 32), (128, 64), (16, 16)])  # slash windows of 3, 6 and 1 words
def test_vertical_slash_matches_reference(hq, hkv, t, s, d, pattern, tiles):
    q, k, v, g = _inputs(hq, hkv, t, s, d, seed=t * 3 + s)
    nv, ns = max(4, s // 20), max(4, s // 25)
    vertical = torch.randint(-5, s, (hq, nv), generator=g, device=DEVICE)
    if pattern == "scattered":
        slash = torch.randint(-5, s, (hq, ns), generator=g, device=DEVICE)
    elif pattern == "band":  # a wide local window: chunks wholly inside it skip the mask
        slash = torch.arange(min(s, 300), device=DEVICE)[None, :].repeat(hq, 1)
        vertical[1:] = -1  # head 0 keeps verticals inside the band (mask needed), the rest none
    else:  # runs of neighbouring offsets near the diagonal, as real heads have, plus duplicates
        base = torch.randint(0, max(1, s // 4), (hq, 1), generator=g, device=DEVICE)
        slash = base + torch.arange(ns, device=DEVICE)[None, :] % (ns // 2 + 1)
        slash = torch.clamp(slash, max=s - 1)
    vertical[0, :3] = slash[0, :3].clamp(min=0)  # keys reached both ways count once
    slash[0, 0] = 0
    index = build_vertical_slash_index(vertical, slash, t, s, *tiles)
    out = torch.full_like(q, float("nan"))
    vertical_slash_attention_from_index(q, k, v, index, out=out)
    ref = vertical_slash_attention_reference(*_upcast(q, k, v), vertical, slash)
    assert _rel_err(out, ref) < REL_TOL


@pytest.mark.parametrize("hq,hkv,t,s,d", DECODE)
@pytest.mark.parametrize("with_key_mask", [False, True])
@pytest.mark.parametrize("pages_per_prog", [None, 16])
def test_quest_decode_matches_reference(hq, hkv, t, s, d, with_key_mask, pages_per_prog):
    q, k, v, g = _inputs(hq, hkv, 1, s, d, seed=s + with_key_mask)
    n_pages = math.ceil(s / 16)
    page_mask = torch.rand(hq, n_pages, generator=g, device=DEVICE) < 0.1
    page_mask[:, -1] = True  # Quest always keeps the current page
    page_mask[hq - 1] = False  # ... except here: a head that reads nothing gives zeros
    key_mask = (torch.rand(hkv, s, generator=g, device=DEVICE) < 0.9) if with_key_mask else None
    out = torch.full_like(q, float("nan"))
    quest_decode_attention_triton(
        q, k, v, page_mask, key_mask=key_mask, pages_per_prog=pages_per_prog, out=out
    )
    ref = quest_decode_attention_reference(*_upcast(q, k, v), page_mask, key_mask=key_mask)
    assert _rel_err(out, ref) < REL_TOL
    assert torch.all(out[hq - 1] == 0)


@pytest.mark.skipif(not ON_GPU, reason="dispatch to Triton happens for CUDA tensors only")
def test_public_ops_dispatch_to_triton_on_cuda():
    from sparse_frontier.kernels.ops import (
        block_sparse_attention,
        quest_decode_attention,
        vertical_slash_attention,
    )

    q, k, v, g = _inputs(7, 1, 200, 260, 128, seed=11)
    block_mask = torch.rand(7, 13, 17, generator=g, device=DEVICE) < 0.3
    ref = block_sparse_attention_reference(*_upcast(q, k, v), block_mask)
    assert _rel_err(block_sparse_attention(q, k, v, block_mask), ref) < REL_TOL
    vertical = torch.randint(0, 260, (7, 9), generator=g, device=DEVICE)
    slash = torch.randint(0, 260, (7, 9), generator=g, device=DEVICE)
    ref = vertical_slash_attention_reference(*_upcast(q, k, v), vertical, slash)
    assert _rel_err(vertical_slash_attention(q, k, v, vertical, slash), ref) < REL_TOL
    pages = torch.rand(7, 17, generator=g, device=DEVICE) < 0.3
    ref = quest_decode_attention_reference(*_upcast(q[:, -1:], k, v), pages)
    assert _rel_err(quest_decode_attention(q[:, -1:], k, v, pages), ref) < REL_TOL


@pytest.mark.parametrize("block_m", [64, 128])
def test_block_sparse_full_mask_is_dense(block_m):
    """Every chunk off the diagonal takes the unmasked fast path; the result must still be exact."""
    hq, hkv, t, s, d = PREFILL[0]
    q, k, v, _ = _inputs(hq, hkv, t, s, d, seed=5)
    block_mask = torch.ones(hq, math.ceil(t / 16), math.ceil(s / 16), dtype=torch.bool, device=DEVICE)
    index = build_block_sparse_index(block_mask, t, s, block_m)
    out = torch.full_like(q, float("nan"))
    block_sparse_attention_from_index(q, k, v, index, out=out)
    assert _rel_err(out, block_sparse_attention_reference(*_upcast(q, k, v), block_mask)) < REL_TOL


@pytest.mark.parametrize("hq,hkv,t,s,d", DECODE)
def test_quest_page_scores_match_reference(hq, hkv, t, s, d):
    q, k, _, g = _inputs(hq, hkv, 1, s, d, seed=s + 3)
    n_pages = math.ceil(s / 16)
    padded = torch.nn.functional.pad(k.float(), (0, 0, 0, n_pages * 16 - s), value=float("nan"))
    pages = padded.view(hkv, n_pages, 16, d)
    low, high = pages.nan_to_num(float("inf")).amin(2), pages.nan_to_num(float("-inf")).amax(2)
    low[:, 0], high[:, 0] = float("inf"), float("-inf")  # a page with no visible key
    # Bounds as views of longer buffers, as Quest keeps them between decode steps.
    low, high = (torch.cat([x, torch.full_like(x[:, :5], float("nan"))], 1)[:, :n_pages] for x in (low, high))
    out = quest_page_scores_triton(q, low, high)
    ref = quest_page_scores_reference(q.float(), low, high)
    assert torch.equal(torch.isinf(out), torch.isinf(ref)) and torch.all(out[:, 0] == float("-inf"))
    finite = torch.isfinite(ref)
    torch.testing.assert_close(out[finite], ref[finite], rtol=1e-4, atol=1e-3)
