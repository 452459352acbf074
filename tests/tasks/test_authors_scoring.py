"""Each task's default scorer against the paper authors' own scoring (the oracle in authors_oracle.py).

Hand-written responses in the authors' format: right, partly right, wrong, and the ways a model
strays from the format (no tags, upper-case tags, commas, articles, a changed key). Every
task's set holds a full score, a zero and a partial score, so agreement is not agreement on zeros.
"""

from __future__ import annotations

import authors_oracle as oracle
import pytest

from sparse_frontier.tasks import get_task

EXPLAIN = "<explanation>\nI looked through the context and found them.\n</explanation>\n"


def _answer(body: str) -> str:
    return f"{EXPLAIN}<answer>\n{body}\n</answer>"


KEYS = ["k3x9a0pq-2m71bzdq-qq0e4aaa-8b8b8b8b", "zz00aa11-bb22cc33-dd44ee55-ff66gg77",
        "abcdefgh-12345678-ijklmnop-90qrstuv", "mnbvcxzl-kjhgfdsa-poiuytre-wqasdfgh"]
VALUES = ["v1v1v1v1-aaaaaaaa-bbbbbbbb-cccccccc", "v2v2v2v2-dddddddd-eeeeeeee-ffffffff",
          "v3v3v3v3-gggggggg-hhhhhhhh-iiiiiiii", "v4v4v4v4-jjjjjjjj-kkkkkkkk-llllllll"]


def _niah_lines(pairs, start: int = 1) -> str:
    return "\n".join(f"{i}. The answer for {k} is {v}." for i, (k, v) in enumerate(pairs, start=start))


NIAH_PAIRS = list(zip(KEYS, VALUES, strict=True))
NIAH_OUTPUTS = [
    _answer(_niah_lines(NIAH_PAIRS)),
    _niah_lines(NIAH_PAIRS),  # no tags: the whole response is read
    _answer(_niah_lines([*NIAH_PAIRS[:3], (KEYS[3], "wrong-value")])),  # 3 of 4
    _answer(_niah_lines(NIAH_PAIRS[:1])),  # the 135M model's one line of four
    _niah_lines(NIAH_PAIRS[:1]),
    _answer(_niah_lines(NIAH_PAIRS[::-1])),  # numbered in the wrong order
    _answer(_niah_lines([(k, v.upper()) for k, v in NIAH_PAIRS])),  # values compared in lower case
    _answer(_niah_lines([(k.upper(), v) for k, v in NIAH_PAIRS])),  # keys compared exactly
    _answer("\n".join(f"{i}. The answer for {k} is: {v}" for i, (k, v) in enumerate(NIAH_PAIRS, 1))),
    _answer("\n".join(f"{i}) The answer for {k} is {v}." for i, (k, v) in enumerate(NIAH_PAIRS, 1))),
    _answer(", ".join(VALUES)),
    "Answer: " + ", ".join(VALUES),
    _answer(_niah_lines(NIAH_PAIRS[:2]) + "\n" + _niah_lines([(KEYS[0], VALUES[1])], start=1)),
    "",
]

VT_GOLD = ("QPWOE", "ZXKQA", "MFHTR", "LKJHG", "ASDFG")
VT_OUTPUTS = [
    _answer("QPWOE ZXKQA MFHTR LKJHG ASDFG"),
    _answer("asdfg lkjhg mfhtr zxkqa qpwoe"),
    _answer("VAR QPWOE VAR ZXKQA VAR MFHTR"),
    _answer("QPWOE, ZXKQA, MFHTR, LKJHG, ASDFG"),  # commas: split on spaces only
    _answer("QPWOE ZXKQA MFHTR LKJHG ASDFG YTREW"),
    _answer("QPWOE\nZXKQA\nMFHTR"),
    "The variables are QPWOE and ZXKQA.",  # no tags: every word counts
    _answer("NONE"),
    "<ANSWER>QPWOE ZXKQA</ANSWER>",
]

CWE_GOLD = ("apple", "bread", "cloud", "dream", "eagle", "flame", "grape", "honey", "igloo", "jelly")
CWE_OUTPUTS = [
    _answer("\n".join(f"{i}. {w}" for i, w in enumerate(CWE_GOLD, 1))),
    _answer("\n".join(f"{i}) {w.upper()}" for i, w in enumerate(reversed(CWE_GOLD), 1))),
    _answer("\n".join(f"{i}- {w}" for i, w in enumerate([*CWE_GOLD[:5], "kiwi", "kiwi", "lemon"], 1))),
    _answer("\n".join(f"{i}. {w}." for i, w in enumerate(CWE_GOLD, 1))),  # a full stop is part of the word
    _answer(", ".join(CWE_GOLD)),  # not numbered
    "\n".join(f"{i}. {w}" for i, w in enumerate(CWE_GOLD, 1)),  # no tags
    _answer("1.apple\n2.bread\n\n3. cloud"),
]

