"""Tile-shape sweep for the sparse prefill kernels at one length (how the defaults were chosen).

For each (BLOCK_M, BLOCK_N, num_warps, num_stages) it times attention over the index the methods'
selection gives on structured inputs (see bench_kernels.py), and prints the raw tensor-core rate
(pairs the kernel multiplies, masked or not) beside the useful rate (pairs the method asked for).

Run:  python benchmarks/sweep_tiles.py --length 131072 --compressions 10 20
"""

from __future__ import annotations

import argparse
import itertools
from functools import partial

import torch
from bench_kernels import (
    D,
    bench,
    block_sparse_work,
    make_inputs,
    vertical_slash_work,
)

from sparse_frontier.attention.block_sparse import BlockSparse, select_blocks
from sparse_frontier.attention.vertical_slash import VerticalSlash
from sparse_frontier.kernels.block_sparse.reference import block_sparse_pairs
from sparse_frontier.kernels.block_sparse.triton_block_sparse import (
    block_sparse_attention_from_index,
    build_block_sparse_index,
)
from sparse_frontier.kernels.vertical_slash.reference import vertical_slash_pairs
from sparse_frontier.kernels.vertical_slash.triton_vertical_slash import (
    build_vertical_slash_index,
    vertical_slash_attention_from_index,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--length", type=int, default=131072)
    parser.add_argument("--compressions", type=float, nargs="+", default=[10, 20])
    parser.add_argument("--inputs", default="structured")
    parser.add_argument("--methods", nargs="+", default=["block_sparse", "vertical_slash"])
    args = parser.parse_args()
    length = args.length
    q, k, v = make_inputs(args.inputs, length, seed=length)
    print("| method | CR | BLOCK_M | BLOCK_N | warps | stages | attn ms | raw TFLOP/s | useful TFLOP/s |")
    print("|---" * 9 + "|")
    for cr in args.compressions:
        if "block_sparse" in args.methods:
            mask = select_blocks(q, k, BlockSparse(compression_ratio=cr).top_k_for(length, length))
            pairs = block_sparse_pairs(mask, length, length)
            # 16- and 32-row tiles compile to mma.sync (Hopper's wgmma needs 64 rows): fewer wasted
            # pairs per tile, slower tensor cores; they lose (docs/benchmarks-kernels.md).
            warps_for = {16: 1, 32: 2, 64: 4, 128: 8}
            for bm, bn, stages in itertools.product(warps_for, (32, 64, 128), (2, 3)):
                warps = warps_for[bm]
                index = build_block_sparse_index(mask, length, length, bm)
                cfg = {"block_n": bn, "num_warps": warps, "num_stages": stages}
                ms = bench(partial(block_sparse_attention_from_index, q, k, v, index, **cfg))
                raw = 4 * block_sparse_work(index, length) * D / ms / 1e9
                row = f"| block_sparse | {cr:g} | {bm} | {bn} | {warps} | {stages} | {ms:.2f} | {raw:.0f} "
                print(row + f"| {4 * pairs * D / ms / 1e9:.0f} |", flush=True)
            del mask, index
        if "vertical_slash" in args.methods:
            method = VerticalSlash(compression_ratio=cr, density="exact", forced_in_budget=False)
            v_idx, s_idx, _, _ = method.plan(q, k)
            pairs = vertical_slash_pairs(v_idx, s_idx, length, length)
            for bm, bn, warps, stages in itertools.product((64, 128), (32, 64), (4, 8), (2, 3)):
                if (bm, warps) == (64, 8):
                    continue
                index = build_vertical_slash_index(v_idx, s_idx, length, length, bm, bn)
                cfg = {"num_warps": warps, "num_stages": stages}
                ms = bench(partial(vertical_slash_attention_from_index, q, k, v, index, **cfg))
                raw = 4 * vertical_slash_work(index) * D / ms / 1e9
                row = f"| vertical_slash | {cr:g} | {bm} | {bn} | {warps} | {stages} | {ms:.2f} | {raw:.0f} "
                print(row + f"| {4 * pairs * D / ms / 1e9:.0f} |", flush=True)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
