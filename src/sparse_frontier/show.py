"""Read what a run produced, for a person.

    python -m sparse_frontier.show predictions results/scores/tiny-qwen2/1024.parquet
    python -m sparse_frontier.show predictions results/predictions/ --task ruler_niah \
        --method snapkv --ratio 5 --wrong

``predictions`` prints each prediction's prompt tail, gold answer, output and extracted answer;
it takes prediction or score files, or folders of them, and reads the prompts from the run's
task data (results/data/).
"""

from __future__ import annotations

import argparse
import sys

from .predictions import format_text, read_predictions, results_dir, select, task_data, with_prompts


def predictions(args: argparse.Namespace) -> None:
    rows = select(
        read_predictions(args.paths), task=args.task, method=args.method, ratio=args.ratio, wrong=args.wrong
    )
    if rows.empty:
        print("No predictions match.")
        return
    rows = with_prompts(
        rows.head(args.limit), task_data(results_dir(args.paths[0]), rows["task"], args.tokenizer)
    )
    for row in rows.itertuples(index=False):
        print(format_text(row, args.tail))
    print(f"{len(rows)} prediction(s) shown.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    read = commands.add_parser("predictions", help="predictions next to their prompt tail and gold answer")
    read.add_argument("paths", nargs="+", help="prediction or score Parquet files, or folders of them")
    read.add_argument("--task", help="one task, e.g. ruler_niah")
    read.add_argument("--method", help="one method, e.g. snapkv (dense: the baseline)")
    read.add_argument("--ratio", type=float, help="one compression ratio, e.g. 5")
    read.add_argument("--wrong", action="store_true", help="only predictions scoring below 1")
    read.add_argument("--tail", type=int, default=400, help="characters of the prompt's end to show")
    read.add_argument("--limit", type=int, default=20, help="predictions shown at most")
    read.add_argument("--tokenizer", help="the model's tokenizer family, where results/data holds several")
    args = parser.parse_args(argv)
    try:
        predictions(args)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(str(err))


if __name__ == "__main__":
    main()
