"""Prompts start with BOS where the model's tokenizer wants one (Gemma), once, and only there."""

from __future__ import annotations

import copy

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from sparse_frontier.tasks import get_task
from sparse_frontier.tasks.prompt import to_model_input, wants_bos

VOCAB = ["<unk>", "<bos>", "<eos>", "hello", "world", "a", "user", "model"]


def word_tokenizer(add_bos: bool, chat_template: str | None = None) -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if add_bos:  # what a tokenizer whose config says add_bos_token does to every input
        backend.post_processor = processors.TemplateProcessing(
            single="<bos> $A", special_tokens=[("<bos>", 1)]
        )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )
    tok.chat_template = chat_template
    return tok


def engine_ids(tok, text: str) -> list[int]:
    """How the pipeline tokenizes a prompt: no special tokens added."""
    return tok(to_model_input(tok, text), add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("template", [None, "{{ messages[0]['content'] }} model"])
def test_bos_is_prepended_where_the_tokenizer_wants_it(template):
    tok = word_tokenizer(add_bos=True, chat_template=template)
    assert wants_bos(tok)
    ids = engine_ids(tok, "hello world")
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert ids[1:3] == tok("hello world", add_special_tokens=False)["input_ids"]


def test_a_template_that_writes_bos_itself_gets_no_second_one():
    tok = word_tokenizer(add_bos=True, chat_template="{{ bos_token }}user {{ messages[0]['content'] }} model")
    assert engine_ids(tok, "hello").count(tok.bos_token_id) == 1


def test_no_bos_where_the_tokenizer_adds_none(tiny_tokenizer):
    tok = word_tokenizer(add_bos=False)
    assert not wants_bos(tok) and engine_ids(tok, "hello world") == [3, 4]
    assert not wants_bos(tiny_tokenizer) and to_model_input(tiny_tokenizer, "x y") == "x y"


def test_task_samples_start_with_bos_and_count_it(tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)
    tok.add_special_tokens({"bos_token": "<bos>"})
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", tok.bos_token_id)]
    )
    sample = get_task("ruler_vt").generate(tok, 2048, 1, seed=0)[0]
    ids = tok(sample.prompt, add_special_tokens=False)["input_ids"]
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert sample.n_tokens == len(ids)
