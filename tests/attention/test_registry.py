"""The registry, shared helpers, and the input checks every method applies."""

from __future__ import annotations

import math

import pytest
import torch
from attention_inputs import random_qkv

from sparse_frontier.attention import METHODS, PHASES, get_method
from sparse_frontier.attention.common import search_float, search_int, search_int_batched, window_probs

EXPECTED = {
    "dense": "dense",
    "block_sparse": "prefill",
    "vertical_slash": "prefill",
    "flexprefill": "prefill",
    "snapkv": "kv-compression",
    "ada_snapkv": "kv-compression",
    "quest": "decode",
}


def test_every_method_is_registered_with_its_phase():
    get_method("dense")
    assert {name: cls.phase for name, cls in METHODS.items()} == EXPECTED
    assert all(phase in PHASES for phase in EXPECTED.values())


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(KeyError, match="quest"):
        get_method("streaming_llm", 2)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_compression_ratio_out_of_range_is_rejected(name):
    with pytest.raises(ValueError, match="compression_ratio"):
        get_method(name, 0.9)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shape_mistakes_get_one_clear_sentence(name):
    q, k, v = random_qkv(3, 2, 64)
    method = get_method(name, 2)
    with pytest.raises(ValueError, match="multiple"):
        method.prefill(q, k, v)
    with pytest.raises(ValueError, match="no batch dimension"):
        method.prefill(q[None], k[None], v[None])


def test_window_probs_are_the_causal_softmax_of_the_last_queries():
    q, k, _ = random_qkv(6, 2, 90, d=8)
    chunks = list(window_probs(q, k, window=30, max_elements=3 * 30 * 90))  # one KV head per chunk
    assert [h0 for h0, _ in chunks] == [0, 3]
    probs = torch.cat([p for _, p in chunks])
    for h in range(6):
        logits = q[h, 60:] @ k[h // 3].T / math.sqrt(8)
        logits = logits.masked_fill(torch.arange(90)[None] > torch.arange(60, 90)[:, None], float("-inf"))
        torch.testing.assert_close(probs[h], torch.softmax(logits, -1))


def test_searches_return_the_closest_budget():
    steps = [0, 3, 7, 20, 21, 50]
    assert search_int(lambda n: steps[n], 0, 5, 6) == 2
    assert search_int(lambda n: steps[n], 0, 5, 4) == 1
    assert search_int(lambda n: steps[n], 0, 5, 99) == 5
    assert search_int(lambda n: steps[n], 0, 5, -1) == 0
    x = search_float(lambda x: math.floor(10 * x), 0.0, 1.0, 4.2)
    assert math.floor(10 * x) == 4
    rounds = []

    def many(ns):
        rounds.append(ns)
        return [steps[n] for n in ns]

    assert search_int_batched(many, 0, 5, 6, batch=2) == 2
    assert search_int_batched(many, 0, 5, 4, batch=2) == 1
    assert search_int_batched(many, 0, 5, 99) == 5 and search_int_batched(many, 0, 5, -1) == 0
    # On a long monotone staircase it agrees with search_int in a handful of batched rounds,
    # whatever lower bound it starts from.
    stairs = [3 * n + n * n // 50 for n in range(100_001)]
    steps = stairs
    for start in (0, 5_000, 40_000):  # a good, a loose and a wrong (too high) lower bound
        rounds.clear()
        found = search_int_batched(many, 0, 100_000, 7_777_777, start=start, rtol=0)
        assert found == search_int(lambda n: stairs[n], 0, 100_000, 7_777_777, rtol=0)
        assert len(rounds) <= 6


def test_density_report_prints_one_row_per_method_length_and_ratio(capsys):
    from sparse_frontier.attention.report import main

    assert main(["--lengths", "600", "--ratios", "4", "--methods", "quest", "block_sparse"]) == 0
    rows = [
        line
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| quest") or line.startswith("| block_sparse")
    ]
    assert len(rows) == 2
    achieved = [float(row.split("|")[5]) for row in rows]
    assert all(abs(a * 4 - 1) < 0.05 for a in achieved)


def test_unknown_parameter_names_the_method_and_its_parameters():
    with pytest.raises(TypeError, match="approx_window"):
        get_method("vertical_slash", 2, window=512)
    assert get_method("vertical_slash", 2, approx_window=512).approx_window == 512
