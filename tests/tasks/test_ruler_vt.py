"""RULER VT: the chains resolve to exactly the gold variables, the layout is the authors' shuffle,
lengths, scoring."""

from __future__ import annotations

import random
import re
from collections import Counter
from itertools import permutations

import pytest
from task_helpers import assert_deterministic, assert_lengths, context_of

from sparse_frontier.tasks import get_task
from sparse_frontier.tasks.ruler_vt import FILLER, Placement

ASSIGN = re.compile(r"VAR ([A-Z]{5}) = (?:VAR ([A-Z]{5})|(\d{5}))(?![\w])")


def assignments(context: str) -> list[tuple[str, str, str]]:
    """(name, copied name or '', number or '') of every assignment, in text order."""
    return ASSIGN.findall(context)


def resolve(context: str) -> dict[str, str]:
    """Every variable's value, whatever the order of the statements in the text."""
    rhs: dict[str, tuple[str, str]] = {}
    for name, source, number in assignments(context):
        assert name not in rhs, f"{name} assigned twice"
        rhs[name] = (source, number)

    def value(name: str, seen: frozenset = frozenset()) -> str:
        assert name not in seen, f"cycle through {name}"
        source, number = rhs[name]
        return number or value(source, seen | {name})

    return {name: value(name) for name in rhs}


def pieces_of(context: str) -> list[str]:
    """The filler passages and statements of a context, in order (they are all it holds)."""
    pieces = re.findall(rf"{re.escape(FILLER)}|VAR [A-Z]{{5}} = (?:VAR [A-Z]{{5}}|\d{{5}})", context)
    assert " ".join(pieces) == context
    return pieces


def asked_value(prompt: str) -> str:
    """The value the question asks about, read from the question before the context."""
    return re.search(r"value (\d{5})", prompt.split("<context>")[0])[1]


@pytest.mark.parametrize(
    ("chains", "hops", "shuffle"), [(8, 4, True), (8, 4, False), (1, 4, True), (3, 2, True)]
)
def test_vt_chains_resolve_to_exactly_the_gold_variables(tiny_tokenizer, chains, hops, shuffle):
    task = get_task("ruler_vt", chains=chains, hops=hops, shuffle=shuffle)
    for sample in task.generate(tiny_tokenizer, 4096, 4, seed=0):
        context = context_of(sample.prompt)
        values = resolve(context)
        value = asked_value(sample.prompt)
        assert len(values) == chains * (hops + 1)
        assert {name for name, v in values.items() if v == value} == set(sample.gold)
        assert len(sample.gold) == hops + 1
        # Every chain has a value of its own: the distractors share nothing with the asked chain.
        by_value = Counter(values.values())
        assert len(by_value) == chains and set(by_value.values()) == {hops + 1}
        assert value not in sample.meta["distractor_values"] and value == sample.meta["value"]
        assert set(by_value) == {value, *sample.meta["distractor_values"]}
        assert context.count(value) == 1  # only the direct assignment names the value
        assert all(10000 <= int(v) < 99999 for v in by_value)


def test_vt_defaults_are_the_authors_eight_shuffled_chains_of_four_hops(tiny_tokenizer):
    task = get_task("ruler_vt")
    assert (task.chains, task.hops, task.shuffle) == (8, 4, True)
    sample = task.generate(tiny_tokenizer, 4096, 1, seed=0)[0]
    assert len(resolve(context_of(sample.prompt))) == 40 and len(sample.gold) == 5


def _copies_in_chain_order(context: str) -> tuple[int, int]:
    """(copies that come after the statement they copy, all copies)."""
    position = {name: i for i, (name, _, _) in enumerate(assignments(context))}
    copies = [(position[source], position[name]) for name, source, _ in assignments(context) if source]
    return sum(before < after for before, after in copies), len(copies)


def test_vt_shuffle_interleaves_assignments_with_the_filler(tiny_tokenizer):
    shuffled = get_task("ruler_vt").generate(tiny_tokenizer, 4096, 6, seed=0)
    ordered = get_task("ruler_vt", shuffle=False).generate(tiny_tokenizer, 4096, 6, seed=0)
    in_order = [_copies_in_chain_order(context_of(s.prompt)) for s in shuffled]
    # A random order puts each copy after its source half of the time (32 copies per sample).
    assert all(4 <= after <= total - 4 for after, total in in_order), in_order
    assert all(_copies_in_chain_order(context_of(s.prompt)) == (32, 32) for s in ordered)
    for sample in shuffled + ordered:
        pieces = pieces_of(context_of(sample.prompt))
        statements = [i for i, piece in enumerate(pieces) if piece.startswith("VAR")]
        assert len(statements) == 40 and len(pieces) == 40 + sample.meta["n_units"]
        # Spread over the whole context, not bunched: with 40 uniform positions an empty first or
        # last fifth has probability 0.8^40 ~ 1e-4.
        assert statements[0] < 0.2 * len(pieces) and statements[-1] > 0.8 * len(pieces)


