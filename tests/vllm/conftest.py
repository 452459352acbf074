"""Fixtures for the vLLM engine tests: one ``LLM`` per test session, on the CPU.

vLLM's CPU attention kernel needs head_dim >= 32, so these tests build their own tiny
Qwen2 (same builder and seed as the shared ``tiny_model_dir``, hidden size 128, 4 heads)
instead of the shared one (head_dim 16). Both engines run on that model.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; plenty for the tiny model

MAX_MODEL_LEN = 4096
MAX_NEW_TOKENS = 12


@pytest.fixture(scope="session")
def vllm_model_dir(tmp_path_factory):
    from sparse_frontier.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2-d32", hidden_size=128,
                            intermediate_size=256, seed=0)


@pytest.fixture(scope="session")
def vllm_engine(vllm_model_dir):
    """The one VllmEngine (one LLM) of the session, float32 for exact comparisons."""
    pytest.importorskip("vllm.config")
    from sparse_frontier.engines import load_engine

    engine = load_engine("vllm", str(vllm_model_dir), dtype="float32", max_model_len=MAX_MODEL_LEN,
                         max_num_seqs=8)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def hf_engine(vllm_model_dir):
    from sparse_frontier.engines import load_engine

    return load_engine("hf", str(vllm_model_dir), dtype="float32", device="cpu")


@pytest.fixture(scope="session")
def prompts() -> list[list[int]]:
    """Two prompts of different lengths (not multiples of any block size), random token ids."""
    import random

    rnd = random.Random(0)
    return [[rnd.randrange(3, 1900) for _ in range(n)] for n in (613, 1037)]
