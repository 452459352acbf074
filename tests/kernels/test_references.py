"""CPU tests of the PyTorch references and the public ops' input checks (no GPU needed)."""

from __future__ import annotations

import math

import pytest
import torch

from sparse_frontier.attention.base import causal_pairs, dense_attention
from sparse_frontier.kernels.block_sparse.reference import block_sparse_pairs
from sparse_frontier.kernels.ops import (
    block_sparse_attention,
    quest_decode_attention,
    vertical_slash_attention,
)
from sparse_frontier.kernels.vertical_slash.reference import (
    index_to_bitmap,
    vertical_slash_pairs,
    vertical_slash_row_mask,
)

SHAPES = [(4, 2, 37, 53), (6, 2, 50, 50), (3, 3, 1, 40), (8, 1, 70, 100)]  # (Hq, Hkv, T, S), ragged


def _qkv(hq: int, hkv: int, t: int, s: int, d: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(hq, t, d, generator=g),
        torch.randn(hkv, s, d, generator=g),
        torch.randn(hkv, s, d, generator=g),
    )


def _block_mask_dense(block_mask: torch.Tensor, t: int, s: int, b: int = 16) -> torch.Tensor:
    """[Hq, T, S] bool: the pairs a block mask allows, causal, by plain integer division."""
    rows, cols = torch.arange(t), torch.arange(s)
    in_block = block_mask[:, rows // b][:, :, cols // b]
    return in_block & (cols[None, None, :] <= rows[None, :, None] + s - t)


def _attention_with_pair_mask(q, k, v, allowed):
    """Exact attention for an arbitrary [Hq, T, S] pair mask (float64), zeros for empty rows."""
    group = q.shape[0] // k.shape[0]
    kf = k.double().repeat_interleave(group, 0)
    vf = v.double().repeat_interleave(group, 0)
    scores = torch.einsum("htd,hsd->hts", q.double(), kf) / math.sqrt(q.shape[-1])
    probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1).nan_to_num(0.0)
    return torch.einsum("hts,hsd->htd", probs, vf)


@pytest.mark.parametrize("hq,hkv,t,s", SHAPES)
def test_full_masks_reproduce_dense(hq, hkv, t, s):
    q, k, v = _qkv(hq, hkv, t, s)
    dense = dense_attention(q, k, v)
    full_blocks = torch.ones(hq, math.ceil(t / 16), math.ceil(s / 16), dtype=torch.bool)
    torch.testing.assert_close(block_sparse_attention(q, k, v, full_blocks), dense, atol=1e-5, rtol=1e-5)
    every_key = torch.arange(s).repeat(hq, 1)
    no_slash = torch.full((hq, 2), -1)
    torch.testing.assert_close(
        vertical_slash_attention(q, k, v, every_key, no_slash), dense, atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(
        vertical_slash_attention(q, k, v, no_slash, every_key), dense, atol=1e-5, rtol=1e-5
    )
    pages = torch.ones(hq, math.ceil(s / 16), dtype=torch.bool)
    qd = q[:, -1:]
    torch.testing.assert_close(
        quest_decode_attention(qd, k, v, pages), dense_attention(qd, k, v), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("hq,hkv,t,s", SHAPES)
def test_block_sparse_matches_elementwise_definition(hq, hkv, t, s):
    q, k, v = _qkv(hq, hkv, t, s, seed=1)
    block_mask = (
        torch.rand(hq, math.ceil(t / 16), math.ceil(s / 16), generator=torch.Generator().manual_seed(2)) < 0.4
    )
    allowed = _block_mask_dense(block_mask, t, s)
    expected = _attention_with_pair_mask(q, k, v, allowed)
    torch.testing.assert_close(
        block_sparse_attention(q, k, v, block_mask).double(), expected, atol=1e-5, rtol=1e-5
    )
    assert block_sparse_pairs(block_mask, t, s) == int(allowed.sum())


@pytest.mark.parametrize("hq,hkv,t,s", SHAPES)
def test_vertical_slash_is_a_set_union(hq, hkv, t, s):
    g = torch.Generator().manual_seed(3)
    q, k, v = _qkv(hq, hkv, t, s, seed=4)
    vertical = torch.randint(-2, s, (hq, 7), generator=g)
    slash = torch.randint(-2, s, (hq, 6), generator=g)
    vertical[:, 0] = vertical[:, 1]  # duplicates count once
    slash[:, 0] = 0
    positions = torch.arange(t) + (s - t)
    allowed = torch.zeros(hq, t, s, dtype=torch.bool)
    for h in range(hq):
        for vk in vertical[h].tolist():
            if vk >= 0:
                allowed[h, :, vk] = positions >= vk
        for o in slash[h].tolist():
            if o >= 0:
                rows = (positions - o >= 0).nonzero().flatten()
                allowed[h, rows, positions[rows] - o] = True
    expected = _attention_with_pair_mask(q, k, v, allowed)
    out = vertical_slash_attention(q, k, v, vertical, slash)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)
    assert vertical_slash_pairs(vertical, slash, t, s) == int(allowed.sum())
    row_mask = vertical_slash_row_mask(
        torch.arange(t), t, s, index_to_bitmap(vertical, s)[0], index_to_bitmap(slash, s)[0]
    )
    assert torch.equal(row_mask, allowed[0])


def test_quest_pages_and_key_mask_hide_keys():
    hq, hkv, s = 6, 2, 75
    q, k, v = _qkv(hq, hkv, 1, s, seed=5)
    g = torch.Generator().manual_seed(6)
    pages = torch.rand(hq, 5, generator=g) < 0.5
    pages[0] = False  # a head that reads nothing gets zeros
    key_mask = torch.rand(hkv, s, generator=g) < 0.8
    allowed = pages.repeat_interleave(16, 1)[:, :s] & key_mask.repeat_interleave(3, 0)
    expected = _attention_with_pair_mask(q, k, v, allowed[:, None, :])
    out = quest_decode_attention(q, k, v, pages, key_mask=key_mask)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)
    assert torch.all(out[0] == 0)


