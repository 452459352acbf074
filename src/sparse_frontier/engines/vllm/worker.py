"""Worker-side RPCs: how the driver switches methods without reloading the model.

vLLM mixes this class into every worker (``worker_extension_cls``); ``LLM.collective_rpc``
then calls these methods on all tensor-parallel ranks. Names start with ``sparse_`` so they
never collide with the worker's own attributes (vLLM refuses the extension if they do).
"""

from __future__ import annotations

from typing import Any

from .plugin import register
from .runtime import get_runtime

# vLLM imports this module in every worker before it builds the model, so registering here
# too makes the backends independent of entry-point discovery (a stale *.egg-info earlier on
# sys.path can hide the entry point). ``register`` is idempotent.
register()


class SparseWorkerExtension:
    """Mixed into vLLM's worker class; ``self`` is the worker (it has ``model_runner``, ``rank``)."""

    def sparse_bind(self) -> dict[str, Any]:
        """Start: hand the runtime this worker's model runner and the method in ``additional_config``."""
        runtime = get_runtime()
        runtime.bind(self.model_runner, self.vllm_config)  # type: ignore[attr-defined]
        return {"rank": int(getattr(self, "rank", 0)), "method": repr(runtime.method)}

    def sparse_configure(self, spec: dict | None) -> dict[str, Any]:
        """Use the method ``spec`` (see ``spec.method_to_spec``; None = dense) from the next step on."""
        runtime = get_runtime()
        if runtime.runner is None:
            raise RuntimeError("sparse_configure before sparse_bind; construct the engine with VllmEngine.")
        runtime.configure(spec)
        return {"rank": int(getattr(self, "rank", 0)), "method": repr(runtime.method)}

    def sparse_pop_stats(self, tags: list[str] | None = None) -> dict[str, dict]:
        """Per-request counters of this rank (its local heads), removed once read."""
        return get_runtime().pop_stats(tags)

    def sparse_local_heads(self) -> dict[str, int]:
        """Query and KV heads this rank's attention layers see (tensor parallelism splits them)."""
        from vllm.config import get_layers_from_vllm_config
        from vllm.model_executor.layers.attention import Attention

        layers = get_layers_from_vllm_config(self.vllm_config, Attention)  # type: ignore[attr-defined]
        layer = next(iter(layers.values()))
        return {"num_heads": int(layer.impl.num_heads), "num_kv_heads": int(layer.impl.num_kv_heads),
                "backend": type(layer.impl).__name__}