def _arrangement(seed: int, shuffle: bool) -> tuple[str, ...]:
    placement = Placement(random.Random(seed), [["A", "B"]], "-", shuffle)
    return tuple(placement.pieces(3))


def test_placement_is_a_uniform_shuffle_of_statements_and_filler():
    """Two statements among three passages: a uniform shuffle makes each of the 5!/3! = 20
    arrangements equally likely (the authors shuffle statements and filler together);
    keeping chain order makes each of the 10 with A before B equally likely."""
    trials = 4000
    every = set(permutations(["A", "B", "-", "-", "-"]))
    shuffled = Counter(_arrangement(seed, shuffle=True) for seed in range(trials))
    assert set(shuffled) == every and len(every) == 20
    assert all(abs(count - trials / 20) < 5 * (trials / 20) ** 0.5 for count in shuffled.values()), shuffled
    ordered = Counter(_arrangement(seed, shuffle=False) for seed in range(trials))
    assert set(ordered) == {a for a in every if a.index("A") < a.index("B")}
    assert all(abs(count - trials / 10) < 5 * (trials / 10) ** 0.5 for count in ordered.values()), ordered


def test_placement_is_a_pure_function_of_the_count_and_keeps_the_statement_order():
    placement = Placement(random.Random(3), [["A", "B", "C"], ["D", "E"]], FILLER, shuffle=True)
    first = placement.pieces(20)
    statements = [p for p in first if p != FILLER]
    for n_units in (0, 5, 50, 20):
        pieces = placement.pieces(n_units)
        assert [p for p in pieces if p != FILLER] == statements
        assert pieces.count(FILLER) == n_units
    assert placement.pieces(20) == first


@pytest.mark.parametrize("length", [2048, 8192])
def test_vt_lengths(tiny_tokenizer, length):
    assert_lengths(get_task("ruler_vt").generate(tiny_tokenizer, length, 3, seed=0), tiny_tokenizer, length)


def test_vt_short_smoke_setting_fits_1k(tiny_tokenizer):
    task = get_task("ruler_vt", chains=1, answer_format="structured")
    samples = task.generate(tiny_tokenizer, 1024, 3, seed=0)
    assert_lengths(samples, tiny_tokenizer, 1024)


def test_vt_determinism_and_authors_score(tiny_tokenizer):
    task = get_task("ruler_vt")
    assert_deterministic(task, tiny_tokenizer, 2048)
    gold = ("ABCDE", "FGHIJ", "KLMNO", "PQRST", "UVWXY")
    explained = "<explanation>...</explanation>\n<answer>\nUVWXY PQRST KLMNO FGHIJ ABCDE\n</answer>"
    assert task.score(explained, gold) == 1.0
    assert task.score("<answer>VAR ABCDE VAR FGHIJ VAR KLMNO</answer>", gold) == pytest.approx(3 / 5)
    # split on spaces, as the authors do: a comma makes a name a wrong one
    assert task.score("<answer>ABCDE, FGHIJ, KLMNO, PQRST, UVWXY</answer>", gold) == pytest.approx(1 / 9)
    assert task.score("<answer>ABCDE FGHIJ KLMNO PQRST UVWXY ZZZZZ</answer>", gold) == pytest.approx(5 / 6)
    assert task.score("ABCDE FGHIJ", gold) == pytest.approx(2 / 5)  # no tags: every word counts
    assert task.score("<answer>ZZZZZ</answer>", gold) == 0.0


def test_vt_structured_score(tiny_tokenizer):
    task = get_task("ruler_vt", answer_format="structured")
    sample = task.generate(tiny_tokenizer, 2048, 1, seed=0)[0]
    assert "Answer: <variable>" in sample.prompt and "<answer>" not in sample.prompt
    gold = ("ABCDE", "FGHIJ", "KLMNO", "PQRST", "UVWXY")
    assert task.score("Answer: UVWXY, PQRST, KLMNO, FGHIJ, ABCDE", gold) == 1.0
    assert task.score("**Answer:** VAR ABCDE, VAR FGHIJ, VAR KLMNO, VAR PQRST and VAR UVWXY.", gold) == 1.0
    assert task.score("Answer: ABCDE, FGHIJ, KLMNO", gold) == pytest.approx(3 / 5)
    assert task.score("Answer: ABCDE, FGHIJ, KLMNO, PQRST, UVWXY, ZZZZZ", gold) == pytest.approx(5 / 6)
    assert task.score("Answer: ZZZZZ", gold) == 0.0


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"hops": -1}, "hops >= 0"),
        ({"chains": 0}, "1 <= chains"),
        ({"shuffle": "yes"}, "boolean shuffle"),
        ({"chains": 2.5}, "integer chains"),
        ({"answer_format": "tagged"}, "answer_format must be one of authors, structured"),
    ],
)
def test_vt_rejects_bad_parameters(params, message):
    with pytest.raises(ValueError, match=message):
        get_task("ruler_vt", **params)
