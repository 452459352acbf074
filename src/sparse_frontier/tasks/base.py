"""The contract every task keeps.

A task turns (tokenizer, target length, number of samples, seed) into samples whose
prompts are 95-100% of the target length in that tokenizer's tokens, and scores a
model's raw output against the gold answers stored with each sample.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar


@dataclass(frozen=True)
class Sample:
    """One task input.

    prompt:   the exact text the engine tokenizes (chat template already applied, if any)
    gold:     the gold answers (one for exact match / F1, a set for IoU tasks)
    n_tokens: len(tokenizer(prompt)), measured, not estimated
    """

    sample_id: int
    prompt: str
    gold: tuple[str, ...]
    n_tokens: int
    meta: dict = field(default_factory=dict)


class Task(ABC):
    """A long-context task. Subclasses set the class variables and implement both methods."""

    name: ClassVar[str]
    metric: ClassVar[str]  # "exact_match" | "iou" | "f1"
    category: ClassVar[str]  # "retrieval" (low scope, low dispersion) | "high_scope" | "high_dispersion"
    max_new_tokens: ClassVar[int] = 256

    @abstractmethod
    def generate(self, tokenizer, length: int, n: int, seed: int) -> list[Sample]:
        """``n`` samples of ``length`` target tokens; the same seed gives the same samples."""

    @abstractmethod
    def score(self, output: str, gold: tuple[str, ...]) -> float:
        """Score in [0, 1] of the model's raw output (answer extraction included)."""
