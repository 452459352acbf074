"""Fixtures of the task tests: the project's tiny tokenizer, and a chat-template variant of it."""

from __future__ import annotations

import copy

import pytest

# A minimal ChatML template, like Qwen's: the stored prompt must contain it and count its tokens.
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="session")
def chat_tokenizer(tiny_tokenizer):
    """The tiny tokenizer with a ChatML chat template attached."""
    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = CHATML
    return tok
