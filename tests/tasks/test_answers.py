"""The answer extractor on what real models write."""

from __future__ import annotations

import pytest

from sparse_frontier.tasks.answers import extract_answer, extract_choice, split_items


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("Reasoning...\nAnswer: Paris", "Paris"),
        ("answer: paris.", "paris"),
        ("**Answer:** Paris", "Paris"),
        ("**Answer**: Paris", "Paris"),
        ("Final Answer: `Paris`", "Paris"),
        ("ANSWER： Paris!", "Paris"),
        ("Answer: London\nWait, let me re-check.\nAnswer: Paris", "Paris"),
        ("The answer: Paris\n\nI hope this helps.", "Paris"),
        ("<answer>Paris</answer>", "Paris"),
        ("Answer:\n- a\n- b\n\nThat is all.", "- a\n- b"),
        ("I think it is Paris.", "I think it is Paris"),
        ("So the answer is Paris.\nHope that helps", "Paris"),
        ("The answer is: **B**", "B"),
        ("The answer is Rome.\nAnswer: Paris", "Paris"),
        ("", ""),
        ("Answer:", ""),
    ],
)
def test_extract_answer(output, expected):
    assert extract_answer(output) == expected


def test_marker_inside_reasoning_does_not_win_over_last_line():
    out = "The question asks for the answer: which city? Reasoning.\nAnswer: Rome"
    assert extract_answer(out) == "Rome"


@pytest.mark.parametrize(
    ("answer", "items"),
    [
        ("a, b, c", ["a", "b", "c"]),
        ("a; b and c", ["a", "b", "c"]),
        ("1. a\n2. b\n3) c", ["a", "b", "c"]),
        ("- **a**\n- *b*", ["a", "b"]),
        ("'a', \"b\"", ["a", "b"]),
        ("[a, b]", ["a", "b"]),
        ("", []),
    ],
)
def test_split_items(answer, items):
    assert split_items(answer) == items


@pytest.mark.parametrize(
    ("answer", "choice"),
    [
        ("B", "B"),
        ("(b)", "B"),
        ("B) The cat sat", "B"),
        ("C. The dog", "C"),
        ("D: nothing", "D"),
        ("Option b", "B"),
        ("The correct choice is (C)", "C"),
        ("The correct answer is C", "C"),
        ("it has to be vitamin d", None),  # a lower-case last letter is a word, not a choice
        ("a", "A"),
        ("a large house", None),  # the article "a", not option A
        ("E", None),  # out of range for 4 options
        ("", None),
    ],
)
def test_extract_choice(answer, choice):
    assert extract_choice(answer, n_options=4) == choice
