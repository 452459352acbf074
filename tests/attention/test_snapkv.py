"""SnapKV and Ada-SnapKV: which tokens survive eviction, and how many per head."""

from __future__ import annotations

import pytest
import torch
from attention_inputs import gqa_permutation, planted_qkv, random_qkv

from sparse_frontier.attention import dense_attention, get_method
from sparse_frontier.attention.common import smooth
from sparse_frontier.attention.snapkv import token_scores

METHODS = ["snapkv", "ada_snapkv"]


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("ratio", [2, 5, 10, 20])
def test_keeps_sinks_recent_and_exactly_the_capacity(name, ratio):
    s = 4100
    q, k, _ = random_qkv(4, 2, s, d=8, seed=ratio)
    keep = get_method(name, ratio).keep_mask(q, k)  # prefill = dense output + this mask
    assert keep.shape == (2, s) and keep.dtype == torch.bool
    assert keep[:, :4].all() and keep[:, -128:].all()
    assert int(keep.sum()) == 2 * round(s / ratio)
    assert keep.float().mean() == pytest.approx(1 / ratio, rel=0.05)
    if name == "snapkv":
        assert (keep.sum(1) == round(s / ratio)).all()  # uniform


def test_planted_token_survives_with_its_neighbours():
    s = 2000
    q, k, v = planted_qkv(4, 2, s, strong=[700], d=16, strength=6.0)
    keep = get_method("snapkv", 10).prefill(q, k, v).keep  # 200 tokens: 132 forced, 68 chosen
    # Pooling (kernel 21) spreads the planted token's score to +-10 neighbours, so they go together.
    assert keep[:, 690:711].all()


def test_smoothing_is_a_clipped_moving_average():
    x = torch.zeros(1, 30)
    x[0, 0] = 21.0
    x[0, 15] = 21.0
    y = smooth(x, 21)
    assert y.shape == x.shape
    assert y[0, 10] == pytest.approx(2.0)  # both spikes lie in its window 0..20
    assert y[0, 15] == pytest.approx(1.0)
    assert y[0, 0] == pytest.approx(21.0 / 11)  # window clipped to 11 real entries
    assert y[0, 27] == pytest.approx(0.0)


def test_mean_and_max_aggregation_differ_as_specified():
    q, k, _ = random_qkv(4, 2, 300, d=8, seed=7)
    mean = token_scores(q, k, 64, "mean", kernel=1)
    peak = token_scores(q, k, 64, "max", kernel=1)
    assert (peak >= mean - 1e-7).all()
    torch.testing.assert_close(mean.sum(1), torch.ones(2))  # mean of probability rows


def _uniform_and_peaked(s: int):
    """KV head 0: random keys, so its queries' attention is peaked on a few tokens each;
    KV head 1: its queries are zero, so their attention is uniform and no token stands out."""
    q, k, v = random_qkv(4, 2, s, d=16, seed=11)
    q[:, :, :] *= 2.0
    q[2:] = 0.0
    return q, k, v


def test_ada_budgets_are_adaptive_bounded_and_sum_to_the_total():
    s, ratio = 4096, 10
    q, k, v = _uniform_and_peaked(s)
    method = get_method("ada_snapkv", ratio)
    keep = method.prefill(q, k, v).keep
    capacity = round(s / ratio)
    per_head = keep.sum(1)
    assert int(per_head.sum()) == 2 * capacity
    # The uniform head is worth nothing beyond its guaranteed minimum; the peaked head takes the rest.
    assert int(per_head[1]) == method.head_minimum(capacity, s) == max(132, round(0.2 * capacity))
    assert int(per_head[0]) == 2 * capacity - int(per_head[1])


