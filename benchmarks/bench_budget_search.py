"""Budget search cost: rounds, candidate budgets evaluated and time of Vertical-Slash's and FlexPrefill's
``budgets`` on one layer's ranking (Qwen2.5-7B shapes, bench_kernels.py's structured inputs).

The ranking (scores, ordering) is built once per length; each row then times ``method.budgets`` alone.
A *round* is one batched evaluation of the method's count (one host round trip); *evaluated* is the
candidate budgets over all rounds. On a GPU the rounds matter most (each is a launch plus a sync and a
walk whose length is the budget), on the CPU the evaluations; bench_kernels.py times the search on the
GPU inside the whole step.

Run:  PYTHONPATH=src:tests python benchmarks/bench_budget_search.py --lengths 16384 131072 --ratios 2 20
      [--device cpu|cuda] [--methods vertical_slash flexprefill] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from bench_kernels import make_inputs

from sparse_frontier.attention import causal_pairs, get_method
from sparse_frontier.attention.vertical_slash import VerticalSlashIndex


def counted() -> list[int]:
    """Record the candidates of every count evaluation (the searches' rounds), whichever way a
    search calls the counts (bound to the index or through the class)."""
    rounds: list[int] = []
    for name in ("pairs", "kernel_cells"):
        count = getattr(VerticalSlashIndex, name)
        count = getattr(count, "counted", count)  # unwrap a previous call's wrapper

        def wrapper(index, n_vertical, n_slash, count=count):
            rounds.append(n_vertical.shape[0] if n_vertical.dim() > 1 else 1)
            return count(index, n_vertical, n_slash)

        wrapper.counted = count
        setattr(VerticalSlashIndex, name, wrapper)
    return rounds


def measure(method_name: str, ratio: float, q, k, index: VerticalSlashIndex, reps: int) -> dict:
    method = get_method(method_name, ratio)
    target = causal_pairs(q.shape[1], k.shape[1]) * q.shape[0] / ratio
    rounds = counted()
    times = []
    for _ in range(reps):
        rounds.clear()
        if q.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        n_v, n_s, info = method.budgets(index, target)
        if q.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    searched = list(rounds)  # before the check below adds its own count
    work = float(method.cost(index, n_v, n_s).sum())
    return {
        "method": method_name, "length": k.shape[1], "ratio": ratio, "device": str(q.device),
        "budget_search_ms": 1e3 * statistics.median(times), "rounds": len(searched),
        "evaluated": sum(searched), "relative_error": work / target - 1,
        **{key: value for key, value in info.items() if key != "counts"},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lengths", type=int, nargs="+", default=[16384, 131072])
    parser.add_argument("--ratios", type=float, nargs="+", default=[2, 5, 10, 20])
    parser.add_argument("--methods", nargs="+", default=["vertical_slash", "flexprefill"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--gpu-rounds",
        action="store_true",
        help="search as on a GPU (wide rounds) even on the CPU, to count them",
    )
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    if args.gpu_rounds:
        from sparse_frontier.attention import flexprefill, vertical_slash

        vertical_slash.search_batch = flexprefill.search_batch = lambda like: 6
    rows = []
    print("| method | length | CR | budget search ms | rounds | candidates evaluated | rel. error | budget |")
    print("|---|---|---|---|---|---|---|---|")
    for length in args.lengths:
        q, k, _ = make_inputs("structured", length, seed=0, device=args.device)
        index = get_method("vertical_slash", 2).index(q, k)
        for name in args.methods:
            for ratio in args.ratios:
                r = measure(name, ratio, q, k, index, args.reps)
                rows.append(r)
                budget = {key: r[key] for key in ("n", "gamma", "min_budget") if key in r}
                print(
                    f"| {name} | {length // 1024}K | {ratio:g} | {r['budget_search_ms']:.1f} | "
                    f"{r['rounds']} | {r['evaluated']} | {r['relative_error']:+.1e} | {budget} |",
                    flush=True,
                )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
