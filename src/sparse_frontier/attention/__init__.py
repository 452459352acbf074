"""Sparse attention methods, registered by the name the config uses."""

from __future__ import annotations

import dataclasses

from .base import (
    COUNTINGS,
    PHASES,
    AttentionMethod,
    AttentionResult,
    analysis_phase,
    causal_pairs,
    dense_attention,
)

METHODS: dict[str, type[AttentionMethod]] = {}


def register(cls: type[AttentionMethod]) -> type[AttentionMethod]:
    """Class decorator: make a method selectable by its ``name``."""
    METHODS[cls.name] = cls
    return cls


register(AttentionMethod)


def _load_builtin_methods() -> None:
    # Imported for their @register side effect (lazily: the modules import this package).
    import importlib

    for module in ("block_sparse", "vertical_slash", "flexprefill", "snapkv", "ada_snapkv", "quest"):
        importlib.import_module(f"{__name__}.{module}")


def get_method(name: str, compression_ratio: float = 1.0, **params) -> AttentionMethod:
    """Build a method by registry name; an unknown name lists the known ones."""
    _load_builtin_methods()
    if name not in METHODS:
        known = ", ".join(sorted(METHODS))
        raise KeyError(f"Unknown attention method '{name}'; choose one of: {known}.")
    cls = METHODS[name]
    allowed = {f.name for f in dataclasses.fields(cls) if f.init and f.name != "compression_ratio"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        # TypeError, as for any unexpected keyword: callers (the pipeline) catch it to name the config key.
        raise TypeError(
            f"Method '{name}' has no parameter {', '.join(unknown)}; "
            f"its parameters are: {', '.join(sorted(allowed)) or 'none'}."
        )
    return cls(compression_ratio=compression_ratio, **params)


__all__ = [
    "COUNTINGS",
    "METHODS",
    "PHASES",
    "AttentionMethod",
    "AttentionResult",
    "analysis_phase",
    "causal_pairs",
    "dense_attention",
    "get_method",
    "register",
]
