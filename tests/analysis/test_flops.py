"""The FLOPS model (paper Appendix D) against values computed by hand for one small config."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sparse_frontier.analysis.flops import (
    ModelShape,
    flops_breakdown,
    flops_by_length,
    flops_table,
    indexing_flops,
)

# d=8, 2 layers, 2 query heads, 1 KV head, head dim 4, MLP 16, vocabulary 10
SMALL = {
    "hidden_size": 8,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "intermediate_size": 16,
    "vocab_size": 10,
}


def small() -> ModelShape:
    return ModelShape.from_hf_config(SMALL)


def test_shape_from_config_defaults_and_nesting():
    s = small()
    assert s.head_dim == 4  # hidden / heads when head_dim is absent
    assert ModelShape.from_hf_config({**SMALL, "head_dim": 16}).head_dim == 16
    assert ModelShape.from_hf_config({"text_config": SMALL}) == s
    no_kv = {k: v for k, v in SMALL.items() if k != "num_key_value_heads"}
    assert ModelShape.from_hf_config(no_kv).num_kv_heads == 2  # plain multi-head attention


def test_missing_key_is_named():
    with pytest.raises(ValueError, match="intermediate_size"):
        ModelShape.from_hf_config({k: v for k, v in SMALL.items() if k != "intermediate_size"})


def test_prefill_components_by_hand():
    L = 4
    b = flops_breakdown(small(), "prefill", L, convention="causal")
    # embedding and output layer: 2 * L * d * V = 2*4*8*10
    assert b["embedding"] == 640 and b["output_layer"] == 640
    # qkv: layers * 2 * L * d * (H + 2 Hkv) * dh = 2 * 2*4*8 * 4 * 4
    assert b["qkv"] == 2 * 2 * 4 * 8 * 4 * 4 == 2048
    # attention: layers * P(L) * H * (4 dh + 3), P(4) = 10 causal pairs
    assert b["attention"] == 2 * 10 * 2 * 19 == 760
    # output projection: layers * 2 * L * H * dh * d
    assert b["output_proj"] == 2 * 2 * 4 * 2 * 4 * 8 == 1024
    # SwiGLU MLP: layers * 2 * L * 3 * d * f
    assert b["mlp"] == 2 * 2 * 4 * 3 * 8 * 16 == 6144
    assert b["indexing"] == 0
    assert b["total"] == 640 + 640 + 2048 + 760 + 1024 + 6144
    # the paper's convention (the default) counts the full square, L^2 = 16 pairs; nothing else moves
    paper = flops_breakdown(small(), "prefill", L)
    assert paper["attention"] == 2 * 16 * 2 * 19
    assert paper["total"] - paper["attention"] == b["total"] - b["attention"]


def test_decode_is_one_token_against_the_cache():
    L = 4
    b = flops_breakdown(small(), "decode", L, convention="causal")
    assert b["embedding"] == 2 * 8 * 10
    assert b["mlp"] == 2 * 2 * 3 * 8 * 16
    assert b["attention"] == 2 * (L + 1) * 2 * 19  # the new token sees L cached keys and itself
    assert flops_breakdown(small(), "decode", L)["attention"] == 2 * L * 2 * 19  # paper: L keys


def test_density_scales_only_attention_and_the_conventions():
    dense = flops_breakdown(small(), "prefill", 1000, 1.0, convention="causal")
    sparse = flops_breakdown(small(), "prefill", 1000, 0.25, convention="causal")
    assert sparse["attention"] == pytest.approx(dense["attention"] / 4)
    for k in ("embedding", "qkv", "output_proj", "mlp", "output_layer"):
        assert sparse[k] == dense[k]
    full = flops_breakdown(small(), "prefill", 1000, 1.0, convention="paper")
    assert full["attention"] / dense["attention"] == pytest.approx(1000 * 1000 / (1000 * 1001 / 2))
    with pytest.raises(ValueError, match="flops_convention"):
        flops_breakdown(small(), "prefill", 1000, convention="triangle")


def test_attention_becomes_dominant_at_long_lengths():
    # Appendix D: linear-dominated at short lengths, quadratic-dominated at long ones.
    qwen7b = ModelShape(3584, 28, 28, 4, 128, 18944, 152064)
    lengths = np.array([1024, 1 << 20])
    b = flops_breakdown(qwen7b, "prefill", lengths)
    linear = b["total"] - b["attention"]
    assert b["attention"][0] < 0.1 * linear[0]
    assert b["attention"][1] > linear[1]


def test_vertical_slash_indexing_by_hand():
    s = small()
    L, rho, last_q = 64, 0.5, 8
    # n_v = n_s = rho * P(L) / (2L) = 0.5 * 64^2 / 128 = 16 (the paper's L^2 pairs)
    n_each = 0.5 * (64 * 64) / 128
    per_layer = (
        last_q * L * 2 * (2 * 4 + 3)  # scores of the last queries, with softmax
        + 2 * last_q * L * 2  # sums over queries and along diagonals
        + 2 * L * 2 * math.log2(n_each)  # top-k of verticals and of slashes
        + (L / 64) * 2 * 2 * n_each  # index building per 64-query block
    )
    got = indexing_flops(s, "vertical_slash", "prefill", L, rho, last_q=last_q)
    assert got == pytest.approx(2 * per_layer)
    # FlexPrefill estimates the same way; in the wrong phase there is nothing to estimate
    assert indexing_flops(s, "flexprefill", "prefill", L, rho, last_q=last_q) == pytest.approx(got)
    assert indexing_flops(s, "vertical_slash", "decode", L, rho) == 0


def test_quest_indexing_by_hand():
    s = small()
    L, rho = 256, 0.25
    pages = 256 / 16  # 16 pages of 16 tokens
    k = rho * pages  # 4 pages selected
    expected = 2 * pages * 2 * (4 * 4 + math.log2(k))
    assert indexing_flops(s, "quest", "decode", L, rho) == pytest.approx(expected)
    b = flops_breakdown(s, "decode", L, rho, method="quest")
    assert b["indexing"] == pytest.approx(expected)
    assert b["total"] == pytest.approx(sum(b[c] for c in b if c != "total"))


def test_bad_phase_and_density_are_named():
    with pytest.raises(ValueError, match="phase"):
        flops_breakdown(small(), "dense", 10)
    with pytest.raises(ValueError, match="density"):
        flops_breakdown(small(), "prefill", 10, 0.0)


def test_table_expands_dense_into_both_phases_and_names_missing_models():
    cells = pd.DataFrame(
        {
            "model": ["m", "m", "m"],
            "phase": ["dense", "prefill", "kv-compression"],
            "method": ["dense", "vertical_slash", "snapkv"],
            "length": [64, 64, 64],
            "compression_ratio": [1.0, 4.0, 2.0],
        }
    )
    t = flops_table({"m": small()}, cells)
    assert sorted(zip(t["phase"], t["method"], strict=True)) == [
        ("decode", "dense"),
        ("decode", "snapkv"),
        ("prefill", "dense"),
        ("prefill", "vertical_slash"),
    ]
    dense_prefill = t[(t["phase"] == "prefill") & (t["method"] == "dense")].iloc[0]
    assert dense_prefill["flops_total"] == flops_breakdown(small(), "prefill", 64)["total"]
    assert ((t["attention_share"] > 0) & (t["attention_share"] < 1)).all()
    with pytest.raises(ValueError, match="other"):
        flops_table({"m": small()}, cells.assign(model="other"))


def test_by_length_grid():
    df = flops_by_length({"m": small()}, np.array([1024, 2048]), compression_ratios=(1.0, 10.0))
    assert len(df) == 2 * 2 * 2  # phases x compressions x lengths
    assert (df["flops_total"] >= df["flops_linear"]).all()


def test_crossover_length_is_where_attention_equals_the_linear_part():
    from sparse_frontier.analysis.flops import LINEAR_COMPONENTS, crossover_length, crossover_table

    s = small()
    # per token linear FLOPS: 2dV + 2dV + layers * (2d(H+2Hkv)dh + 2 H dh d + 6 d f) = 160+160+2*(384+128+768)
    c = 160 + 160 + 2 * (2 * 8 * 4 * 4 + 2 * 2 * 4 * 8 + 6 * 8 * 16)
    k = 2 * 2 * 19
    assert crossover_length(s, "decode", "causal") == pytest.approx(c / k - 1)
    assert crossover_length(s, "prefill", "causal") == pytest.approx(2 * c / k - 1)
    assert crossover_length(s, "prefill") == pytest.approx(c / k)
    assert crossover_length(s, "decode") == pytest.approx(c / k)
    for convention in ("paper", "causal"):
        for phase in ("prefill", "decode"):
            b = flops_breakdown(s, phase, crossover_length(s, phase, convention), convention=convention)
            assert b["attention"] == pytest.approx(sum(b[name] for name in LINEAR_COMPONENTS))
    table = crossover_table({"m": s}, convention="causal")
    assert list(table["phase"]) == ["prefill", "decode"]
    assert set(table["flops_convention"]) == {"causal"}


# The Qwen2.5 shapes of the paper's models (hidden, layers, heads, KV heads, head dim, MLP, vocab),
# from their config.json files.
QWEN = {
    "7b": ModelShape(3584, 28, 28, 4, 128, 18944, 152064),
    "14b": ModelShape(5120, 48, 40, 8, 128, 13824, 152064),
    "32b": ModelShape(5120, 64, 40, 8, 128, 27648, 152064),
    "72b": ModelShape(8192, 80, 64, 8, 128, 29568, 152064),
}


def half_attention_length(shape: ModelShape, convention: str) -> int:
    """The first length (to 256 tokens) at which attention is half of dense prefill FLOPS, by search."""
    lengths = np.arange(1024, 262145, 256)
    b = flops_breakdown(shape, "prefill", lengths, convention=convention)
    return int(lengths[np.argmax(b["attention"] / b["total"] > 0.5)])


def test_paper_convention_gives_the_papers_crossovers():
    # Appendix D: the quadratic regime starts "beyond 16K-48K"; for the 7B model that holds only when
    # attention counts the full square (with the causal count attention passes half at ~75K).
    assert 16_384 <= half_attention_length(QWEN["7b"], "paper") <= 49_152
    assert half_attention_length(QWEN["7b"], "causal") > 70_000
    # the search agrees with the closed form
    from sparse_frontier.analysis.flops import crossover_length

    for convention in ("paper", "causal"):
        assert half_attention_length(QWEN["7b"], convention) == pytest.approx(
            crossover_length(QWEN["7b"], "prefill", convention), abs=256
        )


def test_paper_convention_makes_72b_sparse_cheaper_than_32b_dense_at_128k():
    # Section 4.1 / Appendix D: at long sequences a larger sparse model costs less than a smaller
    # dense one. 72B with Vertical-Slash at CR 20 (indexing included) against 32B dense, 128K prefill:
    def ratio(convention: str) -> float:
        sparse = flops_breakdown(
            QWEN["72b"], "prefill", 131072, 1 / 20, "vertical_slash", convention=convention
        )
        dense = flops_breakdown(QWEN["32b"], "prefill", 131072, 1.0, convention=convention)
        return float(sparse["total"] / dense["total"])

    assert ratio("paper") == pytest.approx(0.684, abs=0.005)
    assert ratio("causal") > 1.0  # the causal count loses the crossover


def test_tables_and_figure_name_the_convention():
    from sparse_frontier.figures.flops import flops_vs_length_chart

    cells = pd.DataFrame(
        {"model": ["m"], "phase": ["dense"], "method": ["dense"], "length": [64], "compression_ratio": [1.0]}
    )
    for convention in ("paper", "causal"):
        table = flops_table({"m": small()}, cells, convention=convention)
        assert set(table["flops_convention"]) == {convention}
        data = flops_by_length({"m": small()}, np.array([1024, 2048]), convention=convention)
        assert set(data["flops_convention"]) == {convention}
        title = flops_vs_length_chart(data).to_dict()["title"]
        assert ("L²" in title) == (convention == "paper")
        assert ("L(L+1)/2" in title) == (convention == "causal")
    paper = flops_table({"m": small()}, cells)
    causal = flops_table({"m": small()}, cells, convention="causal")
    prefill = paper["phase"] == "prefill"
    assert (paper.loc[prefill, "flops_attention"] > causal.loc[prefill, "flops_attention"]).all()


def test_figure12_draws_the_studied_methods_and_names_the_papers_where_a_phase_ran_none():
    from sparse_frontier.analysis.flops import flops_curves, studied_curves
    from sparse_frontier.figures.flops import flops_vs_length_chart

    cells = pd.DataFrame(
        {
            "phase": ["dense", "prefill", "prefill", "prefill", "prefill"],
            "method": ["dense", "block_sparse", "block_sparse", "block_sparse", "flexprefill"],
            "compression_ratio": [1.0, 2.0, 5.0, 10.0, 4.0],
        }
    )
    curves = studied_curves(cells)
    prefill = curves[curves["phase"] == "prefill"]
    assert set(zip(prefill["method"], prefill["compression_ratio"], strict=True)) == {
        ("block_sparse", 2.0), ("block_sparse", 10.0), ("flexprefill", 4.0)}
    assert prefill["studied"].all()
    decode = curves[curves["phase"] == "decode"]
    assert set(decode["method"]) == {"quest"} and not decode["studied"].any()

    df = flops_curves({"m": small()}, np.array([1024, 4096]), curves)
    assert "vertical_slash" not in set(df["method"])
    block = df[(df["method"] == "block_sparse") & (df["compression_ratio"] == 10.0)]
    dense = df[(df["method"] == "dense") & (df["phase"] == "prefill")]
    assert (block["flops_attention"].to_numpy() < dense["flops_attention"].to_numpy()).all()
    spec = flops_vs_length_chart(df).to_dict()
    configurations = {row["configuration"] for row in spec["datasets"][next(iter(spec["datasets"]))]}
    assert {"block_sparse CR 10", "flexprefill CR 4", "quest CR 20 (the paper's; not run)"} <= configurations
