"""The contract every task keeps.

A task turns (tokenizer, target length, number of samples, seed) into samples whose
prompts are 95-100% of the target length in that tokenizer's tokens, and scores a
model's raw output against the gold answers stored with each sample.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable
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

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """Text that completes an answer, so decoding may stop there without changing the score:
        the closing tag in the authors' format (their rules read the first ``<answer>`` pair only);
        none in the structured one, whose extractor reads the last ``Answer:`` line."""
        return ("</answer>",) if getattr(self, "answer_format", None) == "authors" else ()

    @abstractmethod
    def generate(self, tokenizer, length: int, n: int, seed: int) -> list[Sample]:
        """``n`` samples of ``length`` target tokens; the same seed gives the same samples."""

    @abstractmethod
    def score(self, output: str, gold: tuple[str, ...]) -> float:
        """Score in [0, 1] of the model's raw output (answer extraction included)."""


def sample_rng(task: str, seed: int, length: int, sample_id: int) -> random.Random:
    """The random source of one sample: a function of (task, seed, length, sample_id) only.

    Python's ``random.Random`` seeded with a string hashes it with SHA-512, so the stream is the
    same on every run and platform, and different sample ids (or lengths) get unrelated streams.
    """
    return random.Random(f"{task}|seed={seed}|length={length}|sample={sample_id}")


@dataclass(frozen=True)
class Instance:
    """One sample before length fitting.

    render:    number of filler units -> task text in the shared prompt format (no chat
               template); deterministic, and longer for more units
    gold:      the gold answers stored with the sample, or a function of the unit count when
               they depend on it (e.g. the chapters a story question names)
    max_units: the most filler units the instance can supply (None: unbounded)
    meta:      flat, Parquet-friendly facts about the sample (str, int, float, lists of str),
               or a function of the unit count returning them
    answer_prefix: the start of the answer, appended after the chat template so that the model's
               output continues it (RULER's primed answers); part of the prompt and its count
    fallback:  used only when no count of these units lands in the window: a function of
               the largest count below the window returning the same sample with finer
               filler units (QA: cut at words instead of sentences; Story: that many
               chapters plus prologue sentences)
    """

    render: Callable[[int], str]
    gold: tuple[str, ...] | Callable[[int], tuple[str, ...]]
    max_units: int | None = None
    meta: dict | Callable[[int], dict] = field(default_factory=dict)
    fallback: Callable[[int], Instance] | None = None
    answer_prefix: str = ""

    def resolve(self, n_units: int) -> tuple[tuple[str, ...], dict]:
        """The gold answers and meta of the prompt rendered with ``n_units`` filler units."""
        gold = self.gold(n_units) if callable(self.gold) else self.gold
        meta = self.meta(n_units) if callable(self.meta) else self.meta
        return tuple(gold), dict(meta)


class FittedTask(Task):
    """A task whose length is set by a count of filler units; fitting is shared.

    Subclasses implement :meth:`make_instance` (and :meth:`score`); :meth:`generate` draws each
    sample from its own random stream and fits it with one :class:`LengthFitter` per call, so
    the tokens-per-unit rate learnt on the first sample speeds up the rest.
    """

    @abstractmethod
    def make_instance(self, rng: random.Random, length: int, sample_id: int) -> Instance:
        """Draw one sample's content from ``rng`` for a target of ``length`` tokens.

        ``rng`` is the sample's own stream (:func:`sample_rng`); ``sample_id`` is there for
        tasks that deal out a shared pool (QA questions) so samples never repeat an item.
        """

    def prepare(self, tokenizer, length: int, n: int, seed: int) -> None:
        """Hook run once per :meth:`generate` call before any sample (e.g. load and filter a source)."""

    def generate(self, tokenizer, length: int, n: int, seed: int) -> list[Sample]:
        from .length import LengthFitter, UnitsTooCoarse

        if n < 0:
            raise ValueError(f"The number of samples must be >= 0, got {n}.")
        self.prepare(tokenizer, length, n, seed)
        # Fallback units are of another size, so they learn their own tokens-per-unit rate.
        fitter, fine_fitter = LengthFitter(tokenizer, length), LengthFitter(tokenizer, length)
        samples = []
        for sample_id in range(n):
            instance = self.make_instance(sample_rng(self.name, seed, length, sample_id), length, sample_id)
            try:
                fitted = fitter.fit(instance.render, instance.max_units, instance.answer_prefix)
                calls = fitted.n_calls
            except UnitsTooCoarse as err:
                if instance.fallback is None:
                    raise
                instance = instance.fallback(err.below_units)
                fitted = fine_fitter.fit(instance.render, instance.max_units, instance.answer_prefix)
                calls = err.n_calls + fitted.n_calls
            gold, meta = instance.resolve(fitted.n_units)
            meta.update(n_units=fitted.n_units, fit_calls=calls)
            samples.append(Sample(sample_id, fitted.prompt, gold, fitted.n_tokens, meta))
        return samples