def test_ada_shared_budget_goes_to_the_highest_scores_of_the_layer():
    s, ratio = 3000, 5
    q, k, v = random_qkv(8, 4, s, d=16, seed=12)
    q[:2] *= 3.0  # KV head 0: sharper attention, higher peaks
    method = get_method("ada_snapkv", ratio, min_fraction=0.2)
    keep = method.prefill(q, k, v).keep
    scores = token_scores(q, k, 256, "max", 21)
    capacity = round(s / ratio)
    minimum = method.head_minimum(capacity, s)
    forced = torch.zeros(s, dtype=torch.bool)
    forced[:4] = True
    forced[-128:] = True
    counts = keep.sum(1)
    assert counts.max() > capacity > counts.min()  # the budget really moved between heads
    evicted = scores.masked_fill(keep, float("-inf"))
    chosen = scores.masked_fill(~keep | forced, float("inf"))
    # Within a head the chosen tokens are its best ones...
    assert (chosen.amin(1) >= evicted.amax(1)).all()
    # ...and a head holding more than its minimum holds them because they outrank every
    # evicted token of the layer (one shared top-k).
    above_minimum = counts > minimum
    assert chosen[above_minimum].amin() >= evicted.amax()


@pytest.mark.parametrize("name", METHODS)
def test_compression_one_keeps_everything_and_is_dense(name):
    q, k, v = random_qkv(4, 2, 300)
    result = get_method(name, 1).prefill(q, k, v)
    assert result.keep.all() and result.density == 1.0
    assert torch.equal(result.out, dense_attention(q, k, v))


@pytest.mark.parametrize("name", METHODS)
def test_gqa_keep_follows_kv_heads(name):
    q, k, v = random_qkv(6, 3, 800, seed=9)
    method = get_method(name, 4)
    base = method.prefill(q, k, v).keep
    perm = [2, 0, 1]
    assert torch.equal(method.prefill(*gqa_permutation(q, k, v, perm)).keep, base[perm])


@pytest.mark.parametrize("name", METHODS)
def test_prefill_reports_kept_over_cached_tokens(name):
    q, k, v = random_qkv(4, 2, 700)
    result = get_method(name, 4).prefill(q, k, v)
    assert result.computed == int(result.keep.sum()) == 2 * 175 and result.total == 2 * 700
    assert torch.equal(result.out, dense_attention(q, k, v))  # eviction leaves prefill dense


def test_short_prompt_keeps_everything():
    q, k, v = random_qkv(2, 1, 100)
    assert get_method("snapkv", 10).prefill(q, k, v).keep.all()


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="min_fraction"):
        get_method("ada_snapkv", 2, min_fraction=1.5)
    with pytest.raises(ValueError, match="pool_kernel"):
        get_method("snapkv", 2, pool_kernel=0)


def test_compaction_reads_exactly_the_kept_tokens():
    """The engines' compaction (kept slots first, in order; heads that keep fewer padded and hidden by
    a key mask) gives the attention of the full cache restricted to the kept tokens."""
    from sparse_frontier.attention.snapkv import compaction
    from sparse_frontier.kernels.dense.reference import dense_attention_reference

    g = torch.Generator().manual_seed(7)
    hq, hkv, s, d = 6, 3, 300, 16
    q = torch.randn(hq, 1, d, generator=g)
    k, v = torch.randn(hkv, s, d, generator=g), torch.randn(hkv, s, d, generator=g)
    keep = torch.rand(hkv, s, generator=g) < torch.tensor([[0.2], [0.5], [0.8]])  # unequal budgets
    order, counts = compaction(keep)
    assert order.shape == (hkv, int(counts.max())) and counts.tolist() == keep.sum(1).tolist()
    for h in range(hkv):  # each head's kept slots first, ascending
        assert order[h, : counts[h]].tolist() == keep[h].nonzero().flatten().tolist()
    index = order[:, :, None].expand(-1, -1, d)
    mask = torch.arange(order.shape[1])[None] < counts[:, None]
    out = dense_attention_reference(q, k.gather(1, index), v.gather(1, index), mask)
    assert torch.allclose(out, dense_attention_reference(q, k, v, keep), atol=1e-6)
