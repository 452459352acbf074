"""Block-Sparse selection + attention at long context: the fused GPU selection against the PyTorch one.

Qwen2.5-7B attention shapes (28 query heads, 4 kv heads, head dim 128, bf16, batch 1), T = S.
For each input kind (see bench_kernels.py: 'structured' and 'iid') and compression ratio:

  budget      BlockSparse.top_k_for (host search, once per shape), ms of one call
  select      select_blocks on CUDA: pooling + the fused kernel (kernels/block_select), the default
  kernel      the kernel alone on pooled blocks (best tile shape tried is listed)
  torch       select_blocks(..., fused=False): the previous PyTorch path (banded bmm + torch.topk)
  attn        ops.block_sparse_attention over the selected mask (index building + attention)
  sel+attn    select + attention, what a prefill pays once the budget is known
  prefill     BlockSparse.prefill end to end (budget search, selection, attention, checks)
  dense       fastest SDPA backend (cuDNN / FlashAttention) in the same run

Correctness is checked in the same run: the fused mask against block_select_reference (rows that
differ must be float32 near-ties) and its pair count against the method's closed-form budget.
Times: triton.testing.do_bench medians (ms).

Run:  PYTHONPATH=src:benchmarks python benchmarks/bench_block_select.py --length 131072 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch
from bench_kernels import bench, dense_prefill, make_inputs

from sparse_frontier.attention.block_sparse import (
    BlockGeometry,
    BlockSparse,
    _pool,
    block_pairs,
    blocks_per_query_block,
    select_blocks,
)
from sparse_frontier.kernels import ops
from sparse_frontier.kernels.block_select.reference import block_select_reference, block_select_scores
from sparse_frontier.kernels.block_select.triton_block_select import block_select_triton
from sparse_frontier.kernels.block_sparse.reference import block_sparse_pairs

#: (block_m, block_n, num_warps) tried for the kernel; the first is the default.
TILES = [(64, 32, 4), (64, 64, 4), (64, 64, 8), (128, 64, 8), (128, 32, 4), (32, 64, 4), (64, 128, 8)]


def near_tie_rows(mask, ref, qp, kp, rel: float = 2e-5) -> tuple[int, int]:
    """(rows where mask and ref differ, of those the rows whose swapped blocks are NOT a near-tie)."""
    rows = (mask != ref).any(-1)
    n = int(rows.sum())
    if n == 0:
        return 0, 0
    bad = 0
    for h in rows.any(1).nonzero().flatten().tolist():  # per head: a score row grid at a time
        scores = block_select_scores(qp, kp, h, h + 1)[0][rows[h]]
        d = (mask[h] != ref[h])[rows[h]]
        top, bottom = (
            scores.masked_fill(~d, float("-inf")).amax(-1),
            scores.masked_fill(~d, float("inf")).amin(-1),
        )
        spread = top - bottom
        scale = scores.masked_fill(scores == float("-inf"), 0).abs().amax(-1)
        bad += int((spread > rel * scale).sum())
    return n, bad


def case(q, k, v, length: int, cr: float, tiles: list) -> dict:
    method = BlockSparse(compression_ratio=cr)
    t0 = time.perf_counter()
    top_k = method.top_k_for(length, length)
    budget_ms = (time.perf_counter() - t0) * 1e3
    geo = BlockGeometry.of(length, length, 16, q.device)
    n_sel = blocks_per_query_block(top_k, geo)
    qp, kp = _pool(q, 16).bfloat16(), _pool(k, 16).bfloat16()
    mask = select_blocks(q, k, top_k)
    ref = block_select_reference(qp, kp, n_sel, geo.n_full, geo.last_block)
    differing, not_near_tie = near_tie_rows(mask, ref, qp, kp)
    del ref
    torch_mask = select_blocks(q, k, top_k, fused=False)
    pairs = block_sparse_pairs(mask, length, length)
    budget_pairs = q.shape[0] * block_pairs(top_k, BlockGeometry.of(length, length, 16), 16, length)
    row = {
        "top_k": top_k,
        "budget_ms": budget_ms,
        "pairs_match_budget": pairs == budget_pairs,
        "rows_differing_from_reference": differing,
        "rows_differing_not_near_tie": not_near_tie,
        "rows_differing_from_torch_path": int((mask != torch_mask).any(-1).sum()),
        "rows": int(mask.shape[0] * mask.shape[1]),
    }
    del torch_mask
    kernel_ms = {}
    for bm, bn, nw in tiles:
        key = f"{bm}x{bn}/w{nw}"
        run = lambda bm=bm, bn=bn, nw=nw: block_select_triton(  # noqa: E731
            qp, kp, n_sel, geo.n_full, geo.last_block, bm, bn, nw
        )
        differ = int((run() != mask).any(-1).sum())  # tile shapes may only move float32 near-ties
        if differ:
            row[f"rows differing with tile {key}"] = differ
        kernel_ms[key] = bench(run)
    row["kernel_ms"] = kernel_ms
    row["select_ms"] = bench(lambda: select_blocks(q, k, top_k))
    row["torch_ms"] = bench(lambda: select_blocks(q, k, top_k, fused=False))
    row["attn_ms"] = bench(lambda: ops.block_sparse_attention(q, k, v, mask))
    row["select_attn_ms"] = bench(lambda: ops.block_sparse_attention(q, k, v, select_blocks(q, k, top_k)))
    row["prefill_ms"] = bench(lambda: method.prefill(q, k, v))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--length", type=int, default=131072)
    parser.add_argument("--compressions", type=float, nargs="+", default=[10, 20])
    parser.add_argument("--inputs", nargs="+", default=["structured", "iid"], choices=["structured", "iid"])
    parser.add_argument(
        "--all-tiles", action="store_true", help="time every tile shape in TILES, not the default only"
    )
    parser.add_argument("--json", help="write every measured row here (atomically)")
    args = parser.parse_args()
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, length {args.length}", flush=True)
    rows = []
    for i, kind in enumerate(args.inputs):
        q, k, v = make_inputs(kind, args.length, seed=i)
        dense_ms, dense_name, _ = dense_prefill(q, k, v)
        for cr in args.compressions:
            r = case(q, k, v, args.length, cr, TILES if args.all_tiles else TILES[:1])
            r.update(kind=kind, length=args.length, compression=cr, dense_ms=dense_ms, dense=dense_name)
            rows.append(r)
            print(json.dumps(r), flush=True)
    print("\n| inputs | CR | top_k | budget ms | select ms (fused) | kernel ms | select ms (torch) | attn ms "
          "| select + attn ms | prefill ms | dense ms | speedup (dense / select+attn) | select share "
          "| rows != reference (not near-tie) |\n" + "|---" * 14 + "|")  # fmt: skip
    for r in rows:
        best = min(r["kernel_ms"].values())
        sa = r["select_attn_ms"]
        print(
            f"| {r['kind']} | {r['compression']:g} | {r['top_k']:.2f} | {r['budget_ms']:.1f} "
            f"| {r['select_ms']:.2f} | {best:.2f} | {r['torch_ms']:.1f} | {r['attn_ms']:.2f} | {sa:.2f} "
            f"| {r['prefill_ms']:.2f} | {r['dense_ms']:.1f} ({r['dense']}) | **{r['dense_ms'] / sa:.1f}x** "
            f"| {100 * r['select_ms'] / sa:.1f}% | {r['rows_differing_from_reference']} "
            f"({r['rows_differing_not_near_tie']}) of {r['rows']} |"
        )
    if args.json:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(args.json)) or ".", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(rows, f, indent=1)
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
