"""FlexPrefill (Lai et al., 2025) with tau = 0: Vertical-Slash with per-head coverage budgets.

Paper Appendix A.1.3: each head takes the fewest verticals (and, separately, slashes) whose
estimated attention mass reaches the coverage ``gamma``, but never fewer than ``min_budget``
(512); tau = 0 disables the Query-Aware pattern, so every head uses verticals and slashes.
Scores, sinks (4), local window (64) and the approximation window (256/512) are those of
Vertical-Slash, whose machinery this module reuses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from . import register
from .common import check_positive_int, layer_sum, search_float, search_int
from .vertical_slash import VerticalSlash, VerticalSlashIndex


def coverage_count(mass: torch.Tensor, gamma: float) -> torch.Tensor:
    """[Hq, S] cumulative mass -> [Hq] fewest leading items whose mass reaches gamma (0 if gamma <= 0)."""
    if gamma <= 0:
        return torch.zeros(mass.shape[0], dtype=torch.long, device=mass.device)
    target = torch.full((mass.shape[0], 1), gamma, dtype=mass.dtype, device=mass.device)
    # Float round-off can leave the total a hair under 1: searchsorted then says S, i.e. all.
    return torch.clamp(torch.searchsorted(mass, target)[:, 0] + 1, max=mass.shape[1])


@register
@dataclass
class FlexPrefill(VerticalSlash):
    """FlexPrefill prefill attention (Lai et al., 2025; paper A.1.3), tau = 0.

    min_budget: verticals and slashes every head keeps at least (512); the forced ones count towards
                it with ``forced_in_budget`` (default, as in the authors' code), else come on top.
    tau:        Query-Aware threshold; only 0 (the paper's setting) is implemented.
    density, forced_in_budget: as Vertical-Slash (default: the paper kernel's cell count).
    Budget parameter (paper Table 6): the coverage ``gamma`` with min_budget fixed, found by
    bisection at call time; when even gamma = 0 with min_budget is denser than the target (high
    compression), gamma stays 0 and min_budget itself is lowered, which is uniform Vertical-Slash.
    Shapes as Vertical-Slash: prefill(q [Hq,T,D], k [Hkv,S,D], v [Hkv,S,D]) -> out [Hq,T,D].
    """

    name: ClassVar[str] = "flexprefill"
    phase: ClassVar[str] = "prefill"
    min_budget: int = 512
    tau: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int(self.name, "min_budget", self.min_budget, minimum=0)
        if self.tau != 0.0:
            raise ValueError(
                f"{self.name}: tau={self.tau} asks for the Query-Aware pattern, which is not implemented; "
                "use tau=0 (the paper's setting)."
            )

    def counts(
        self, index: VerticalSlashIndex, gamma: float, min_budget: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-head (n_vertical [Hq], n_slash [Hq]): coverage gamma, floored at min_budget (the
        forced items among them with ``forced_in_budget``, else on top of them)."""
        floor_v = min_budget if self.forced_in_budget else index.n_forced_vertical + min_budget
        floor_s = min_budget if self.forced_in_budget else index.n_forced_slash + min_budget
        floor_v = min(max(floor_v, index.n_forced_vertical), index.s)
        floor_s = min(max(floor_s, index.n_forced_slash), index.s)
        n_v = torch.clamp(coverage_count(index.vertical_mass, gamma), min=floor_v)
        n_s = torch.clamp(coverage_count(index.slash_mass, gamma), min=floor_s)
        return n_v, n_s

    def budgets(self, index: VerticalSlashIndex, target: float) -> tuple[torch.Tensor, torch.Tensor, dict]:
        def work(gamma: float, min_budget: int) -> float:
            # Summed over tensor-parallel ranks: gamma and min_budget are the layer's (common.head_group).
            return layer_sum(self.cost(index, *self.counts(index, gamma, min_budget)).sum())

        if work(0.0, self.min_budget) >= target:
            budget = search_int(lambda m: work(0.0, m), 0, self.min_budget, target)
            return *self.counts(index, 0.0, budget), {"gamma": 0.0, "min_budget": budget}
        gamma = search_float(lambda g: work(g, self.min_budget), 0.0, 1.0, target)
        return *self.counts(index, gamma, self.min_budget), {"gamma": gamma, "min_budget": self.min_budget}
