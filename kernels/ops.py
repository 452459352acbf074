"""Public sparse-attention ops: Triton on CUDA tensors, the PyTorch reference elsewhere.

All ops take ONE sequence (no batch dimension), GQA layout, queries being the last T of S
positions, scale 1/sqrt(D), softmax in float32, output in q's dtype, any length:

    q: [Hq, T, D]    k, v: [Hkv, S, D]    query head h reads kv head h // (Hq // Hkv)

Each op says which query-key pairs are computed; the matching ``*_pairs`` helpers in the
family's reference module count them exactly, for achieved-compression bookkeeping.
"""

from __future__ import annotations

import torch

from .block_select.reference import block_select_reference
from .block_sparse.reference import block_sparse_attention_reference
from .common.checks import check_index, check_mask, check_qkv, check_triton_head_dim
from .dense.reference import dense_attention_reference
from .dense.sliding import sliding_window_attention_sdpa
from .quest.reference import quest_decode_attention_reference, quest_page_scores_reference
from .vertical_slash.reference import vertical_slash_attention_reference


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def dense_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Exact causal GQA attention, the definition every method is measured against.

    key_mask: optional [Hkv, S] bool; False hides a key from every query of that head (a query that
    sees no key gets zeros). Returns [Hq, T, D] in q's dtype. On CUDA through fused kernels that keep
    no score matrix (``dense/fused.py``; a key_mask only with one query); on the CPU through torch's
    fused SDPA (``dense/cpu.py``). ``dense_attention_reference`` is the float32 definition both are
    tested against.
    """
    op = "dense_attention"
    check_qkv(op, q, k, v)
    if key_mask is not None:
        check_mask(op, "key_mask", key_mask, (k.shape[0], k.shape[1]), q.device)
    if q.is_cuda:
        from .dense.fused import dense_attention_fused

        return dense_attention_fused(q, k, v, key_mask)
    if q.device.type == "cpu":
        from .dense.cpu import dense_attention_cpu

        return dense_attention_cpu(q, k, v, key_mask)
    return dense_attention_reference(q, k, v, key_mask)


def sliding_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int) -> torch.Tensor:
    """Causal attention restricted to the last ``window`` positions (query p sees keys p - window < j
    <= p), as transformers' sliding-window layers compute it (Gemma 3's local layers, Mistral).

    Returns [Hq, T, D] in q's dtype, through SDPA one block of queries at a time (``dense/sliding.py``):
    O(T * window), on the CPU and on CUDA. ``sliding_window_attention_reference`` defines it.
    """
    op = "sliding_window_attention"
    check_qkv(op, q, k, v)
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise ValueError(
            f"{op}: window must be a positive integer (the model's sliding_window), got {window!r}."
        )
    return sliding_window_attention_sdpa(q, k, v, window)


def block_sparse_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: torch.Tensor, block_size: int = 16
) -> torch.Tensor:
    """Block-sparse causal attention (paper A.1.1).

    block_mask: [Hq, ceil(T/block_size), ceil(S/block_size)] bool; query block i (rows of q) sees
    key block j when set, with the causal mask applied inside every kept block.
    Returns [Hq, T, D] in q's dtype; a query that sees no key gets zeros.
    """
    op = "block_sparse_attention"
    check_qkv(op, q, k, v)
    hq, t, _ = q.shape
    s = k.shape[1]
    check_mask(op, "block_mask", block_mask, (hq, _cdiv(t, block_size), _cdiv(s, block_size)), q.device)
    if q.is_cuda:
        check_triton_head_dim(op, q.shape[-1])
        from .block_sparse.triton_block_sparse import block_sparse_attention_triton

        return block_sparse_attention_triton(q, k, v, block_mask, block_size)
    return block_sparse_attention_reference(q, k, v, block_mask, block_size)


def vertical_slash_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, vertical_idx: torch.Tensor, slash_idx: torch.Tensor
) -> torch.Tensor:
    """Vertical-slash causal attention (paper A.1.2, MInference pattern).

    vertical_idx: [Hq, NV] int64 key positions; slash_idx: [Hq, NS] int64 diagonal offsets >= 0
    (query at position p sees key p - o). Negative entries are padding; duplicates and pairs
    covered by both a vertical and a slash count once. Returns [Hq, T, D] in q's dtype.
    """
    op = "vertical_slash_attention"
    check_qkv(op, q, k, v)
    hq, s = q.shape[0], k.shape[1]
    check_index(op, "vertical_idx", vertical_idx, hq, s, q.device)
    check_index(op, "slash_idx", slash_idx, hq, s, q.device)
    if q.is_cuda:
        check_triton_head_dim(op, q.shape[-1])
        from .vertical_slash.triton_vertical_slash import vertical_slash_attention_triton

        return vertical_slash_attention_triton(q, k, v, vertical_idx, slash_idx)
    return vertical_slash_attention_reference(q, k, v, vertical_idx, slash_idx)


def quest_decode_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    page_mask: torch.Tensor,
    page_size: int = 16,
    key_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Quest page-sparse decode attention (paper A.1.6).

    q: [Hq, 1, D]; page_mask: [Hq, ceil(S/page_size)] bool, the pages each query head reads;
    key_mask: optional [Hkv, S] bool, False hides a cache slot (evicted or padding) everywhere.
    Returns [Hq, 1, D] in q's dtype; a head with no visible key gets zeros. Triton on CUDA, SDPA
    with the pages as a mask on the CPU.
    """
    op = "quest_decode_attention"
    check_qkv(op, q, k, v)
    if q.shape[1] != 1:
        raise ValueError(f"{op}: decode takes one query per head (q [Hq, 1, D]), got T={q.shape[1]}.")
    hq, s = q.shape[0], k.shape[1]
    check_mask(op, "page_mask", page_mask, (hq, _cdiv(s, page_size)), q.device)
    if key_mask is not None:
        check_mask(op, "key_mask", key_mask, (k.shape[0], s), q.device)
    if q.is_cuda:
        check_triton_head_dim(op, q.shape[-1])
        from .quest.triton_quest import quest_decode_attention_triton

        return quest_decode_attention_triton(q, k, v, page_mask, page_size, key_mask)
    if q.device.type == "cpu":
        from .dense.cpu import decode_attention_cpu

        visible = page_mask.repeat_interleave(page_size, dim=1)[:, :s]
        if key_mask is not None:
            visible = visible & key_mask.repeat_interleave(hq // k.shape[0], dim=0)
        return decode_attention_cpu(q, k, v, visible)
    return quest_decode_attention_reference(q, k, v, page_mask, page_size, key_mask)


def quest_page_scores(q: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Quest's per-page upper bound of q.k (paper A.1.6): the scores its top-k page selection ranks.

    q: [Hq, 1, D]; low, high: [Hkv, P, D] per-page channel min / max of the keys (+inf / -inf for a page
    with no visible key). Returns [Hq, P] float32, -inf for empty pages. Triton on CUDA, PyTorch otherwise.
    """
    op = "quest_page_scores"
    if (
        q.dim() != 3
        or q.shape[1] != 1
        or low.dim() != 3
        or low.shape != high.shape
        or low.shape[2] != q.shape[2]
    ):
        raise ValueError(
            f"{op}: expected q [Hq, 1, D] and low/high [Hkv, P, D]; got {tuple(q.shape)}, "
            f"{tuple(low.shape)}, {tuple(high.shape)}."
        )
    if q.shape[0] % low.shape[0]:
        raise ValueError(f"{op}: query heads ({q.shape[0]}) must be a multiple of kv heads ({low.shape[0]}).")
    if q.is_cuda:
        check_triton_head_dim(op, q.shape[-1])
        from .quest.triton_quest import quest_page_scores_triton

        return quest_page_scores_triton(q, low, high)
    return quest_page_scores_reference(q, low, high)


def block_select(
    q_pool: torch.Tensor,
    k_pool: torch.Tensor,
    n_sel: torch.Tensor,
    n_full: torch.Tensor,
    last_block: torch.Tensor,
) -> torch.Tensor:
    """Block-Sparse's block mask from pooled blocks (paper A.1.1): first block, causal boundary, top-n_sel.

    q_pool [Hq, nqb, D], k_pool [Hkv, nkb, D] mean-pooled blocks (one float dtype); n_sel, n_full,
    last_block [nqb] integers: blocks to select per query block, its first not fully visible key
    block, its last visible key block. Returns [Hq, nqb, nkb] bool (see ``block_select_reference``).
    Triton on CUDA (no score grid in memory), PyTorch otherwise.
    """
    op = "block_select"
    if q_pool.dim() != 3 or k_pool.dim() != 3 or k_pool.shape[2] != q_pool.shape[2]:
        raise ValueError(
            f"{op}: expected q_pool [Hq, nqb, D] and k_pool [Hkv, nkb, D]; got {tuple(q_pool.shape)}, "
            f"{tuple(k_pool.shape)}."
        )
    if k_pool.shape[0] == 0 or q_pool.shape[0] % k_pool.shape[0]:
        raise ValueError(
            f"{op}: query heads ({q_pool.shape[0]}) must be a multiple of kv heads ({k_pool.shape[0]})."
        )
    if not q_pool.is_floating_point() or q_pool.dtype != k_pool.dtype or q_pool.device != k_pool.device:
        raise ValueError(
            f"{op}: q_pool and k_pool must share one float dtype and device; got {q_pool.dtype} on "
            f"{q_pool.device} and {k_pool.dtype} on {k_pool.device}."
        )
    for name, x in (("n_sel", n_sel), ("n_full", n_full), ("last_block", last_block)):
        if x.dim() != 1 or x.shape[0] != q_pool.shape[1] or x.is_floating_point():
            raise ValueError(
                f"{op}: {name} must be an integer tensor of shape [{q_pool.shape[1]}], got {x.dtype} "
                f"{tuple(x.shape)}."
            )
    if q_pool.is_cuda:  # any head dim: the kernel pads it to a power of two with masked loads
        from .block_select.triton_block_select import block_select_triton

        return block_select_triton(q_pool, k_pool, n_sel, n_full, last_block)
    return block_select_reference(q_pool, k_pool, n_sel, n_full, last_block)
