"""Reading keys and values back from vLLM's paged KV cache, whatever the backend's layout.

In vLLM 0.32 every attention backend sees a layer's cache as a 4-D logical view
``[num_blocks, Hkv, N, C]`` (N tokens per block, C channels). What sits where inside
one head's ``[N, C]`` block differs:

* FLASH_ATTN / TRITON_ATTN: ``C = 2 * D``; token n's key is ``[n, :D]``, its value ``[n, D:]``
  (``kv_cache.transpose(1, 2).split(D, -1)`` in ``flash_attn.py``).
* CPU_ATTN: the block is viewed as ``[2N, D]``; values are rows ``N..2N-1``, and keys, in
  rows ``0..N-1``, are stored in an ISA-specific packed order (the ``vec`` ISA transposes them).

Instead of hard-coding each layout, ``probe_block_layout`` writes known numbers through the
backend's *own* cache writer into a one-block scratch cache and reads back where each
(token, channel) landed. The result, a ``BlockLayout``, is two index vectors that ``read_kv``
uses to gather a request's keys and values from the real cache. Writing goes through the
backend's writer too (``slots_for``), so this module never writes a layout by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

#: write(key [n, Hkv, D], value [n, Hkv, D], kv_cache [B, Hkv, N, C], slot_mapping [n] int64)
CacheWriter = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], None]

#: Largest integer every probe value must hold exactly, per cache dtype (mantissa width).
_EXACT_UP_TO = {torch.float32: 2**24, torch.float16: 2**11, torch.bfloat16: 2**8}


@dataclass(frozen=True)
class BlockLayout:
    """Where one head's keys and values live inside a cache block.

    block_size: N, tokens per block.   head_size: D.
    key_index / value_index: [N * D] int64; element ``t * D + d`` is the flat offset, inside a
    head's block flattened to ``[N * C]``, of token t's key (value) channel d.
    """

    block_size: int
    head_size: int
    key_index: torch.Tensor
    value_index: torch.Tensor


def probe_block_layout(write: CacheWriter, cache_shape: tuple[int, ...], dtype: torch.dtype,
                       device: torch.device | str, head_size: int) -> BlockLayout:
    """Learn a backend's block layout by writing through its own writer.

    cache_shape: the real layer cache's shape ``[B, Hkv, N, C]`` (only Hkv, N, C are used).
    Four writes into a zeroed one-block scratch cache: keys = token index + 1, keys = channel
    index + 1, and the same for values. Every value stays an exactly representable integer.
    """
    if len(cache_shape) != 4:
        raise ValueError(f"Expected a 4-D KV cache [blocks, heads, block_size, channels], got {cache_shape}.")
    _, hkv, n, c = cache_shape
    d = head_size
    if dtype not in _EXACT_UP_TO:
        raise NotImplementedError(
            f"Reading a {dtype} KV cache is not supported; use kv_cache_dtype='auto' with sparse methods."
        )
    if max(n, d) > _EXACT_UP_TO[dtype]:
        raise NotImplementedError(f"Block size {n} / head size {d} too large to probe a {dtype} cache.")
    slots = torch.arange(n, dtype=torch.int64, device=device)
    token = torch.arange(1, n + 1, device=device, dtype=torch.float32)[:, None, None].expand(n, hkv, d)
    channel = torch.arange(1, d + 1, device=device, dtype=torch.float32)[None, None, :].expand(n, hkv, d)
    zeros = torch.zeros(n, hkv, d, device=device, dtype=dtype)

    def written(key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        scratch = torch.zeros((1, hkv, n, c), dtype=dtype, device=device)
        write(key.to(dtype).contiguous(), value.to(dtype).contiguous(), scratch, slots)
        return scratch[0].reshape(hkv, n * c).float()  # [Hkv, N*C]

    key_token, key_channel = written(token, zeros), written(channel, zeros)
    value_token, value_channel = written(zeros, token), written(zeros, channel)
    key_index = _index_from_probe(key_token, key_channel, n, d, "key")
    value_index = _index_from_probe(value_token, value_channel, n, d, "value")
    return BlockLayout(n, d, key_index, value_index)


def _index_from_probe(token: torch.Tensor, channel: torch.Tensor, n: int, d: int, what: str) -> torch.Tensor:
    """[Hkv, N*C] probes -> [N*D] flat offsets; every head must share one layout."""
    if not bool((token == token[:1]).all() and (channel == channel[:1]).all()):
        raise RuntimeError(
            f"The KV cache writer stores each head's {what}s differently; cannot read them back."
        )
    where = torch.nonzero(token[0] > 0).flatten()
    if where.numel() != n * d:
        raise RuntimeError(f"Probing the KV cache found {where.numel()} {what} elements, expected {n * d}.")
    logical = (token[0, where].long() - 1) * d + (channel[0, where].long() - 1)
    index = torch.full((n * d,), -1, dtype=torch.int64, device=token.device)
    index[logical] = where
    if bool((index < 0).any()):
        raise RuntimeError(f"Probing the KV cache did not find every {what} (token, channel) pair.")
    return index


def read_kv(kv_cache: torch.Tensor, layout: BlockLayout, block_ids: torch.Tensor,
            length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``length`` cached tokens of one request: (k, v), each [Hkv, length, D].

    kv_cache: [B, Hkv, N, C] (any strides); block_ids: the request's block-table row, [>= ceil(length / N)].
    """
    n, d = layout.block_size, layout.head_size
    n_blocks = -(-length // n)
    blocks = kv_cache[block_ids[:n_blocks].long()]  # [nb, Hkv, N, C], a copy
    nb, hkv = blocks.shape[:2]
    flat = blocks.reshape(nb, hkv, -1)

    def gather(index: torch.Tensor) -> torch.Tensor:
        x = flat.index_select(2, index.to(flat.device)).view(nb, hkv, n, d)
        return x.permute(1, 0, 2, 3).reshape(hkv, nb * n, d)[:, :length]

    return gather(layout.key_index), gather(layout.value_index)


def slots_for(block_row: torch.Tensor, positions: torch.Tensor, block_size: int) -> torch.Tensor:
    """Cache slots (block * N + offset) of ``positions`` [n] in a request's block-table row."""
    positions = positions.to(block_row.device).long()
    return block_row.long()[positions // block_size] * block_size + positions % block_size
