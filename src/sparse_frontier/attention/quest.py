"""Quest (Tang et al., 2024): query-aware page selection during decoding, full cache retained.

Paper Appendix A.1.6: the cache is cut into pages of ``page_size`` (16) tokens, each summarised
by the per-channel minimum and maximum of its keys. For a query q the page's score is an upper
bound on any q.k inside it, sum_d max(q_d * min_d, q_d * max_d). The top-scoring pages are read,
always including the page that holds the current token; nothing is evicted. By default (as in the
authors' released configuration) the query heads of a KV group share one page set, chosen by the
sum of their scores, so the group reads each of its pages once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..kernels.common.checks import check_triton_head_dim
from ..kernels.ops import quest_decode_attention, quest_page_scores
from ..kernels.quest.triton_quest import quest_decode_attention_triton
from ..kernels.quest.triton_select import (
    quest_page_list_attention_triton,
    quest_select_top_pages_triton,
    quest_selection_scores_triton,
)
from . import register
from .base import AttentionMethod, AttentionResult
from .common import check_positive_int, check_shapes


def page_bounds(
    k: torch.Tensor, page_size: int, key_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """k [Hkv, S, D] -> (min, max) [Hkv, P, D] float32 per page, P = ceil(S / page_size).

    Hidden keys (key_mask False) and the padding of a short last page are left out; a page with
    no visible key gets min = +inf and max = -inf, which ``page_scores`` turns into -inf.
    """
    hkv, s, d = k.shape
    if key_mask is None:
        # Min and max are exact in the keys' own dtype: reduce full pages in place, no float copy.
        full = s // page_size
        pages = k[:, : full * page_size].view(hkv, full, page_size, d)
        low, high = pages.amin(2).float(), pages.amax(2).float()
        if s % page_size:
            tail = k[:, full * page_size :]
            low = torch.cat([low, tail.amin(1, keepdim=True).float()], 1)
            high = torch.cat([high, tail.amax(1, keepdim=True).float()], 1)
        return low, high
    n_pages = math.ceil(s / page_size)
    pad = n_pages * page_size - s
    visible = torch.nn.functional.pad(key_mask, (0, pad), value=False)[..., None]
    kp = torch.nn.functional.pad(k, (0, 0, 0, pad))  # the keys' own dtype: no float32 copy of the cache
    low = kp.masked_fill(~visible, float("inf")).view(hkv, n_pages, page_size, d).amin(2)
    high = kp.masked_fill(~visible, float("-inf")).view(hkv, n_pages, page_size, d).amax(2)
    return low.float(), high.float()


def page_scores(q: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """q [Hq, 1, D], bounds [Hkv, P, D] -> [Hq, P] upper bound of q.k over each page (-inf if empty).

    The op ``quest_page_scores``: one Triton launch on CUDA, the PyTorch reference elsewhere.
    """
    return quest_page_scores(q, low, high)


def exact_page_scores(q: torch.Tensor, k: torch.Tensor, page_size: int) -> torch.Tensor:
    """q [Hq, 1, D], k [Hkv, S, D] -> [Hq, P] float32: the largest q.k in each page (-inf past S).

    What ``page_scores`` bounds from above; ranking pages by it is the oracle Quest approximates
    (a diagnostic on the CPU: it reads every key, as dense attention does).
    """
    hkv, s, _ = k.shape
    hq = q.shape[0]
    n_pages = math.ceil(s / page_size)
    dots = torch.bmm(q.float().view(hkv, hq // hkv, -1), k.float().transpose(1, 2)).view(hq, s)
    dots = torch.nn.functional.pad(dots, (0, n_pages * page_size - s), value=float("-inf"))
    return dots.view(hq, n_pages, page_size).amax(-1)


@dataclass
class PageSummaries:
    """One layer's page bounds, kept between the decode steps of one sequence.

    In an append-only cache a full page never changes, so each is summarised once; a step only
    re-reads the current, partial page. Re-summarising every step would read all keys, half of
    what dense decoding reads, and cap Quest's gain near 2x.
    low, high: [Hkv, capacity, D] buffers in the keys' dtype (a minimum or maximum of keys is one of
    them, so nothing is rounded; half the bytes of float32 for the scoring to read); ``done`` full
    pages are valid.
    """

    page_size: int
    low: torch.Tensor | None = None
    high: torch.Tensor | None = None
    done: int = 0
    length: int = 0

    def bounds(self, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """k [Hkv, S, D], the same cache as at earlier calls plus new tokens -> (low, high) [Hkv, P, D]."""
        low, high = self.full_bounds(k)
        s, size = k.shape[1], self.page_size
        full = s // size
        if s > full * size:  # the current page, partial: summarised afresh
            tail = k[:, full * size :]
            low[:, full] = tail.amin(1)
            high[:, full] = tail.amax(1)
        return low, high

    def full_bounds(self, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As ``bounds``, but a partial last page's row is left stale: for a selection that reads
        the current page anyway, which saves the step four small launches."""
        hkv, s, d = k.shape
        size = self.page_size
        full, n_pages = s // size, math.ceil(s / size)
        stale = self.low is None or self.low.shape[0] != hkv or self.low.dtype != k.dtype
        if stale or s < self.length:  # new, shrunk or another cache: start over
            self.low = self.high = None
            self.done = 0
        capacity = 0 if self.low is None else self.low.shape[1]
        if n_pages > capacity:
            self._grow(hkv, max(n_pages + 64, 2 * capacity), d, k)
        if full > self.done:
            pages = k[:, self.done * size : full * size].view(hkv, full - self.done, size, d)
            self.low[:, self.done : full] = pages.amin(2)
            self.high[:, self.done : full] = pages.amax(2)
            self.done = full
        self.length = s
        return self.low[:, :n_pages], self.high[:, :n_pages]

    def _grow(self, hkv: int, capacity: int, d: int, k: torch.Tensor) -> None:
        low = torch.empty(hkv, capacity, d, dtype=k.dtype, device=k.device)
        high = torch.empty_like(low)
        if self.low is not None:
            low[:, : self.done] = self.low[:, : self.done]
            high[:, : self.done] = self.high[:, : self.done]
        self.low, self.high = low, high


