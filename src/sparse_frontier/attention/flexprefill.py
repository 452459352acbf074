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
from .common import check_positive_int, head_group, search_int_batched
from .vertical_slash import VerticalSlash, VerticalSlashIndex, search_batch


def coverage_count(mass: torch.Tensor, gamma: float | torch.Tensor) -> torch.Tensor:
    """[Hq, S] cumulative mass, gamma (a float, or [C] candidates) -> [Hq] (or [C, Hq]) fewest
    leading items whose mass reaches gamma (0 where gamma <= 0)."""
    gammas = torch.as_tensor(gamma, dtype=mass.dtype, device=mass.device)
    wanted = gammas.reshape(1, -1).expand(mass.shape[0], -1).contiguous()  # [Hq, C]
    # Float round-off can leave the total a hair under 1: searchsorted then says S, i.e. all.
    n = torch.clamp(torch.searchsorted(mass, wanted) + 1, max=mass.shape[1])
    return torch.where(wanted > 0, n, 0).T.reshape(*gammas.shape, mass.shape[0])


def gamma_steps(index: VerticalSlashIndex, floor_v: int, floor_s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every distinct selection gamma in [0, 1] can make, and the overlap-free pair count of each.

    -> (steps [N] ascending: 0, the distinct cumulative masses in (0, 1), and 1; upper [N] float64:
    the pairs of all heads' chosen verticals plus chosen slashes at each step, overlap counted
    twice, floors included). Any gamma selects what the first step at or above it selects (item k
    is in once gamma exceeds the mass of the items before it), so the search runs over the steps'
    indices with ``upper`` as its proxy. Gathered over the layer's ranks (one decision per layer).
    """
    group = head_group()
    keys, adds, base = [], [], 0.0
    for mass, cover, floor in (
        (index.vertical_mass, index.vertical_cover, floor_v),
        (index.slash_mass, index.slash_cover, floor_s),
    ):
        mass, cover = group.gather(mass), group.gather(cover)
        item = torch.diff(cover, dim=1, prepend=torch.zeros_like(cover[:, :1])).double()  # pairs per item
        if floor > 0:
            base += float(cover[:, floor - 1].sum())
        item[:, :floor] = 0  # below the floor: always in
        keys.append(torch.nn.functional.pad(mass[:, :-1], (1, 0)).flatten())  # mass of the items before
        adds.append(item.flatten())
    masses = torch.cat(keys)
    inside = masses[(masses > 0) & (masses < 1)]
    zero, one = inside.new_zeros(1), inside.new_ones(1)
    steps = torch.cat([zero, torch.unique(inside), one])
    enter = torch.searchsorted(steps, masses, right=True)  # the first step above the key; N: never
    added = torch.bincount(enter, weights=torch.cat(adds), minlength=steps.numel() + 1)[: steps.numel()]
    return steps, base + added.cumsum(0)


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
        self, index: VerticalSlashIndex, gamma: float | torch.Tensor, min_budget: int | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-head (n_vertical [Hq], n_slash [Hq]): coverage gamma, floored at min_budget (the
        forced items among them with ``forced_in_budget``, else on top of them). gamma and
        min_budget may be [C] candidates: then [C, Hq] each."""
        floor_v, floor_s = self.floors(index, min_budget)
        n_v = torch.maximum(coverage_count(index.vertical_mass, gamma), floor_v[..., None])
        n_s = torch.maximum(coverage_count(index.slash_mass, gamma), floor_s[..., None])
        return n_v, n_s

    def floors(
        self, index: VerticalSlashIndex, min_budget: int | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(verticals, slashes) every head keeps at least under min_budget (an int or [C] candidates)."""
        budget = torch.as_tensor(min_budget, device=index.vertical_mass.device)
        return tuple(
            torch.clamp(budget if self.forced_in_budget else forced + budget, min=forced, max=index.s)
            for forced in (index.n_forced_vertical, index.n_forced_slash)
        )

    def budgets(self, index: VerticalSlashIndex, target: float) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """The gamma (with min_budget) whose layer work is closest to ``target``: a batched search
        over the steps of the work in gamma (``gamma_steps``); when even gamma = 0 is as dense as
        the target, the uniform budget below min_budget (Vertical-Slash's search, capped)."""
        floor_v, floor_s = (int(f) for f in self.floors(index, self.min_budget))
        steps, upper = gamma_steps(index, floor_v, floor_s)
        device = index.vertical_mass.device

        def work(candidates: list[int]) -> list[float]:
            # Summed over tensor-parallel ranks: gamma and min_budget are the layer's (common.head_group).
            gammas = steps[torch.tensor(candidates, device=steps.device)]
            budget = torch.full((len(candidates),), self.min_budget, device=device)
            return head_group().sum(self.cost(index, *self.counts(index, gammas, budget)).sum(-1)).tolist()

        batch = search_batch(steps)
        step = search_int_batched(
            work, 0, steps.numel() - 1, target, shape=upper, first=self.first_guesses, batch=batch
        )
        if step == 0:  # gamma = 0 is the nearest: lower min_budget instead (uniform Vertical-Slash)
            budget = self.uniform_budget(index, target, self.min_budget)
            return *self.counts(index, 0.0, budget), {"gamma": 0.0, "min_budget": budget}
        gamma = float(steps[step])
        return *self.counts(index, gamma, self.min_budget), {"gamma": gamma, "min_budget": self.min_budget}
