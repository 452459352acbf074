"""Ada-SnapKV (Feng et al., 2024): SnapKV with adaptive per-head budgets inside a layer.

Paper Appendix A.1.5: scores are max-aggregated (over window queries and the query heads of a
KV head) instead of averaged, then smoothed as in SnapKV. The layer's total budget,
``token_capacity`` x KV heads, is shared: every head first receives ``min_fraction`` (20%) of
the capacity (and at least its sinks and recent tokens); the rest goes to the highest-scoring
remaining tokens of the whole layer, whichever head they belong to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from . import register
from .common import head_group
from .snapkv import SnapKV, forced_tokens, top_per_row


@register
@dataclass
class AdaSnapKV(SnapKV):
    """Ada-SnapKV KV-cache eviction (Feng et al., 2024; paper A.1.5).

    min_fraction: share of ``token_capacity`` every head is guaranteed (0.2).
    Other parameters, the budget mapping and shapes are SnapKV's; ``keep`` rows now differ in
    length per head, but sum to exactly token_capacity x Hkv.
    """

    name: ClassVar[str] = "ada_snapkv"
    phase: ClassVar[str] = "kv-compression"
    min_fraction: float = 0.2
    aggregate: ClassVar[str] = "max"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.min_fraction <= 1.0:
            raise ValueError(f"{self.name}: min_fraction must be in [0, 1], got {self.min_fraction}.")

    def head_minimum(self, capacity: int, s: int) -> int:
        """Tokens every head keeps whatever its scores: min_fraction of capacity, sinks + recent at least."""
        n_forced = int(forced_tokens(s, self.sinks, self.recent).sum())
        return min(max(math.ceil(self.min_fraction * capacity), n_forced), capacity)

    def select(self, scores: torch.Tensor, capacity: int) -> torch.Tensor:
        hkv, s = scores.shape
        forced = forced_tokens(s, self.sinks, self.recent, scores.device).expand(hkv, s)
        minimum = self.head_minimum(capacity, s)
        keep = top_per_row(scores, minimum - int(forced[0].sum()), forced)
        # The shared remainder: one top-k over the whole layer, so a head with many strong
        # tokens takes budget from heads whose attention is concentrated on few. Under tensor
        # parallelism the layer's heads are spread over ranks: the candidates of every rank are
        # gathered (rank order = head order) and each rank keeps its own slice of the one top-k.
        group = head_group()
        if group.size == 1:
            flat = top_per_row(scores.reshape(1, -1), (capacity - minimum) * hkv, keep.reshape(1, -1))
            return flat.view(hkv, s)
        candidates = group.gather(scores.masked_fill(keep, float("-inf")))  # [Hkv * size, S]
        n = (capacity - minimum) * candidates.shape[0]
        if n <= 0:
            return keep
        chosen = candidates.reshape(1, -1).topk(n, dim=1).indices[0] - group.rank * hkv * s
        mine = chosen[(chosen >= 0) & (chosen < hkv * s)]
        return keep.reshape(-1).index_fill(0, mine, True).view(hkv, s)
