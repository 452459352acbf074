"""Method objects as plain data, so they can cross vLLM's process boundary.

The driver builds an ``AttentionMethod``; the workers that run attention live in other
processes (engine core, one worker per tensor-parallel rank). ``collective_rpc`` and
``additional_config`` carry msgpack/JSON-like data, not arbitrary objects, so a method
travels as ``{"class": "module:QualName", "compression_ratio": x, "params": {...}}`` and
is rebuilt in the worker from the same class: both engines call the same method code.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from ...attention import AttentionMethod

#: The key under which the engine's settings live in vLLM's ``additional_config``.
CONFIG_KEY = "sparse_frontier"


def _plain(value: Any, where: str) -> Any:
    """Check that ``value`` survives msgpack/JSON; tuples become lists."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, where) for k, v in value.items()}
    raise TypeError(
        f"{where} holds a {type(value).__name__}, which cannot be sent to vLLM's workers; "
        "use numbers, strings, lists or dicts for method hyper-parameters."
    )


def method_to_spec(method: AttentionMethod) -> dict:
    """An ``AttentionMethod`` as plain data (every dataclass field, by name)."""
    cls = type(method)
    params = {
        f.name: _plain(getattr(method, f.name), f"{cls.__name__}.{f.name}")
        for f in dataclasses.fields(method)
        if f.init and f.name != "compression_ratio"
    }
    return {
        "class": f"{cls.__module__}:{cls.__qualname__}",
        "compression_ratio": float(method.compression_ratio),
        "params": params,
    }


def method_from_spec(spec: dict | None) -> AttentionMethod | None:
    """Rebuild the method ``method_to_spec`` described; ``None`` stays ``None`` (pass-through)."""
    if spec is None:
        return None
    try:
        module_name, qualname = spec["class"].split(":", 1)
    except (KeyError, AttributeError, ValueError) as err:
        raise ValueError(
            f"A sparse-attention spec needs 'class' as 'module:QualName', got {spec!r}; "
            "build it with sparse_frontier.engines.vllm.spec.method_to_spec."
        ) from err
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, AttentionMethod)):
        raise TypeError(f"{spec['class']} is not an AttentionMethod subclass.")
    return obj(compression_ratio=float(spec.get("compression_ratio", 1.0)), **spec.get("params", {}))
