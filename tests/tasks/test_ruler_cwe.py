"""RULER CWE: the properties that make each sample valid, lengths, scoring."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from task_helpers import assert_deterministic, assert_lengths, context_of

from sparse_frontier.tasks import get_task
from sparse_frontier.tasks.ruler_cwe import vocabulary


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


def test_cwe_determinism_and_authors_score(tiny_tokenizer):
    task = get_task("ruler_cwe")
    assert_deterministic(task, tiny_tokenizer, 4096)
    gold = tuple("apple bread cloud dream eagle flame grape honey igloo jelly".split())
    numbered = "\n".join(f"{i}. {w.title()}" for i, w in enumerate(reversed(gold), start=1))
    assert task.score(f"<explanation>Counted.</explanation>\n<answer>\n{numbered}\n</answer>", gold) == 1.0
    assert task.score(numbered, gold) == 0.0  # no answer tags
    half = "\n".join(f"{i}) {w}" for i, w in enumerate([*gold[:5], "kiwi", "kiwi", "lemon"], start=1))
    assert task.score(f"<answer>{half}</answer>", gold) == 5 / 12
    assert task.score("<answer>" + ", ".join(gold) + "</answer>", gold) == 0.0  # not a numbered list


def test_cwe_structured_score_and_short_length_error(tiny_tokenizer):
    task = get_task("ruler_cwe", answer_format="structured")
    gold = tuple("apple bread cloud dream eagle flame grape honey igloo jelly".split())
    assert task.score("Answer: " + ", ".join(reversed(gold)), gold) == 1.0
    assert task.score("Answer:\n" + "\n".join(f"{i}. **{w}**" for i, w in enumerate(gold)), gold) == 1.0
    assert task.score("Answer: " + ", ".join(gold[:5]), gold) == 0.5
    assert task.score("Answer: " + ", ".join(gold[:5] + ("kiwi",) * 3 + ("lemon",)), gold) == 5 / 12
    with pytest.raises(ValueError, match="at least"):
        task.generate(tiny_tokenizer, 1024, 1, seed=0)
    short = get_task("ruler_cwe", common_freq=4, distractor_freq=1, answer_format="structured").generate(
        tiny_tokenizer, 1024, 1, seed=0
    )
    assert_lengths(short, tiny_tokenizer, 1024)