def select_pages(scores: torch.Tensor, n_pages: int, current_page: int) -> torch.Tensor:
    """[Hq, P] scores -> page_mask [Hq, P] bool: the current page plus the n_pages - 1 best others."""
    hq, p = scores.shape
    mask = torch.zeros(hq, p, dtype=torch.bool, device=scores.device)
    mask[:, current_page] = True
    others = min(max(n_pages - 1, 0), p - 1)
    if others:
        ranked = scores.masked_fill(mask, float("-inf")).topk(others, dim=1).indices
        mask.scatter_(1, ranked, True)
    return mask


def select_pages_by_tokens(
    scores: torch.Tensor, page_tokens: torch.Tensor, budget: torch.Tensor, current_page: int
) -> torch.Tensor:
    """Best pages until each head has read about ``budget`` visible tokens (for caches with holes).

    scores, page_tokens [Hq, P] (visible tokens per page), budget [Hq] -> page_mask [Hq, P] bool:
    the current page, then pages by descending score, as many as bring the visible tokens read
    closest to the budget.
    """
    hq, p = scores.shape
    ranked = scores.clone()
    ranked[:, current_page] = float("inf")
    order = ranked.argsort(dim=1, descending=True, stable=True)
    read = page_tokens.gather(1, order).cumsum(1)  # [Hq, P] tokens read after the first n pages
    first_over = torch.clamp(torch.searchsorted(read, budget[:, None]), max=p - 1)  # [Hq, 1]
    over = read.gather(1, first_over)
    under = torch.where(first_over > 0, read.gather(1, torch.clamp(first_over - 1, min=0)), 0.0)
    n = torch.where(over - budget[:, None] <= budget[:, None] - under, first_over + 1, first_over)
    n = torch.clamp(n, min=1)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(p, device=order.device).expand(hq, p))
    return rank < n


