"""The contract every attention method keeps.

A method is a dataclass of hyper-parameters plus pure functions on the tensors
of ONE sequence (engines loop over requests, never batch inside a method):

    q: [Hq, T, D]   queries of this step (T = prompt length in prefill, 1 in decode)
    k: [Hkv, S, D]  every key the step can see (S >= T); query i sits at key position S - T + i
    v: [Hkv, S, D]

Hq is a multiple of Hkv (GQA): query head h reads key/value head h // (Hq // Hkv).
Attention is causal and scaled by 1/sqrt(D). No method reads a config or a file.

Every call returns an ``AttentionResult`` that says how many query-key pairs it
really computed, so the pipeline records achieved, not intended, compression.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ..kernels.ops import dense_attention
from .common import check_shapes

#: The phases a method can act in. ``kv-compression`` methods evict after prefill
#: and so sparsify decoding; the analysis groups them with ``decode``.
PHASES = ("dense", "prefill", "decode", "kv-compression")


def analysis_phase(phase: str) -> str:
    """The phase a method's results are compared in (paper Section 4: prefill vs decode)."""
    return {"kv-compression": "decode"}.get(phase, phase)


@dataclass
class AttentionResult:
    """What one attention call produced.

    out:      [Hq, T, D] attention output, in q's dtype.
    computed: query-key pairs actually computed, summed over query heads.
    total:    query-key pairs dense causal attention would compute, summed over query heads.
    keep:     eviction methods only: [Hkv, S] bool, the cached tokens decoding may still read.
    info:     the budget the method chose for this call (e.g. ``{"top_k": 12.4}``), for logs and docs.
    counts:   the same work under each counting of ``COUNTINGS`` where a method has both
              (Vertical-Slash, FlexPrefill); ``computed`` is the one its budget was calibrated on.
    """

    out: torch.Tensor
    computed: float
    total: float
    keep: torch.Tensor | None = None
    info: dict = field(default_factory=dict)
    counts: dict[str, float] = field(default_factory=dict)

    @property
    def density(self) -> float:
        return self.computed / self.total if self.total else 1.0


#: Ways to count a sparse prefill's work. exact: the query-key pairs selected. kernel: the cells the
#: paper's kernel computes (MInference's 64 x 64 tiles and 64-row column pieces, as the authors count).
COUNTINGS = ("exact", "kernel")


def causal_pairs(n_queries: int, n_keys: int) -> int:
    """Query-key pairs under a causal mask when the queries are the last ``n_queries`` of ``n_keys``."""
    offset = n_keys - n_queries
    return n_queries * offset + n_queries * (n_queries + 1) // 2


@dataclass
class AttentionMethod:
    """Base class: dense behaviour everywhere; subclasses override their phase.

    compression_ratio: the target, 1 = dense. Each method maps it to its own budget
    parameter from the actual sequence length at call time (``budget_for``), so a
    single configured ratio holds at every length.
    """

    name: ClassVar[str] = "dense"
    phase: ClassVar[str] = "dense"
    #: Part of the inference cache key (sparse_frontier.cache): bump it in a method's class when
    #: a change to its code changes what it selects or outputs, so its cached results are redone.
    version: ClassVar[int] = 1
    compression_ratio: float = 1.0
    extra: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not 1.0 <= self.compression_ratio <= 100.0:
            raise ValueError(
                f"{self.name}: compression_ratio must be between 1 and 100, got {self.compression_ratio}."
            )

    @property
    def is_dense(self) -> bool:
        return self.compression_ratio == 1.0

    def prefill(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> AttentionResult:
        """Attention over the whole prompt (T == S). Eviction methods also fill ``keep``."""
        check_shapes(q, k, v)
        t, s = q.shape[1], k.shape[1]
        pairs = causal_pairs(t, s) * q.shape[0]
        return AttentionResult(dense_attention(q, k, v), pairs, pairs)

    def decode(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        memo: dict | None = None,
    ) -> AttentionResult:
        """One new query (T == 1) against the cache; ``key_mask`` hides evicted or padded slots.

        ``memo``: a dict the engine keeps per sequence and layer across decode steps (for an
        append-only cache), where a method may keep what it derived from the keys, e.g. Quest's
        page summaries. None: nothing is kept.
        """
        check_shapes(q, k, v)
        out = dense_attention(q, k, v, key_mask)
        group = q.shape[0] // k.shape[0]
        # Pairs read: every visible key of each query head's kv head. The hidden slots of an
        # append-only cache never change (new tokens are visible), so they are counted once: a
        # count per step would make every layer wait for the GPU.
        hidden = 0
        if key_mask is not None:
            memo = {} if memo is None else memo
            if "hidden" not in memo:
                memo["hidden"] = int((~key_mask).sum())
            hidden = memo["hidden"]
        visible = k.shape[1] * k.shape[0] - hidden
        return AttentionResult(out, visible * group, visible * group)
