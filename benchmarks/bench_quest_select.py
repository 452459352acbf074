"""Quest's decode selection on a GPU, part by part (issue 16): where the step's time goes.

Qwen2.5-7B attention shapes (28 query heads, 4 kv heads, head dim 128, bf16, batch 1), structured
inputs (bench_kernels.make_inputs), shared pages per KV group, summaries kept as during decoding.
Per length and compression ratio, each part captured in a CUDA graph and replayed (median µs, L2
flushed before each replay, bench_kernels.graph_ms):

  scores      the histogram's memset + the scores kernel (bounds and top-bits histogram)
  top-n wN    the selection kernel alone at N warps per program (8 is the default)
  step        the whole fused step (scores, top-n, attention, merge): quest_decode_fused
  exact       the top-n list equals a stable sort of the same scores (ties to the lower page)

Run:  PYTHONPATH=src:benchmarks python benchmarks/bench_quest_select.py --json $OUT/quest_select.json
      [--lengths 131072 32768] [--compressions 10 20] [--warps 4 8 16] [--reps 30]
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from bench_kernels import graph_ms, make_inputs

from sparse_frontier.attention.quest import PageSummaries, Quest, _selection_inputs, quest_decode_fused
from sparse_frontier.kernels.quest.triton_select import (
    quest_select_top_pages_triton,
    quest_selection_scores_triton,
)


def selection_row(q1, k, v, cr: float, warps: list[int], reps: int) -> dict:
    method = Quest(compression_ratio=cr)
    summaries = PageSummaries(method.page_size)
    _, low, high, n, current = _selection_inputs(method, k, summaries)
    n_pages = low.shape[1]
    scores, hist = quest_selection_scores_triton(q1, low, high, n_pages, current, True)
    pages = quest_select_top_pages_triton(scores, n, histogram=hist)
    order = scores.argsort(dim=1, descending=True, stable=True)[:, :n]
    row = {
        "length": k.shape[1],
        "compression": cr,
        "pages": n_pages,
        "selected": n,
        "exact": bool(torch.equal(pages, order.sort(dim=1).values.int())),
        "scores_us": 1e3
        * graph_ms(lambda: quest_selection_scores_triton(q1, low, high, n_pages, current, True), reps),
        "step_us": 1e3 * graph_ms(lambda: quest_decode_fused(method, q1, k, v, summaries), reps),
    }
    for w in warps:
        row[f"topn_w{w}_us"] = 1e3 * graph_ms(
            lambda w=w: quest_select_top_pages_triton(scores, n, histogram=hist, num_warps=w), reps
        )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lengths", type=int, nargs="+", default=[131072, 65536, 32768, 16384])
    parser.add_argument("--compressions", type=float, nargs="+", default=[2, 10, 20])
    parser.add_argument("--warps", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--reps", type=int, default=30, help="graph replays per measurement (median)")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_quest_select.py needs a CUDA GPU; run it on one.")
    print(f"GPU: {torch.cuda.get_device_name()}")
    cols = ["scores_us", *(f"topn_w{w}_us" for w in args.warps), "step_us"]
    print("| length | CR | pages | selected | exact | " + " | ".join(c[:-3] + " µs" for c in cols) + " |")
    print("|---" * (5 + len(cols)) + "|")
    rows = []
    for length in args.lengths:
        q, k, v = make_inputs("structured", length, seed=length + 1)
        q1 = q[:, -1:].contiguous()
        del q
        for cr in args.compressions:
            r = selection_row(q1, k, v, cr, args.warps, args.reps)
            rows.append(r)
            cells = [f"{length // 1024}K", f"{cr:g}", str(r["pages"]), str(r["selected"]), str(r["exact"])]
            print("| " + " | ".join(cells + [f"{r[c]:.1f}" for c in cols]) + " |", flush=True)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump({"gpu": torch.cuda.get_device_name(), "rows": rows}, f, indent=1)
        del q1, k, v
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