@register
@dataclass
class Quest(AttentionMethod):
    """Quest decode attention (Tang et al., 2024; paper A.1.6).

    page_size: tokens per page (16).
    share_pages: True (default, the authors' configuration): one page set per KV group, ranked by
                 the sum of the group's query-head scores; False: each query head picks its own.
    Budget parameter: ``token_budget`` = visible tokens / compression_ratio per decode step, read
    as whole pages: the current page plus round((budget - current page's tokens) / page_size)
    others (closed form, paper Table 6). With a key_mask (a cache with evicted or padded slots)
    each head instead takes pages in score order until the visible tokens it reads come closest
    to its budget. Density = attended tokens / visible tokens of the step, summed over query
    heads (with shared pages: the distinct tokens each group reads).
    Shapes: decode(q [Hq,1,D], k [Hkv,S,D], v [Hkv,S,D], key_mask [Hkv,S] | None) -> out [Hq,1,D];
    the query sits at position S - 1, so the current page is (S - 1) // page_size.
    """

    name: ClassVar[str] = "quest"
    phase: ClassVar[str] = "decode"
    page_size: int = 16
    share_pages: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int(self.name, "page_size", self.page_size)
        if not isinstance(self.share_pages, bool):
            raise ValueError(f"{self.name}: share_pages must be true or false, got {self.share_pages!r}.")

    def pages_for(self, context: int, current_tokens: int, n_pages: int) -> int:
        """Pages (current included) whose tokens come closest to context / compression_ratio."""
        budget = context / self.compression_ratio
        return min(max(1 + round((budget - current_tokens) / self.page_size), 1), n_pages)

    def plan(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        summaries: PageSummaries | None = None,
    ) -> torch.Tensor:
        """Index building: page_mask [Hq, P] bool for this decode step (rows of a group equal with
        ``share_pages``).

        ``summaries``: this layer's page bounds from earlier steps (a cache without hidden slots).
        """
        hkv, s, _ = k.shape
        group = q.shape[0] // hkv
        if q.is_cuda and key_mask is None and _fused(self.page_size, k.shape[1]):
            # The fused selection's mask: the same pages as the decode step takes.
            check_triton_head_dim("quest", q.shape[-1])
            _, low, high, n, current = _selection_inputs(self, k, summaries)
            scores, hist = quest_selection_scores_triton(
                q, low, high, low.shape[1], current, self.share_pages
            )
            mask = quest_select_top_pages_triton(scores, n, as_list=False, histogram=hist)
            return mask.repeat_interleave(group, 0) if self.share_pages else mask
        if key_mask is None and summaries is not None:
            low, high = summaries.bounds(k)
        else:
            low, high = page_bounds(k, self.page_size, key_mask)
        current = (s - 1) // self.page_size
        scores = self.page_ranking(q, k, low, high)  # [Hq, P]
        if self.share_pages:
            scores = scores.view(hkv, group, -1).sum(1)  # [Hkv, P]: the group's summed bounds
        if key_mask is None:
            n = self.pages_for(s, s - current * self.page_size, low.shape[1])
            mask = select_pages(scores, n, current)
        else:
            # Pages with hidden slots hold fewer tokens: count what each page really offers, per head.
            pad = low.shape[1] * self.page_size - s
            tokens = torch.nn.functional.pad(key_mask, (0, pad)).view(hkv, -1, self.page_size).sum(-1).float()
            if not self.share_pages:
                tokens = tokens.repeat_interleave(group, 0)
            mask = select_pages_by_tokens(scores, tokens, tokens.sum(1) / self.compression_ratio, current)
        return mask.repeat_interleave(group, 0) if self.share_pages else mask

    def page_ranking(
        self, q: torch.Tensor, k: torch.Tensor, low: torch.Tensor, high: torch.Tensor
    ) -> torch.Tensor:
        """[Hq, P]: what the PyTorch selection ranks pages by, Quest's upper bound of q.k over each
        page (a diagnostic subclass ranks by the exact score, benchmarks/quest_needle_diagnosis.py)."""
        return page_scores(q, low, high)

    def decode(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        memo: dict | None = None,
    ) -> AttentionResult:
        check_shapes(q, k, v)
        if q.shape[1] != 1:
            raise ValueError(f"quest: decode takes one query per head (q [Hq,1,D]), got T={q.shape[1]}.")
        if self.is_dense:
            return super().decode(q, k, v, key_mask, memo)
        hq = q.shape[0]
        hkv, s, _ = k.shape
        group = hq // hkv
        summaries = None if memo is None else memo.setdefault("pages", PageSummaries(self.page_size))
        if q.is_cuda and key_mask is None and _fused(self.page_size, k.shape[1]):
            out, _ = quest_decode_fused(self, q, k, v, summaries)
        else:
            page_mask = self.plan(q, k, key_mask, summaries)
            out = quest_decode_attention(q, k, v, page_mask, page_size=self.page_size, key_mask=key_mask)
        if key_mask is None:
            # Every head reads its n pages: all full but the current one. Counted on the host, so
            # the step never waits for the GPU.
            current = (s - 1) // self.page_size
            n = self.pages_for(s, s - current * self.page_size, current + 1)
            read = hq * ((n - 1) * self.page_size + s - current * self.page_size)
            return AttentionResult(out, float(read), float(hq * s), info={"pages": n})
        pages = page_mask.repeat_interleave(self.page_size, dim=1)[:, :s]
        read = pages & key_mask.repeat_interleave(group, 0)
        total = float(key_mask.sum()) * group
        return AttentionResult(out, float(read.sum()), total, info={"pages": int(page_mask[0].sum())})


