"""Vertical-Slash prefill (MInference's pattern; paper Table 1 and Appendix A.1.2).

A vertical is a key column every later query attends to; a slash is a diagonal at a fixed
offset (key = query position - offset). Both are scored from the attention of the last
``approx_window`` queries (256, or 512 for retrieval tasks): a key's vertical score is the
probability mass it receives, an offset's slash score the mass along its diagonal. The first
``sinks`` keys (verticals) and the ``local`` nearest offsets (slashes) are always kept; the
budget adds the same number ``n`` of top verticals and of top slashes to every head.

This module also holds the machinery FlexPrefill reuses (scores, ordering, exact pair count),
so the two differ only in how many items each head takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..kernels.ops import vertical_slash_attention
from . import register
from .base import AttentionMethod, AttentionResult, causal_pairs, dense_attention
from .common import check_positive_int, check_shapes, head_group, search_int_batched, window_probs


def vertical_slash_scores(
    q: torch.Tensor, k: torch.Tensor, window: int, fused: bool | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised vertical and slash importance from the last ``window`` queries.

    q [Hq, T, D], k [Hkv, S, D] -> (vertical [Hq, S], slash [Hq, S]) float32, each row summing
    to 1: vertical[h, j] is the mean probability the window queries give key j; slash[h, o]
    the mean mass on the diagonal key = query position - o.

    ``fused`` (default: on CUDA tensors whose head dim is a power of two in [16, 256]) computes them
    with the two-pass Triton kernel of kernels/vertical_slash/triton_scores.py, which never builds
    the [Hq, W, S] float32 probabilities; otherwise this PyTorch definition does (the CPU path, and
    the reference).
    """
    if fused is None:
        d = q.shape[-1]
        fused = q.is_cuda and 16 <= d <= 256 and d & (d - 1) == 0
    if fused:
        from ..kernels.vertical_slash.triton_scores import vertical_slash_scores_triton

        return vertical_slash_scores_triton(q, k, window)
    hq, _, _ = q.shape
    s = k.shape[1]
    vertical = torch.empty(hq, s, dtype=torch.float32, device=q.device)
    slash = torch.empty_like(vertical)
    for h0, probs in window_probs(q, k, window, flipped=True):
        h, w, _ = probs.shape  # probs [h, W, S + W]: keys reversed, then W zero columns
        vertical[h0 : h0 + h] = probs[..., :s].mean(1).flip(-1)
        # Diagonal sums by skewing: in reversed order row w's offset o sits at column (W-1-w) + o,
        # so reading rows with stride (S + W - 1) lines the offsets up in columns.
        offset = probs.storage_offset() + w - 1
        skewed = probs.as_strided((h, w, s), (w * (s + w), s + w - 1, 1), storage_offset=offset)
        slash[h0 : h0 + h] = skewed.sum(1) / w
    return vertical, slash


