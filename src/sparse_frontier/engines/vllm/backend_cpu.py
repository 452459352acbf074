"""The sparse wrapper of vLLM's CPU backend (CPU_ATTN).

On the CPU platform vLLM always selects CPU_ATTN, so the plugin overrides that member of
the backend registry with this class; its ``get_name()`` stays ``"CPU_ATTN"``.
"""

from __future__ import annotations

from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

from .backend import make_sparse_backend

SparseCPUAttentionBackend = make_sparse_backend(CPUAttentionBackend, __name__)
