"""The sparse wrapper of vLLM's FlashAttention backend (FLASH_ATTN), for NVIDIA GPUs.

Registered as the ``CUSTOM`` backend member; the engine selects it with
``attention_config={"backend": "CUSTOM"}``. Reviewed against vLLM 0.32's ``flash_attn.py``
(not run: no GPU with vLLM was at hand):

* cache: ``[num_blocks, Hkv, N, 2 * D]``; ``do_kv_cache_update`` splits it with
  ``kv_cache.transpose(1, 2).split(D, -1)`` and writes with ``reshape_and_cache_flash``;
  ``cache_io.probe_block_layout`` learns that layout through the same writer.
* metadata: ``FlashAttentionMetadata`` carries ``query_start_loc``, ``seq_lens`` and
  ``block_table`` like the CPU's; sub-batch metadata comes from the wrapped builder. Its
  AOT ``scheduler_metadata`` lives in a persistent buffer only under full CUDA graphs,
  which the engine turns off (``enforce_eager=True``), so per-run builds do not clash.
* forward: ``output[:num_actual_tokens]`` of a row slice is written in place, as on the CPU.
"""

from __future__ import annotations

from vllm.v1.attention.backends.flash_attn import FlashAttentionBackend

from .backend import make_sparse_backend

SparseFlashAttentionBackend = make_sparse_backend(FlashAttentionBackend, __name__, name="CUSTOM")