def _fused(page_size: int, s: int) -> bool:
    """The fused kernels step through 64 keys at a time, whole pages each; other page sizes take the
    unfused path."""
    return 64 % page_size == 0


def _selection_inputs(
    method: Quest, k: torch.Tensor, summaries: PageSummaries | None
) -> tuple[int, torch.Tensor, torch.Tensor, int, int]:
    """(S, low, high [Hkv, P, D], pages to read n, current page) of a cache without hidden slots.

    The current page's bounds may be stale: the selection takes that page without scoring it.
    """
    s, size = k.shape[1], method.page_size
    low, high = summaries.full_bounds(k) if summaries is not None else page_bounds(k, size)
    current = (s - 1) // size
    return s, low, high, method.pages_for(s, s - current * size, low.shape[1]), current


def quest_decode_fused(
    method: Quest, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, summaries: PageSummaries | None = None
) -> tuple[torch.Tensor, int]:
    """Quest's decode step in Triton without a host synchronisation (kernels/quest/triton_select.py):
    q [Hq, 1, D], k/v [Hkv, S, D] (no hidden slots) -> (out [Hq, 1, D], pages each head reads).

    Page scores from the kept summaries, the exact top-n by a threshold search (a histogram of the
    top key bits, then 2-bit passes), attention over the selected pages: with shared pages over one
    ascending page list per kv head, otherwise over a per-head page mask. Same pages as the PyTorch
    definition (``Quest.plan`` on CPU tensors) up to ties of the bounds at the n-th place (ties go
    to lower pages).
    """
    check_triton_head_dim("quest", q.shape[-1])
    _, low, high, n, current = _selection_inputs(method, k, summaries)
    scores, hist = quest_selection_scores_triton(q, low, high, low.shape[1], current, method.share_pages)
    if method.share_pages:
        pages = quest_select_top_pages_triton(scores, n, as_list=True, histogram=hist)  # [Hkv, n]
        return quest_page_list_attention_triton(q, k, v, pages, method.page_size), n
    mask = quest_select_top_pages_triton(scores, n, as_list=False, histogram=hist)  # [Hq, P]
    return quest_decode_attention_triton(q, k, v, mask, method.page_size), n
