"""Per-prompt CPU cost of the hf engine on a real model: prefill seconds and decode milliseconds per token,
with prompts decoded one at a time and together.

Generates ``--samples`` prompts of one task at each length in the model's own tokens (as the pipeline
does) and runs them through ``HfEngine.generate`` with dense and each method at ``--ratio`` and a fixed
answer budget (``--new-tokens`` tokens, EOS ignored so every prompt decodes the same number of steps),
once per ``--batch-sizes`` entry B: the prompts in batches of B (B = 1: one at a time). One row per
(length, method, B): median prefill seconds per prompt; decode milliseconds per token and prompt (each
step's wall time split between the prompts decoded in it, as ``Generation.decode_ms``); and this
process's CPU seconds per prompt (``time.process_time``, all threads: steadier than wall time on a
machine shared with other work). Results and the commands that made them: docs/benchmarks-engine-cpu.md.

    python benchmarks/bench_engine_cpu.py /path/to/SmolLM2-135M-Instruct --lengths 1024 2048 --batch-sizes 1 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from sparse_frontier.attention import get_method
from sparse_frontier.engines.hf import HfEngine
from sparse_frontier.tasks import get_task


def run(engine: HfEngine, prompts: list[list[int]], method, new_tokens: int, batch_size: int) -> dict:
    """The prompts through ``engine.generate`` in batches of ``batch_size``, exactly ``new_tokens`` tokens
    each -> median prefill s per prompt, decode ms per token and prompt, CPU s per prompt."""
    generations, cpu = [], time.process_time()
    for start in range(0, len(prompts), batch_size):
        generations += engine.generate(prompts[start : start + batch_size], method, new_tokens)
    cpu = time.process_time() - cpu
    assert all(len(g.output_ids) == new_tokens for g in generations)
    return {
        "prefill_s": statistics.median(g.prefill_ms for g in generations) / 1e3,
        "decode_ms_per_token": statistics.mean(g.decode_ms for g in generations) / new_tokens,
        "cpu_s_per_prompt": cpu / len(generations),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a Hugging Face model folder (or hub id in the local cache)")
    parser.add_argument("--task", default="ruler_vt")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--methods", nargs="+", default=["dense", "block_sparse", "snapkv", "quest"])
    parser.add_argument("--ratio", type=float, default=5.0)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8],
                        help="prompts decoded together (the pipeline's inference.batch_size)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's, OMP_NUM_THREADS)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    engine = HfEngine(args.model, dtype=args.dtype)
    engine.eos_ids = set()  # every prompt decodes exactly --new-tokens steps
    task = get_task(args.task)
    rows = []
    print(f"threads {torch.get_num_threads()}  model {args.model}  task {args.task}  "
          f"{args.dtype}  {args.samples} prompts, {args.new_tokens} new tokens each", flush=True)
    print(f"{'length':>7} {'method':>14} {'batch':>6} {'prefill s':>10} {'decode ms/token':>16} "
          f"{'cpu s/prompt':>13}")
    for length in args.lengths:
        samples = task.generate(engine.tokenizer, length, args.samples, seed=0)
        prompts = [engine.tokenizer(s.prompt, add_special_tokens=False).input_ids for s in samples]
        for name in args.methods:
            method = get_method(name, 1.0 if name == "dense" else args.ratio)
            for batch_size in args.batch_sizes:
                row = {
                    "length": length,
                    "method": name,
                    "ratio": method.compression_ratio,
                    "batch_size": batch_size,
                    "prompt_tokens": statistics.median(len(p) for p in prompts),
                    **run(engine, prompts, method, args.new_tokens, batch_size),
                    "dtype": args.dtype,
                    "threads": torch.get_num_threads(),
                }
                rows.append(row)
                print(f"{length:>7} {name:>14} {batch_size:>6} {row['prefill_s']:>10.2f} "
                      f"{row['decode_ms_per_token']:>16.1f} {row['cpu_s_per_prompt']:>13.2f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
