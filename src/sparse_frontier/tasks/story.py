"""The three Story tasks over one procedurally generated narrative per sample.

Paper, Appendix A.2.3 (narratives in :mod:`.narrative`; the length fitter's unit is a chapter):

- **Retrieval**: "Answer 16 factoid questions (e.g., location visited, item acquired) about
  specific chapters, with chapter IDs provided in the questions. Exact Match." Low scope, low
  dispersion. Each of 16 distinct chapters gets one question (place, person met, or item
  bought); a sample's score is the fraction of the 16 answered correctly, matched by position.
- **Multi-hop**: "an item is acquired in every chapter; [name] the item acquired immediately
  before [a target item]. Exact Match." High dispersion, low scope. Acquisitions are purchases,
  gifts or finds; items are unique in the story, so the answer is unique.
- **Filtering**: "Identify the three specific chapters where no item purchases occurred ...
  exactly three chapters meet this condition. IoU." High scope, low dispersion. Every other
  chapter has a purchase; the three have a gift, a find or a declined offer instead, so
  spotting an item is not enough: the model must tell buying from not buying.

Which chapters the questions name is drawn as fractions of the story once per sample, so the
chapters move proportionally as the length fitter grows the story; gold answers are read
from the chapters the final prompt contains. The length fitter's unit is a chapter; at short
targets, where one chapter overshoots the 5% window, the story keeps the most chapters that
fit and a prologue of journey sentences (no place, person, item or purchase) fills the rest.

Answer formats. With ``answer_format="authors"`` (the default) the prompt is the authors'
release: their task introduction and question wording ("the protagonist"), answers in
``<answer>`` tags, read by their rules: Retrieval's numbered lines ``1. answer`` compared by
number after lower-casing and dropping a leading article; Multi-hop's whole answer section
compared the same way; Filtering's ``Chapter <n>`` mentions (or its bare numbers) as a set,
scored by IoU. A response without tags scores 0 on Multi-hop and Filtering (Retrieval then
reads numbered lines anywhere). With ``"structured"`` the final ``Answer:`` line is read by the
project's tolerant extractor.
"""

from __future__ import annotations

import random
from abc import abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from . import register
from .answers import extract_answer, split_items
from .base import FittedTask, Instance
from .metrics import exact_match, iou, item_matches
from .narrative import PROLOGUE, ChapterFacts, Story, pick_chapters
from .prompt import build_prompt, build_tagged_prompt, check_answer_format
from .tagged_answers import chapter_numbers, numbered_answers, set_iou, story_text, tagged_answer

_TAGGED_INTRO = (
    "You are given a narrative composed of multiple chapters. Throughout these chapters, the "
    "protagonist travels between different locations, meets various characters, and engages in "
    "trading activities. All items mentioned in the narrative are unique, and their ownership can "
    "change through trades. Your task is to carefully read the narrative and answer the questions "
    "based on the provided information."
)


@dataclass(frozen=True)
class _Posed:
    """A story's question(s) and answers for one chapter count."""

    question: str
    answer_format: str
    rules: tuple[str, ...]  # the answer line's rules, or the authors' extra instructions
    gold: tuple[str, ...]
    overrides: dict[int, str]  # chapter index -> transaction kind replacing the drawn one
    meta: dict


