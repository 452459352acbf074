"""Kernel benchmark: sparse prefill and Quest decode against the fastest dense kernel in the same run.

Qwen2.5-7B attention shapes (28 query heads, 4 kv heads, head dim 128, bf16, batch 1). For each
length and compression ratio the sparse pattern is chosen by the methods' own selection code
(sparse_frontier.attention: BlockSparse / VerticalSlash / Quest) on synthetic inputs, then timed:

  index   GPU index building (block mask / vertical-slash lists / page mask -> kernel index)
  attn    the sparse attention kernel over that index
  total   the public op end to end (index building + attention), what an engine pays
  dense   min over SDPA backends (cuDNN, FlashAttention) [and, for decode, our split-K kernel
          with every page selected]

Speedup = dense / total. Times are triton.testing.do_bench medians (ms). The methods' selection
(importance estimation + top-k, PyTorch) is timed too ('select') but reported apart: it is the
methods' code, not a kernel. Two input kinds:
  structured  keys/queries share a slowly drifting content signal (local attention) plus a few
              heavy-hitter keys every query likes (vertical attention) - the shape of real heads;
  iid         i.i.d. Gaussian q, k: no structure, so selections scatter (the adversarial case).

Run:  python benchmarks/bench_kernels.py --lengths 16384 32768 65536 131072 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel

from sparse_frontier.attention.block_sparse import BlockSparse, select_blocks
from sparse_frontier.attention.quest import Quest, page_bounds, page_scores, select_pages
from sparse_frontier.attention.vertical_slash import VerticalSlash
from sparse_frontier.kernels import ops
from sparse_frontier.kernels.block_sparse.reference import block_sparse_pairs
from sparse_frontier.kernels.block_sparse.triton_block_sparse import (
    block_sparse_attention_from_index,
    build_block_sparse_index,
)
from sparse_frontier.kernels.quest.triton_quest import quest_decode_attention_triton
from sparse_frontier.kernels.vertical_slash.reference import vertical_slash_pairs
from sparse_frontier.kernels.vertical_slash.triton_vertical_slash import (
    build_vertical_slash_index,
    vertical_slash_attention_from_index,
)

HQ, HKV, D = 28, 4, 128


def bench(fn: Callable[[], object], rep_ms: int = 400) -> float:
    """Median milliseconds of fn over about rep_ms of repeats (CUDA events, L2 flushed between runs)."""
    return float(triton.testing.do_bench(fn, warmup=max(25, rep_ms // 4), rep=rep_ms, return_mode="median"))


def bench_graph(fn: Callable[[], object]) -> float:
    """Median ms of fn replayed from a CUDA graph (no launch gaps, as serving engines run decode)."""
    return float(triton.testing.do_bench_cudagraph(fn, rep=200, return_mode="median"))


def hardware_ceilings() -> tuple[float, float]:
    """(bf16 matmul TFLOP/s, device copy GB/s counting bytes read + written), measured here."""
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    tflops = 2 * 8192**3 / bench(lambda: a @ b) / 1e9
    x = torch.randn(2**30 // 2, device="cuda", dtype=torch.bfloat16)  # 1 GiB
    y = torch.empty_like(x)
    gbps = 2 * x.numel() * 2 / bench(lambda: y.copy_(x)) / 1e6
    return tflops, gbps


def make_inputs(kind: str, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q [HQ, L, D], k/v [HKV, L, D] bf16 of the given kind (see module docstring)."""
    g = torch.Generator(device="cuda").manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, device="cuda")

    v = randn(HKV, length, D)
    if kind == "iid":
        q, k = randn(HQ, length, D), randn(HKV, length, D)
    elif kind == "structured":
        width = 255  # content drifts over ~width tokens: nearby keys match the query best
        noise = randn(HKV * D, 1, length + width - 1)
        content = F.avg_pool1d(noise, width, stride=1).view(HKV, D, length).transpose(1, 2) * math.sqrt(width)
        heavy_dir = randn(HKV, 1, D)
        heavy = (torch.rand(HKV, length, 1, generator=g, device="cuda") < 0.003).float()
        k = content + 0.5 * randn(HKV, length, D) + 2.0 * heavy * heavy_dir
        group = HQ // HKV
        q = content.repeat_interleave(group, 0) + 0.5 * randn(HQ, length, D)
        q = q + 0.5 * heavy_dir.repeat_interleave(group, 0)
        q, k = q / 2, k / 2  # keep logits in the range trained models show (peaks ~10-20)
    else:
        raise ValueError(f"unknown input kind {kind!r}; use 'structured' or 'iid'.")
    return tuple(x.bfloat16().contiguous() for x in (q, k, v))


