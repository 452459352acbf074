"""Per-sample CPU cost of the hf engine on a real model: prefill seconds and decode milliseconds per token.

Generates ``--samples`` prompts of one task at each length in the model's own tokens (as the pipeline
does), runs each through ``HfEngine`` with dense and each method at ``--ratio`` and a fixed answer budget
(``--new-tokens`` tokens, EOS ignored so every run decodes the same number of steps), and prints one row
per (length, method): median prefill seconds, median decode milliseconds per token, and the number of
threads torch used. Results and the commands that made them are in docs/benchmarks-engine-cpu.md:

    python benchmarks/bench_engine_cpu.py /path/to/SmolLM2-135M-Instruct --lengths 1024 2048 4096
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


def run(engine: HfEngine, prompt: list[int], method, new_tokens: int) -> tuple[float, float]:
    """(prefill seconds, decode milliseconds per token) of one prompt, exactly ``new_tokens`` steps."""
    start = time.perf_counter()
    logits, sequence = engine.prefill(prompt, method, new_tokens)
    prefill_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(new_tokens - 1):
        logits = engine.step(int(logits.argmax()), sequence)
    decode_ms = (time.perf_counter() - start) * 1e3 / max(new_tokens - 1, 1)
    return prefill_s, decode_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a Hugging Face model folder (or hub id in the local cache)")
    parser.add_argument("--task", default="ruler_vt")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--methods", nargs="+", default=["dense", "block_sparse", "snapkv", "quest"])
    parser.add_argument("--ratio", type=float, default=5.0)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()

    engine = HfEngine(args.model)
    task = get_task(args.task)
    rows = []
    print(f"threads {torch.get_num_threads()}  model {args.model}  task {args.task}")
    print(f"{'length':>7} {'method':>14} {'prefill s':>10} {'decode ms/token':>16}")
    for length in args.lengths:
        samples = task.generate(engine.tokenizer, length, args.samples, seed=0)
        prompts = [engine.tokenizer(s.prompt, add_special_tokens=False).input_ids for s in samples]
        for name in args.methods:
            method = get_method(name, 1.0 if name == "dense" else args.ratio)
            times = [run(engine, p, method, args.new_tokens) for p in prompts]
            row = {
                "length": length,
                "method": name,
                "ratio": method.compression_ratio,
                "prompt_tokens": statistics.median(len(p) for p in prompts),
                "prefill_s": statistics.median(t[0] for t in times),
                "decode_ms_per_token": statistics.median(t[1] for t in times),
                "threads": torch.get_num_threads(),
            }
            rows.append(row)
            print(f"{length:>7} {name:>14} {row['prefill_s']:>10.2f} {row['decode_ms_per_token']:>16.1f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
