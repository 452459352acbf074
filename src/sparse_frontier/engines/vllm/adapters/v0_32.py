"""vLLM 0.32.x, as the plugin sees it (read from the 0.32.0 sources).

* ``CommonAttentionMetadata`` gained ``req_idx``, ``max_logits_per_req``,
  ``dcp_local_seq_lens_cpu_upper_bound`` and ``replayssm_decode_base_cpu``, and dropped the
  deprecated host caches ``_seq_lens_cpu`` / ``_num_computed_tokens_cpu`` and
  ``dcp_local_seq_lens_cpu``.
* KV cache of one layer: FLASH_ATTN ``[num_blocks, Hkv, N, 2D]`` (K and V by
  ``kv_cache.transpose(1, 2).split(D, -1)``); CPU_ATTN ``[num_blocks, Hkv, N, 2D]``.
  ``cache_io`` learns either through the backend's own writer.
"""

RELEASE = (0, 32)

#: Sliced to the sub-batch's requests.
PER_REQUEST = (
    "seq_lens", "block_table_tensor", "causal", "encoder_seq_lens", "encoder_seq_lens_cpu",
    "dcp_local_seq_lens", "dcp_local_seq_lens_cpu_upper_bound", "is_prefilling",
    "seq_lens_cpu_upper_bound", "req_idx", "rswa_prefix_lens", "replayssm_decode_base_cpu",
)
#: Sliced to the sub-batch's query rows.
PER_TOKEN = ("slot_mapping", "positions")
#: Keyed by request index: re-keyed from the sub-batch's first request.
REQUEST_KEYED = ("mm_req_doc_ranges",)
#: Host caches derived from the other fields; dropped whenever those change (rebuilt on use).
DERIVED = ("_num_computed_tokens_cache", "_token_to_req_indices_cache")
#: Only meaningful for the whole batch (logits gathering); dropped in a sub-batch.
WHOLE_BATCH = ("logits_indices_padded", "num_logits_indices", "max_logits_per_req")
