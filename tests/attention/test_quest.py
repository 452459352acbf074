"""Quest: min/max page bounds, per-head page selection, the current page, calibrated density."""

from __future__ import annotations

import math

import pytest
import torch
from attention_inputs import gqa_permutation, query_perm, random_qkv

from sparse_frontier.attention import dense_attention, get_method
from sparse_frontier.attention.quest import exact_page_scores, page_bounds, page_scores
from sparse_frontier.kernels.quest.reference import quest_decode_attention_reference


def decode_inputs(hq: int, hkv: int, s: int, d: int = 16, seed: int = 0):
    q, k, v = random_qkv(hq, hkv, s, d, seed)
    return q[:, -1:], k, v


def brute_force_bounds(q: torch.Tensor, k: torch.Tensor, page: int) -> torch.Tensor:
    """[Hq, P]: max over the page's keys of sum_d max(q_d * k_d) per channel, channel by channel."""
    hq, hkv, s = q.shape[0], k.shape[0], k.shape[1]
    out = torch.empty(hq, math.ceil(s / page))
    for h in range(hq):
        for p in range(out.shape[1]):
            keys = k[h // (hq // hkv), p * page : (p + 1) * page]
            out[h, p] = torch.maximum(q[h, 0] * keys.min(0).values, q[h, 0] * keys.max(0).values).sum()
    return out


def test_page_scores_are_the_min_max_upper_bound():
    q, k, _ = decode_inputs(4, 2, 101, d=8)  # ragged last page
    low, high = page_bounds(k, 16)
    scores = page_scores(q, low, high)
    torch.testing.assert_close(scores, brute_force_bounds(q, k, 16))
    # An upper bound: no key in a page beats it.
    for h in range(4):
        dots = (k[h // 2] @ q[h, 0]).tolist()
        for p in range(scores.shape[1]):
            assert max(dots[p * 16 : (p + 1) * 16]) <= scores[h, p] + 1e-5


def test_exact_page_scores_are_each_pages_best_key_under_its_kv_head():
    q, k, _ = decode_inputs(6, 2, 37, d=8, seed=3)  # 3 query heads per kv head, ragged last page
    exact = exact_page_scores(q, k, 16)
    assert exact.shape == (6, 3)
    for h in range(6):
        dots = k[h // 3] @ q[h, 0]
        for p in range(3):
            assert exact[h, p] == pytest.approx(float(dots[p * 16 : (p + 1) * 16].max()), rel=1e-5)
    # The Quest bound is above it, and equal on a page of one key.
    assert bool((page_scores(q, *page_bounds(k, 16)) >= exact - 1e-5).all())
    torch.testing.assert_close(page_scores(q, *page_bounds(k, 1)), exact_page_scores(q, k, 1))


def test_selects_pages_by_bound_not_by_mean_key():
    s, d = 1024, 16
    q, k, v = decode_inputs(2, 1, s, d, seed=3)
    q[:, 0] = 0.0
    q[:, 0, 0] = 1.0  # the query looks along channel 0 only
    k[:, :, 0] = 0.0
    # Page 10: one spike in channel 0 (high bound, low mean). Page 20: uniformly mild keys
    # (higher mean than page 10, lower bound). Quest must prefer page 10.
    k[:, 10 * 16 + 3, 0] = 8.0
    k[:, 20 * 16 : 21 * 16, 0] = 1.0
    plan = get_method("quest", s / 32).plan(q, k)  # current page + 1 other
    assert plan.sum(1).tolist() == [2, 2]
    assert plan[:, 10].all() and not plan[:, 20].any()
    assert plan[:, (s - 1) // 16].all()


def test_current_page_is_kept_even_when_it_scores_worst():
    s = 1000
    q, k, v = decode_inputs(2, 1, s, seed=4)
    k[:, 992:] = -10.0 * q[0, 0]  # the current page (992..999) repels the query
    plan = get_method("quest", 20).plan(q, k)
    assert plan[:, 62].all()
    assert page_scores(q, *page_bounds(k, 16))[0].argmin() == 62


@pytest.mark.parametrize("s", [4096, 4105])
@pytest.mark.parametrize("ratio", [2, 5, 10, 20])
def test_density_matches_target(s, ratio):
    q, k, v = decode_inputs(4, 2, s, d=8, seed=ratio)
    result = get_method("quest", ratio).decode(q, k, v)
    assert result.total == 4 * s
    assert result.density == pytest.approx(1 / ratio, rel=0.05)


def test_output_is_attention_over_the_selected_pages():
    q, k, v = decode_inputs(4, 2, 777, seed=5)
    method = get_method("quest", 6)
    plan = method.plan(q, k)
    result = method.decode(q, k, v)
    torch.testing.assert_close(result.out, quest_decode_attention_reference(q, k, v, plan, 16))
    assert result.computed == sum(min(16, 777 - 16 * p) for p in plan.nonzero()[:, 1].tolist())


def test_query_heads_of_one_group_choose_their_own_pages_without_sharing():
    s = 800
    q, k, v = decode_inputs(2, 1, s, seed=6)
    q[1] = -q[0]  # opposite queries on the same KV head
    plan = get_method("quest", 10, share_pages=False).plan(q, k)
    assert not torch.equal(plan[0], plan[1])


@pytest.mark.parametrize("masked", [False, True])
def test_shared_pages_are_one_set_per_group_ranked_by_the_summed_bounds(masked):
    s, hq, hkv, ratio = 900, 6, 2, 8
    q, k, v = decode_inputs(hq, hkv, s, seed=11)
    q[1] = -q[0]  # heads of one group that disagree: a per-head choice would differ
    key_mask = torch.rand(hkv, s, generator=torch.Generator().manual_seed(2)) > 0.2 if masked else None
    method = get_method("quest", ratio)  # share_pages is the default
    plan = method.plan(q, k, key_mask)
    per_head = get_method("quest", ratio, share_pages=False).plan(q, k, key_mask)
    group = hq // hkv
    assert not torch.equal(per_head[0], per_head[1])
    summed = brute_force_bounds(q, k, 16).view(hkv, group, -1).sum(1)  # [Hkv, P]
    current = (s - 1) // 16
    for g in range(hkv):
        rows = plan[g * group : (g + 1) * group]
        assert (rows == rows[0]).all()  # every head of the group reads the same pages
        chosen = rows[0].nonzero().flatten().tolist()
        assert current in chosen
        others = [p for p in range(summed.shape[1]) if p != current]
        ranked = sorted(others, key=lambda p: -summed[g, p].item())
        if not masked:  # closed-form page count: the best pages by the group's summed bound
            assert sorted(chosen) == sorted([current, *ranked[: len(chosen) - 1]])
    # Density counts the tokens the group really reads, once per query head: the distinct pages.
    result = method.decode(q, k, v, key_mask)
    visible = torch.ones(hkv, s, dtype=torch.bool) if key_mask is None else key_mask
    read = plan[::group].repeat_interleave(16, 1)[:, :s] & visible
    assert result.computed == group * int(read.sum())
    assert result.density == pytest.approx(1 / ratio, rel=0.05)
    torch.testing.assert_close(result.out, quest_decode_attention_reference(q, k, v, plan, 16, key_mask))


def test_shared_pages_read_fewer_distinct_pages_than_per_head_choices_at_the_same_density():
    q, k, v = decode_inputs(8, 2, 3000, seed=12)
    shared = get_method("quest", 10).plan(q, k)
    own = get_method("quest", 10, share_pages=False).plan(q, k)
    assert shared.sum() == own.sum()  # the same pages per head...
    distinct = [m.view(2, 4, -1).any(1).sum().item() for m in (shared, own)]
    assert distinct[0] < distinct[1]  # ...but a group of independent heads reads more of the cache


def test_share_pages_must_be_a_boolean():
    with pytest.raises(ValueError, match="share_pages"):
        get_method("quest", 2, share_pages="yes")


def test_key_mask_hides_slots_from_selection_attention_and_counts():
    s = 600
    q, k, v = decode_inputs(4, 2, s, seed=7)
    key_mask = torch.ones(2, s, dtype=torch.bool)
    key_mask[:, 100:300] = False  # e.g. evicted or padded slots
    method = get_method("quest", 3)
    result = method.decode(q, k, v, key_mask)
    plan = method.plan(q, k, key_mask)
    assert not plan[:, 7:18].any()  # pages fully inside 100..299 hold nothing to read
    assert result.total == 4 * 400
    assert result.density == pytest.approx(1 / 3, rel=0.05)
    allowed = plan.repeat_interleave(16, 1)[:, :s] & key_mask.repeat_interleave(2, 0)
    assert result.computed == int(allowed.sum())
    torch.testing.assert_close(result.out, quest_decode_attention_reference(q, k, v, plan, 16, key_mask))


@pytest.mark.parametrize("ratio", [5, 20])
def test_density_matches_target_in_a_cache_with_holes(ratio):
    s = 4500
    q, k, v = decode_inputs(4, 2, s, d=8, seed=ratio)
    key_mask = torch.rand(2, s, generator=torch.Generator().manual_seed(1)) > 0.3
    result = get_method("quest", ratio).decode(q, k, v, key_mask)
    assert result.total == 2 * int(key_mask.sum())
    assert result.density == pytest.approx(1 / ratio, rel=0.05)


@pytest.mark.parametrize("share_pages", [True, False])
def test_compression_one_is_dense(share_pages):
    q, k, v = decode_inputs(4, 2, 300)
    result = get_method("quest", 1, share_pages=share_pages).decode(q, k, v)
    assert torch.equal(result.out, dense_attention(q, k, v)) and result.density == 1.0


def test_gqa_heads_follow_their_kv_head():
    q, k, v = decode_inputs(6, 3, 900, seed=8)
    method = get_method("quest", 5)
    base = method.decode(q, k, v).out
    perm = [2, 0, 1]
    moved = method.decode(*gqa_permutation(q, k, v, perm)).out
    torch.testing.assert_close(moved, base[query_perm(6, 3, perm)])


def test_prefill_is_dense_and_decode_rejects_many_queries():
    q, k, v = random_qkv(2, 1, 64)
    method = get_method("quest", 4)
    assert torch.equal(method.prefill(q, k, v).out, dense_attention(q, k, v))
    with pytest.raises(ValueError, match="one query"):
        method.decode(q, k, v)
    with pytest.raises(ValueError, match="page_size"):
        get_method("quest", 2, page_size=0)


def test_kept_page_summaries_equal_fresh_ones_as_the_cache_grows():
    """Summaries kept across steps (full pages once, the current page afresh) are exact, through
    buffer growth and ragged pages; a shrunk cache starts over."""
    from sparse_frontier.attention.quest import PageSummaries

    _, k, _ = decode_inputs(4, 2, 1300, d=8, seed=7)
    summaries = PageSummaries(16)
    for s in [5, 16, 17, 40, 41, 200, 1100, 1101, 1300, 64]:
        low, high = summaries.bounds(k[:, :s])
        fresh_low, fresh_high = page_bounds(k[:, :s], 16)
        assert torch.equal(low, fresh_low) and torch.equal(high, fresh_high), s


@pytest.mark.parametrize("ratio", [3, 20])
def test_decode_with_memo_matches_decode_without(ratio):
    """The engine's per-layer memo changes nothing but the work: same outputs and densities per step."""
    q, k, v = decode_inputs(4, 2, 700, d=8, seed=ratio)
    method, memo = get_method("quest", ratio), {}
    for s in range(600, 700, 7):
        kept = method.decode(q, k[:, :s], v[:, :s], memo=memo)
        fresh = method.decode(q, k[:, :s], v[:, :s])
        assert torch.equal(kept.out, fresh.out)
        assert (kept.computed, kept.total) == (fresh.computed, fresh.total)
        # The host-side count is the number of keys the selected pages really hold.
        read = method.plan(q, k[:, :s]).repeat_interleave(16, 1)[:, :s].sum()
        assert kept.computed == float(read)
    assert "pages" in memo