class _StoryTask(FittedTask):
    """Shared frame: a story of ``min_chapters + n_units`` chapters and a question about it."""

    min_chapters: ClassVar[int]
    kinds: ClassVar[tuple[str, ...]] = ("purchase",)
    several_questions: ClassVar[bool] = False

    def __init__(self, answer_format: str = "authors"):
        check_answer_format(self.name, answer_format)
        self.answer_format = answer_format

    @abstractmethod
    def draw(self, rng: random.Random) -> dict:
        """Per-sample choices made once (fractions, question types), independent of length."""

    @abstractmethod
    def pose(self, story: Story, chapters: list[ChapterFacts], choices: dict) -> _Posed:
        """The question and gold answers for this set of chapters."""

    def make_instance(self, rng: random.Random, length: int, sample_id: int) -> Instance:
        story = Story(rng, self.kinds)
        choices = self.draw(rng)
        instructions = (
            f"Below is a story about the travels of {story.name}, told in numbered chapters. In each "
            f"chapter {story.name} travels to a place, meets someone, and may buy or otherwise come by "
            "an item. Read the story carefully and answer the question about it."
        )

        def instance(extra_chapters: int | None) -> Instance:
            """Units are chapters; or, with ``extra_chapters`` fixed, prologue sentences."""

            def layout(n_units: int) -> tuple[int, int]:  # (chapters, prologue sentences)
                if extra_chapters is None:
                    return self.min_chapters + n_units, 0
                return self.min_chapters + extra_chapters, n_units

            def posed(n_units: int) -> tuple[list[ChapterFacts], int, _Posed]:
                n_chapters, prologue = layout(n_units)
                chapters = story.take(n_chapters)
                return chapters, prologue, self.pose(story, chapters, choices)

            def render(n_units: int) -> str:
                chapters, prologue, p = posed(n_units)
                context = story.render(chapters, p.overrides, prologue)
                if self.answer_format == "authors":
                    return build_tagged_prompt(
                        _TAGGED_INTRO, context, p.question, p.answer_format, p.rules, self.several_questions
                    )
                return build_prompt(instructions, context, p.question, p.answer_format, p.rules)

            def meta(n_units: int) -> dict:
                chapters, prologue, p = posed(n_units)
                return {
                    "traveller": story.name,
                    "n_chapters": len(chapters),
                    "prologue_sentences": prologue,
                    **p.meta,
                }

            return Instance(
                render=render,
                gold=lambda n_units: posed(n_units)[2].gold,
                max_units=len(PROLOGUE)
                if extra_chapters is not None
                else story.max_chapters - self.min_chapters,
                meta=meta,
                fallback=None if extra_chapters is not None else instance,
            )

        return instance(None)


_RETRIEVAL_KINDS = ("place", "person", "item")


@register
class StoryRetrieval(_StoryTask):
    """16 factoid questions, each about a named chapter; exact match per question."""

    name = "story_retrieval"
    metric = "exact_match"
    category = "retrieval"
    max_new_tokens = 512
    min_chapters = 16
    n_questions = 16
    several_questions = True

    def draw(self, rng: random.Random) -> dict:
        return {
            "fractions": [rng.random() for _ in range(self.n_questions)],
            "kinds": [rng.choice(_RETRIEVAL_KINDS) for _ in range(self.n_questions)],
        }

    def pose(self, story: Story, chapters: list[ChapterFacts], choices: dict) -> _Posed:
        picked = pick_chapters(choices["fractions"], len(chapters))
        lines, gold = [], []
        meta = {"chapters": picked, "question_kinds": list(choices["kinds"])}
        if self.answer_format == "authors":
            asked = {
                "place": "which specific location did the protagonist visit?",
                "person": "which character did the protagonist interact with?",
                "item": "which specific item was acquired by the protagonist?",
            }
            for number, (index, kind) in enumerate(zip(picked, choices["kinds"], strict=True), start=1):
                chapter = chapters[index - 1]
                lines.append(f"{number}. In Chapter {index}, {asked[kind]}")
                gold.append({"place": chapter.place, "person": chapter.person, "item": chapter.item}[kind])
            return _Posed(
                question="\n".join(lines),
                answer_format="1. ANSWER_ONE\n2. ANSWER_TWO\netc.",
                rules=(
                    "For answers, use one line per answer with the number prefix",
                    "Do not include articles like 'the' or 'a' in answers",
                    "Answers should be specific names/items/locations mentioned in the text",
                ),
                gold=tuple(gold),
                overrides={},
                meta=meta,
            )
        for number, (index, kind) in enumerate(zip(picked, choices["kinds"], strict=True), start=1):
            chapter = chapters[index - 1]
            if kind == "place":
                lines.append(f"{number}. In Chapter {index}, to which place did {story.name} travel?")
                gold.append(chapter.place)
            elif kind == "person":
                lines.append(f"{number}. In Chapter {index}, whom did {story.name} meet?")
                gold.append(chapter.person)
            else:
                lines.append(f"{number}. In Chapter {index}, which item did {story.name} buy?")
                gold.append(chapter.item)
        return _Posed(
            question="Answer the following questions.\n" + "\n".join(lines),
            answer_format="; ".join(f"<answer {i}>" for i in range(1, self.n_questions + 1)),
            rules=(
                f"Give the {self.n_questions} answers in the order of the questions, "
                "separated by semicolons.",
                "Answer with the name only: the place's name (without 'the town of'), the person's name, "
                "or the item's name (such as 'copper lantern').",
            ),
            gold=tuple(gold),
            overrides={},
            meta=meta,
        )

    def score(self, output: str, gold: tuple[str, ...]) -> float:
        if self.answer_format == "authors":
            answers = numbered_answers(output)
            return sum(answers.get(i) == story_text(g) for i, g in enumerate(gold, start=1)) / len(gold)
        items = split_items(extract_answer(output))
        correct = sum(item_matches(item, g) for item, g in zip(items, gold, strict=False))
        return correct / len(gold)


