"""Story tasks: narrative properties, lengths, determinism, scoring."""

from __future__ import annotations

import re

import pytest
from task_helpers import assert_deterministic, assert_lengths, context_of

from sparse_frontier.tasks import get_task
from sparse_frontier.tasks.narrative import pick_chapters

BUYING = re.compile(r"\b(bought|paid|sold|purchased|coins)\b")


def _chapters(prompt: str) -> dict[int, str]:
    parts = re.split(r"^Chapter (\d+)\n", context_of(prompt), flags=re.M)[1:]
    chapters = {int(parts[i]): parts[i + 1].strip() for i in range(0, len(parts), 2)}
    assert list(chapters) == list(range(1, len(chapters) + 1))
    return chapters


@pytest.fixture(scope="module", params=["story_retrieval", "story_multihop", "story_filtering"])
def task(request):
    return get_task(request.param)


@pytest.mark.parametrize("length", [8192, 16384])
def test_lengths(task, tiny_tokenizer, length):
    samples = task.generate(tiny_tokenizer, length, 3, seed=0)
    assert_lengths(samples, tiny_tokenizer, length)
    for sample in samples:
        assert len(_chapters(sample.prompt)) == sample.meta["n_chapters"]


def test_determinism(task, tiny_tokenizer):
    assert_deterministic(task, tiny_tokenizer, 8192)


def test_short_targets_fill_with_a_neutral_prologue(tiny_tokenizer):
    used = 0
    for name in ["story_multihop", "story_filtering"]:
        samples = get_task(name).generate(tiny_tokenizer, 2048, 4, seed=5)
        assert_lengths(samples, tiny_tokenizer, 2048)
        for sample in samples:
            context = context_of(sample.prompt)
            prologue = context.split("Chapter 1\n")[0]
            assert (sample.meta["prologue_sentences"] > 0) == prologue.startswith("Prologue\n")
            assert not BUYING.search(prologue) and "Chapter" not in prologue
            used += sample.meta["prologue_sentences"] > 0
    assert used, "at 2K one chapter overshoots the window, so some sample needs the prologue"


@pytest.mark.parametrize("length", [2048, 16384])
def test_filtering_has_exactly_three_purchase_free_chapters(tiny_tokenizer, length):
    task = get_task("story_filtering")
    for sample in task.generate(tiny_tokenizer, length, 4, seed=1):
        chapters = _chapters(sample.prompt)
        no_purchase = {str(i) for i, text in chapters.items() if not BUYING.search(text)}
        assert no_purchase == set(sample.gold) and len(sample.gold) == 3
        for i in sample.gold:  # an item is still mentioned: telling buying apart is the task
            assert re.search(r"\b(gave|present|handed|found|discovered|admired|showed)\b", chapters[int(i)])


@pytest.mark.parametrize("length", [2048, 16384])
def test_multihop_answer_is_unique(tiny_tokenizer, length):
    task = get_task("story_multihop")
    for sample in task.generate(tiny_tokenizer, length, 4, seed=2):
        chapters = _chapters(sample.prompt)
        target = sample.meta["target_item"]
        holding = [i for i, text in chapters.items() if re.search(rf"\b{target}\b", text)]
        assert holding == [sample.meta["target_chapter"]]  # the target item is acquired once
        (gold,) = sample.gold
        holding_gold = [i for i, text in chapters.items() if re.search(rf"\b{gold}\b", text)]
        assert holding_gold == [sample.meta["target_chapter"] - 1]
        for text in chapters.values():  # an item is acquired in every chapter
            assert re.search(r"\b(bought|paid|sold|purchased|gave|present|handed|found|discovered)\b", text)


def test_retrieval_questions_name_chapters_holding_the_answers(tiny_tokenizer):
    task = get_task("story_retrieval")
    for sample in task.generate(tiny_tokenizer, 16384, 3, seed=3):
        chapters = _chapters(sample.prompt)
        picked = sample.meta["chapters"]
        assert len(picked) == len(set(picked)) == len(sample.gold) == 16
        for index, kind, answer in zip(picked, sample.meta["question_kinds"], sample.gold, strict=True):
            text = chapters[index]
            expected = {"place": f"of {answer} ", "person": f"{answer}, a", "item": answer}[kind]
            assert expected in text.replace(".", " ")
            if kind == "item":
                assert BUYING.search(text)
            assert f"In Chapter {index}," in sample.prompt


def test_pick_chapters_distinct_and_in_range():
    picks = pick_chapters([0.5] * 5 + [0.99, 0.0], 8, lowest=2)
    assert len(set(picks)) == 7 and all(2 <= p <= 8 for p in picks)
    with pytest.raises(ValueError, match="distinct"):
        pick_chapters([0.1] * 4, 3)


def test_authors_scores():
    retrieval = get_task("story_retrieval")
    gold = tuple(f"answer{i}" for i in range(16))
    lines = [f"{i}. {g.upper()}" for i, g in enumerate(gold, start=1)]
    assert retrieval.score("<answer>\n" + "\n".join(lines) + "\n</answer>", gold) == 1.0
    half = [*lines[:8], *(f"{i}) wrong" for i in range(9, 17))]
    assert retrieval.score("<answer>" + "\n".join(half) + "</answer>", gold) == 0.5
    assert retrieval.score("<answer>" + "; ".join(gold) + "</answer>", gold) == 0.0  # not numbered lines
    multihop = get_task("story_multihop")
    tagged = "<explanation>x</explanation><answer> The Copper  Lantern </answer>"
    assert multihop.score(tagged, ("copper lantern",)) == 1.0
    assert multihop.score("<answer>copper lantern.</answer>", ("copper lantern",)) == 0.0
    assert multihop.score("copper lantern", ("copper lantern",)) == 0.0  # no answer tags
    filtering = get_task("story_filtering")
    assert filtering.score("<answer>Chapter 12, Chapter 3, Chapter 40</answer>", ("3", "12", "40")) == 1.0
    assert filtering.score("<answer>3, 12 and 41</answer>", ("3", "12", "40")) == pytest.approx(2 / 4)
    assert filtering.score("Chapters 3, 12, 40", ("3", "12", "40")) == 0.0


def test_structured_scores(tiny_tokenizer):
    task = get_task("story_filtering", answer_format="structured")
    (sample,) = task.generate(tiny_tokenizer, 2048, 1, seed=0)
    assert "Answer: <chapter number>" in sample.prompt and "<answer>" not in sample.prompt
    retrieval = get_task("story_retrieval", answer_format="structured")
    gold = tuple(f"answer{i}" for i in range(16))
    assert retrieval.score("Answer: " + "; ".join(gold), gold) == 1.0
    half = list(gold[:8]) + ["wrong"] * 8
    assert retrieval.score("Answer: " + "; ".join(half), gold) == 0.5
    assert retrieval.score("Answer: " + "; ".join(reversed(gold)), gold) == 0.0  # matched by position
    multihop = get_task("story_multihop", answer_format="structured")
    assert multihop.score("...\n**Answer:** The Copper Lantern.", ("copper lantern",)) == 1.0
    assert multihop.score("Answer: lantern", ("copper lantern",)) == 0.0
    filtering = get_task("story_filtering", answer_format="structured")
    assert filtering.score("Answer: Chapter 12, Chapter 3 and Chapter 40", ("3", "12", "40")) == 1.0
    assert filtering.score("Answer: 3, 12", ("3", "12", "40")) == pytest.approx(2 / 3)
    assert filtering.score("Answer: 3, 12, 41", ("3", "12", "40")) == pytest.approx(2 / 4)
