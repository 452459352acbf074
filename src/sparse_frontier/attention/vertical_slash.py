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
from .base import COUNTINGS, AttentionMethod, AttentionResult, causal_pairs, dense_attention
from .common import (
    MAX_CHUNK_ELEMENTS,
    check_positive_int,
    check_shapes,
    head_group,
    search_int_batched,
    window_probs,
)


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

    def kernel_cells(self, n_vertical: torch.Tensor, n_slash: torch.Tensor) -> torch.Tensor:
        """[..., Hq] cells the paper's kernel computes for each head's first n_vertical / n_slash items.

        The authors' count (MInference's index conversion, 64 x 64 tiles): in every block of 64 query
        rows (the last one counted whole), each slash needs the 64 keys its diagonal crosses there
        (offsets at or beyond the block's end are skipped, and ranges reaching before key 0 become keys
        0..63). Walking the ranges from the left, one more 64-key tile is added where the next range
        passes the last tile's end: it starts at that end when the range touches or overlaps it,
        else at the range's own start (a new run of tiles). A vertical inside a tile costs
        nothing; one left of the last tile's end and outside every tile costs a 64-row column
        piece. Cells = 64 * 64 per tile + 64 per column piece; they may exceed the causal total at
        short lengths. Same shapes and candidate dims as ``pairs``.
        """
        hq, s = self.slash_order.shape
        shape = n_vertical.shape
        n_vertical, n_slash = n_vertical.reshape(-1, hq), n_slash.reshape(-1, hq)  # [C, Hq]
        device = n_vertical.device
        tile = KERNEL_TILE
        ends = (s - self.t) + tile * torch.arange(1, -(-self.t // tile) + 1, device=device)  # [R] row ends
        cells = []
        # Lanes are (candidate, head); candidates go in chunks so the [lanes, S] prefix stays small.
        per_chunk = max(1, MAX_CHUNK_ELEMENTS // max(1, hq * (s + 1) * 4))
        for c0 in range(0, n_vertical.shape[0], per_chunk):
            nv, ns = n_vertical[c0 : c0 + per_chunk], n_slash[c0 : c0 + per_chunk]
            chosen = self.vertical_rank[None] < nv[..., None]  # [C, Hq, S] by key
            # int32: half the bytes of the largest tensor here (counts stay below S).
            prefix = torch.nn.functional.pad(chosen.flatten(0, 1).cumsum(1, dtype=torch.int32), (1, 0))
            offsets = self._chosen_offsets_descending(ns)  # [L, K], padding -1 at the end
            cells.append(_count_cells(offsets, prefix, ends, tile).view(nv.shape))
        return torch.cat(cells).reshape(shape)

    def _chosen_offsets_descending(self, n_slash: torch.Tensor) -> torch.Tensor:
        """[C, Hq] counts -> [C * Hq, max count] each head's chosen offsets, descending, padded with -1."""
        width = int(n_slash.max()) if n_slash.numel() else 0
        head = self.slash_order[:, :width].expand(n_slash.shape[0], -1, -1)
        taken = torch.arange(width, device=n_slash.device) < n_slash[..., None]
        return torch.where(taken, head, -1).flatten(0, 1).sort(dim=1, descending=True).values

    def upper_totals(self, n_vertical: torch.Tensor, n_slash: torch.Tensor) -> torch.Tensor:
        """[B] pairs of all heads for B uniform budgets (n_vertical[b] verticals, n_slash[b] slashes
        each), counting the vertical-slash overlap twice: an upper bound of ``pairs``, in one pass
        over the covers."""
        def total(cover: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
            return _prefix_at(cover, n[:, None].expand(-1, cover.shape[0])).sum(1)

        return total(self.vertical_cover, n_vertical) + total(self.slash_cover, n_slash)

    def indices(self, n_vertical: torch.Tensor, n_slash: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(vertical_idx [Hq, NV], slash_idx [Hq, NS]) int64, ascending, padded with -1 per head."""
        return _take(self.vertical_order, n_vertical), _take(self.slash_order, n_slash)


def search_batch(like: torch.Tensor) -> int:
    """Candidate budgets per round of a budget search: on a GPU a round is a launch and a host sync
    whose walk is the same length for one candidate or six, so rounds are few and wide; on the CPU
    the count costs in proportion to its candidates, so one at a time."""
    return 6 if like.is_cuda else 1


#: Side of the paper kernel's tiles (MInference's BLOCK_M = BLOCK_N = 64), for its cell count.
KERNEL_TILE = 64


def _count_cells(offsets: torch.Tensor, prefix: torch.Tensor, ends: torch.Tensor, tile: int) -> torch.Tensor:
    """``_kernel_cells``: one Triton launch on CUDA (kernels/vertical_slash/triton_cells.py), whose
    walk takes one step per slash, where this PyTorch form takes a round of launches per run."""
    if offsets.is_cuda:
        from ..kernels.vertical_slash.triton_cells import kernel_cells_triton

        return kernel_cells_triton(offsets, prefix, ends, tile)
    return _kernel_cells(offsets, prefix, ends, tile)


def _kernel_cells(offsets: torch.Tensor, prefix: torch.Tensor, ends: torch.Tensor, tile: int) -> torch.Tensor:
    """The kernel count of ``VerticalSlashIndex.kernel_cells`` for L lanes (a head under one budget).

    offsets [L, K]: chosen slash offsets, descending, padded with -1; prefix [L, S + 1]: chosen
    verticals left of each key; ends [R]: one past the last query position of each row block.
    -> [L] cells (int64). Every row block of every lane is walked at once. Offsets whose gaps are at most
    ``tile`` form a run, and a run never starts a second run of tiles: each step takes one run
    (its part that reaches the block) in closed form, so the loop is over runs, not offsets.
    """
    lanes, width = offsets.shape
    s = prefix.shape[1] - 1
    dev = offsets.device
    valid = offsets >= 0
    if width == 0:
        return torch.zeros(lanes, dtype=torch.long, device=dev)
    gap_break = torch.ones_like(valid)
    gap_break[:, 1:] = (offsets[:, :-1] - offsets[:, 1:]) > tile
    run = torch.where(valid, (gap_break & valid).cumsum(1) - 1, width)  # run id; padding -> width
    n_runs = int(run.masked_fill(~valid, -1).max()) + 1
    slots = torch.arange(width, device=dev).expand(lanes, -1)
    first = torch.full((lanes, width + 1), width, device=dev).scatter_reduce(1, run, slots, "amin")
    last = torch.full((lanes, width + 1), -1, device=dev).scatter_reduce(1, run, slots, "amax")
    # Offsets at or beyond a block's end do not reach it: its walk starts at slot `skip`.
    ascending = -offsets.masked_fill(~valid, -1 - 2 * s)
    skip = torch.searchsorted(ascending, -ends.expand(lanes, -1).contiguous(), right=True)
    keys = offsets.clamp(min=0)

    def reach(slot: torch.Tensor) -> torch.Tensor:  # right end of a slash's key range per block
        return torch.clamp(ends - keys.gather(1, slot.clamp(0, width - 1)), min=tile)

    def verticals_before(x: torch.Tensor) -> torch.Tensor:
        return prefix.gather(1, x.clamp(0, s))

    shape = (lanes, ends.shape[0])
    end = torch.full(shape, -1, device=dev)  # end of the current run of tiles (-1: none yet)
    start = torch.zeros(shape, dtype=torch.long, device=dev)
    tiles = torch.zeros(shape, dtype=torch.long, device=dev)
    covered = torch.zeros(shape, dtype=torch.long, device=dev)
    for r in range(n_runs):
        lo, hi = first[:, r : r + 1], last[:, r : r + 1]  # [L, 1]
        active = hi >= skip
        x_first = reach(torch.maximum(lo, skip))
        x_last = reach(hi.expand(shape))
        fresh = active & (x_first - tile > end)
        grow = active & ~fresh & (x_first > end)
        covered += torch.where(fresh & (end >= 0), verticals_before(end) - verticals_before(start), 0)
        start = torch.where(fresh, x_first - tile, start)
        end = torch.where(fresh, x_first, torch.where(grow, end + tile, end))
        more = torch.where(active & (x_last > end), (x_last - end + tile - 1) // tile, 0)
        end = end + tile * more
        tiles += fresh.long() + grow.long() + more
    has = end >= 0
    covered += torch.where(has, verticals_before(end) - verticals_before(start), 0)
    columns = torch.where(has, verticals_before(end), 0) - covered
    return (tiles * tile * tile + columns * tile).sum(1)


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
    density:       what the budget is calibrated on. ``kernel`` (default, the paper's Table 6 and the
                   authors' code): the cells their kernel computes, see ``VerticalSlashIndex.kernel_cells``;
                   ``exact``: the selected causal query-key pairs. Both are reported (``counts``).
    forced_in_budget: True (default, the authors' code): each head keeps ``n`` verticals and ``n``
                   slashes in all, the sinks and the local diagonals among them; False: ``n`` of each
                   on top of the forced ones.
    Budget parameter: ``n``, found by search at call time on this input, so that the chosen count
    over all causal pairs is as close as possible to 1 / compression_ratio.
    Shapes: prefill(q [Hq,T,D], k [Hkv,S,D], v [Hkv,S,D]) -> out [Hq,T,D].
    """

    name: ClassVar[str] = "vertical_slash"
    phase: ClassVar[str] = "prefill"
    approx_window: int = 256
    sinks: int = 4
    local: int = 64
    density: str = "kernel"
    forced_in_budget: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int(self.name, "approx_window", self.approx_window)
        check_positive_int(self.name, "sinks", self.sinks, minimum=0)
        check_positive_int(self.name, "local", self.local)
        if self.density not in COUNTINGS:
            raise ValueError(
                f"{self.name}: density must be one of {', '.join(COUNTINGS)} (what the budget is "
                f"calibrated on), got {self.density!r}."
            )
        if not isinstance(self.forced_in_budget, bool):
            raise ValueError(
                f"{self.name}: forced_in_budget must be true or false, got {self.forced_in_budget!r}."
            )

    def index(self, q: torch.Tensor, k: torch.Tensor, fused: bool | None = None) -> VerticalSlashIndex:
        """Scores (``fused``: see ``vertical_slash_scores``) -> the per-head ranking."""
        vertical, slash = vertical_slash_scores(q, k, self.approx_window, fused=fused)
        return VerticalSlashIndex.build(vertical, slash, q.shape[1], self.sinks, self.local)

    def cost(
        self, index: VerticalSlashIndex, n_vertical: torch.Tensor, n_slash: torch.Tensor
    ) -> torch.Tensor:
        """[..., Hq] work per head under this method's ``density`` counting."""
        if self.density == "kernel":
            return index.kernel_cells(n_vertical, n_slash)
        return index.pairs(n_vertical, n_slash)

    def uniform_counts(
        self, index: VerticalSlashIndex, n: torch.Tensor | int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-head (n_vertical, n_slash) for the uniform budget ``n`` (int or [C, 1] candidates)."""
        forced_v, forced_s = index.n_forced_vertical, index.n_forced_slash
        n = torch.as_tensor(n, device=index.vertical_order.device)
        if self.forced_in_budget:
            n_v, n_s = torch.clamp(n, min=forced_v), torch.clamp(n, min=forced_s)
        else:
            n_v, n_s = forced_v + n, forced_s + n
        ones = torch.ones(index.vertical_order.shape[0], dtype=torch.long, device=n.device)
        return torch.clamp(n_v * ones, max=index.s), torch.clamp(n_s * ones, max=index.s)

    def budgets(self, index: VerticalSlashIndex, target: float) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Per-head (n_vertical [Hq], n_slash [Hq]) whose total work is closest to ``target``.

        ``target`` counts the whole layer's heads; the work of the local heads is summed over the
        tensor-parallel ranks (``common.head_group``), so every rank finds the n one rank would.
        """
        n = self.uniform_budget(index, target, index.s)
        return *self.uniform_counts(index, n), {"n": n}

    def uniform_budget(self, index: VerticalSlashIndex, target: float, cap: int) -> int:
        """The uniform n in [its minimum, cap] whose layer work is closest to ``target``."""
        def layer_total(candidates: list[int]) -> list[float]:
            n = torch.tensor(candidates, device=index.vertical_order.device)[:, None]
            return head_group().sum(self.cost(index, *self.uniform_counts(index, n)).sum(-1)).tolist()

        # The overlap-free count U(n) of every n, in one pass: the search's proxy of the work.
        every_n = torch.arange(index.s + 1, device=index.vertical_order.device)
        every_count = (c[:, 0] for c in self.uniform_counts(index, every_n[:, None]))
        upper = head_group().sum(index.upper_totals(*every_count)).double().cpu()  # one transfer
        # With the forced items inside the budget, n is at least their number (the authors' minimum).
        lo = min(max(index.n_forced_vertical, index.n_forced_slash), index.s) if self.forced_in_budget else 0
        hi = max(lo, min(cap, index.s))
        if self.density == "kernel":
            # Kernel cells >= selected pairs >= U / 2 (a pair is counted at most twice in U), so
            # the n where U reaches twice the target bounds the answer from above.
            bound = int(torch.searchsorted(upper, torch.tensor([2 * target], dtype=upper.dtype)))
            hi = max(lo, min(hi, bound))
        batch, first = search_batch(index.vertical_order), self.first_guesses
        return search_int_batched(layer_total, lo, hi, target, shape=upper, first=first, batch=batch)

    @property
    def first_guesses(self) -> tuple[float, ...]:
        """Where the searches look first: U at these multiples of the target. Selected pairs lie in
        [U / 2, U]; kernel cells mostly in [U, 2.5 U] (tiles cover more than the pairs)."""
        return (0.4, 0.55, 0.75, 0.9, 1.0) if self.density == "kernel" else (1.0, 1.1, 1.25, 1.5)

    def plan(
        self, q: torch.Tensor, k: torch.Tensor, fused: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, float, dict]:
        """Index building: (vertical_idx [Hq,NV], slash_idx [Hq,NS], work under ``density``, budget info).

        The budget info also holds both counts (``exact`` pairs and ``kernel`` cells) of this rank's heads.
        ``fused`` picks the scoring path (default: the Triton kernel on CUDA, see ``vertical_slash_scores``).
        """
        index = self.index(q, k, fused=fused)
        # The budget is the layer's: all its query heads, of which this rank holds an equal share.
        layer_heads = q.shape[0] * head_group().size
        target = causal_pairs(q.shape[1], k.shape[1]) * layer_heads / self.compression_ratio
        n_vertical, n_slash, info = self.budgets(index, target)
        counts = {
            "exact": float(index.pairs(n_vertical, n_slash).sum()),
            "kernel": float(index.kernel_cells(n_vertical, n_slash).sum()),
        }
        v_idx, s_idx = index.indices(n_vertical, n_slash)
        return v_idx, s_idx, counts[self.density], {**info, "counts": counts}

    def prefill(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> AttentionResult:
        check_shapes(q, k, v)
        total = causal_pairs(q.shape[1], k.shape[1]) * q.shape[0]
        if self.is_dense:
            return AttentionResult(dense_attention(q, k, v), total, total)
        v_idx, s_idx, computed, info = self.plan(q, k)
        out = vertical_slash_attention(q, k, v, v_idx, s_idx)
        counts = info.pop("counts")
        return AttentionResult(out, computed, total, info=info, counts=counts)