RETRIEVAL_GOLD = ("Alexandria", "Selene", "ornate jade comb", "Rhodes")
RETRIEVAL_OUTPUTS = [
    _answer("1. Alexandria\n2. Selene\n3. ornate jade comb\n4. Rhodes"),
    _answer("1. alexandria\n2: The Selene\n3) an ornate jade comb\n4. RHODES"),
    _answer("1. Alexandria\n2. Marcus\n3. ornate jade comb"),
    "1. Alexandria\n2. Selene",  # no tags: numbered lines anywhere
    _answer("1. Alexandria.\n2. Selene"),
    _answer("Alexandria, Selene, ornate jade comb, Rhodes"),
    _answer("4. Rhodes\n3. ornate jade comb\n2. Selene\n1. Alexandria"),
    _answer("1. Alexandria\n1. Rhodes\n2. Selene"),
]

MULTIHOP_GOLD = ("gilded silver lamp",)
MULTIHOP_OUTPUTS = [
    _answer("gilded silver lamp"),
    _answer("The Gilded  Silver Lamp"),
    _answer("gilded silver lamp."),
    _answer("silver lamp"),
    "gilded silver lamp",
    _answer(""),
    "<Answer>gilded silver lamp</Answer>",
]

FILTERING_GOLD = ("3", "12", "40")
FILTERING_OUTPUTS = [
    _answer("3, 12, 40"),
    _answer("Chapter 40, chapter 12, Chapter 3"),
    _answer("3, 12"),
    _answer("3, 12, 41"),
    _answer("Chapters 3, 12 and 40"),  # "Chapters 3" is not "Chapter 3": bare numbers are read
    _answer("Chapter 3 and 12 and 40"),  # one "Chapter <n>" makes only those count
    "3, 12, 40",  # no tags
    "",
    _answer("none"),
]

MC_GOLD = ("C", "Lightning")
MC_OUTPUTS = [
    _answer("C"),
    _answer("(c)"),
    _answer("C. Lightning"),  # no A-D in LIGHTNING
    _answer("C. Cloud"),  # every A-D counts: CCD
    _answer("B"),
    _answer("BC"),
    "<ANSWER>C</ANSWER>",  # the QA tags are matched in lower case only
    "Answer: C",
    _answer("Question 3. C"),
]

SQUAD_GOLD = ("salt traders", "the salt traders of the north")
SQUAD_OUTPUTS = [
    _answer("Salt traders."),
    _answer("traders"),
    _answer("traders traders of north"),
    _answer("the salt and the traders"),
    _answer("fishermen"),
    "salt traders",
    "<ANSWER>salt traders</ANSWER>",
    _answer("Salt-traders"),
]

NIAH_GOLD = tuple(f"{k}={v}" for k, v in NIAH_PAIRS)
RETRIEVAL_LINES = "\n".join(f"{i}. {a}" for i, a in enumerate(RETRIEVAL_GOLD, 1))

CASES = {
    "ruler_niah": (NIAH_OUTPUTS, NIAH_GOLD, lambda out: oracle.niah(out, NIAH_PAIRS)),
    "ruler_vt": (VT_OUTPUTS, VT_GOLD, lambda out: oracle.vt(out, " ".join(VT_GOLD))),
    "ruler_cwe": (CWE_OUTPUTS, CWE_GOLD, lambda out: oracle.cwe(out, list(CWE_GOLD))),
    "story_retrieval": (
        RETRIEVAL_OUTPUTS,
        RETRIEVAL_GOLD,
        lambda out: oracle.story_retrieval(out, RETRIEVAL_LINES),
    ),
    "story_multihop": (
        MULTIHOP_OUTPUTS, MULTIHOP_GOLD, lambda out: oracle.story_multihop(out, MULTIHOP_GOLD[0])
    ),
    "story_filtering": (
        FILTERING_OUTPUTS,
        FILTERING_GOLD,
        lambda out: oracle.story_filtering(out, ", ".join(FILTERING_GOLD)),
    ),
    "qa_quality": (MC_OUTPUTS, MC_GOLD, lambda out: oracle.qa_multiple_choice(out, MC_GOLD[0])),
    "qa_toefl": (MC_OUTPUTS, MC_GOLD, lambda out: oracle.qa_multiple_choice(out, MC_GOLD[0])),
    "qa_squad": (SQUAD_OUTPUTS, SQUAD_GOLD, lambda out: oracle.qa_open(out, list(SQUAD_GOLD))),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_default_scorer_agrees_with_the_authors(name):
    outputs, gold, authors = CASES[name]
    task = get_task(name)
    ours = [task.score(output, gold) for output in outputs]
    theirs = [authors(output) for output in outputs]
    assert ours == pytest.approx(theirs), list(zip(outputs, ours, theirs, strict=True))
    assert 1.0 in theirs and 0.0 in theirs
    if name not in ("story_multihop", "qa_quality", "qa_toefl"):  # binary scores
        assert any(0 < score < 1 for score in theirs), name


def test_one_right_line_of_four_without_tags_scores_a_quarter():
    """What a small instruct model wrote at 1K: one right key-value line of four, nothing else."""
    gold = NIAH_GOLD
    output = f"Here is what I found.\n1. The answer for {KEYS[0]} is {VALUES[0]}.\nI could not find the rest."
    assert get_task("ruler_niah").score(output, gold) == 0.25 == oracle.niah(output, NIAH_PAIRS)
