"""Block-Sparse selection + attention at long context: the fused GPU selection against the PyTorch one.

Qwen2.5-7B attention shapes (28 query heads, 4 kv heads, head dim 128, bf16, batch 1), T = S.
For each input kind (see bench_kernels.py: 'structured' and 'iid') and compression ratio:

  budget      BlockSparse.top_k_for (host search, once per shape), ms of one call
  select      select_blocks on CUDA: pooling + the fused kernel (kernels/block_select), the default
  kernel      the kernel alone on pooled blocks, default algorithm (best tile shape tried is listed)
  variants    the kernel alone per algorithm: 'scan' (the first version: every search pass a full
              pass over the scores), 'compact' (the default: candidate compaction, moments from
              prefix Gram matrices), 'compact-pass' (compaction, moments from a full pass),
              'compact-noshrink' (buffer passes reread the whole buffer), and
              'compact-capN' per --capacities; each variant's mask must equal scan's (same
              float32 scores, same tie rule), which the run checks (rows that differ, and of
              those the rows that are not float32 near-ties: must be 0)
  gram        gram_checkpoints alone (torch, included in 'compact')
  stats       the default kernel's per-program counters (full search passes of the fallback, late
              compactions, buffer passes, rows the guess missed, largest buffer fill)
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
from sparse_frontier.kernels.block_select.triton_block_select import (
    STATS,
    block_select_triton,
    gram_checkpoints,
)
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


def variants(capacities: list[int]) -> dict[str, dict]:
    """Kernel options per named variant (see the module docstring)."""
    named = {
        "scan": {"algorithm": "scan"},
        "compact": {},
        "compact-pass": {"moments": "pass"},
        "compact-noshrink": {"shrink": False},
    }
    named.update({f"compact-cap{c}": {"capacity": c} for c in capacities})
    return named


def stats_summary(stats: torch.Tensor, rows: int) -> dict:
    """Aggregates of the compact kernel's per-program counters (STATS)."""
    x = stats.double()
    col = {name: x[:, i] for i, name in enumerate(STATS)}
    return {
        "programs": int(x.shape[0]),
        "programs_with_fallback": int((col["full_search_passes"] + col["compaction_passes"] > 0).sum()),
        "full_search_passes_mean": float(col["full_search_passes"].mean()),
        "full_search_passes_max": int(col["full_search_passes"].max()),
        "late_compactions": int(col["compaction_passes"].sum()),
        "buffer_passes_mean": float(col["buffer_passes"].mean()),
        "buffer_passes_max": int(col["buffer_passes"].max()),
        "rows_missed_by_guess": int(col["rows_not_buffered_by_guess"].sum()),
        "rows": rows,
        "max_fill_mean": float(col["max_fill"].mean()),
        "max_fill_max": int(col["max_fill"].max()),
    }


def case(q, k, v, length: int, cr: float, tiles: list, capacities: list[int]) -> dict:
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
    sel_args = (qp, kp, n_sel, geo.n_full, geo.last_block)
    scan_mask = block_select_triton(*sel_args, algorithm="scan")
    row["variants_ms"], row["variants_rows_differing_from_scan"] = {}, {}
    row["variants_rows_differing_from_scan_not_near_tie"] = {}
    for name, options in variants(capacities).items():
        # Same tiles, same float32 scores: the masks should be identical; if a compiler schedules the
        # products differently, only float32 near-ties may move (counted separately).
        differ, not_near_tie = near_tie_rows(block_select_triton(*sel_args, **options), scan_mask, qp, kp)
        row["variants_rows_differing_from_scan"][name] = differ
        row["variants_rows_differing_from_scan_not_near_tie"][name] = not_near_tie
        row["variants_ms"][name] = bench(lambda options=options: block_select_triton(*sel_args, **options))
    del scan_mask
    row["scan_over_compact"] = row["variants_ms"]["scan"] / row["variants_ms"]["compact"]
    row["gram_checkpoints_ms"] = bench(lambda: gram_checkpoints(kp))  # host-side part of 'compact'
    n_prog = q.shape[0] * -(-geo.rows.shape[0] // 64)
    stats = torch.zeros(n_prog, len(STATS), dtype=torch.int32, device=q.device)
    block_select_triton(*sel_args, stats=stats)
    row["compact_stats"] = stats_summary(stats.cpu(), row["rows"])
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
    parser.add_argument(
        "--capacities", type=int, nargs="*", default=[128, 256, 1024],
        help="extra buffer capacities of the compact kernel to time (scores per row)",
    )  # fmt: skip
    parser.add_argument("--json", help="write every measured row here (atomically)")
    args = parser.parse_args()
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, length {args.length}", flush=True)
    rows = []
    for i, kind in enumerate(args.inputs):
        q, k, v = make_inputs(kind, args.length, seed=i)
        dense_ms, dense_name, _ = dense_prefill(q, k, v)
        for cr in args.compressions:
            r = case(q, k, v, args.length, cr, TILES if args.all_tiles else TILES[:1], args.capacities)
            r.update(kind=kind, length=args.length, compression=cr, dense_ms=dense_ms, dense=dense_name)
            rows.append(r)
            print(json.dumps(r), flush=True)
    names = list(variants(args.capacities))
    print("\n| inputs | CR | " + " | ".join(f"{n} ms" for n in names) + " | scan / compact "
          "| masks == scan | fallback programs | full search passes (mean, max) | buffer passes (mean, max) "
          "| rows missed by guess |\n" + "|---" * (len(names) + 8) + "|")  # fmt: skip
    for r in rows:
        st = r["compact_stats"]
        same = all(d == 0 for d in r["variants_rows_differing_from_scan"].values())
        tie_only = all(d == 0 for d in r["variants_rows_differing_from_scan_not_near_tie"].values())
        print(
            f"| {r['kind']} | {r['compression']:g} | "
            + " | ".join(f"{r['variants_ms'][n]:.2f}" for n in names)
            + f" | **{r['scan_over_compact']:.2f}x** "
            f"| {'yes' if same else 'near-ties only' if tie_only else 'NO'} "
            f"| {st['programs_with_fallback']} of {st['programs']} "
            f"| {st['full_search_passes_mean']:.2f}, {st['full_search_passes_max']} "
            f"| {st['buffer_passes_mean']:.1f}, {st['buffer_passes_max']} "
            f"| {st['rows_missed_by_guess']} of {st['rows']} |"
        )
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
