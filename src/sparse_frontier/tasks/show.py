"""Print generated samples for a person to read: prompt (abridged), gold answers, meta.

    python -m sparse_frontier.tasks.show ruler_niah --length 16384 --samples 1
    python -m sparse_frontier.tasks.show story_filtering --length 131072 --full > sample.txt
    python -m sparse_frontier.tasks.show ruler_vt --length 2048 --param chains=1 --param shuffle=false

Uses the tiny offline tokenizer unless ``--tokenizer`` names a local model folder or hub id.
"""

from __future__ import annotations

import argparse
import json

from . import get_task, load_all


def abridge(prompt: str, keep: int) -> str:
    """The first and last ``keep`` characters of a prompt, with the cut marked."""
    if len(prompt) <= 2 * keep:
        return prompt
    return f"{prompt[:keep]}\n\n[... {len(prompt) - 2 * keep} characters omitted ...]\n\n{prompt[-keep:]}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", choices=sorted(load_all()))
    parser.add_argument("--length", type=int, default=16384)
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokenizer", default=None, help="model folder or hub id (default: tiny BPE)")
    parser.add_argument("--source", default=None, help="QA tasks: normalised Parquet source")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a task parameter as in task_params (repeatable; VALUE is JSON, e.g. 1 or false, else text)",
    )
    parser.add_argument("--keep", type=int, default=3000, help="characters shown at each end")
    parser.add_argument("--full", action="store_true", help="print whole prompts")
    args = parser.parse_args(argv)
    if args.tokenizer:
        from ..models import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer)
    else:
        from ..models import train_tiny_tokenizer

        tokenizer = train_tiny_tokenizer()
    params = {"source": args.source} if args.source else {}
    for param in args.param:
        name, sep, value = param.partition("=")
        if not sep:
            parser.error(f"--param {param!r} needs the form NAME=VALUE, e.g. --param chains=1.")
        try:
            params[name] = json.loads(value)
        except json.JSONDecodeError:
            params[name] = value
    for sample in get_task(args.task, **params).generate(tokenizer, args.length, args.samples, args.seed):
        print(f"===== {args.task} sample {sample.sample_id}: {sample.n_tokens} tokens of {args.length} =====")
        print(sample.prompt if args.full else abridge(sample.prompt, args.keep))
        print(f"----- gold: {sample.gold}")
        print(f"----- meta: {sample.meta}\n")


if __name__ == "__main__":
    main()
