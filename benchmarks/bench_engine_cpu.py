"""Per-sample CPU cost of the hf engine on a real model: prefill seconds and decode milliseconds per token.

Generates ``--samples`` prompts of one task at each length in the model's own tokens (as the pipeline
does), runs each through ``HfEngine`` with dense and each method at ``--ratio`` and a fixed answer budget
(``--new-tokens`` tokens, EOS ignored so every run decodes the same number of steps), and prints one row
per (length, method): median prefill seconds and decode milliseconds per token, each as wall time and
as this process's CPU time (``time.process_time``, all threads together: on a machine shared with other
work the CPU time is the steadier measure), with the number of threads torch used. Results and the
commands that made them are in docs/benchmarks-engine-cpu.md:

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


def run(engine: HfEngine, prompt: list[int], method, new_tokens: int) -> dict[str, float]:
    """Prefill seconds and decode milliseconds per token of one prompt (exactly ``new_tokens`` steps),
    wall and CPU time."""
    wall, cpu = time.perf_counter(), time.process_time()
    logits, sequence = engine.prefill(prompt, method, new_tokens)
    times = {"prefill_s": time.perf_counter() - wall, "prefill_cpu_s": time.process_time() - cpu}
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(new_tokens - 1):
        logits = engine.step(int(logits.argmax()), sequence)
    steps = max(new_tokens - 1, 1)
    times["decode_ms_per_token"] = (time.perf_counter() - wall) * 1e3 / steps
    times["decode_cpu_ms_per_token"] = (time.process_time() - cpu) * 1e3 / steps
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a Hugging Face model folder (or hub id in the local cache)")
    parser.add_argument("--task", default="ruler_vt")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--methods", nargs="+", default=["dense", "block_sparse", "snapkv", "quest"])
    parser.add_argument("--ratio", type=float, default=5.0)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's, OMP_NUM_THREADS)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    engine = HfEngine(args.model)
    task = get_task(args.task)
    rows = []
    print(f"threads {torch.get_num_threads()}  model {args.model}  task {args.task}", flush=True)
    print(f"{'length':>7} {'method':>14} {'prefill s (cpu)':>17} {'decode ms/token (cpu)':>22}")
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
                **{key: statistics.median(t[key] for t in times) for key in times[0]},
                "threads": torch.get_num_threads(),
            }
            rows.append(row)
            print(f"{length:>7} {name:>14} {row['prefill_s']:>8.2f} ({row['prefill_cpu_s']:>6.2f}) "
                  f"{row['decode_ms_per_token']:>12.1f} ({row['decode_cpu_ms_per_token']:>7.1f})", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
