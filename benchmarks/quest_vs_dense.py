"""How closely methods follow dense on a real model: teacher-forced top-1 agreement and free-run length.

For ``--samples`` prompts of one task at ``--length`` tokens, dense generates greedily (``--new-tokens``);
each method then runs teacher-forced on dense's tokens (``HfEngine.forced_agreement``) and freely.
Prints per prompt and method: agreement, first disagreeing step, free-run length and score. The
record is in docs/methods.md ("Quest at compression 2 on a real model"):

    python benchmarks/quest_vs_dense.py /path/to/SmolLM2-135M-Instruct --length 2048 --samples 3

With no ``--methods`` it measures dense alone: whether a model solves a task at a length at all.
"""

from __future__ import annotations

import argparse

from sparse_frontier.attention import get_method
from sparse_frontier.engines.hf import HfEngine
from sparse_frontier.tasks import get_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--task", default="ruler_vt")
    parser.add_argument("--answer-format", default=None, help="the task's answer_format, where it has one")
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--methods", nargs="*", default=["quest:2", "snapkv:2"], help="name:ratio")
    parser.add_argument("--dtype", default="float32", help="model dtype (bfloat16 on a GPU)")
    args = parser.parse_args()

    engine = HfEngine(args.model, dtype=args.dtype)
    task = get_task(args.task, **({"answer_format": args.answer_format} if args.answer_format else {}))
    dense_scores = []
    for sample in task.generate(engine.tokenizer, args.length, args.samples, seed=0):
        prompt = engine.tokenizer(sample.prompt, add_special_tokens=False).input_ids
        dense = engine.generate([prompt], get_method("dense"), args.new_tokens)[0]
        dense_scores.append(task.score(dense.text, sample.gold))
        print(
            f"sample {sample.sample_id} ({len(prompt)} tokens) dense: {len(dense.output_ids)} tokens, "
            f"score {dense_scores[-1]:.2f}",
            flush=True,
        )
        for spec in args.methods:
            name, ratio = spec.split(":")
            method = get_method(name, float(ratio))
            hits = engine.forced_agreement(prompt, method, dense.output_ids)
            free = engine.generate([prompt], method, args.new_tokens)[0]
            first = hits.index(False) if False in hits else len(hits)
            print(
                f"  {spec:>10}: agreement {sum(hits) / len(hits):.2f}, first miss at step {first}, "
                f"free run {len(free.output_ids)} tokens, score {task.score(free.text, sample.gold):.2f}",
                flush=True,
            )
    print(
        f"{args.task} at {args.length}: dense mean score {sum(dense_scores) / len(dense_scores):.2f} "
        f"over {len(dense_scores)} samples"
    )


if __name__ == "__main__":
    main()
