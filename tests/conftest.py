"""Shared fixtures: the tiny offline model and its tokenizer, built once per test session."""

from __future__ import annotations

import pytest

from sparse_frontier.models import build_tiny_model, load_tokenizer


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A random-weight Qwen2 model (2 layers, 4 query / 2 KV heads) with its BPE tokenizer."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2", seed=0)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    """The tiny model's byte-level BPE tokenizer (trained offline, ~2K vocabulary)."""
    return load_tokenizer(str(tiny_model_dir))
