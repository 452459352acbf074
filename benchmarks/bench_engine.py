"""Model-level GPU benchmark of the hf engine: dense against every method, selection included.

Builds a random-weight model from a real ``config.json`` (Qwen2.5-7B-Instruct's ships under
tests/fixtures/models/) on one GPU in bf16, all layers, and for each length runs one prompt through
``HfEngine`` with dense and every method at each compression ratio. Per run it measures:

- prefill seconds (the whole model, the eviction methods' cache compaction included), and how much
  of it attention took (CUDA events around every layer's attention call), and of that the methods'
  selection (their ``plan`` / ``keep_mask``);
- decode milliseconds per token (median over ``--decode-tokens`` steps), attention and selection
  per token likewise;
- peak GPU memory above the weights, and the achieved density.

It prints speedups against dense in the same run, dense's attention share of the prefill and the
Amdahl bound that share implies, then checks the targets at the longest length. Results are the
committed table in docs/benchmarks.md; the command that made them is there too:

    python benchmarks/bench_engine.py --lengths 16384 32768 65536 131072 --json $OUT/engine.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from sparse_frontier.attention import get_method
from sparse_frontier.engines.hf import HfEngine
from sparse_frontier.models import build_random_model

QWEN_7B = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "models" / "qwen2.5-7b-instruct"
METHODS = (
    "block_sparse",
    "block_sparse:block_size=64",  # MInference's unit and the paper's block-size ablation
    "vertical_slash",
    "flexprefill",
    "snapkv",
    "ada_snapkv",
    "quest",
)
#: (method, ratio, phase measured, minimum speedup) at the longest length (128K).
TARGETS = (
    ("block_sparse", 20, "prefill", 2.5),
    ("vertical_slash", 20, "prefill", 2.0),
    ("flexprefill", 20, "prefill", 2.0),
    ("quest", 20, "decode", 1.3),
    ("snapkv", 20, "decode", 1.3),
)


class _Timed:
    """CUDA events around a method's selection call (its ``plan`` or ``keep_mask``)."""

    def __init__(self, fn):
        self.fn, self.events = fn, []

    def __call__(self, *args, **kwargs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = self.fn(*args, **kwargs)
        end.record()
        self.events.append((start, end))
        return out

    def take_ms(self) -> float:
        ms = sum(a.elapsed_time(b) for a, b in self.events)
        self.events.clear()
        return ms


def _events_ms(events: list) -> float:
    ms = sum(a.elapsed_time(b) for a, b in events)
    events.clear()
    return ms


def make_method(spec: str, ratio: float):
    """``name`` or ``name:key=value,...`` (e.g. ``block_sparse:block_size=64``) at ``ratio``."""
    name, _, params = spec.partition(":")
    kwargs = {key: int(value) for key, value in (item.split("=") for item in params.split(",") if item)}
    return get_method(name, ratio, **kwargs)


def warm_up(spec: str, ratio: float, config, length: int) -> None:
    """One layer's attention at this length, prefill and decode: Triton compiles and tunes for the
    shape here, not inside a timed run (a whole-model warm-up per length would double the bench)."""
    hq, hkv = config.num_attention_heads, config.num_key_value_heads
    d = config.hidden_size // hq if getattr(config, "head_dim", None) is None else config.head_dim
    q = torch.randn(hq, length, d, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(hkv, length, d, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    method = make_method(spec, ratio)
    method.prefill(q, k, v)
    memo = {}
    for s in (length - 1, length):
        method.decode(q[:, -1:], k[:, :s], v[:, :s], memo=memo)
    torch.cuda.synchronize()


def run_one(engine: HfEngine, prompt: list[int], name: str, ratio: float, decode_tokens: int) -> dict:
    """One prompt: prefill, then ``decode_tokens`` greedy steps, each timed on its own."""
    method = make_method(name, ratio)
    selection = None
    for attr in ("plan", "keep_mask"):
        if hasattr(method, attr):
            selection = _Timed(getattr(method, attr))
            setattr(method, attr, selection)
            break
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    start = time.perf_counter()
    logits, sequence = engine.prefill(prompt, method, max_new_tokens=decode_tokens + 1, timed=True)
    torch.cuda.synchronize()
    prefill_s = time.perf_counter() - start
    events = sequence.state.attention_events
    row = {
        "method": name,
        "compression_ratio": ratio,
        "prefill_s": prefill_s,
        "prefill_attention_ms": _events_ms(events),
        "prefill_selection_ms": selection.take_ms() if selection else 0.0,
    }
    steps, attention, selected = [], [], []
    token = int(logits.argmax())
    for _ in range(decode_tokens):
        start = time.perf_counter()
        token = int(engine.step(token, sequence).argmax())  # the argmax syncs
        steps.append((time.perf_counter() - start) * 1e3)
        attention.append(_events_ms(events))
        selected.append(selection.take_ms() if selection else 0.0)
    row |= {
        "decode_ms_per_token": statistics.median(steps),
        "decode_attention_ms": statistics.median(attention),
        "decode_selection_ms": statistics.median(selected),
        "peak_gib_above_weights": (torch.cuda.max_memory_allocated() - base) / 2**30,
        "density": sequence.state.density(),
    }
    return row


def guarded(engine, prompt, name, ratio, decode_tokens) -> dict:
    try:
        return run_one(engine, prompt, name, ratio, decode_tokens)
    except torch.OutOfMemoryError as err:
        torch.cuda.empty_cache()
        print(f"  {name} CR {ratio}: out of memory ({str(err).splitlines()[0][:120]})", file=sys.stderr)
        return {"method": name, "compression_ratio": ratio, "error": "out of memory"}


def amdahl(share: float, ratio: float) -> float:
    """Whole-step speedup when only the attention share gets ``ratio`` times faster."""
    return 1.0 / ((1.0 - share) + share / ratio)


def print_length(length: int, rows: list[dict], ratios: list[float]) -> None:
    dense = rows[0]
    share = dense["prefill_attention_ms"] / (dense["prefill_s"] * 1e3)
    bounds = ", ".join(f"CR {r:g}: {amdahl(share, r):.2f}x" for r in ratios)
    dshare = dense["decode_attention_ms"] / dense["decode_ms_per_token"]
    print(
        f"\n### {length} tokens\n\ndense attention share: prefill {share:.0%} (Amdahl bound {bounds}, "
        f"any CR: {1 / (1 - share):.2f}x); decode {dshare:.0%} (any CR: {1 / (1 - dshare):.2f}x)\n"
    )
    print(
        "| method | CR | achieved CR | prefill s | prefill speedup | attention (selection) ms | "
        "decode ms/token | decode speedup | attention (selection) ms/token | peak GiB above weights |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        if "error" in row:
            print(f"| {row['method']} | {row['compression_ratio']:g} | {row['error']} |||||||")
            continue
        print(
            f"| {row['method']} | {row['compression_ratio']:g} | {1 / row['density']:.1f} | "
            f"{row['prefill_s']:.2f} | {dense['prefill_s'] / row['prefill_s']:.2f}x | "
            f"{row['prefill_attention_ms']:.0f} ({row['prefill_selection_ms']:.0f}) | "
            f"{row['decode_ms_per_token']:.1f} | "
            f"{dense['decode_ms_per_token'] / row['decode_ms_per_token']:.2f}x | "
            f"{row['decode_attention_ms']:.2f} ({row['decode_selection_ms']:.2f}) | "
            f"{row['peak_gib_above_weights']:.1f} |"
        )


def check_targets(rows: list[dict]) -> None:
    dense = rows[0]
    print("\ntargets at this length:")
    for name, ratio, phase, goal in TARGETS:
        row = next((r for r in rows if r["method"] == name and r["compression_ratio"] == ratio), None)
        if row is None or "error" in row:
            print(f"- {name} CR {ratio} {phase}: not run")
            continue
        key = "prefill_s" if phase == "prefill" else "decode_ms_per_token"
        speedup = dense[key] / row[key]
        verdict = "met" if speedup >= goal else f"missed by {goal / speedup:.2f}x"
        print(f"- {name} CR {ratio} {phase}: {speedup:.2f}x (target {goal}x): {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(QWEN_7B), help="folder holding the model's config.json")
    parser.add_argument("--layers", type=int, default=None, help="cut the model to this many layers")
    parser.add_argument("--lengths", type=int, nargs="+", default=[16384, 32768, 65536, 131072])
    parser.add_argument("--ratios", type=float, nargs="+", default=[5, 20])
    parser.add_argument(
        "--methods", nargs="+", default=list(METHODS), help="names, or name:key=value,... for parameters"
    )
    parser.add_argument("--decode-tokens", type=int, default=32)
    parser.add_argument("--json", default=None, help="write every row here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_engine.py needs a CUDA GPU.")

    overrides = {"max_position_embeddings": max(args.lengths) + args.decode_tokens + 1}
    if args.layers:
        overrides["num_hidden_layers"] = args.layers
    model = build_random_model(args.config, **overrides)
    engine = HfEngine.from_model(model)
    engine.eos_ids = set()  # random weights: always decode the full count
    config = model.config
    weights_gib = torch.cuda.memory_allocated() / 2**30
    print(
        f"{torch.cuda.get_device_name()} | torch {torch.__version__} | {config.num_hidden_layers} layers, "
        f"{config.num_attention_heads}/{config.num_key_value_heads} heads, weights {weights_gib:.1f} GiB bf16"
    )
    vocab = config.vocab_size
    gen = torch.Generator().manual_seed(0)
    cells = [("dense", 1.0)] + [(m, r) for m in args.methods for r in args.ratios]
    run_one(engine, torch.randint(0, vocab, (1024,), generator=gen).tolist(), "dense", 1.0, 2)  # cuBLAS up
    results = []
    for length in args.lengths:
        prompt = torch.randint(0, vocab, (length,), generator=gen).tolist()
        rows = []
        for name, ratio in cells:
            warm_up(name, ratio, config, length)
            rows.append(guarded(engine, prompt, name, ratio, args.decode_tokens) | {"length": length})
            print(f"  done {length} {name} CR {ratio:g}", file=sys.stderr, flush=True)
        if "error" in rows[0]:
            print(f"\n### {length} tokens: dense ran out of memory; no speedups.")
        else:
            print_length(length, rows, args.ratios)
            if length == max(args.lengths):
                check_targets(rows)
        results.extend(rows)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