@dataclass
class VerticalSlashIndex:
    """Per-head ranking of verticals and slashes, with the exact pair count of any prefix.

    vertical_order [Hq, S]: key positions, forced sinks first, then by score (descending).
    slash_order [Hq, S]: diagonal offsets, forced local offsets first, then by score.
    A head that takes the first nv verticals and ns slashes attends to their union.
    """

    vertical_order: torch.Tensor
    slash_order: torch.Tensor
    vertical_cover: torch.Tensor  # [Hq, S] cumulative queries covered by the first n verticals
    slash_cover: torch.Tensor  # [Hq, S] cumulative queries covered by the first n slashes
    vertical_rank: torch.Tensor  # [Hq, S] rank of key position j in vertical_order
    vertical_mass: torch.Tensor  # [Hq, S] cumulative normalised score of the first n verticals
    slash_mass: torch.Tensor  # [Hq, S] cumulative normalised score of the first n slashes
    n_forced_vertical: int
    n_forced_slash: int
    t: int
    s: int

    @classmethod
    def build(
        cls, vertical: torch.Tensor, slash: torch.Tensor, t: int, sinks: int, local: int
    ) -> VerticalSlashIndex:
        """vertical, slash [Hq, S] scores -> the ranking (forced items get +inf so they come first)."""
        hq, s = vertical.shape
        n_v, n_s = min(sinks, s), min(local, s)
        v_order = _forced_first(vertical, n_v)
        s_order = _forced_first(slash, n_s)
        first_query = s - t
        # Vertical j is read by queries at positions max(j, S-T)..S-1; slash o by max(o, S-T)..S-1.
        v_cover = (s - torch.clamp(v_order, min=first_query)).cumsum(1)
        s_cover = (s - torch.clamp(s_order, min=first_query)).cumsum(1)
        rank = torch.empty_like(v_order)
        rank.scatter_(1, v_order, torch.arange(s, device=v_order.device).expand(hq, s))
        v_mass = vertical.gather(1, v_order).cumsum(1)
        s_mass = slash.gather(1, s_order).cumsum(1)
        return cls(v_order, s_order, v_cover, s_cover, rank, v_mass, s_mass, n_v, n_s, t, s)

    def pairs(self, n_vertical: torch.Tensor, n_slash: torch.Tensor) -> torch.Tensor:
        """[..., Hq] causal pairs each head computes taking its first n_vertical / n_slash items.

        Union, not sum: a pair on both a vertical j and a slash o (query position j + o) counts
        once. n_vertical, n_slash: [..., Hq] int64 in [0, S]; leading dims evaluate several
        budgets at once (the budget search's candidates).
        """
        hq, s = self.vertical_order.shape
        shape = n_vertical.shape
        n_vertical, n_slash = n_vertical.reshape(-1, hq), n_slash.reshape(-1, hq)  # [C, Hq]
        first_query = s - self.t
        v_sum = _prefix_at(self.vertical_cover, n_vertical)
        s_sum = _prefix_at(self.slash_cover, n_slash)
        # A head with every key a vertical (or every offset a slash) computes every causal pair:
        # its count is the cover alone, and it is left out of the overlap below.
        everything = (n_vertical >= s) | (n_slash >= s)
        alone = torch.where(n_vertical >= s, v_sum, s_sum)
        n_vertical, n_slash = (torch.where(everything, 0, n) for n in (n_vertical, n_slash))
        # Work on the chosen items only (O(n log n) per head, not O(S)): one host sync for the widths.
        nv_max, ns_max = (int(x) for x in torch.stack([n_vertical.max(), n_slash.max()]).tolist())
        if nv_max == 0 or ns_max == 0:
            return torch.where(everything, alone, v_sum + s_sum).reshape(shape)
        # Chosen vertical positions, ascending; a head's unused slots get 2S, inside no range below.
        slot = torch.arange(nv_max, device=n_vertical.device)
        chosen = torch.where(slot < n_vertical[..., None], self.vertical_order[:, :nv_max], 2 * s)
        chosen = chosen.sort(dim=-1).values.reshape(-1, nv_max)  # [C * Hq, nv_max]
        o = self.slash_order[:, :ns_max]
        # Slash o meets vertical j at query position j + o, valid for j in [S-T-o, S-1-o].
        lo = torch.clamp(first_query - o, min=0).repeat(n_vertical.shape[0], 1)
        hi = (s - o).repeat(n_vertical.shape[0], 1)  # exclusive end, >= 1 since o <= S-1
        meet = torch.searchsorted(chosen, hi) - torch.searchsorted(chosen, lo)  # chosen in [lo, hi)
        taken = torch.arange(ns_max, device=o.device) < n_slash[..., None]  # [C, Hq, ns_max]
        both = torch.where(taken, meet.view(taken.shape), 0).sum(-1)
        return torch.where(everything, alone, v_sum + s_sum - both).reshape(shape)

    def upper_totals(self, base_v: int, base_s: int) -> torch.Tensor:
        """[S + 1] pairs of all heads for every uniform budget n (base + n items each), counting the
        vertical-slash overlap twice: an upper bound of ``pairs``, in one pass over the covers."""
        s = self.vertical_order.shape[1]
        n = torch.arange(s + 1, device=self.vertical_cover.device)

        def total(cover: torch.Tensor, base: int) -> torch.Tensor:
            return _prefix_at(cover, torch.clamp(base + n, max=s)[:, None].expand(-1, cover.shape[0])).sum(1)

        return total(self.vertical_cover, base_v) + total(self.slash_cover, base_s)

    def indices(self, n_vertical: torch.Tensor, n_slash: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(vertical_idx [Hq, NV], slash_idx [Hq, NS]) int64, ascending, padded with -1 per head."""
        return _take(self.vertical_order, n_vertical), _take(self.slash_order, n_slash)


def _prefix_at(cumulative: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """[Hq, S] running totals of the first 1..S items, [C, Hq] counts -> [C, Hq] totals of the first
    n[c, h] items of head h."""
    at = cumulative.gather(1, (n - 1).clamp(min=0).T).T
    return torch.where(n > 0, at, 0)


def _forced_first(scores: torch.Tensor, n_forced: int) -> torch.Tensor:
    """[Hq, S] scores -> [Hq, S] indices: 0..n_forced-1 first, the rest by descending score."""
    ranked = scores.clone()
    ranked[:, :n_forced] = float("inf")
    return ranked.argsort(dim=1, descending=True, stable=True)


def _take(order: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """First n[h] entries of each row, sorted ascending, right-padded with -1 to max(n)."""
    width = int(n.max()) if n.numel() else 0
    head = order[:, :width]
    pad = torch.arange(width, device=order.device)[None, :] >= n[:, None]
    big = torch.iinfo(head.dtype).max
    head = head.masked_fill(pad, big).sort(dim=1).values
    return head.masked_fill(head == big, -1)


@register
@dataclass
class VerticalSlash(AttentionMethod):
    """Vertical-Slash prefill attention (Jiang et al., 2024; paper A.1.2).

    approx_window: recent queries that score verticals and slashes (256; 512 for retrieval tasks).
    sinks:         first keys always attended (4).  local: nearest diagonals always attended (64).
    Budget parameter: ``n``, the verticals AND slashes each head adds beyond the forced ones,
    found by bisection at call time on the exact pair count of this input, so computed causal
    pairs / all causal pairs is as close as possible to 1 / compression_ratio.
    Shapes: prefill(q [Hq,T,D], k [Hkv,S,D], v [Hkv,S,D]) -> out [Hq,T,D].
    """

    name: ClassVar[str] = "vertical_slash"
    phase: ClassVar[str] = "prefill"
    approx_window: int = 256
    sinks: int = 4
    local: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int(self.name, "approx_window", self.approx_window)
        check_positive_int(self.name, "sinks", self.sinks, minimum=0)
        check_positive_int(self.name, "local", self.local)

    def index(self, q: torch.Tensor, k: torch.Tensor, fused: bool | None = None) -> VerticalSlashIndex:
        """Scores (``fused``: see ``vertical_slash_scores``) -> the per-head ranking."""
        vertical, slash = vertical_slash_scores(q, k, self.approx_window, fused=fused)
        return VerticalSlashIndex.build(vertical, slash, q.shape[1], self.sinks, self.local)

    def budgets(self, index: VerticalSlashIndex, target: float) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Per-head (n_vertical [Hq], n_slash [Hq]) whose total pairs are closest to ``target``.

        ``target`` counts the whole layer's heads; the pairs of the local heads are summed over the
        tensor-parallel ranks (``common.head_group``), so every rank finds the n one rank would.
        """
        hq = index.vertical_order.shape[0]
        base_v = torch.full((hq,), index.n_forced_vertical, device=index.vertical_order.device)
        base_s = torch.full_like(base_v, index.n_forced_slash)

        def counts(n) -> tuple[torch.Tensor, torch.Tensor]:  # n: int or [C, 1] tensor of candidates
            return torch.clamp(base_v + n, max=index.s), torch.clamp(base_s + n, max=index.s)

        def layer_pairs(candidates: list[int]) -> list[float]:
            n = torch.tensor(candidates, device=base_v.device)[:, None]
            return head_group().sum(index.pairs(*counts(n)).sum(-1)).tolist()

        # The overlap-free count bounds the pairs from above, so its crossing bounds n from below.
        upper = head_group().sum(index.upper_totals(index.n_forced_vertical, index.n_forced_slash))
        start = int(torch.searchsorted(upper, torch.tensor([target], dtype=upper.dtype, device=upper.device)))
        n = search_int_batched(layer_pairs, 0, index.s, target, start=start)
        return *counts(n), {"n": n}

    def plan(
        self, q: torch.Tensor, k: torch.Tensor, fused: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, float, dict]:
        """Index building: (vertical_idx [Hq,NV], slash_idx [Hq,NS], computed pairs, budget info).

        ``fused`` picks the scoring path (default: the Triton kernel on CUDA, see ``vertical_slash_scores``).
        """
        index = self.index(q, k, fused=fused)
        # The budget is the layer's: all its query heads, of which this rank holds an equal share.
        layer_heads = q.shape[0] * head_group().size
        target = causal_pairs(q.shape[1], k.shape[1]) * layer_heads / self.compression_ratio
        n_vertical, n_slash, info = self.budgets(index, target)
        computed = float(index.pairs(n_vertical, n_slash).sum())
        v_idx, s_idx = index.indices(n_vertical, n_slash)
        return v_idx, s_idx, computed, info

    def prefill(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> AttentionResult:
        check_shapes(q, k, v)
        total = causal_pairs(q.shape[1], k.shape[1]) * q.shape[0]
        if self.is_dense:
            return AttentionResult(dense_attention(q, k, v), total, total)
        v_idx, s_idx, computed, info = self.plan(q, k)
        out = vertical_slash_attention(q, k, v, v_idx, s_idx)
        return AttentionResult(out, computed, total, info=info)
