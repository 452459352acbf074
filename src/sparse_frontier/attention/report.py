"""Measure the density each method really achieves, and its index-building time, per length and ratio.

    python -m sparse_frontier.attention.report --lengths 4096 16384 --ratios 2 5 10 20 \
        --heads 28 4 --head-dim 128 --device cuda --dtype bfloat16

Only index building runs (selection and budget calibration, no attention), on random inputs,
and one markdown table goes to stdout; docs/methods.md records its output with the command.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from . import get_method
from .base import causal_pairs

METHODS = ("block_sparse", "vertical_slash", "flexprefill", "snapkv", "ada_snapkv", "quest")


def index_density(name: str, ratio: float, q: torch.Tensor, k: torch.Tensor) -> tuple[float, dict]:
    """(achieved density, budget info) of one method's selection for q [Hq,S,D], k [Hkv,S,D]."""
    method = get_method(name, ratio)
    hq, s = q.shape[0], k.shape[1]
    if name in ("block_sparse", "vertical_slash", "flexprefill"):
        computed, info = method.plan(q, k)[-2:]
        return computed / (hq * causal_pairs(s, s)), info
    if name in ("snapkv", "ada_snapkv"):
        keep = method.keep_mask(q, k)
        return float(keep.float().mean()), {"token_capacity": method.token_capacity(s)}
    page_mask = method.plan(q[:, -1:], k)
    read = page_mask.repeat_interleave(method.page_size, 1)[:, :s].sum()
    return float(read) / (hq * s), {"pages": int(page_mask[0].sum())}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 8192])
    parser.add_argument("--ratios", type=float, nargs="+", default=[2, 5, 10, 20])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--heads", type=int, nargs=2, default=[4, 2], metavar=("HQ", "HKV"))
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--repeats", type=int, default=1, help="timed repetitions (median reported)")
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    hq, hkv = args.heads
    print("| method | length | ratio | target density | achieved | rel. error | budget | index ms |")
    print("|---|---|---|---|---|---|---|---|")
    for s in args.lengths:
        gen = torch.Generator(device=device).manual_seed(s)
        q = torch.randn(hq, s, args.head_dim, generator=gen, device=device).to(dtype)
        k = torch.randn(hkv, s, args.head_dim, generator=gen, device=device).to(dtype)
        for name in args.methods:
            for ratio in args.ratios:
                index_density(name, ratio, q, k)  # warm-up (kernels, allocator)
                times = []
                for _ in range(args.repeats):
                    _synchronize(device)
                    start = time.perf_counter()
                    density, info = index_density(name, ratio, q, k)
                    _synchronize(device)
                    times.append(1e3 * (time.perf_counter() - start))
                err = density * ratio - 1
                budget = ", ".join(f"{key}={value:g}" for key, value in info.items())
                print(
                    f"| {name} | {s} | {ratio:g} | {1 / ratio:.4f} | {density:.4f} | {err:+.1%} | {budget} "
                    f"| {statistics.median(times):.1f} |",
                    flush=True,
                )
        del q, k
    return 0


if __name__ == "__main__":
    sys.exit(main())
