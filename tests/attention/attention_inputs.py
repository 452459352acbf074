"""Inputs for the attention-method tests: random q/k/v, with structure planted where asked.

Random inputs alone would let a selection bug pass (every key looks alike), so tests plant
keys, diagonals or pages that a correct method must pick.
"""

from __future__ import annotations

import torch


def random_qkv(hq: int, hkv: int, s: int, d: int = 16, seed: int = 0, t: int | None = None):
    """q [hq, t, d], k and v [hkv, s, d] float32 with unit-variance entries (t defaults to s)."""
    gen = torch.Generator().manual_seed(seed)
    t = s if t is None else t
    q = torch.randn(hq, t, d, generator=gen)
    k = torch.randn(hkv, s, d, generator=gen)
    v = torch.randn(hkv, s, d, generator=gen)
    return q, k, v


def planted_qkv(
    hq: int, hkv: int, s: int, strong: list[int], d: int = 16, seed: int = 0, strength: float = 3.0
):
    """Random q/k/v where keys at ``strong`` positions attract every query of every head.

    All queries have 2.0 in channel 0; the planted keys point along it, so their
    logit is 2 * ``strength`` above the noise for every query.
    """
    q, k, v = random_qkv(hq, hkv, s, d, seed)
    q[..., 0] = 2.0
    k[:, strong] = 0.0
    k[:, strong, 0] = strength * d**0.5
    return q, k, v


def gqa_permutation(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, perm: list[int]):
    """Permute KV heads by ``perm`` and move each KV head's query group along with it."""
    group = q.shape[0] // k.shape[0]
    q_perm = torch.cat([q[p * group : (p + 1) * group] for p in perm])
    return q_perm, k[perm], v[perm]


def query_perm(hq: int, hkv: int, perm: list[int]) -> list[int]:
    """The query-head order that ``gqa_permutation`` produces."""
    group = hq // hkv
    return [p * group + i for p in perm for i in range(group)]
