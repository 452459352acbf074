"""RULER VT and CWE: the properties that make each sample valid, lengths, scoring."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from task_helpers import assert_deterministic, assert_lengths, context_of

from sparse_frontier.tasks import get_task
from sparse_frontier.tasks.ruler_cwe import vocabulary

ASSIGN = re.compile(r"VAR ([A-Z]{5}) = (VAR ([A-Z]{5})|\d{5})\.")


def _resolve(context: str) -> dict[str, str]:
    """Every variable's value, following chains in text order (fails on use before assignment)."""
    values: dict[str, str] = {}
    for name, rhs, source in ASSIGN.findall(context):
        assert name not in values, f"{name} assigned twice"
        values[name] = values[source] if source else rhs
    return values


@pytest.mark.parametrize("distractor_chains", [0, 2])
def test_vt_chain_resolves_to_value_and_nothing_else(tiny_tokenizer, distractor_chains):
    task = get_task("ruler_vt", distractor_chains=distractor_chains)
    for sample in task.generate(tiny_tokenizer, 2048, 4, seed=0):
        context = context_of(sample.prompt)
        values = _resolve(context)
        assert len(values) == 5 * (1 + distractor_chains)
        value = sample.meta["value"]
        resolving = {name for name, v in values.items() if v == value}
        assert resolving == set(sample.gold)
        assert len(sample.gold) == 5
        assert context.count(value) == 1  # only the direct assignment names the value
        assert f"value {value}" in sample.prompt.split("<context>")[0]


@pytest.mark.parametrize("length", [1024, 4096])
def test_vt_lengths(tiny_tokenizer, length):
    assert_lengths(get_task("ruler_vt").generate(tiny_tokenizer, length, 3, seed=0), tiny_tokenizer, length)


def test_vt_determinism_and_score(tiny_tokenizer):
    task = get_task("ruler_vt")
    assert_deterministic(task, tiny_tokenizer, 1024)
    gold = ("ABCDE", "FGHIJ", "KLMNO", "PQRST", "UVWXY")
    assert task.score("Answer: UVWXY, PQRST, KLMNO, FGHIJ, ABCDE", gold) == 1.0
    assert task.score("**Answer:** VAR ABCDE, VAR FGHIJ, VAR KLMNO, VAR PQRST and VAR UVWXY.", gold) == 1.0
    assert task.score("Answer: ABCDE, FGHIJ, KLMNO", gold) == pytest.approx(3 / 5)
    assert task.score("Answer: ABCDE, FGHIJ, KLMNO, PQRST, UVWXY, ZZZZZ", gold) == pytest.approx(5 / 6)
    assert task.score("Answer: ZZZZZ", gold) == 0.0


def test_vt_rejects_bad_parameters():
    with pytest.raises(ValueError, match="hops >= 0"):
        get_task("ruler_vt", hops=-1)


def test_cwe_vocabulary_is_clean():
    words = vocabulary()
    assert len(words) > 7500
    assert all(w.isalpha() and w.islower() for w in words)
    assert "and" not in words and len(set(words)) == len(words)


@pytest.mark.parametrize("length", [4096, 8192])
def test_cwe_counts_exactly_30_and_3(tiny_tokenizer, length):
    samples = get_task("ruler_cwe").generate(tiny_tokenizer, length, 3, seed=0)
    assert_lengths(samples, tiny_tokenizer, length)
    for sample in samples:
        entries = re.findall(r"^(\d+)\. ([a-z]+)$", context_of(sample.prompt), re.M)
        assert [int(i) for i, _ in entries] == list(range(1, len(entries) + 1))
        counts = Counter(word for _, word in entries)
        assert {w for w, c in counts.items() if c == 30} == set(sample.gold)
        assert len(sample.gold) == 10
        assert set(counts.values()) == {30, 3}
        assert sum(1 for c in counts.values() if c == 3) == sample.meta["n_units"]


def test_cwe_determinism_score_and_short_length_error(tiny_tokenizer):
    task = get_task("ruler_cwe")
    assert_deterministic(task, tiny_tokenizer, 4096)
    gold = tuple("apple bread cloud dream eagle flame grape honey igloo jelly".split())
    assert task.score("Answer: " + ", ".join(reversed(gold)), gold) == 1.0
    assert task.score("Answer:\n" + "\n".join(f"{i}. **{w}**" for i, w in enumerate(gold)), gold) == 1.0
    assert task.score("Answer: " + ", ".join(gold[:5]), gold) == 0.5
    assert task.score("Answer: " + ", ".join(gold[:5] + ("kiwi",) * 3 + ("lemon",)), gold) == 5 / 12
    with pytest.raises(ValueError, match="at least"):
        task.generate(tiny_tokenizer, 1024, 1, seed=0)
    short = get_task("ruler_cwe", common_freq=4, distractor_freq=1).generate(tiny_tokenizer, 1024, 1, seed=0)
    assert_lengths(short, tiny_tokenizer, 1024)