def dense_prefill(q, k, v) -> tuple[float, str, dict]:
    """Fastest causal GQA SDPA backend: (ms, name, every backend's ms)."""
    times = {}
    qb, kb, vb = q[None], k[None], v[None]
    for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
        for gqa in (True, False):
            try:
                kk, vv = (
                    (kb, vb)
                    if gqa
                    else (kb.repeat_interleave(HQ // HKV, 1), vb.repeat_interleave(HQ // HKV, 1))
                )

                def run(kk=kk, vv=vv, gqa=gqa, backend=backend):
                    with sdpa_kernel(backend):
                        return F.scaled_dot_product_attention(qb, kk, vv, is_causal=True, enable_gqa=gqa)

                run()
                times[f"{name}{'' if gqa else '(kv expanded)'}"] = bench(run, rep_ms=1500)
                break
            except RuntimeError as err:
                print(
                    f"  [dense] {name} gqa={gqa} unavailable: {str(err).splitlines()[0][:100]}",
                    file=sys.stderr,
                )
    best = min(times, key=times.get)
    return times[best], best, times


def dense_decode(q1, k, v) -> tuple[float, str, dict]:
    """Fastest dense decode over the whole cache (graph-replayed): SDPA backends and our split-K kernel."""
    times = {}
    qb, kb, vb = q1[None], k[None], v[None]
    for name, backend in (
        ("cudnn", SDPBackend.CUDNN_ATTENTION),
        ("flash", SDPBackend.FLASH_ATTENTION),
        ("efficient", SDPBackend.EFFICIENT_ATTENTION),
    ):
        try:

            def run(backend=backend):
                with sdpa_kernel(backend):
                    return F.scaled_dot_product_attention(qb, kb, vb, enable_gqa=True)

            run()
            times[name] = bench_graph(run)
        except RuntimeError as err:
            print(f"  [dense decode] {name} unavailable: {str(err).splitlines()[0][:100]}", file=sys.stderr)
    all_pages = torch.ones(HQ, math.ceil(k.shape[1] / 16), dtype=torch.bool, device="cuda")
    times["triton split-K (all pages)"] = bench_graph(
        lambda: quest_decode_attention_triton(q1, k, v, all_pages)
    )
    best = min(times, key=times.get)
    return times[best], best, times


def block_sparse_work(index, t: int) -> int:
    """Query-key pairs the kernel actually multiplies (listed key blocks x tile rows)."""
    return int(index.count.long().sum()) * 16 * index.block_m


def vertical_slash_work(index) -> int:
    """Query-key pairs the kernel multiplies: vertical chunks plus slash chunks, over all tiles."""
    bm, bn = index.block_m, index.block_n
    vert_chunks = int(((index.vert_count.long() + bn - 1) // bn).sum())
    return (vert_chunks + int(index.chunk_count.long().sum())) * bm * bn


def block_sparse_case(q, k, v, length, cr, block_m) -> dict:
    """Select with the method, then time index building, attention, and the op end to end."""
    t0 = time.perf_counter()
    block_mask = select_blocks(q, k, BlockSparse(compression_ratio=cr).top_k_for(length, length))
    torch.cuda.synchronize()
    select_ms = (time.perf_counter() - t0) * 1e3
    index = build_block_sparse_index(block_mask, length, length, block_m)
    return {
        "pairs": block_sparse_pairs(block_mask, length, length),
        "work": block_sparse_work(index, length),
        "select_ms": select_ms,
        "index_ms": bench(lambda: build_block_sparse_index(block_mask, length, length, block_m)),
        "attn_ms": bench(lambda: block_sparse_attention_from_index(q, k, v, index)),
        "total_ms": bench(lambda: ops.block_sparse_attention(q, k, v, block_mask)),
    }


def vertical_slash_case(q, k, v, length, cr, block_m) -> dict:
    """Select with the method (last-window estimate, exact-pair budget search), then time as above."""
    t0 = time.perf_counter()
    v_idx, s_idx, _, _ = VerticalSlash(compression_ratio=cr).plan(q, k)
    torch.cuda.synchronize()
    select_ms = (time.perf_counter() - t0) * 1e3
    index = build_vertical_slash_index(v_idx, s_idx, length, length, block_m)
    return {
        "pairs": vertical_slash_pairs(v_idx, s_idx, length, length),
        "work": vertical_slash_work(index),
        "select_ms": select_ms,
        "index_ms": bench(lambda: build_vertical_slash_index(v_idx, s_idx, length, length, block_m)),
        "attn_ms": bench(lambda: vertical_slash_attention_from_index(q, k, v, index)),
        "total_ms": bench(lambda: ops.vertical_slash_attention(q, k, v, v_idx, s_idx)),
    }


def prefill_rows(kind, length, compressions, dense_ms, ceil_tflops, block_m, methods):
    q, k, v = make_inputs(kind, length, seed=length)
    causal_total = HQ * length * (length + 1) // 2
    cases = {"block_sparse": block_sparse_case, "vertical_slash": vertical_slash_case}
    rows = []
    for cr in compressions:
        for method in methods:
            m = cases[method](q, k, v, length, cr, block_m)
            rows.append(_row(method, kind, length, cr, causal_total, m, dense_ms, ceil_tflops))
            print(_fmt(rows[-1]), flush=True)
    return rows


def _row(method, kind, length, cr, causal_total, m, dense_ms, ceil_tflops) -> dict:
    useful_tflops = 4 * m["pairs"] * D / m["attn_ms"] / 1e9
    return {
        "method": method,
        "inputs": kind,
        "length": length,
        "compression": cr,
        "achieved_compression": causal_total / m["pairs"],
        "useful_over_computed": m["pairs"] / m["work"],
        **{key: m[key] for key in ("select_ms", "index_ms", "attn_ms", "total_ms")},
        "dense_ms": dense_ms,
        "speedup": dense_ms / m["total_ms"],
        "index_share": m["index_ms"] / m["total_ms"],
        "useful_tflops": useful_tflops,
        "ceiling_fraction": useful_tflops / ceil_tflops,
    }


def _fmt(r: dict) -> str:
    return (
        f"| {r['method']} | {r['inputs']} | {r['length']} | {r['compression']:g} | "
        f"{r['achieved_compression']:.1f} | {r['useful_over_computed']:.2f} | {r['select_ms']:.1f} | "
        f"{r['index_ms']:.2f} | {r['attn_ms']:.2f} | {r['total_ms']:.2f} | {r['dense_ms']:.1f} | "
        f"**{r['speedup']:.1f}x** | {100 * r['index_share']:.1f}% | {r['useful_tflops']:.0f} "
        f"({100 * r['ceiling_fraction']:.0f}%) |"
    )


PREFILL_HEADER = (
    "| method | inputs | length | target CR | achieved CR | useful/computed pairs | select ms (methods) "
    "| index ms | attn ms | total ms | dense ms | speedup (dense/total) | index share "
    "| useful TFLOP/s (of matmul peak) |\n" + "|---" * 14 + "|"
)


def quest_case(q1, k, v, low, high, length, cr) -> dict:
    """Quest selection from up-to-date page bounds, then attention (graph-replayed).

    The kernel consumes the page mask itself (no index building); 'total' adds the methods' page
    scoring and top-k, i.e. the whole sparse decode step.
    """
    n_pages = Quest(compression_ratio=cr).pages_for(length, (length - 1) % 16 + 1, low.shape[1])
    current = (length - 1) // 16

    def select():  # Quest's scoring (our Triton kernel) + the method's top-k with the current page
        return select_pages(ops.quest_page_scores(q1, low, high), n_pages, current)

    page_mask = select()
    # Same pages as the method's own PyTorch scoring (ties aside), which is kept for the record.
    reference_ms = bench_graph(lambda: select_pages(page_scores(q1, low, high), n_pages, current))
    group_union = page_mask.view(HKV, HQ // HKV, -1).any(1)
    return {
        "page_mask": page_mask,
        "union_pages": int(group_union.sum()),
        "select_ms": bench_graph(select),
        "select_torch_ms": reference_ms,
        "index_ms": 0.0,  # the kernel reads the page mask directly
        "attn_ms": bench_graph(lambda: ops.quest_decode_attention(q1, k, v, page_mask)),
        "total_ms": bench_graph(lambda: ops.quest_decode_attention(q1, k, v, select())),
    }


def decode_rows(kind, length, compressions, ceil_gbps):
    q, k, v = make_inputs(kind, length, seed=length + 1)
    q1 = q[:, -1:].contiguous()
    dense_ms, dense_name, dense_all = dense_decode(q1, k, v)
    low, high = page_bounds(k, 16)  # Quest keeps page summaries up to date as the cache grows
    rows = []
    for cr in compressions:
        m = quest_case(q1, k, v, low, high, length, cr)
        bytes_moved = m["union_pages"] * 16 * D * 2 * 2
        r = {
            "method": "quest",
            "inputs": kind,
            "length": length,
            "compression": cr,
            "achieved_compression": length * HQ / min(length * HQ, int(m["page_mask"].sum()) * 16),
            "union_fraction": m["union_pages"] / (HKV * low.shape[1]),
            **{key: m[key] for key in ("select_ms", "select_torch_ms", "index_ms", "attn_ms", "total_ms")},
            "dense_ms": dense_ms,
            "dense_kernel": dense_name,
            "dense_all": dense_all,
            "attn_speedup": dense_ms / m["attn_ms"],
            "total_speedup": dense_ms / m["total_ms"],
            "bandwidth_fraction": bytes_moved / m["attn_ms"] / 1e6 / ceil_gbps,
        }
        rows.append(r)
        print(_fmt_decode(r), flush=True)
    return rows


def _fmt_decode(r: dict) -> str:
    return (
        f"| quest | {r['inputs']} | {r['length']} | {r['compression']:g} | {r['achieved_compression']:.1f} | "
        f"{r['union_fraction']:.2f} | {1e3 * r['select_ms']:.0f} ({1e3 * r['select_torch_ms']:.0f}) | "
        f"{1e3 * r['index_ms']:.0f} | "
        f"{1e3 * r['attn_ms']:.0f} | {1e3 * r['total_ms']:.0f} | "
        f"{1e3 * r['dense_ms']:.0f} ({r['dense_kernel']}) | "
        f"**{r['attn_speedup']:.1f}x** | {r['total_speedup']:.1f}x | {100 * r['bandwidth_fraction']:.0f}% |"
    )


DECODE_HEADER = (
    "| method | inputs | length | target CR | achieved CR | pages read / all (GQA union) "
    "| select µs: Triton scores + top-k (PyTorch scores) | index µs (fused) | attn µs | select + attn µs "
    "| dense µs (kernel) "
    "| attn speedup | select + attn speedup | attn bandwidth (of copy peak) |\n" + "|---" * 14 + "|"
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lengths", type=int, nargs="+", default=[16384, 32768, 65536, 131072])
    parser.add_argument("--compressions", type=float, nargs="+", default=[2, 5, 10, 20])
    parser.add_argument("--decode-compressions", type=float, nargs="+", default=[10, 20])
    parser.add_argument("--inputs", nargs="+", default=["structured", "iid"], choices=["structured", "iid"])
    parser.add_argument("--block-m", type=int, default=64, help="query rows per kernel tile (64 or 128)")
    parser.add_argument("--methods", nargs="+", default=["block_sparse", "vertical_slash"])
    parser.add_argument("--skip-prefill", action="store_true")
    parser.add_argument("--skip-decode", action="store_true")
    parser.add_argument("--json", help="write every measured row here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit(
            "bench_kernels.py needs a CUDA GPU; run it on one (the CPU has only the PyTorch references)."
        )

    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    ceil_tflops, ceil_gbps = hardware_ceilings()
    print(
        f"measured ceilings: bf16 matmul {ceil_tflops:.0f} TFLOP/s, device copy {ceil_gbps:.0f} GB/s",
        flush=True,
    )
    result = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "matmul_tflops": ceil_tflops,
        "copy_gbps": ceil_gbps,
        "argv": sys.argv,
        "dense": {},
        "prefill": [],
        "decode": [],
    }
    prefill, decode = [], []
    for length in args.lengths:
        if not args.skip_prefill:
            q, k, v = make_inputs("iid", length, seed=0)
            dense_ms, dense_name, dense_all = dense_prefill(q, k, v)
            del q, k, v
            dense_tflops = 4 * HQ * length * (length + 1) / 2 * D / dense_ms / 1e9
            print(
                f"dense prefill {length}: {dense_all} -> {dense_name} {dense_ms:.2f} ms "
                f"({dense_tflops:.0f} TFLOP/s, {100 * dense_tflops / ceil_tflops:.0f}% of matmul)",
                flush=True,
            )
            result["dense"][length] = {
                "best": dense_name,
                "ms": dense_ms,
                "all": dense_all,
                "tflops": dense_tflops,
            }
            for kind in args.inputs:
                prefill += prefill_rows(
                    kind, length, args.compressions, dense_ms, ceil_tflops, args.block_m, args.methods
                )
        if not args.skip_decode:
            for kind in args.inputs:
                decode += decode_rows(kind, length, args.decode_compressions, ceil_gbps)
        torch.cuda.empty_cache()
    result["prefill"], result["decode"] = prefill, decode
    if prefill:
        print("\n" + PREFILL_HEADER)
        print("\n".join(_fmt(r) for r in prefill))
    if decode:
        print("\n" + DECODE_HEADER)
        print("\n".join(_fmt_decode(r) for r in decode))
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump(result, f, indent=1, default=str)
        import os

        os.replace(args.json + ".tmp", args.json)


if __name__ == "__main__":
    main()