def test_pair_counts_at_full_density_equal_causal_total():
    t, s, hq = 100, 130, 2
    full = torch.ones(hq, math.ceil(t / 16), math.ceil(s / 16), dtype=torch.bool)
    assert block_sparse_pairs(full, t, s) == hq * causal_pairs(t, s)
    every = torch.arange(s).repeat(hq, 1)
    assert vertical_slash_pairs(every, every, t, s) == hq * causal_pairs(t, s)


def test_bad_inputs_say_what_is_wrong():
    q, k, v = _qkv(4, 2, 20, 30)
    with pytest.raises(ValueError, match="block_mask must have shape"):
        block_sparse_attention(q, k, v, torch.ones(4, 1, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        block_sparse_attention(q, k, v, torch.ones(4, 2, 2))
    with pytest.raises(ValueError, match="multiple of key/value heads"):
        block_sparse_attention(q[:3], k, v, torch.ones(3, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="beyond the valid range"):
        vertical_slash_attention(q, k, v, torch.full((4, 1), 30), torch.zeros(4, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="int64"):
        vertical_slash_attention(
            q, k, v, torch.zeros(4, 1, dtype=torch.int32), torch.zeros(4, 1, dtype=torch.long)
        )
    with pytest.raises(ValueError, match="one query per head"):
        quest_decode_attention(q, k, v, torch.ones(4, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="more queries"):
        block_sparse_attention(q, k[:, :10], v[:, :10], torch.ones(4, 2, 1, dtype=torch.bool))


def test_triton_head_dim_rule_is_explained():
    from sparse_frontier.kernels.common.checks import check_triton_head_dim

    check_triton_head_dim("op", 128)
    with pytest.raises(ValueError, match="power of two"):
        check_triton_head_dim("op", 80)


def test_quest_page_scores_are_the_max_over_channel_bounds():
    from sparse_frontier.kernels.ops import quest_page_scores

    g = torch.Generator().manual_seed(9)
    q = torch.randn(6, 1, 8, generator=g)
    low = torch.randn(2, 5, 8, generator=g)
    high = low + torch.rand(2, 5, 8, generator=g)
    low[1, 2], high[1, 2] = float("inf"), float("-inf")
    qg = q.view(2, 3, 1, 8)
    expected = torch.maximum(qg * low[:, None], qg * high[:, None]).sum(-1).view(6, 5)
    expected[3:, 2] = float("-inf")
    torch.testing.assert_close(quest_page_scores(q, low, high), expected)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("hq, hkv, s", [(9, 3, 1000), (4, 4, 33)])
def test_quest_cpu_path_matches_its_reference(dtype, tol, hq, hkv, s):
    from sparse_frontier.kernels.quest.reference import quest_decode_attention_reference

    q, k, v = (x.to(dtype) for x in _qkv(hq, hkv, 1, s, d=64, seed=s)[:3])
    g = torch.Generator().manual_seed(s)
    pages = torch.rand(hq, math.ceil(s / 16), generator=g) < 0.4
    key_mask = torch.rand(hkv, s, generator=g) < 0.9
    for mask in (None, key_mask):
        out = quest_decode_attention(q, k, v, pages, key_mask=mask)
        ref = quest_decode_attention_reference(q.float(), k.float(), v.float(), pages, key_mask=mask)
        assert out.dtype == dtype
        assert float((out.float() - ref).norm() / ref.norm()) < tol
