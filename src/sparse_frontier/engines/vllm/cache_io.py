"""Reading keys and values back from vLLM's paged KV cache, whatever the backend's layout.

A layer's cache is indexed by block first, ``[num_blocks, ...]``; how a block stores its
N tokens x Hkv heads x D channels of keys and values differs between backends and releases:

* FLASH_ATTN, vLLM 0.32: ``[B, Hkv, N, 2D]``; token n's key is ``[h, n, :D]``, its value ``[h, n, D:]``.
* FLASH_ATTN, vLLM 0.25: ``[B, 2, N, Hkv, D]`` (keys, values = ``kv_cache.unbind(1)``), with
  NHD or HND strides.
* CPU_ATTN: ``[B, Hkv, N, 2D]`` viewed per head as ``[2N, D]``; values are rows ``N..2N-1``,
  and keys, in rows ``0..N-1``, are stored in an ISA-specific packed order (the ``vec`` ISA
  transposes them).

Instead of hard-coding each layout, ``probe_block_layout`` writes known numbers through the
backend's *own* cache writer into a zeroed one-block scratch cache shaped and strided like
the real one, and reads back where each (head, token, channel) landed. The block size is
what is left of a block's elements after heads, channels and the key/value pair. The
result, a ``BlockLayout``, is two index tables that ``read_kv`` uses to gather a request's
keys and values from the real cache. Writing goes through the backend's writer too
(``slots_for``), so this module never writes a layout by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

#: write(key [n, Hkv, D], value [n, Hkv, D], kv_cache [B, ...], slot_mapping [n] int64)
CacheWriter = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], None]

#: Largest integer every probe value must hold exactly, per cache dtype (mantissa width).
_EXACT_UP_TO = {torch.float32: 2**24, torch.float16: 2**11, torch.bfloat16: 2**8}


@dataclass(frozen=True)
class BlockLayout:
    """Where each head's keys and values live inside a cache block.

    block_shape: a block's logical shape, ``kv_cache.shape[1:]``.   block_size: N, tokens per block.
    head_size: D.   key_index / value_index: [Hkv, N * D] int64; element ``[h, t * D + d]`` is the
    flat offset, inside one block flattened in its logical order, of head h's key (value) of
    token t, channel d.
    """

    block_shape: tuple[int, ...]
    block_size: int
    head_size: int
    key_index: torch.Tensor
    value_index: torch.Tensor


def block_size_of(kv_cache: torch.Tensor, num_kv_heads: int, head_size: int) -> int:
    """N from a cache ``[num_blocks, ...]`` holding keys and values of Hkv heads of D channels."""
    per_block = kv_cache[0].numel()
    n, rest = divmod(per_block, 2 * num_kv_heads * head_size)
    if rest or n == 0:
        raise RuntimeError(
            f"A KV cache block of shape {tuple(kv_cache.shape[1:])} does not hold keys and values of "
            f"{num_kv_heads} heads x {head_size} channels; this backend's cache cannot be read back."
        )
    return n


def probe_block_layout(write: CacheWriter, kv_cache: torch.Tensor, num_kv_heads: int,
                       head_size: int) -> BlockLayout:
    """Learn a backend's block layout by writing through its own writer.

    kv_cache: the real layer cache ``[num_blocks, ...]`` (only its block shape, dtype, strides
    and device are used). Six writes into a zeroed one-block scratch cache: keys = token index + 1,
    channel index + 1, head index + 1, and the same for values. Every value stays an exactly
    representable integer.
    """
    hkv, d, dtype, device = num_kv_heads, head_size, kv_cache.dtype, kv_cache.device
    if dtype not in _EXACT_UP_TO:
        raise NotImplementedError(
            f"Reading a {dtype} KV cache is not supported; use kv_cache_dtype='auto' with sparse methods."
        )
    n = block_size_of(kv_cache, hkv, d)
    if max(n, d, hkv) > _EXACT_UP_TO[dtype]:
        raise NotImplementedError(f"Block size {n} / head size {d} too large to probe a {dtype} cache.")
    slots = torch.arange(n, dtype=torch.int64, device=device)
    shape = (n, hkv, d)
    token = torch.arange(1, n + 1, device=device, dtype=torch.float32)[:, None, None].expand(shape)
    head = torch.arange(1, hkv + 1, device=device, dtype=torch.float32)[None, :, None].expand(shape)
    channel = torch.arange(1, d + 1, device=device, dtype=torch.float32)[None, None, :].expand(shape)
    zeros = torch.zeros(shape, device=device, dtype=dtype)

    def written(key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        scratch = torch.zeros_like(kv_cache[:1])  # the real cache's strides where it is dense
        write(key.to(dtype).contiguous(), value.to(dtype).contiguous(), scratch, slots)
        return scratch[0].reshape(-1).float()  # one block, in logical order

    def index(what: str, *probes: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return _index_from_probe(*(written(*p) for p in probes), n=n, hkv=hkv, d=d, what=what)

    key_index = index("key", (token, zeros), (head, zeros), (channel, zeros))
    value_index = index("value", (zeros, token), (zeros, head), (zeros, channel))
    return BlockLayout(tuple(kv_cache.shape[1:]), n, d, key_index, value_index)


def _index_from_probe(token: torch.Tensor, head: torch.Tensor, channel: torch.Tensor, n: int, hkv: int,
                      d: int, what: str) -> torch.Tensor:
    """Three probes of one block, flat -> [Hkv, N*D] flat offsets."""
    where = torch.nonzero(token > 0).flatten()
    if where.numel() != hkv * n * d:
        raise RuntimeError(
            f"Probing the KV cache found {where.numel()} {what} elements, expected {hkv * n * d}."
        )
    found = (head[where] > 0) & (channel[where] > 0)
    logical = ((head[where].long() - 1) * n + token[where].long() - 1) * d + channel[where].long() - 1
    index = torch.full((hkv * n * d,), -1, dtype=torch.int64, device=token.device)
    index[logical[found]] = where[found]
    if not bool(found.all()) or bool((index < 0).any()):
        raise RuntimeError(f"Probing the KV cache did not find every {what} (head, token, channel).")
    return index.view(hkv, n * d)


def read_kv(kv_cache: torch.Tensor, layout: BlockLayout, block_ids: torch.Tensor,
            length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``length`` cached tokens of one request: (k, v), each [Hkv, length, D].

    kv_cache: [B, ...] (any strides); block_ids: the request's block-table row, [>= ceil(length / N)].
    """
    n, d = layout.block_size, layout.head_size
    hkv = layout.key_index.shape[0]
    n_blocks = -(-length // n)
    flat = kv_cache[block_ids[:n_blocks].long()].reshape(n_blocks, -1)  # a copy, logical order

    def gather(index: torch.Tensor) -> torch.Tensor:
        x = flat.index_select(1, index.to(flat.device).flatten()).view(n_blocks, hkv, n, d)
        return x.permute(1, 0, 2, 3).reshape(hkv, n_blocks * n, d)[:, :length]

    return gather(layout.key_index), gather(layout.value_index)


def slots_for(block_row: torch.Tensor, positions: torch.Tensor, block_size: int) -> torch.Tensor:
    """Cache slots (block * N + offset) of ``positions`` [n] in a request's block-table row."""
    positions = positions.to(block_row.device).long()
    return block_row.long()[positions // block_size] * block_size + positions % block_size
