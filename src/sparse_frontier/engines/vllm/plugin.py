"""The ``vllm.general_plugins`` entry point: registers the sparse backends in every process.

vLLM loads general plugins in the driver, the engine core and every worker, possibly
more than once per process, so ``register`` is idempotent. It patches no vLLM source: it
only overrides registry entries through ``register_backend``.

* CPU: the platform always picks CPU_ATTN, so that member is overridden with the wrapper.
  Without a configured method the wrapper passes every call straight to CPU_ATTN.
* GPU: the ``CUSTOM`` member points at the FLASH_ATTN wrapper; only runs that ask for it
  (``attention_config={"backend": "CUSTOM"}``, as ``VllmEngine`` does) use it.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

_PACKAGE = "sparse_frontier.engines.vllm"
CPU_BACKEND = f"{_PACKAGE}.backend_cpu.SparseCPUAttentionBackend"
GPU_BACKEND = f"{_PACKAGE}.backend_flash.SparseFlashAttentionBackend"

_registered = False


def register() -> None:
    """Point vLLM's backend registry at the sparse wrappers (once per process)."""
    global _registered
    if _registered:
        return
    from vllm.platforms import current_platform
    from vllm.v1.attention.backends.registry import AttentionBackendEnum, register_backend

    if current_platform.is_cpu():
        register_backend(AttentionBackendEnum.CPU_ATTN, CPU_BACKEND)
    register_backend(AttentionBackendEnum.CUSTOM, GPU_BACKEND)
    _registered = True
    log.debug("sparse_frontier: attention backends registered")
