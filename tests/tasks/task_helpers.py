"""Shared checks of the task tests."""

from __future__ import annotations

from sparse_frontier.tasks.prompt import count_tokens


def context_of(prompt: str) -> str:
    """The text between <context> and </context> of a prompt."""
    return prompt.split("<context>\n", 1)[1].split("\n</context>", 1)[0]


def assert_lengths(samples, tokenizer, length: int) -> None:
    """Every sample 95-100% of ``length`` and its stored count equal to the engine's count."""
    assert samples
    for sample in samples:
        assert 0.95 * length <= sample.n_tokens <= length, (sample.sample_id, sample.n_tokens)
        assert sample.n_tokens == count_tokens(tokenizer, sample.prompt)


def assert_deterministic(task, tokenizer, length: int) -> None:
    """Same seed -> identical samples; different ids -> different prompts; other seed differs."""
    first = task.generate(tokenizer, length, 3, seed=11)
    assert task.generate(tokenizer, length, 3, seed=11) == first
    assert len({s.prompt for s in first}) == 3
    assert task.generate(tokenizer, length, 1, seed=12)[0].prompt != first[0].prompt
