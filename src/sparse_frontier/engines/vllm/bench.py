"""Throughput and switch-cost measurements of the vLLM engine (issue 6, point 3).

    python -m sparse_frontier.engines.vllm.bench MODEL_DIR [--prompts 16] [--length 1024]
        [--new-tokens 16] [--methods dense quest:5 snapkv:5 vertical_slash:5] [--out results.json]

Measures, in one process with one LLM: the model load time (``VllmEngine(...)``), the time
to switch the sparse configuration between batches (one ``collective_rpc``), and prompts
per second at batch 1 (one ``generate`` per prompt) against batch 8, per method. Prints a
Markdown table; ``--out`` also writes the raw numbers as JSON (atomically).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

from ...io import write_text


def _parse_method(text: str):
    from ...attention import get_method

    name, _, ratio = text.partition(":")
    return get_method(name, float(ratio or 1.0))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model_dir")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--methods", nargs="+", default=["dense", "quest:5", "snapkv:5", "vertical_slash:5"])
    parser.add_argument("--switches", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the median is reported")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--out")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    import vllm  # noqa: F401  (timed on its own: part of every job's start-up)

    from . import VllmEngine

    import_s = time.perf_counter() - start
    start = time.perf_counter()
    engine = VllmEngine(args.model_dir, dtype=args.dtype, max_model_len=args.length + args.new_tokens + 16,
                        max_num_seqs=args.batch)
    load_s = time.perf_counter() - start
    vocab = len(engine.tokenizer)
    rnd = random.Random(0)
    prompts = [[rnd.randrange(3, vocab) for _ in range(args.length)] for _ in range(args.prompts)]
    methods = [_parse_method(m) for m in args.methods]

    # Switch cost: alternate a sparse method and dense, so every call really switches
    # (one collective_rpc to every worker; no model reload).
    sparse = next((m for m in methods if m.phase != "dense"), _parse_method("quest:5"))
    switch_s = []
    for i in range(args.switches):
        start = time.perf_counter()
        engine.set_method(sparse if i % 2 == 0 else None)
        switch_s.append(time.perf_counter() - start)

    for method in methods:  # warm-up outside the timings
        engine.generate(prompts[: args.batch], method, 2)
    # Passes interleave methods and batch sizes, so load from other processes on a shared
    # machine spreads over all cells; each cell reports its median pass.
    rates: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.repeats):
        for text, method in zip(args.methods, methods, strict=True):
            for batch in (1, args.batch):
                engine.set_method(method)  # not timed: measured above
                start = time.perf_counter()
                for i in range(0, len(prompts), batch):
                    engine.generate(prompts[i : i + batch], method, args.new_tokens)
                rates.setdefault((text, batch), []).append(len(prompts) / (time.perf_counter() - start))
    rows = []
    for text in args.methods:
        row = {"method": text}
        for batch in (1, args.batch):
            row[f"prompts_per_s_batch{batch}"] = statistics.median(rates[(text, batch)])
            row[f"passes_batch{batch}"] = rates[(text, batch)]
        row["speedup"] = row[f"prompts_per_s_batch{args.batch}"] / row["prompts_per_s_batch1"]
        rows.append(row)
    engine.close()

    result = {
        "settings": vars(args),
        "import_s": import_s,
        "load_s": load_s,
        "switch_ms_median": statistics.median(switch_s) * 1e3,
        "switch_ms_max": max(switch_s) * 1e3,
        "throughput": rows,
    }
    print(f"vllm import {import_s:.1f} s; model load (VllmEngine) {load_s:.1f} s; method switch "
          f"{result['switch_ms_median']:.1f} ms median ({result['switch_ms_max']:.1f} ms max) "
          f"over {args.switches} switches; load / switch = {load_s / statistics.median(switch_s):.0f}x")
    print(f"\n| method | prompts/s, batch 1 | prompts/s, batch {args.batch} | speed-up |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['method']} | {row['prompts_per_s_batch1']:.2f} | "
              f"{row[f'prompts_per_s_batch{args.batch}']:.2f} | {row['speedup']:.2f}x |")
    if args.out:
        write_text(json.dumps(result, indent=2), args.out)
    return result


if __name__ == "__main__":
    main()
