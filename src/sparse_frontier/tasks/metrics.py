"""The paper's three metrics (Section 3.3): exact match, intersection over union, token F1.

All compare normalised text, SQuAD-style (Rajpurkar et al.): lower case, punctuation and the
articles a/an/the removed, whitespace collapsed. Each returns a float in [0, 1].

Matching an item to a gold answer tolerates extra words: ``"the value is abc-def"`` matches
gold ``"abc-def"`` because the gold's words appear, contiguous and whole, inside the item.
Whole words only, so ``"12"`` never matches gold ``"2"``.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence

_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_ASCII_PUNCT = set(string.punctuation)


def normalize(text: str) -> str:
    """SQuAD normalisation: lower case, drop punctuation (Unicode too) and articles, one space."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(
        ch for ch in text if ch not in _ASCII_PUNCT and not unicodedata.category(ch).startswith("P")
    )
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def item_matches(item: str, gold: str) -> bool:
    """Whether a predicted item names ``gold``: equal after normalisation, or gold's words inside."""
    item_n, gold_n = normalize(item), normalize(gold)
    if not gold_n:
        return not item_n
    return item_n == gold_n or f" {gold_n} " in f" {item_n} "


def exact_match(prediction: str, golds: Iterable[str]) -> float:
    """1.0 if the prediction names any acceptable gold answer (extra words tolerated), else 0.0."""
    return float(any(item_matches(prediction, gold) for gold in golds))


def _matched_golds(items: Sequence[str], golds: Sequence[str]) -> tuple[set[int], int]:
    """Indices of golds named by some item, and the number of distinct items naming no gold."""
    matched: set[int] = set()
    distinct_wrong: set[str] = set()
    for item in items:
        hits = [i for i, gold in enumerate(golds) if item_matches(item, gold)]
        matched.update(hits)
        if not hits and normalize(item):
            distinct_wrong.add(normalize(item))
    return matched, len(distinct_wrong)


def iou(items: Sequence[str], golds: Sequence[str]) -> float:
    """Intersection over union of the predicted and gold sets, in any order.

    |gold named by a prediction| / (|gold| + |distinct predictions naming no gold|): a correct
    item counts once however often it is repeated; each wrong item enlarges the union.
    """
    if not golds:
        raise ValueError("iou needs at least one gold item.")
    matched, wrong = _matched_golds(items, golds)
    return len(matched) / (len(golds) + wrong)


def fraction_recalled(items: Sequence[str], golds: Sequence[str]) -> float:
    """Fraction of the gold items named, divided by the item count when more items are listed.

    The per-sample exact-match score of multi-value retrieval (RULER's multi-value NIAH scores
    the fraction of the values recovered); listing more items than asked for is penalised so
    that dumping every candidate cannot earn credit.
    """
    if not golds:
        raise ValueError("fraction_recalled needs at least one gold item.")
    matched, wrong = _matched_golds(items, golds)
    return len(matched) / max(len(golds), len(matched) + wrong)


def token_f1(prediction: str, golds: Iterable[str]) -> float:
    """SQuAD token-level F1 of the prediction against the best-matching acceptable gold answer."""
    pred_tokens = normalize(prediction).split()
    best = 0.0
    for gold in golds:
        gold_tokens = normalize(gold).split()
        if not pred_tokens or not gold_tokens:
            best = max(best, float(pred_tokens == gold_tokens))
            continue
        common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
        if common == 0:
            continue
        precision, recall = common / len(pred_tokens), common / len(gold_tokens)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best
