"""SnapKV (Li et al., 2024b): KV-cache eviction after prefill with a uniform per-head capacity.

Paper Appendix A.1.4: the last ``approx_window`` (256) queries score every cached token by the
attention they give it; the scores are smoothed by 1D average pooling (kernel 21) so that the
neighbours of an important token survive with it; the first ``sinks`` (4) and the last
``recent`` (128) tokens are always kept; every KV head keeps exactly ``token_capacity`` tokens.
Prefill itself is dense; decoding then reads only the kept tokens (the engine compacts the cache).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from . import register
from .base import AttentionMethod, AttentionResult, dense_attention
from .common import check_positive_int, check_shapes, smooth, window_probs


def token_scores(q: torch.Tensor, k: torch.Tensor, window: int, aggregate: str, kernel: int) -> torch.Tensor:
    """Importance of every cached token for each KV head, smoothed.

    q [Hq, T, D], k [Hkv, S, D] -> [Hkv, S] float32. ``aggregate`` ("mean" or "max") reduces
    over the window's queries and over the query heads that share a KV head (GQA).
    """
    hq = q.shape[0]
    hkv, s, _ = k.shape
    group = hq // hkv
    scores = torch.empty(hkv, s, dtype=torch.float32, device=q.device)
    for h0, probs in window_probs(q, k, window):
        per_head = probs.mean(1) if aggregate == "mean" else probs.amax(1)  # [h, S]
        grouped = per_head.view(-1, group, s)
        scores[h0 // group : h0 // group + grouped.shape[0]] = (
            grouped.mean(1) if aggregate == "mean" else grouped.amax(1)
        )
    return smooth(scores, kernel)


def forced_tokens(s: int, sinks: int, recent: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[S] bool: the first ``sinks`` and last ``recent`` positions, which eviction never touches."""
    pos = torch.arange(s, device=device)
    return (pos < sinks) | (pos >= s - recent)


def compaction(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """How an engine compacts an evicted cache: keep [Hkv, S] bool -> (order [Hkv, W], counts [Hkv]).

    ``order`` lists each head's kept slots first, in their original order (a stable sort), W being
    the largest head's count; a head that keeps fewer (Ada-SnapKV) is padded with evicted slots,
    which its key mask hides from slot ``counts[h]`` on.
    """
    counts = keep.sum(dim=1)
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices[:, : int(counts.max())]
    return order, counts


def padding_mask(counts: torch.Tensor) -> torch.Tensor | None:
    """The key mask of a compacted cache: [Hkv, max(counts)] True on each head's first counts[h] slots
    (its kept tokens); None when every head keeps as many (nothing to hide)."""
    width = int(counts.max())
    if bool((counts == width).all()):
        return None
    return torch.arange(width, device=counts.device)[None, :] < counts[:, None]


def top_per_row(scores: torch.Tensor, n: int, keep: torch.Tensor) -> torch.Tensor:
    """Add to ``keep`` [H, S] the ``n`` highest-scoring not-yet-kept tokens of each row."""
    if n <= 0:
        return keep
    idx = scores.masked_fill(keep, float("-inf")).topk(n, dim=1).indices
    return keep.scatter(1, idx, True)


@register
@dataclass
class SnapKV(AttentionMethod):
    """SnapKV KV-cache eviction (Li et al., 2024b; paper A.1.4).

    approx_window: recent queries that score the cache (256).   pool_kernel: smoothing width (21).
    sinks: first tokens always kept (4).   recent: last tokens always kept (128).
    Budget parameter: ``token_capacity`` = round(S / compression_ratio) tokens per KV head
    (closed form, paper Table 6), never fewer than sinks + recent nor more than S.
    Shapes: prefill(q [Hq,S,D], k [Hkv,S,D], v) -> AttentionResult with out [Hq,S,D] (dense) and
    keep [Hkv,S] bool; computed / total there is kept tokens / cached tokens, summed over KV heads.
    """

    name: ClassVar[str] = "snapkv"
    phase: ClassVar[str] = "kv-compression"
    approx_window: int = 256
    pool_kernel: int = 21
    sinks: int = 4
    recent: int = 128
    aggregate: ClassVar[str] = "mean"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int(self.name, "approx_window", self.approx_window)
        check_positive_int(self.name, "pool_kernel", self.pool_kernel)
        check_positive_int(self.name, "sinks", self.sinks, minimum=0)
        check_positive_int(self.name, "recent", self.recent, minimum=1)

    def token_capacity(self, s: int) -> int:
        """Tokens each KV head keeps out of ``s``."""
        return max(min(round(s / self.compression_ratio), s), min(self.sinks + self.recent, s))

    def select(self, scores: torch.Tensor, capacity: int) -> torch.Tensor:
        """[Hkv, S] scores -> keep [Hkv, S] bool with exactly ``capacity`` tokens per head."""
        hkv, s = scores.shape
        forced = forced_tokens(s, self.sinks, self.recent, scores.device).expand(hkv, s)
        return top_per_row(scores, capacity - int(forced[0].sum()), forced)

    def keep_mask(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """q [Hq,S,D], k [Hkv,S,D] -> [Hkv,S] bool: the tokens decoding may still read."""
        hkv, s, _ = k.shape
        capacity = self.token_capacity(s)
        if self.is_dense or capacity >= s:
            return torch.ones(hkv, s, dtype=torch.bool, device=k.device)
        scores = token_scores(q, k, self.approx_window, self.aggregate, self.pool_kernel)
        return self.select(scores, capacity)

    def prefill(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> AttentionResult:
        check_shapes(q, k, v)
        keep = self.keep_mask(q, k)
        info = {"token_capacity": self.token_capacity(k.shape[1])}
        return AttentionResult(dense_attention(q, k, v), float(keep.sum()), float(keep.numel()), keep, info)
