"""Procedurally generated multi-chapter narratives for the Story tasks.

Paper, Appendix A.2.3: "procedurally generated multi-chapter narratives that scale with
sequence length. Each chapter follows a schema involving travel, dialogue, and item
transactions." Appendix F (the example narrative) did not survive extraction; the schema
and wording here are ours.

One story has one traveller. Chapter ``i`` (1-based, headed ``Chapter i``) has, in order:
travel to a place and a sentence about it; a meeting with a named person and a line of
dialogue; an item transaction; a closing sentence. Each chapter is drawn as a
:class:`ChapterFacts` record from a stream dedicated to the story, so chapter ``i`` is the
same whatever the total number of chapters (the length fitter's unit is one chapter).

The transaction of a chapter is one of:

- ``purchase``: the traveller buys the item from the person for a price in coins;
- ``gift``:     the person gives the item to the traveller (acquired, not bought);
- ``found``:    the traveller finds the item (acquired, not bought);
- ``declined``: the traveller looks at the item but does not buy it (nothing acquired).

Only ``purchase`` sentences mention coins or buying verbs, which the property tests check.
Items are unique within a story (adjective + noun), so "the item acquired before X" has one
answer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

TRAVELLERS = (
    ("Elena", "she", "her"),
    ("Marcus", "he", "his"),
    ("Ingrid", "she", "her"),
    ("Tomas", "he", "his"),
    ("Amara", "she", "her"),
    ("Felix", "he", "his"),
    ("Lucia", "she", "her"),
    ("Oskar", "he", "his"),
)

_PEOPLE = (
    "Agnes Bram Celia Dorian Edith Fabian Greta Hugo Ilse Jonas Katya Leopold Mira Nils Odette "
    "Pavel Quentin Rosa Silas Tilda Ulric Vera Wendel Yara Zeno Beatrix Casimir Delphine Emil "
    "Flora Gideon Hedda Ivo Juno Kasper Linnea Matthias Nora Otto Petra Rufus Sabine Teodor "
    "Ursula Viktor Willa Anselm Brigid Cyril Dagny"
).split()
_ROLES = (
    "a weaver",
    "a ferryman",
    "a blacksmith",
    "a herbalist",
    "a retired sailor",
    "a baker",
    "a cartographer",
    "a shepherd",
    "an innkeeper",
    "a glassblower",
    "a schoolteacher",
    "a net mender",
    "a clockmaker",
    "a beekeeper",
    "a potter",
    "a stonemason",
    "a bookbinder",
    "a candle maker",
    "a miller",
    "a lamplighter",
)
_PLACE_HEADS = (
    "Ash Bright Cold Elder Fern Glen Hollow Iron Lark Maple Moss Oak Raven Red Salt Silver "
    "Stone Thorn Willow Wolf Amber Birch Cedar Dusk Fox Heron Linden Mill Pine Rose"
).split()
_PLACE_TAILS = "ford haven field mere wick stead bridge brook dale marsh crest port vale hollow gate".split()
_PLACE_KINDS = (
    "the fishing village of",
    "the market town of",
    "the hill town of",
    "the river port of",
    "the mountain hamlet of",
    "the walled city of",
    "the lakeside village of",
    "the mining town of",
)
_SCENERY = (
    "The streets were narrow and smelled of fresh bread.",
    "Rain had left the cobblestones shining.",
    "Gulls circled above the rooftops, calling to each other.",
    "Smoke rose from a dozen chimneys into the pale sky.",
    "A bell was ringing somewhere near the square.",
    "The air was cool, and the first leaves had begun to fall.",
    "Children were chasing a dog along the main road.",
    "Wooden carts crowded the gate, waiting to be let in.",
    "The river ran fast and brown beneath an old stone bridge.",
    "Lanterns were already lit in the windows of the inn.",
    "The hills around it were covered in heather.",
    "Merchants were setting up their stalls in the square.",
)
_TRAVEL = (
    "{name} set out at dawn and travelled to {place}.",
    "After a long day on the road, {name} arrived in {place}.",
    "{name} took the morning coach to {place}.",
    "Following the old trade road, {name} reached {place} by noon.",
    "{name} walked the whole day and came at last to {place}.",
)
_MEET = (
    "There {name} met {person}, {role}.",
    "In the square {name} fell into conversation with {person}, {role}.",
    "At the inn {name} shared a table with {person}, {role}.",
    "Near the well {name} was greeted by {person}, {role}.",
)
_SAY = (
    '"The winters here are longer every year," {person} said.',
    '"You are not the first traveller to pass through this week," {person} remarked.',
    '"If you go north, keep to the river," {person} advised.',
    '"My family has lived here for five generations," {person} said with a smile.',
    '"The harvest was poor, but we manage," {person} admitted.',
    '"Be careful on the pass after dark," {person} warned.',
    '"There is a festival here at the end of the month," {person} said.',
    '"I once sailed as far as the southern islands," {person} said proudly.',
)
_PURCHASE = (
    "{name} bought {item} from {person} for {price} coins.",
    "Before leaving, {name} paid {person} {price} coins for {item}.",
    "{person} sold {name} {item} for {price} coins.",
    "{name} purchased {item} from {person}, handing over {price} coins.",
)
_GIFT = (
    "As a parting gift, {person} gave {name} {item}.",
    "{person} insisted that {name} take {item} as a present.",
    "{person} handed {name} {item} and refused any payment.",
)
_FOUND = (
    "On the way out of town, {name} found {item} lying by the roadside.",
    "Under a bench in the square, {name} discovered {item} that someone had left behind.",
)
_DECLINED = (
    "{name} admired {item} at {person}'s stall but decided not to take it.",
    "{person} showed {name} {item}, but {name} left it on the table and moved on.",
)
_CLOSING = (
    "That night {name} slept soundly at a small inn.",
    "In the evening {name} wrote a long letter home.",
    "{name} watched the sunset before going to bed.",
    "Tired but content, {name} turned in early.",
    "Later, {name} studied the map for the next stage of the journey.",
)
# Items: any describing word goes with any noun; metals only with things that can be metal
# (no "silver hat"). Unique within a story, so the item list bounds the number of chapters.
# Opening sentences about the journey: no place, person, item or transaction, so a prologue of
# any length changes no answer. Short targets use them to fill what a whole chapter overshoots.
PROLOGUE = (
    "{name} had dreamed of this journey for years.",
    "The map was old and creased from much folding.",
    "{name} packed light: a change of clothes, a water flask and a notebook.",
    "Friends had warned that the roads were long and the inns far apart.",
    "None of that mattered once the decision was made.",
    "On the last evening at home, {name} sat by the window and listened to the rain.",
    "The plan was simple: go where the roads led and write everything down.",
    "Each evening {name} would record the day in the notebook, chapter by chapter.",
    "The first morning was grey, with a cold wind from the north.",
    "{name} closed the gate, looked back once, and set off.",
    "The road wound between fields and low stone walls.",
    "Birds rose from the hedges as {name} walked past.",
    "By midday the clouds had cleared and the sun was warm.",
    "It felt strange and wonderful to have nowhere to be.",
    "{name} stopped to rest under a wide oak tree.",
    "A cart passed, its driver nodding a silent greeting.",
    "The hills ahead looked blue in the afternoon haze.",
    "{name} thought about the people at home and smiled.",
    "There would be much to tell them on the return.",
    "The evening light turned the fields to gold.",
    "Somewhere far off, a dog was barking.",
    "{name} counted the milestones to pass the time.",
    "The air smelled of cut grass and wood smoke.",
    "It was the beginning of a long journey.",
)

ITEM_ADJECTIVES = (
    "red blue green yellow black white grey brown purple orange small large tiny heavy old antique "
    "worn plain simple ornate elegant rustic sturdy delicate painted"
).split()
ITEM_NOUNS = (
    "lantern compass kettle scarf notebook flute teapot knife mirror clock bell vase basket blanket "
    "cloak hat bowl candlestick pipe jar spoon comb brooch ring bracelet necklace satchel bottle cup "
    "saddle whistle chessboard telescope quill inkpot locket hourglass figurine rug umbrella "
    "harmonica fiddle drum map journal box chest key lamp plate shawl purse wallet lute candle "
    "carpet tray jug ladle pitcher thimble kite sundial birdcage hairpin paperweight snuffbox "
    "spyglass tankard goblet pendant cushion"
).split()
METALS = "silver golden copper brass bronze".split()
METAL_NOUNS = (
    "lantern compass kettle knife mirror clock bell teapot bowl candlestick spoon brooch ring "
    "bracelet locket hourglass figurine key lamp plate cup tray jug ladle thimble whistle sundial "
    "paperweight snuffbox spyglass tankard goblet pendant"
).split()
ITEMS = tuple(
    [f"{a} {n}" for a in ITEM_ADJECTIVES for n in ITEM_NOUNS]
    + [f"{m} {n}" for m in METALS for n in METAL_NOUNS]
)

ACQUISITIONS = ("purchase", "gift", "found")


@dataclass(frozen=True)
class ChapterFacts:
    """The facts of one chapter; ``kind`` is purchase | gift | found | declined."""

    index: int
    place: str  # the place name alone, e.g. "Ashford": what a question about it expects
    place_kind: str
    person: str
    role: str
    item: str  # e.g. "copper lantern"
    kind: str
    price: int
    travel: str
    scenery: str
    meet: str
    say: str
    variant: int  # which template of the rendered transaction kind
    closing: str

    @property
    def acquired(self) -> bool:
        return self.kind in ACQUISITIONS

    @property
    def purchased(self) -> bool:
        return self.kind == "purchase"


def _with_article(item: str) -> str:
    return ("an " if item[0] in "aeiou" else "a ") + item


class Story:
    """One traveller's chapters, drawn on demand; chapter i never depends on how many follow.

    kinds: the transaction kinds ordinary chapters draw from (the tasks then override a few).
    """

    def __init__(self, rng: random.Random, kinds: tuple[str, ...] = ("purchase",)):
        self._rng = random.Random(rng.getrandbits(64))
        self.name, self.pronoun, self.possessive = self._rng.choice(TRAVELLERS)
        self._kinds = kinds
        items = list(ITEMS)
        self._rng.shuffle(items)
        self._items = items
        self.chapters: list[ChapterFacts] = []

    @property
    def max_chapters(self) -> int:
        """Items are unique within a story, so there are at most this many chapters."""
        return len(self._items)

    def _draw(self, index: int) -> ChapterFacts:
        rng = self._rng
        head, tail = rng.choice(_PLACE_HEADS), rng.choice(_PLACE_TAILS)
        place = head + (tail[1:] if head[-1] == tail[0] else tail)  # "Mosstead", not "Mossstead"
        return ChapterFacts(
            index=index,
            place=place,
            place_kind=rng.choice(_PLACE_KINDS),
            person=rng.choice(_PEOPLE),
            role=rng.choice(_ROLES),
            item=self._items[index - 1],
            kind=rng.choice(self._kinds),
            price=rng.randint(2, 90),
            travel=rng.choice(_TRAVEL),
            scenery=rng.choice(_SCENERY),
            meet=rng.choice(_MEET),
            say=rng.choice(_SAY),
            variant=rng.randrange(12),  # 12 is divisible by every template count
            closing=rng.choice(_CLOSING),
        )

    def take(self, n: int) -> list[ChapterFacts]:
        """The first ``n`` chapters (drawn now if needed)."""
        if n > self.max_chapters:
            raise ValueError(
                f"A story has at most {self.max_chapters} chapters (one unique item each), {n} were asked."
            )
        while len(self.chapters) < n:
            self.chapters.append(self._draw(len(self.chapters) + 1))
        return self.chapters[:n]

    def render_chapter(self, chapter: ChapterFacts, kind: str | None = None) -> str:
        """The text of one chapter; ``kind`` overrides its transaction kind."""
        chapter = replace(chapter, kind=kind) if kind else chapter
        templates = {"purchase": _PURCHASE, "gift": _GIFT, "found": _FOUND, "declined": _DECLINED}[
            chapter.kind
        ]
        fields = {
            "name": self.name,
            "place": f"{chapter.place_kind} {chapter.place}",
            "person": chapter.person,
            "role": chapter.role,
            "item": _with_article(chapter.item),
            "price": chapter.price,
        }
        transaction = templates[chapter.variant % len(templates)]
        sentences = [chapter.travel, chapter.scenery, chapter.meet, chapter.say, transaction, chapter.closing]
        body = " ".join(s.format(**fields) for s in sentences)
        return f"Chapter {chapter.index}\n{body}"

    def render(
        self, chapters: list[ChapterFacts], kinds: dict[int, str] | None = None, prologue: int = 0
    ) -> str:
        """The story text.

        kinds:    chapter index -> transaction kind overriding the drawn one
        prologue: number of opening sentences (from :data:`PROLOGUE`) before Chapter 1
        """
        if prologue > len(PROLOGUE):
            raise ValueError(f"A prologue has at most {len(PROLOGUE)} sentences, {prologue} were asked.")
        kinds = kinds or {}
        parts = [self.render_chapter(c, kinds.get(c.index)) for c in chapters]
        if prologue:
            opening = " ".join(s.format(name=self.name) for s in PROLOGUE[:prologue])
            parts.insert(0, f"Prologue\n{opening}")
        return "\n\n".join(parts)


def pick_chapters(fractions: list[float], n_chapters: int, lowest: int = 1) -> list[int]:
    """Distinct chapter indices in [lowest, n_chapters], one per fraction, spread as drawn.

    Fractions are drawn once per sample, so a longer story moves the picks proportionally.
    Collisions (short stories) move to the nearest free index.
    """
    span = n_chapters - lowest + 1
    if len(fractions) > span:
        raise ValueError(f"Cannot pick {len(fractions)} distinct chapters out of {span}.")
    picked: list[int] = []
    for fraction in fractions:
        index = lowest + min(int(fraction * span), span - 1)
        offset = 0
        while True:  # nearest free index, alternating up and down
            for candidate in (index + offset, index - offset):
                if lowest <= candidate <= n_chapters and candidate not in picked:
                    picked.append(candidate)
                    break
            else:
                offset += 1
                continue
            break
    return picked
