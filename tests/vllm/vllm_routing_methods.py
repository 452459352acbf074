"""Trivial methods that compute dense attention but take every sparse route of the plugin.

Each subclass keeps the base class's dense ``prefill`` / ``decode`` and only changes its
phase, so the plugin sends its rows through the Python paths (prompt q/k/v; keys and values
read back from the paged cache; compaction). Any difference from the wrapped kernel's tokens
is then a plumbing bug. Imported by name in vLLM's worker processes (``spec.method_from_spec``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from sparse_frontier.attention import AttentionMethod, AttentionResult


@dataclass
class DenseViaPrefill(AttentionMethod):
    name: ClassVar[str] = "_dense_via_prefill"
    phase: ClassVar[str] = "prefill"


@dataclass
class DenseViaDecode(AttentionMethod):
    name: ClassVar[str] = "_dense_via_decode"
    phase: ClassVar[str] = "decode"


@dataclass
class KeepAll(AttentionMethod):
    """Eviction that keeps every token: compaction must then be the identity."""

    name: ClassVar[str] = "_keep_all"
    phase: ClassVar[str] = "kv-compression"

    def prefill(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> AttentionResult:
        result = super().prefill(q, k, v)
        result.keep = torch.ones(k.shape[0], k.shape[1], dtype=torch.bool, device=k.device)
        return result


@dataclass
class KeepEven(AttentionMethod):
    """Eviction of every odd position except, per head h, the first h odd ones (unequal head budgets).

    Deterministic, so the vLLM and hf engines must agree exactly; exercises padding masks.
    """

    name: ClassVar[str] = "_keep_even"
    phase: ClassVar[str] = "kv-compression"

    def prefill(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> AttentionResult:
        result = super().prefill(q, k, v)
        hkv, s, _ = k.shape
        pos = torch.arange(s, device=k.device)
        keep = (pos % 2 == 0)[None].repeat(hkv, 1)
        for h in range(hkv):
            keep[h, 1 : 2 * h + 1 : 2] = True
        keep[:, -1] = True
        result.keep = keep
        return result
