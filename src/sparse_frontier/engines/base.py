"""The contract every inference engine keeps.

An engine loads one model once and then serves many cells: each ``generate`` call
takes a batch of tokenized prompts and the attention method to use for that batch
(greedy decoding), and reports, per prompt, what was generated and the density the
method really computed. Both engines (``hf`` and ``vllm``) call the same method objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..attention import AttentionMethod


@dataclass
class Generation:
    """One prompt's result.

    density: achieved density in the method's phase: computed query-key pairs over the
             causal total for prefill/decode methods, kept over total cached tokens for
             kv-compression methods, 1.0 for dense; the work counted as the method's budget
             was calibrated (``density: kernel`` or ``exact`` for Vertical-Slash and FlexPrefill).
    prefill_ms, decode_ms: wall time of this prompt's prefill and decoding; where prompts decode
             together (hf: a batch in one forward pass per step) decode_ms is this prompt's share.
    densities: the same density under each counting of ``attention.COUNTINGS`` ("exact" query-key
             pairs, "kernel" cells of the paper's kernel) for methods that have both; empty otherwise.
    """

    output_ids: list[int]
    text: str
    density: float
    n_prompt_tokens: int
    prefill_ms: float
    decode_ms: float
    densities: dict[str, float] = field(default_factory=dict)


class Engine(Protocol):
    name: str

    def generate(
        self, prompts: list[list[int]], method: AttentionMethod, max_new_tokens: int,
        stop: tuple[str, ...] = (),
    ) -> list[Generation]:
        """Greedy generation for every prompt with ``method``; results in prompt order. A prompt's
        generation ends at an end-of-sequence token, at ``max_new_tokens``, or once its text
        contains one of ``stop`` (kept in the output)."""
        ...
