"""The metrics on hand-made correct, partial and wrong answers."""

from __future__ import annotations

import pytest

from sparse_frontier.tasks.metrics import (
    exact_match,
    fraction_recalled,
    iou,
    item_matches,
    normalize,
    token_f1,
)


def test_normalize_squad_style():
    assert normalize("  The **Eiffel**-Tower!  ") == "eiffeltower"
    assert normalize("An apple, a pear") == "apple pear"
    assert normalize("“Quoted” — text…") == "quoted text"


def test_item_matches_whole_words_only():
    assert item_matches("The value is abc-def.", "abc-def")
    assert item_matches("Chapter 12", "12")
    assert not item_matches("Chapter 12", "2")
    assert not item_matches("abc-de", "abc-def")


def test_exact_match():
    assert exact_match("paris", ["Paris"]) == 1.0
    assert exact_match("It is Paris.", ["Paris"]) == 1.0
    assert exact_match("Lyon", ["Paris", "City of Paris"]) == 0.0
    assert exact_match("", ["Paris"]) == 0.0


def test_iou():
    gold = ["x", "y", "z"]
    assert iou(["z", "y", "x"], gold) == 1.0  # any order
    assert iou(["x", "x", "y", "z"], gold) == 1.0  # repeats count once
    assert iou(["x", "y"], gold) == pytest.approx(2 / 3)
    assert iou(["x", "y", "w"], gold) == pytest.approx(2 / 4)
    assert iou(["w", "v"], gold) == 0.0
    assert iou([], gold) == 0.0


def test_fraction_recalled_penalises_extra_items():
    gold = ["a1", "b2", "c3", "d4"]
    assert fraction_recalled(["d4", "c3", "b2", "a1"], gold) == 1.0
    assert fraction_recalled(["a1", "b2", "zz", "c3"], gold) == 0.75
    assert fraction_recalled(["a1", "b2", "c3", "d4", "e5", "f6", "g7", "h8"], gold) == 0.5
    assert fraction_recalled([], gold) == 0.0


def test_token_f1():
    assert token_f1("the Eiffel Tower", ["Eiffel Tower"]) == 1.0
    # pred {eiffel, tower, in, paris} vs gold {eiffel, tower}: P=1/2, R=1 -> F1=2/3
    assert token_f1("Eiffel Tower in Paris", ["Eiffel Tower"]) == pytest.approx(2 / 3)
    assert token_f1("Louvre", ["Eiffel Tower"]) == 0.0
    assert token_f1("Louvre", ["Eiffel Tower", "the Louvre"]) == 1.0  # best gold wins
    assert token_f1("tower tower", ["tower"]) == pytest.approx(2 / 3)  # counts, not sets
