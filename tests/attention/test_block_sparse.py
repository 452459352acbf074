"""Block-Sparse: forced blocks, pooled top-k selection, calibrated density, dense at compression 1."""

from __future__ import annotations

import pytest
import torch
from attention_inputs import gqa_permutation, planted_qkv, query_perm, random_qkv

from sparse_frontier.attention import causal_pairs, dense_attention, get_method
from sparse_frontier.attention.block_sparse import BlockGeometry, block_pairs, select_blocks
from sparse_frontier.kernels.block_sparse.reference import block_sparse_pairs


@pytest.mark.parametrize("s", [4096, 4103])
@pytest.mark.parametrize("ratio", [2, 5, 10, 20])
def test_density_matches_target_and_mask(s, ratio):
    q, k, _ = random_qkv(2, 1, s, d=8)
    method = get_method("block_sparse", ratio)
    top_k = method.top_k_for(s, s)
    mask = select_blocks(q, k, top_k)
    claimed = block_pairs(top_k, BlockGeometry.of(s, s, 16), 16, s) * 2
    # The closed-form count must equal an independent count of the mask's causal pairs.
    assert claimed == block_sparse_pairs(mask, s, s)
    density = claimed / (causal_pairs(s, s) * 2)
    assert density == pytest.approx(1 / ratio, rel=0.05)
    # No key block past the causal boundary (the count above would not notice: it has no pairs).
    geo = BlockGeometry.of(s, s, 16)
    beyond = torch.arange(mask.shape[2])[None, :] > geo.last_block[:, None]
    assert not (mask & beyond).any()
    # Uniform budget: within a head, selected blocks per query block differ by at most one
    # where the row is not saturated.
    selected = mask.sum(-1) - mask[:, :, 0].long() - (geo.last_block - geo.n_full + 1)
    open_rows = geo.selectable > top_k + 1
    assert selected[:, open_rows].max() - selected[:, open_rows].min() <= 1


@pytest.mark.parametrize("t,s", [(1000, 1000), (997, 1000), (40, 1000), (5, 5), (1, 32), (17, 48)])
def test_first_and_diagonal_blocks_always_kept(t, s):
    q, k, _ = random_qkv(2, 1, s, d=8, t=t)
    mask = select_blocks(q, k, top_k=0.0)
    geo = BlockGeometry.of(t, s, 16)
    assert mask[:, :, 0].all()
    for b in range(mask.shape[1]):
        # Every key block the causal boundary of query block b crosses is kept...
        assert mask[:, b, geo.n_full[b] : geo.last_block[b] + 1].all()
        # ...no block beyond the last visible one is, and with top_k = 0 nothing else is.
        assert not mask[:, b, geo.last_block[b] + 1 :].any()
        assert not mask[:, b, 1 : geo.n_full[b]].any()


def test_top_blocks_follow_pooled_scores():
    s = 2048
    strong = list(range(37 * 16, 38 * 16))  # the whole key block 37 attracts every query
    q, k, _ = planted_qkv(4, 2, s, strong, d=16)
    mask = select_blocks(q, k, top_k=1.0)
    geo = BlockGeometry.of(s, s, 16)
    can_pick = geo.n_full > 38  # block 37 is selectable (fully visible, not first) for these rows
    assert mask[:, can_pick, 37].all()
    # Exactly one extra block per query block that can pick one: the planted block, not a random one.
    extra = mask.sum(-1) - mask[:, :, 0].long() - (geo.last_block - geo.n_full + 1)
    assert (extra[:, can_pick] == 1).all()


def test_compression_one_is_dense():
    q, k, v = random_qkv(4, 2, 300)
    result = get_method("block_sparse", 1).prefill(q, k, v)
    assert torch.equal(result.out, dense_attention(q, k, v))
    assert result.density == 1.0


def test_prefill_reports_its_pairs_and_is_close_to_dense_when_attention_is_sparse():
    s = 640
    q, k, v = planted_qkv(4, 2, s, strong=[100, 101, 102, 500], d=16, strength=6.0)
    result = get_method("block_sparse", 4).prefill(q, k, v)
    assert result.density == pytest.approx(0.25, rel=0.05)
    # Queries after the planted keys attend almost only to them; the selection must find them
    # (a mask missing them leaves an error of the order of the output itself).
    dense = dense_attention(q, k, v)[:, 110:]
    err = (result.out[:, 110:] - dense).abs().mean()
    assert err < 0.01 * dense.abs().mean()


def test_gqa_heads_follow_their_kv_head():
    q, k, v = random_qkv(6, 3, 500, seed=3)
    method = get_method("block_sparse", 5)
    base = method.prefill(q, k, v).out
    perm = [2, 0, 1]
    moved = method.prefill(*gqa_permutation(q, k, v, perm)).out
    torch.testing.assert_close(moved, base[query_perm(6, 3, perm)])


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="block_size"):
        get_method("block_sparse", 2, block_size=0)
    with pytest.raises(ValueError, match="compression_ratio"):
        get_method("block_sparse", 0.5)


@pytest.mark.parametrize("t,s", [(1, 32), (17, 48), (16, 32), (15, 47), (100, 1000), (31, 1007)])
@pytest.mark.parametrize("top_k", [0.5, 1.3, 3.0, 50.0])
def test_pair_count_is_exact_for_any_alignment(t, s, top_k):
    q, k, _ = random_qkv(2, 1, s, d=8, t=t)
    mask = select_blocks(q, k, top_k)
    assert block_pairs(top_k, BlockGeometry.of(t, s, 16), 16, s) * 2 == block_sparse_pairs(mask, t, s)


#: The paper's Table 6, Block-Sparse ``top_chunks`` (key blocks per query block, the first and
#: diagonal blocks included) per length. Its sixth values match compression 3 (density
#: 1/3 in the authors' block count), not 3.33.
PAPER_TOP_CHUNKS = {
    16384: [26, 35, 53, 71, 108, 188, 300],
    32768: [52, 69, 105, 141, 216, 376, 600],
    65536: [104, 139, 210, 283, 432, 752, 1200],
}


@pytest.mark.parametrize("length", sorted(PAPER_TOP_CHUNKS))
def test_calibration_reproduces_the_paper_table_6_budgets(length):
    """The searched top-k plus the two forced blocks (first and diagonal) is the paper's
    ``top_chunks`` within one block at every listed length and ratio."""
    for ratio, paper in zip([20, 15, 10, 7.5, 5, 3, 2], PAPER_TOP_CHUNKS[length], strict=True):
        top_k = get_method("block_sparse", ratio).top_k_for(length, length)
        assert top_k + 2 == pytest.approx(paper, abs=1.0), (length, ratio)
