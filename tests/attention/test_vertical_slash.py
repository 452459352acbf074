"""Vertical-Slash and FlexPrefill: scoring, forced sinks/local, selection, calibrated density."""

from __future__ import annotations

import math

import pytest
import torch
from attention_inputs import gqa_permutation, planted_qkv, query_perm, random_qkv

from sparse_frontier.attention import causal_pairs, dense_attention, get_method
from sparse_frontier.attention.flexprefill import coverage_count
from sparse_frontier.attention.vertical_slash import VerticalSlashIndex, vertical_slash_scores
from sparse_frontier.kernels.vertical_slash.reference import vertical_slash_pairs

METHODS = ["vertical_slash", "flexprefill"]


def test_scores_match_brute_force():
    q, k, _ = random_qkv(4, 2, 50, d=8, seed=1)
    vertical, slash = vertical_slash_scores(q, k, window=20)
    for h in range(4):
        for w in range(20):
            pos = 30 + w
            logits = q[h, pos] @ k[h // 2, : pos + 1].T / math.sqrt(8)
            probs = torch.softmax(logits, 0)
            for o in range(pos + 1):
                slash[h, o] -= probs[pos - o] / 20
            vertical[h, : pos + 1] -= probs / 20
    assert vertical.abs().max() < 1e-6 and slash.abs().max() < 1e-6


def kernel_cells_brute_force(v_idx: torch.Tensor, s_idx: torch.Tensor, t: int, s: int, tile: int = 64) -> int:
    """The paper kernel's cells for ONE head's selection ([NV], [NS], -1 padded), block by block.

    In each block of ``tile`` query rows, a slash needs the ``tile`` keys its diagonal crosses
    (keys 0..tile-1 when the range would reach before key 0; none when its offset is beyond the
    block). Tiles are laid left to right, each at the first needed key no tile holds yet; a
    vertical left of the last tile's end and in no tile is a column piece of ``tile`` rows.
    """
    verticals = {int(x) for x in v_idx if x >= 0}
    offsets = {int(x) for x in s_idx if x >= 0}
    cells = 0
    for m in range(math.ceil(t / tile)):
        end = (s - t) + tile * (m + 1)
        needed = set()
        for o in offsets:
            if o < end:
                hi = max(end - o, tile)
                needed.update(range(hi - tile, hi))
        tiles, last_end = [], -1
        for key in sorted(needed):
            if key >= last_end:
                tiles.append(key)
                last_end = key + tile
        in_tile = {x for start in tiles for x in range(start, start + tile)}
        columns = [x for x in verticals if x < last_end and x not in in_tile]
        cells += len(tiles) * tile * tile + len(columns) * tile
    return cells


def local_scores(hq: int, s: int, seed: int, noise: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertical and slash scores of a 'local' head: early keys and near diagonals score highest
    (what LLM attention mostly looks like), plus uniform noise of weight ``noise``."""
    g = torch.Generator().manual_seed(seed)
    decay = 1.0 / (1.0 + torch.arange(s, dtype=torch.float32))
    vertical = decay + noise * torch.rand(hq, s, generator=g)
    slash = decay + noise * torch.rand(hq, s, generator=g)
    return vertical, slash


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("ratio", [2, 5, 10, 20])
def test_exact_density_matches_target(name, ratio):
    s = 4096
    q, k, _ = random_qkv(2, 1, s, d=8, seed=ratio)
    v_idx, s_idx, computed, info = get_method(name, ratio, density="exact").plan(q, k)
    # Independent count of the union the kernel will compute.
    assert computed == vertical_slash_pairs(v_idx, s_idx, s, s) == info["counts"]["exact"]
    assert computed / (2 * causal_pairs(s, s)) == pytest.approx(1 / ratio, rel=0.05)


@pytest.mark.parametrize("t,s", [(64, 64), (700, 700), (1000, 1000), (650, 700), (1, 300), (129, 129)])
def test_kernel_cells_equal_a_brute_force_tile_count(t, s):
    """``kernel_cells`` against the block-by-block tile walk, for random, local and tied scores and
    ragged budgets (0, all, anything between), rows that are not a multiple of 64 included."""
    g = torch.Generator().manual_seed(t + 7 * s)
    for kind in ("random", "local", "tied"):
        if kind == "local":
            vertical, slash = local_scores(4, s, seed=t, noise=0.02)
        else:
            vertical, slash = torch.rand(4, s, generator=g), torch.rand(4, s, generator=g)
            if kind == "tied":
                vertical, slash = (x.mul(3).floor() for x in (vertical, slash))
        index = VerticalSlashIndex.build(vertical, slash, t, sinks=4, local=64)
        n_v = torch.randint(0, s + 1, (4,), generator=g)
        n_s = torch.randint(1, s + 1, (4,), generator=g)
        n_v[0], n_s[1], n_s[2] = 0, s, 1
        v_idx, s_idx = index.indices(n_v, n_s)
        expected = [kernel_cells_brute_force(v_idx[h], s_idx[h], t, s) for h in range(4)]
        assert index.kernel_cells(n_v, n_s).tolist() == expected, kind
        # The kernel computes every selected pair, and more.
        assert (index.kernel_cells(n_v, n_s) >= index.pairs(n_v, n_s)).all()
        batch = torch.stack([n_v, n_s.clamp(min=1), torch.flip(n_v, [0])])
        slashes = torch.stack([n_s, n_s.flip(0), torch.full_like(n_s, 64)])
        assert torch.equal(
            index.kernel_cells(batch, slashes),
            torch.stack([index.kernel_cells(a, b) for a, b in zip(batch, slashes, strict=True)]),
        )


def test_paper_budget_at_16k_is_compression_20_only_under_the_kernel_count():
    """Table 6's 16K Vertical-Slash budgets N = 164 and 240 (compression 20 and 15): on a local
    pattern (the first N keys and the N nearest diagonals) the paper kernel's count gives
    compression 19.7 and 14.8, while the selected pairs alone would be 25.2 and 17.3."""
    s = 16384
    index = VerticalSlashIndex.build(*local_scores(1, s, seed=0, noise=0.0), s, sinks=4, local=64)
    total = causal_pairs(s, s)
    for n, kernel_ratio, exact_ratio in [(164, 19.71, 25.23), (240, 14.85, 17.32)]:
        counts = torch.tensor([n])
        assert total / index.kernel_cells(counts, counts).item() == pytest.approx(kernel_ratio, abs=0.01)
        assert total / index.pairs(counts, counts).item() == pytest.approx(exact_ratio, abs=0.01)


@pytest.mark.parametrize("ratio", [5, 10, 20])
def test_kernel_calibration_takes_the_budget_nearest_the_target(ratio):
    """Default counting (kernel) and budget (n verticals and n slashes in all, forced included):
    the calibrated n is the one whose kernel count is closest to the target, and that count is
    what the method reports."""
    s, hq = 8192, 3
    index = VerticalSlashIndex.build(*local_scores(hq, s, seed=ratio, noise=1e-4), s, sinks=4, local=64)
    method = get_method("vertical_slash", ratio)
    target = hq * causal_pairs(s, s) / ratio
    n_v, n_s, info = method.budgets(index, target)
    n = info["n"]
    assert torch.equal(n_v, torch.full((hq,), n)) and torch.equal(n_s, torch.full((hq,), n))
    around = torch.arange(max(n - 24, 64), n + 25)[:, None].expand(-1, hq)
    cells = index.kernel_cells(around, around).sum(-1)
    best = (cells - target).abs().min()
    chosen = index.kernel_cells(n_v, n_s).sum()
    assert abs(chosen - target) <= best + 1e-3 * target
    # A slash crossing a 64-key boundary adds a tile to every block at once: the count moves in
    # steps of about 1.5% of all pairs at this length, finer at the paper's lengths.
    assert chosen / (hq * causal_pairs(s, s)) == pytest.approx(1 / ratio, rel=0.1)
    # Counting only the selected pairs, the same ratio keeps more items.
    exact_n = get_method("vertical_slash", ratio, density="exact").budgets(index, target)[2]["n"]
    assert exact_n > n


def test_budget_counts_the_forced_items_as_the_authors_do():
    """Default: n verticals and n slashes in all, the 4 sinks and 64 local diagonals among them
    (never fewer than those); forced_in_budget=False: n of each on top of them."""
    s = 3000
    index = VerticalSlashIndex.build(*local_scores(2, s, seed=1, noise=0.5), s, sinks=4, local=64)
    authors = get_method("vertical_slash", 10)
    assert [x.tolist() for x in authors.uniform_counts(index, 100)] == [[100, 100], [100, 100]]
    assert [x.tolist() for x in authors.uniform_counts(index, 10)] == [[10, 10], [64, 64]]
    on_top = get_method("vertical_slash", 10, forced_in_budget=False)
    assert [x.tolist() for x in on_top.uniform_counts(index, 100)] == [[104, 104], [164, 164]]
    v_idx, s_idx = index.indices(*authors.uniform_counts(index, 100))
    assert ((v_idx >= 0).sum(1) == 100).all() and ((s_idx >= 0).sum(1) == 100).all()
    assert set(range(4)) <= set(v_idx[0].tolist()) and set(range(64)) <= set(s_idx[0].tolist())
    # The smallest budget the search may pick is the authors' minimum, N = 64.
    n_v, n_s, info = authors.budgets(index, 1.0)
    assert info["n"] == 64 and n_v.tolist() == n_s.tolist() == [64, 64]


@pytest.mark.parametrize("name", METHODS)
def test_plan_reports_both_counts_and_calibrates_on_the_chosen_one(name):
    s = 2048
    q, k, _ = random_qkv(2, 1, s, d=8, seed=3)
    for density in ("kernel", "exact"):
        v_idx, s_idx, computed, info = get_method(name, 2, density=density).plan(q, k)
        counts = info["counts"]
        assert counts["exact"] == vertical_slash_pairs(v_idx, s_idx, s, s)
        assert counts["kernel"] == sum(kernel_cells_brute_force(v_idx[h], s_idx[h], s, s) for h in range(2))
        assert computed == counts[density] and counts["kernel"] > counts["exact"]


@pytest.mark.parametrize("name", METHODS)
def test_sinks_and_local_window_always_kept(name):
    q, k, _ = random_qkv(4, 2, 1200, d=8)
    v_idx, s_idx, _, _ = get_method(name, 20).plan(q, k)
    for h in range(4):
        assert set(range(4)) <= set(v_idx[h].tolist())
        assert set(range(64)) <= set(s_idx[h].tolist())


def test_planted_vertical_and_slash_are_selected():
    s, offset, column = 1500, 300, 777
    q, k, _ = random_qkv(2, 2, s, d=16, seed=5)
    # Slash: key p - offset copies the direction of query p, so that diagonal lights up.
    k[:, : s - offset] = 1.5 * q[:, offset:]
    # Vertical: one key that every query likes.
    q[..., 0] = 2.0
    k[:, column] = 0.0
    k[:, column, 0] = 12.0
    method = get_method("vertical_slash", 5, density="exact", forced_in_budget=False)
    v_idx, s_idx, _, info = method.plan(q, k)
    assert 1 <= info["n"] < 100  # a few picks out of 1500: they must be the planted ones
    for h in range(2):
        assert column in v_idx[h].tolist()
        assert offset in s_idx[h].tolist()


def test_index_pair_count_is_exact_for_ragged_budgets():
    s, t = 700, 650  # queries need not start at 0
    q, k, _ = random_qkv(3, 3, s, d=8, seed=2, t=t)
    vertical, slash = vertical_slash_scores(q, k, 64)
    index = VerticalSlashIndex.build(vertical, slash, t, sinks=4, local=64)
    n_v = torch.tensor([4, 123, 700])
    n_s = torch.tensor([700, 64, 301])
    v_idx, s_idx = index.indices(n_v, n_s)
    assert index.pairs(n_v, n_s).sum() == vertical_slash_pairs(v_idx, s_idx, t, s)
    assert ((v_idx >= 0).sum(1) == n_v).all() and ((s_idx >= 0).sum(1) == n_s).all()


def test_flexprefill_gives_diffuse_heads_more_budget():
    s = 1024
    q, k, _ = planted_qkv(2, 2, s, strong=[200, 600, 900], d=16, strength=6.0)
    q[1] = 0.0  # head 1 attends uniformly: no few verticals cover 90% of its mass
    method = get_method("flexprefill", 4)
    index = method.index(q, k)
    n_v, n_s = method.counts(index, gamma=0.9, min_budget=0)
    assert n_v[0] < 20 < 500 < n_v[1]
    # min_budget is a floor whatever the coverage says: the forced items count towards it (the
    # authors' rule, the default), or come on top of it.
    n_v, n_s = method.counts(index, gamma=0.9, min_budget=600)
    assert (n_v >= 600).all() and (n_s >= 600).all() and n_v[0] < 604 and n_s[0] < 664
    on_top = get_method("flexprefill", 4, forced_in_budget=False)
    n_v, n_s = on_top.counts(on_top.index(q, k), gamma=0.9, min_budget=600)
    assert (n_v >= 604).all() and (n_s >= 664).all()


def test_coverage_count_is_the_fewest_items_reaching_gamma():
    mass = torch.tensor([[0.5, 0.8, 0.9, 1.0], [0.1, 0.2, 0.3, 0.999999]])
    assert coverage_count(mass, 0.8).tolist() == [2, 4]
    assert coverage_count(mass, 0.0).tolist() == [0, 0]
    assert coverage_count(mass, 1.0).tolist() == [4, 4]


def test_flexprefill_budget_regimes_follow_the_paper():
    q, k, _ = random_qkv(2, 1, 4096, d=8)
    low = get_method("flexprefill", 2, density="exact").plan(q, k)[3]
    high = get_method("flexprefill", 20, density="exact").plan(q, k)[3]
    # Low compression: coverage does the work on top of min_budget 512 (paper Table 6);
    # high compression: gamma = 0 and a smaller uniform budget.
    assert low["gamma"] > 0 and low["min_budget"] == 512
    assert high["gamma"] == 0 and high["min_budget"] < 512


@pytest.mark.parametrize("name", METHODS)
def test_compression_one_is_dense(name):
    q, k, v = random_qkv(4, 2, 300)
    result = get_method(name, 1).prefill(q, k, v)
    assert torch.equal(result.out, dense_attention(q, k, v))
    assert result.density == 1.0


@pytest.mark.parametrize("name", METHODS)
def test_gqa_heads_follow_their_kv_head(name):
    q, k, v = random_qkv(6, 3, 400, seed=4)
    method = get_method(name, 3)
    base = method.prefill(q, k, v)
    perm = [1, 2, 0]
    moved = method.prefill(*gqa_permutation(q, k, v, perm))
    torch.testing.assert_close(moved.out, base.out[query_perm(6, 3, perm)])
    assert moved.computed == base.computed


def test_sparse_output_tracks_dense_when_attention_is_structured():
    q, k, v = planted_qkv(2, 1, 900, strong=[150, 420, 421], d=16, strength=6.0)
    result = get_method("vertical_slash", 5).prefill(q, k, v)
    dense = dense_attention(q, k, v)[:, 430:]
    assert (result.out[:, 430:] - dense).abs().mean() < 0.01 * dense.abs().mean()


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="tau"):
        get_method("flexprefill", 2, tau=0.1)
    with pytest.raises(ValueError, match="approx_window"):
        get_method("vertical_slash", 2, approx_window=0)
    with pytest.raises(ValueError, match="min_budget"):
        get_method("flexprefill", 2, min_budget=-1)
    for name in METHODS:
        with pytest.raises(ValueError, match="density must be one of exact, kernel"):
            get_method(name, 2, density="tiles")
        with pytest.raises(ValueError, match="forced_in_budget"):
            get_method(name, 2, forced_in_budget="no")


@pytest.mark.parametrize("t,s", [(900, 900), (300, 1000), (1, 500)])
def test_pair_count_is_exact_for_any_budgets(t, s):
    """``pairs`` (chosen items only) against the independent closed form, for random per-head
    budgets including 0 and S, on random and on tied scores (many equal ranks)."""
    g = torch.Generator().manual_seed(t + s)
    for tied in (False, True):
        vertical, slash = torch.rand(5, s, generator=g), torch.rand(5, s, generator=g)
        if tied:
            vertical, slash = (x.mul(4).floor() for x in (vertical, slash))
        index = VerticalSlashIndex.build(vertical, slash, t, sinks=4, local=64)
        n_v = torch.randint(0, s + 1, (5,), generator=g)
        n_s = torch.randint(0, s + 1, (5,), generator=g)
        n_v[0], n_s[1], n_v[2], n_s[2], n_v[3], n_s[4] = 0, 0, s, s, s, s
        v_idx, s_idx = index.indices(n_v, n_s)
        expected = [vertical_slash_pairs(v_idx[h : h + 1], s_idx[h : h + 1], t, s) for h in range(5)]
        assert index.pairs(n_v, n_s).tolist() == expected
        zero = torch.zeros(5, dtype=torch.long)
        assert index.pairs(zero, zero).tolist() == [0] * 5
        # Several budgets at once (the search's candidates) equal one at a time.
        batch = torch.stack([n_v, n_s, zero, torch.flip(n_v, [0])])
        assert torch.equal(
            index.pairs(batch, batch.roll(1, 0)),
            torch.stack([index.pairs(a, b) for a, b in zip(batch, batch.roll(1, 0), strict=True)]),
        )


@pytest.mark.parametrize("t,s", [(700, 700), (256, 900)])
def test_overlap_free_totals_bound_the_pairs_from_above(t, s):
    """``upper_totals`` counts pairs on both a vertical and a slash twice: never below ``pairs``,
    equal where no vertical meets a slash (n = 0: sinks and the local band only overlap there too)."""
    g = torch.Generator().manual_seed(s)
    index = VerticalSlashIndex.build(torch.rand(3, s, generator=g), torch.rand(3, s, generator=g), t, 4, 64)
    every = torch.arange(s + 1)
    upper = index.upper_totals(torch.clamp(4 + every, max=s), torch.clamp(64 + every, max=s))
    assert upper.shape == (s + 1,) and torch.all(upper[1:] >= upper[:-1])
    for n in (0, 1, 17, s // 3, s):
        counts = torch.clamp(torch.tensor([4 + n, 64 + n]), max=s)
        exact = int(index.pairs(counts[0].repeat(3), counts[1].repeat(3)).sum())
        assert int(upper[n]) >= exact
