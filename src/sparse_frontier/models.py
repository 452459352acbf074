"""Models: loading real ones by hub id or path, and building the tiny offline one.

The tiny model is a random-weight Qwen2-architecture model with a byte-level BPE
tokenizer trained offline with the ``tokenizers`` library, saved in Hugging Face
format. It exercises every code path of the pipeline on a CPU without a download;
its answers are noise, so its scores are not a result.
"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path

from .io import atomic_dir

log = logging.getLogger(__name__)

#: Positions of the tiny model unless its ``build`` says otherwise.
TINY_MAX_POSITIONS = 32768

_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_WORDS = (
    "the of and to in is was for on that with as by at from it an be this which or are were his "
    "her they their has have had not but one all been who would will there more also when can "
    "key value answer question document chapter story item bought travelled city market said "
    "special magic number remember find what is the following context read carefully reason "
    "step by step final line grass green sky blue sun yellow here we go there and back again"
).split()


def _training_corpus(n_lines: int, seed: int) -> list[str]:
    """English-like lines plus hyphenated random strings and digits, like the tasks' text."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    lines = []
    for _ in range(n_lines):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(8, 20))]
        words.append("-".join("".join(rng.choices(letters, k=rng.randint(3, 8))) for _ in range(3)))
        words.append(str(rng.randint(0, 10**7)))
        lines.append(" ".join(words).capitalize() + ".")
    return lines


def train_tiny_tokenizer(vocab_size: int = 2048, seed: int = 0):
    """A byte-level BPE tokenizer trained offline, wrapped as ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_corpus(4000, seed), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )


def build_tiny_model(
    out_dir: str | Path,
    *,
    vocab_size: int = 2048,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = TINY_MAX_POSITIONS,
    initializer_range: float = 0.3,
    seed: int = 0,
) -> Path:
    """Write a random-weight Qwen2 model and its tokenizer to ``out_dir`` (atomically).

    ``initializer_range`` is far above a trained model's 0.02 on purpose: with small
    weights the residual stream ignores attention and greedy output is one repeated
    token, which would make every method look exact; at 0.3 the output depends on
    what attention reads, so tests comparing methods can fail.
    """
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out_dir = Path(out_dir)
    tokenizer = train_tiny_tokenizer(vocab_size, seed)
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        initializer_range=initializer_range,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen2ForCausalLM(config)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    log.info("built tiny model at %s (%d parameters)", out_dir, model.num_parameters())
    return out_dir


def build_random_model(
    config_dir: str | Path, dtype: str = "bfloat16", device: str = "cuda", seed: int = 0, **overrides
):
    """A random-weight model of a real architecture, built in place on ``device`` (no download).

    config_dir: a folder holding a Hugging Face ``config.json`` (e.g. Qwen2.5-7B-Instruct's, shipped
    under tests/fixtures/models/); ``overrides`` replace config keys (``num_hidden_layers=2``).
    Weights follow the config's initializer: right shapes and costs, meaningless outputs.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(config_dir), **overrides)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    return model.eval()


def write_model_folder(
    config_dir: str | Path,
    out_dir: str | Path,
    *,
    tokenizer: str | Path | None = None,
    weights: bool = False,
    dtype: str = "bfloat16",
    seed: int = 0,
    **overrides,
) -> Path:
    """A model folder an engine can load, from a real ``config.json`` (atomically).

    For GPU tests and benchmarks of a real architecture without its weights. ``overrides``
    replace config keys (``num_hidden_layers=2``). tokenizer: a folder whose tokenizer is copied;
    None: the tiny offline BPE, with ``vocab_size`` set to its size so every generated id decodes.
    weights: save random weights (``build_random_model``'s initialisation, on the CPU, in
    ``dtype``); False writes config and tokenizer only, for vLLM's ``load_format="dummy"``.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out_dir = Path(out_dir)
    config = AutoConfig.from_pretrained(str(config_dir), **overrides)
    if getattr(config, "layer_types", None) and "layer_types" not in overrides:
        # A per-layer list must follow a changed layer count (the config refuses to save otherwise).
        types = list(config.layer_types)
        config.layer_types = (types * config.num_hidden_layers)[: config.num_hidden_layers]
    if tokenizer is None:
        tok = train_tiny_tokenizer(seed=seed)
        config.vocab_size = len(tok)
        config.bos_token_id = config.eos_token_id = config.pad_token_id = tok.eos_token_id
    else:
        tok = AutoTokenizer.from_pretrained(str(tokenizer))
    with atomic_dir(out_dir) as tmp:
        if weights:
            torch.manual_seed(seed)
            AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype)).save_pretrained(tmp)
        else:
            config.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return out_dir


def _check_source(path: str) -> None:
    """A local-looking path that does not exist is a mistake to name, not a hub id to try."""
    looks_local = path.startswith(("/", ".", "~")) or path.startswith("results/") or os.sep + "." in path
    if looks_local and not Path(path).expanduser().exists():
        raise FileNotFoundError(
            f"Model path '{path}' does not exist; point the model's `path` in the config at a Hugging Face "
            "hub id or a local model folder (a model with `build:` is built there by the workflow)."
        )


def load_tokenizer(path: str):
    """The tokenizer of a model, by hub id or local folder."""
    from transformers import AutoTokenizer

    _check_source(path)
    return AutoTokenizer.from_pretrained(path)


def load_model_config(path: str) -> dict:
    """A model's Hugging Face ``config.json`` as a dict (hub id or local folder)."""
    from transformers import AutoConfig

    _check_source(path)
    return json.loads(AutoConfig.from_pretrained(path).to_json_string())
