"""The vLLM engine: the sparse methods inside vLLM V1 through a plugin (vLLM 0.25 to 0.32).

Modules: ``plugin`` (the ``vllm.general_plugins`` entry point), ``backend`` (the routing
wrapper around a platform backend; ``backend_cpu`` / ``backend_flash`` instantiate it),
``cache_io`` (reading keys and values back from the paged cache), ``adapters`` (what differs
between the supported vLLM releases), ``runtime`` (per-worker state), ``worker`` (the RPCs
that switch methods), ``spec`` (methods as plain data) and ``engine`` (``VllmEngine``).
See docs/vllm.md.
"""

from __future__ import annotations

import importlib.util

# Fail at import, so load_engine can say what to install. A spec without an origin is a
# namespace package (e.g. a tests/vllm folder on sys.path), not vLLM.
_spec = importlib.util.find_spec("vllm")
if _spec is None or _spec.origin is None:
    raise ImportError("No module named 'vllm'", name="vllm")

from .engine import VllmEngine  # noqa: E402

__all__ = ["VllmEngine"]