@register
class StoryMultiHop(_StoryTask):
    """Name the item acquired in the chapter before the one where a target item was acquired."""

    name = "story_multihop"
    metric = "exact_match"
    category = "high_dispersion"
    max_new_tokens = 256
    min_chapters = 2
    kinds = ("purchase", "gift", "found")

    def draw(self, rng: random.Random) -> dict:
        return {"fraction": rng.random()}

    def pose(self, story: Story, chapters: list[ChapterFacts], choices: dict) -> _Posed:
        (target,) = pick_chapters([choices["fraction"]], len(chapters), lowest=2)
        target_item = chapters[target - 1].item
        meta = {"target_chapter": target, "target_item": target_item}
        if self.answer_format == "authors":
            return _Posed(
                question=(
                    f"What was the last item that the protagonist acquired before acquiring {target_item}?"
                ),
                answer_format="ITEM_NAME",
                rules=(
                    "Provide only the item name in the answer section.",
                    "Do not include articles like 'the' or 'a' in your answer.",
                    "The item name must be exactly as mentioned in the text.",
                ),
                gold=(chapters[target - 2].item,),
                overrides={},
                meta=meta,
            )
        return _Posed(
            question=(
                f"{story.name} came by one item in every chapter. Which item did {story.name} acquire "
                f"immediately before acquiring the {target_item}?"
            ),
            answer_format="<item>",
            rules=("Answer with the item's name only, such as 'copper lantern'.",),
            gold=(chapters[target - 2].item,),
            overrides={},
            meta=meta,
        )

    def score(self, output: str, gold: tuple[str, ...]) -> float:
        if self.answer_format == "authors":
            answer = tagged_answer(output)
            return float(answer is not None and story_text(answer) == story_text(gold[0]))
        return exact_match(extract_answer(output), gold)


@register
class StoryFiltering(_StoryTask):
    """The three chapters with no purchase, among chapters that all have one; IoU."""

    name = "story_filtering"
    metric = "iou"
    category = "high_scope"
    max_new_tokens = 256
    min_chapters = 4
    n_target = 3

    def draw(self, rng: random.Random) -> dict:
        return {
            "fractions": [rng.random() for _ in range(self.n_target)],
            "kinds": [rng.choice(("gift", "found", "declined")) for _ in range(self.n_target)],
        }

    def pose(self, story: Story, chapters: list[ChapterFacts], choices: dict) -> _Posed:
        picked = sorted(pick_chapters(choices["fractions"], len(chapters)))
        if self.answer_format == "authors":
            question = (
                "Identify all chapters where the protagonist did not buy any item.\n"
                f"Note: There are exactly {self.n_target} chapters without any purchases."
            )
            answer_format = "chapter_id_1, chapter_id_2, ..."
            rules: tuple[str, ...] = (
                "In the answer section, provide only the chapter IDs separated by commas.",
            )
        else:
            question = f"In which three chapters did {story.name} not buy anything?"
            answer_format = "<chapter number>, <chapter number>, <chapter number>"
            rules = ("Give the three chapter numbers separated by commas, in any order.",)
        return _Posed(
            question=question,
            answer_format=answer_format,
            rules=rules,
            gold=tuple(str(i) for i in picked),
            overrides=dict(zip(picked, choices["kinds"], strict=True)),
            meta={"no_purchase_chapters": picked},
        )

    def score(self, output: str, gold: tuple[str, ...]) -> float:
        if self.answer_format == "authors":
            return set_iou(chapter_numbers(output), {int(g) for g in gold})
        return iou(split_items(extract_answer(output)), gold)
