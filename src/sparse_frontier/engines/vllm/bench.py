"""Throughput of the vLLM engine per method, batch 1 against batch B, and its switch cost.

    python -m sparse_frontier.engines.vllm.bench MODEL_DIR [--lengths 1024] [--prompts 16]
        [--methods dense quest:5 snapkv:5 vertical_slash:5] [--batch 8] [--out results.json]
    python -m sparse_frontier.engines.vllm.bench --shapes tests/fixtures/models/qwen2.5-7b-instruct \\
        --tokenizer TOKENIZER_DIR --dtype bfloat16 --lengths 16384 65536 --hf --out $OUT/vllm.json

MODEL_DIR is a model folder; ``--shapes CONFIG_DIR`` instead runs a real architecture with random
weights (``load_format="dummy"``: only its ``config.json`` is read; ``--tokenizer`` gives the
folder of a tokenizer covering its vocabulary, else the vocabulary shrinks to the tiny offline one).

Measures, in one process with one LLM: ``import vllm``, the model load (``VllmEngine(...)``),
the time to switch the sparse configuration (one ``collective_rpc``), and per length and method:
prompts per second at batch 1 (one ``generate`` per prompt, over ``--batch1-prompts`` prompts) and
at batch B (``--prompts`` prompts in batches of B), prefill time per prompt token and decode time
per output token at batch 1 (vLLM's per-request timestamps), and the achieved density. With ``--hf``
the hf engine then runs the same prompts at batch 1 on the same GPU (after vLLM has shut down).
Rows print as they finish and ``--out`` is rewritten after each (atomically), so a run cut short
keeps what it measured; ``--budget-s`` skips the rows that would start after that many seconds.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from ...io import write_text


def _parse_method(text: str):
    from ...attention import get_method

    name, _, ratio = text.partition(":")
    return get_method(name, float(ratio or 1.0))


def _write(result: dict, path: str | None) -> None:
    if path:
        write_text(json.dumps(result, indent=2), path)  # atomic, with the user's umask


def _per_token(gens, new_tokens: int) -> tuple[float, float]:
    """(prefill ms per prompt token, decode ms per output token), medians over the prompts."""
    prefill = statistics.median(g.prefill_ms / g.n_prompt_tokens for g in gens)
    decode = statistics.median(g.decode_ms / max(new_tokens - 1, 1) for g in gens)
    return prefill, decode


def _model_folder(args) -> tuple[str, dict]:
    """The folder to load and the extra engine settings (random weights for ``--shapes``)."""
    if not args.shapes:
        return args.model_dir, {}
    from ...models import write_model_folder

    longest = max(args.lengths) + args.new_tokens + 16
    folder = write_model_folder(args.shapes, Path(tempfile.mkdtemp(prefix="sf-bench-")) / "model",
                                tokenizer=args.tokenizer, max_position_embeddings=max(longest, 32768))
    return str(folder), {"load_format": "dummy"}


def _hf_rows(args, folder: str, prompts_by_length: dict, methods, result: dict, deadline: float) -> None:
    """The hf engine on the same prompts at batch 1 (random weights of the same shapes)."""
    import torch

    from ..hf import HfEngine

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.shapes:
        from ...models import build_random_model

        engine = HfEngine.from_model(build_random_model(folder, dtype=args.dtype, device=device))
    else:
        engine = HfEngine(folder, dtype=args.dtype, device=device)
    for length in args.hf_lengths or [min(args.lengths)]:
        prompts = prompts_by_length[length]
        for method in methods:  # warm-up (Triton tunes per shape in this process too)
            engine.generate(prompts[:1], method, 2)
        for text, method in zip(args.methods, methods, strict=True):
            if time.perf_counter() > deadline:
                print(f"hf {length} {text}: skipped (--budget-s)", flush=True)
                continue
            start = time.perf_counter()
            gens = engine.generate(prompts[: args.batch1_prompts], method, args.new_tokens)
            rate = len(gens) / (time.perf_counter() - start)
            prefill, decode = _per_token(gens, args.new_tokens)
            row = {"engine": "hf", "length": length, "method": text, "prompts_per_s_batch1": rate,
                   "prefill_ms_per_token": prefill, "decode_ms_per_token": decode,
                   "density": statistics.mean(g.density for g in gens)}
            result["rows"].append(row)
            print(f"hf   {length:>6} {text:<18} {rate:7.3f} prompts/s  "
                  f"prefill {prefill * 1e3:7.2f} us/token  "
                  f"decode {decode:7.2f} ms/token", flush=True)
            _write(result, args.out)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", nargs="?")
    parser.add_argument("--shapes", help="a folder with a real config.json: random weights of that model")
    parser.add_argument("--tokenizer", help="with --shapes: a tokenizer covering the model's vocabulary")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024])
    parser.add_argument("--prompts", type=int, default=16, help="prompts per length at batch --batch")
    parser.add_argument("--batch1-prompts", type=int, default=None, help="prompts timed one at a time")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--methods", nargs="+", default=["dense", "quest:5", "snapkv:5", "vertical_slash:5"])
    parser.add_argument("--switches", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=1, help="timed passes; the median is reported")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--gpu-memory-utilization", type=float, default=None)
    parser.add_argument("--hf", action="store_true", help="also time the hf engine on the same prompts")
    parser.add_argument("--hf-lengths", type=int, nargs="+", help="with --hf: these lengths (the shortest)")
    parser.add_argument("--budget-s", type=float, default=float("inf"), help="skip rows after it")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    if bool(args.model_dir) == bool(args.shapes):
        parser.error("give either MODEL_DIR or --shapes CONFIG_DIR")
    args.batch1_prompts = args.batch1_prompts or args.prompts
    deadline = time.perf_counter() + args.budget_s

    start = time.perf_counter()
    import vllm  # noqa: F401  (timed on its own: part of every job's start-up)

    from . import VllmEngine

    import_s = time.perf_counter() - start
    folder, extra = _model_folder(args)
    if args.gpu_memory_utilization:
        extra["gpu_memory_utilization"] = args.gpu_memory_utilization
    start = time.perf_counter()
    engine = VllmEngine(folder, dtype=args.dtype, max_model_len=max(args.lengths) + args.new_tokens + 16,
                        max_num_seqs=args.batch, **extra)
    load_s = time.perf_counter() - start
    vocab = min(len(engine.tokenizer), engine.llm.llm_engine.model_config.get_vocab_size())
    rnd = random.Random(0)
    prompts_by_length = {n: [[rnd.randrange(3, vocab) for _ in range(n)] for _ in range(args.prompts)]
                         for n in args.lengths}
    methods = [_parse_method(m) for m in args.methods]

    # Switch cost: alternate a sparse method and dense, so every call really switches.
    sparse = next((m for m in methods if m.phase != "dense"), _parse_method("quest:5"))
    switch_s = []
    for i in range(args.switches):
        start = time.perf_counter()
        engine.set_method(sparse if i % 2 == 0 else None)
        switch_s.append(time.perf_counter() - start)
    result = {
        "settings": vars(args),
        "import_s": import_s,
        "load_s": load_s,
        "switch_ms_median": statistics.median(switch_s) * 1e3,
        "switch_ms_max": max(switch_s) * 1e3,
        "rows": [],
    }
    print(f"vllm {vllm.__version__} import {import_s:.1f} s; model load (VllmEngine) {load_s:.1f} s; method "
          f"switch {result['switch_ms_median']:.1f} ms median ({result['switch_ms_max']:.1f} ms max) over "
          f"{args.switches} switches", flush=True)

    for length, prompts in prompts_by_length.items():
        for method in methods:  # warm-up (Triton compiles per shape) outside the timings
            engine.generate(prompts[:1], method, 2)
        for text, method in zip(args.methods, methods, strict=True):
            if time.perf_counter() > deadline:
                print(f"vllm {length} {text}: skipped (--budget-s)", flush=True)
                continue
            engine.set_method(method)  # not timed: measured above
            rates: dict[int, list[float]] = {1: [], args.batch: []}
            single = []
            for _ in range(args.repeats):
                for batch, n in ((1, args.batch1_prompts), (args.batch, args.prompts)):
                    start = time.perf_counter()
                    gens = []
                    for i in range(0, n, batch):
                        gens += engine.generate(prompts[i : min(i + batch, n)], method, args.new_tokens)
                    rates[batch].append(n / (time.perf_counter() - start))
                    if batch == 1:
                        single = gens
            prefill, decode = _per_token(single, args.new_tokens)
            row = {"engine": "vllm", "length": length, "method": text,
                   "prompts_per_s_batch1": statistics.median(rates[1]),
                   f"prompts_per_s_batch{args.batch}": statistics.median(rates[args.batch]),
                   "prefill_ms_per_token": prefill, "decode_ms_per_token": decode,
                   "density": statistics.mean(g.density for g in single)}
            result["rows"].append(row)
            print(f"vllm {length:>6} {text:<18} {row['prompts_per_s_batch1']:7.3f} / "
                  f"{row[f'prompts_per_s_batch{args.batch}']:7.3f} prompts/s (batch 1 / {args.batch})  "
                  f"prefill {prefill * 1e3:7.2f} us/token  decode {decode:7.2f} ms/token  "
                  f"density {row['density']:.3f}", flush=True)
            _write(result, args.out)
    engine.close()
    del engine
    if args.hf:
        _hf_rows(args, folder, prompts_by_length, methods, result, deadline)
    print_table(result)
    _write(result, args.out)
    return result


def print_table(result: dict) -> None:
    """The rows as one Markdown table; each speed also as a ratio to dense at the same length."""
    batch = result["settings"]["batch"]
    dense = {(r["engine"], r["length"]): r for r in result["rows"] if r["method"] == "dense"}
    print(f"\n| engine | length | method | density | prompts/s, batch 1 | prompts/s, batch {batch} | "
          "prefill us/token | decode ms/token | batch 1 vs dense |\n|---|---|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        base = dense.get((r["engine"], r["length"]))
        ratio = f"{r['prompts_per_s_batch1'] / base['prompts_per_s_batch1']:.2f}x" if base else "-"
        batched = r.get(f"prompts_per_s_batch{batch}")
        print(f"| {r['engine']} | {r['length']} | {r['method']} | {r['density']:.3f} | "
              f"{r['prompts_per_s_batch1']:.3f} | {'-' if batched is None else f'{batched:.3f}'} | "
              f"{r['prefill_ms_per_token'] * 1e3:.2f} | {r['decode_ms_per_token']:.2f} | {ratio} |")


if __name__ == "__main__":
    main()
