"""Test oracle: the per-sample scores of the paper authors' released evaluation code.

Ported from the ``evaluate`` functions of ``sparse_frontier/tasks/*`` in
github.com/PiotrNawrot/sparse-frontier, reduced to one sample (their ``evaluate`` of a
one-sample list): the same regular expressions, normalisations and comparisons, in their order.
A sample that their code leaves out of the mean (Multi-hop without a non-empty answer, Filtering
with an empty response) gives 0.0 here, as their ``evaluate`` returns for a list with no scored
sample. Used only by the tests, to check the project's scorers against the study's definitions.
"""

from __future__ import annotations

import re
import string


def _answer_section(text: str) -> str | None:
    match = re.search(r"<answer>(.*?)</answer>", text, re.DOTALL | re.IGNORECASE)
    return match.group(1) if match else None


def niah(pred: str, answers: list[tuple[str, str]]) -> float:
    def normalize(text: str) -> str:
        text = re.sub(r"\s+", " ", text.lower().strip())
        return re.sub(r"\bis:\s+", "is ", text)

    section = _answer_section(pred)
    text = pred if section is None else section
    found: dict[int, tuple[str, str]] = {}
    pattern = re.compile(
        r"(\d+)\.\s*The answer for\s+([\w-]+)\s+is:?\s+(.+?)(?:\.|$)", re.IGNORECASE | re.MULTILINE
    )
    for match in pattern.finditer(text):
        idx = int(match.group(1))
        if idx not in found:
            found[idx] = (match.group(2).strip(), normalize(match.group(3).strip()))
    gold = {i + 1: (key, normalize(value)) for i, (key, value) in enumerate(answers)}
    correct = sum(1 for idx, pair in gold.items() if found.get(idx) == pair)
    return correct / len(gold)


def vt(pred: str, gold_answer: str) -> float:
    def normalize(text: str) -> str:
        section = _answer_section(text)
        if section is not None:
            text = section
        text = re.sub(r"\s+", " ", text.upper().strip())
        return re.sub(r"VAR\s+", "", text)

    pred_vars, gold_vars = set(normalize(pred).split()), set(normalize(gold_answer).split())
    union = pred_vars | gold_vars
    return 1.0 if not union else len(pred_vars & gold_vars) / len(union)


def cwe(pred: str, common_words: list[str]) -> float:
    section = _answer_section(pred)
    if section is None:
        return 0.0
    words = set()
    for line in section.strip().split("\n"):
        line = line.strip()
        if not line:
            continue
        match = re.match(r"^\d+[.)\-]?\s*(.+)$", line)
        if match:
            word = match.group(1).strip().lower()
            if word:
                words.add(word)
    gold = set(common_words)
    union = words | gold
    return len(words & gold) / len(union) if union else 0.0


def _story_normalize(text: str) -> str:
    text = re.sub(r"\s+", " ", text.lower().strip())
    return re.sub(r"^(the|a|an)\s+", "", text)


def story_retrieval(pred: str, gold_answer: str) -> float:
    def extract(text: str) -> dict[int, str]:
        section = _answer_section(text)
        if section is not None:
            text = section
        found: dict[int, str] = {}
        for line in text.split("\n"):
            match = re.match(r"^(\d+)[\.:\)]\s*(.+?)\s*$", line.strip())
            if match and int(match.group(1)) not in found:
                found[int(match.group(1))] = _story_normalize(match.group(2))
        return found

    gold, found = extract(gold_answer), extract(pred)
    if not gold:
        return 0.0
    return sum(1 for idx, answer in gold.items() if found.get(idx) == answer) / len(gold)


def story_multihop(pred: str, gold_answer: str) -> float:
    gold = _story_normalize(gold_answer)
    section = _answer_section(pred)
    answer = "" if section is None else _story_normalize(section)
    if not (gold and answer):
        return 0.0  # left out of the mean
    return 1.0 if answer == gold else 0.0


def story_filtering(pred: str, gold_answer: str) -> float:
    def numbers(text: str) -> set[int]:
        text = re.sub(r"[^0-9,\s]", "", text.strip())
        parts = re.split(r"[,\s]+", text)
        try:
            return {int(p) for p in parts if p.strip()}
        except ValueError:
            return set()

    def extract(text: str) -> set[int]:
        section = _answer_section(text)
        if section is None:
            return set()
        named = re.findall(r"Chapter\s+(\d+)", section, re.IGNORECASE)
        return {int(n) for n in named} if named else numbers(section)

    pred, gold_answer = pred.strip(), gold_answer.strip()
    if not pred or not gold_answer:
        return 0.0  # left out of the mean
    gold_set, pred_set = numbers(gold_answer), extract(pred)
    if not gold_set and not pred_set:
        return 1.0
    union = gold_set | pred_set
    return len(gold_set & pred_set) / len(union) if union else 0.0


def _tagged_response(text: str) -> str:
    match = re.search(r"<answer>(.*?)</answer>", text, re.DOTALL)
    return match.group(1).strip() if match else ""


def qa_multiple_choice(pred: str, gold_answer: str) -> float:
    def normalize(answer: str) -> str:
        match = re.search(r"<answer>(.*?)</answer>", answer, re.DOTALL)
        if match:
            answer = match.group(1)
        answer = re.sub(r"Question\s*\d+\.?\s*", "", answer)
        answer = re.sub(r"[^A-D]", "", answer.upper())
        return "".join(sorted(answer))

    return 1.0 if normalize(_tagged_response(pred)) == normalize(gold_answer) else 0.0


def qa_open(pred: str, gold_answers: list[str]) -> float:
    def normalize(s: str) -> str:
        match = re.search(r"<answer>(.*?)</answer>", s, re.DOTALL)
        if match:
            s = match.group(1)
        s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
        s = re.sub(r"\b(a|an|the|and|or|about|to)\b", " ", s)
        return " ".join(s.split())

    def f1(prediction: str, gold: str) -> float:
        p, g = set(prediction.split()), set(gold.split())
        tp, fp, fn = len(p & g), len(p - g), len(g - p)
        precision = tp / (tp + fp) if tp + fp else 0
        recall = tp / (tp + fn) if tp + fn else 0
        if precision + recall == 0:
            return 0.0
        return round(2 * precision * recall / (precision + recall), 2)

    norm_pred = normalize(_tagged_response(pred))
    return max(f1(norm_pred, normalize(gold)) for gold in gold_answers)
