"""Kernel benchmark: sparse prefill and Quest decode against the fastest dense kernel in the same run.

Qwen2.5-7B attention shapes (28 query heads, 4 kv heads, head dim 128, bf16, batch 1). For each
length and compression ratio the sparse pattern is chosen by the methods' own selection code
(sparse_frontier.attention: BlockSparse / VerticalSlash / Quest) on synthetic inputs, then timed:

  select  the methods' importance estimation + top-k on the GPU (Block-Sparse: fused block
          selection; Vertical-Slash: fused last-window scores + budget search)
  index   GPU index building (block mask / vertical-slash lists / page mask -> kernel index)
  attn    the sparse attention kernel over that index
  total   the public op (index building + attention)
  dense   min over SDPA backends (cuDNN, FlashAttention) [and, for decode, our split-K kernel
          with every page selected]

Kernel speedup = dense / total; end-to-end speedup = dense / (select + total), what a prefill
pays. Times are triton.testing.do_bench medians (ms). Block-Sparse runs at the paper's block size
16 and, with --block-sizes, at coarser blocks (64 is MInference's unit); --anchor-file times
MInference's public block-sparse Triton kernel on its own 64 x 64 selection beside ours on the
same mask (the file is not shipped: pass minference/ops/block_sparse_flash_attention.py from a
checkout). Two input kinds:
  structured  keys/queries share a slowly drifting content signal (local attention) plus a few
              heavy-hitter keys every query likes (vertical attention) - the shape of real heads;
  iid         i.i.d. Gaussian q, k: no structure, so selections scatter (the adversarial case).

Run:  python benchmarks/bench_kernels.py --lengths 16384 32768 65536 131072 --json out.json
      [--block-sizes 16 64] [--anchor-file PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
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
    return int(index.count.long().sum()) * index.block_size * index.block_m


def vertical_slash_work(index) -> int:
    """Query-key pairs the kernel multiplies: vertical chunks plus slash chunks, over all tiles."""
    bm, bn = index.block_m, index.block_n
    vert_chunks = int(((index.vert_count.long() + bn - 1) // bn).sum())
    return (vert_chunks + int(index.chunk_count.long().sum())) * bm * bn


def block_sparse_case(q, k, v, length, cr, block_m, block_size=16) -> dict:
    """Select with the method, then time selection, index building, attention, and the op end to end."""
    top_k = BlockSparse(compression_ratio=cr, block_size=block_size).top_k_for(length, length)
    block_mask = select_blocks(q, k, top_k, block_size)
    block_m = max(block_m, block_size)
    index = build_block_sparse_index(block_mask, length, length, block_m, block_size)
    return {
        "pairs": block_sparse_pairs(block_mask, length, length, block_size),
        "work": block_sparse_work(index, length),
        "select_ms": bench(lambda: select_blocks(q, k, top_k, block_size)),
        "index_ms": bench(lambda: build_block_sparse_index(block_mask, length, length, block_m, block_size)),
        "attn_ms": bench(lambda: block_sparse_attention_from_index(q, k, v, index)),
        "total_ms": bench(lambda: ops.block_sparse_attention(q, k, v, block_mask, block_size)),
    }


def vertical_slash_case(q, k, v, length, cr, block_m, block_size=None) -> dict:
    """Select with the method (last-window estimate, exact-pair budget search), then time as above."""
    # Exact-pair counting, as when the recorded results were taken (docs/benchmarks-kernels.md).
    method = VerticalSlash(compression_ratio=cr, density="exact", forced_in_budget=False)
    v_idx, s_idx, _, _ = method.plan(q, k)
    index = build_vertical_slash_index(v_idx, s_idx, length, length, block_m)
    return {
        "pairs": vertical_slash_pairs(v_idx, s_idx, length, length),
        "work": vertical_slash_work(index),
        "select_ms": bench(lambda: method.plan(q, k)),
        "index_ms": bench(lambda: build_vertical_slash_index(v_idx, s_idx, length, length, block_m)),
        "attn_ms": bench(lambda: vertical_slash_attention_from_index(q, k, v, index)),
        "total_ms": bench(lambda: ops.vertical_slash_attention(q, k, v, v_idx, s_idx)),
    }


def anchor_rows(anchor_file, q, k, v, length, compressions, dense_ms) -> list[dict]:
    """MInference's block-sparse kernel on its own 64 x 64 top-k selection, and ours on the same mask.

    The anchor is not GQA-aware, so it gets k/v expanded per query head (not timed). Its top-k is the
    integer that brings its causal block count closest to 1/CR; the achieved CR is counted exactly.
    """
    import importlib.util

    spec = importlib.util.spec_from_file_location("minference_block_sparse", anchor_file)
    anchor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(anchor)
    group = HQ // HKV
    qb, kb, vb = q[None], k.repeat_interleave(group, 0)[None], v.repeat_interleave(group, 0)[None]
    seqlens = torch.tensor([length], dtype=torch.int32, device=q.device)
    nb = length // 64
    rows_blocks = torch.arange(1, nb + 1)
    causal_total = HQ * length * (length + 1) // 2
    out = []
    for cr in compressions:
        target = rows_blocks.sum().item() / cr
        top_k = min(
            range(1, nb + 1), key=lambda x: abs(torch.clamp(rows_blocks, max=x).sum().item() - target)
        )
        block_index = anchor._build_block_index(qb, kb, top_k, 64, 64)  # [1, HQ, nb, top_k], ascending
        used = (
            torch.arange(top_k, device=q.device)[None, :]
            < torch.clamp(torch.arange(1, nb + 1, device=q.device), max=top_k)[:, None]
        )  # the kernel reads min(row + 1, top_k) entries per row
        mask = torch.zeros(HQ, nb, nb, dtype=torch.bool, device=q.device)
        heads = torch.arange(HQ, device=q.device)[:, None, None].expand(HQ, nb, top_k)
        rows = torch.arange(nb, device=q.device)[None, :, None].expand(HQ, nb, top_k)
        mask[heads[:, used], rows[:, used], block_index[0][:, used].long()] = True
        pairs = block_sparse_pairs(mask, length, length, 64)
        index = build_block_sparse_index(mask, length, length, 64, 64)

        def run_anchor(block_index=block_index):
            return anchor._triton_block_sparse_attention(qb, kb, vb, seqlens, block_index, D**-0.5, 64, 64)

        ours = block_sparse_attention_from_index(q, k, v, index)
        theirs = run_anchor()[0]
        r = {
            "length": length,
            "compression": cr,
            "achieved_compression": causal_total / pairs,
            "anchor_ms": bench(run_anchor),
            "ours_ms": bench(lambda index=index: block_sparse_attention_from_index(q, k, v, index)),
            "dense_ms": dense_ms,
            "rel_diff": float((ours.float() - theirs.float()).norm() / theirs.float().norm()),
        }
        out.append(r)
        print(_fmt_anchor(r), flush=True)
    return out


def _fmt_anchor(r: dict) -> str:
    return (
        f"| {r['length']} | {r['compression']:g} | {r['achieved_compression']:.1f} | {r['anchor_ms']:.2f} "
        f"(**{r['dense_ms'] / r['anchor_ms']:.1f}x**) | {r['ours_ms']:.2f} "
        f"(**{r['dense_ms'] / r['ours_ms']:.1f}x**) "
        f"| {r['anchor_ms'] / r['ours_ms']:.2f} | {r['rel_diff']:.1e} |"
    )


ANCHOR_HEADER = (
    "| length | target CR | achieved CR | MInference kernel ms (speedup) | ours ms (speedup) "
    "| ours faster by | rel. output difference |\n" + "|---" * 7 + "|"
)


def prefill_rows(kind, length, compressions, dense_ms, ceil_tflops, block_m, methods, block_sizes):
    q, k, v = make_inputs(kind, length, seed=length)
    causal_total = HQ * length * (length + 1) // 2
    cases = {
        "block_sparse": (block_sparse_case, block_sizes),
        "vertical_slash": (vertical_slash_case, [None]),
    }
    rows = []
    for cr in compressions:
        for method in methods:
            case, sizes = cases[method]
            for size in sizes:
                m = case(q, k, v, length, cr, block_m, size)
                rows.append(_row(method, size, kind, length, cr, causal_total, m, dense_ms, ceil_tflops))
                print(_fmt(rows[-1]), flush=True)
    return rows


def _row(method, block_size, kind, length, cr, causal_total, m, dense_ms, ceil_tflops) -> dict:
    useful_tflops = 4 * m["pairs"] * D / m["attn_ms"] / 1e9
    return {
        "method": method,
        "block_size": block_size,
        "inputs": kind,
        "length": length,
        "compression": cr,
        "achieved_compression": causal_total / m["pairs"],
        "useful_over_computed": m["pairs"] / m["work"],
        **{key: m[key] for key in ("select_ms", "index_ms", "attn_ms", "total_ms")},
        "dense_ms": dense_ms,
        "speedup": dense_ms / m["total_ms"],
        "end_to_end_speedup": dense_ms / (m["select_ms"] + m["total_ms"]),
        "index_share": m["index_ms"] / m["total_ms"],
        "select_index_share": (m["select_ms"] + m["index_ms"]) / (m["select_ms"] + m["total_ms"]),
        "useful_tflops": useful_tflops,
        "ceiling_fraction": useful_tflops / ceil_tflops,
    }


def _fmt(r: dict) -> str:
    unit = f" ({r['block_size']})" if r["block_size"] else ""
    return (
        f"| {r['method']}{unit} | {r['inputs']} | {r['length']} | {r['compression']:g} | "
        f"{r['achieved_compression']:.1f} | {r['useful_over_computed']:.2f} | {r['select_ms']:.2f} | "
        f"{r['index_ms']:.2f} | {r['attn_ms']:.2f} | {r['total_ms']:.2f} | {r['dense_ms']:.1f} | "
        f"**{r['speedup']:.1f}x** | {100 * r['index_share']:.1f}% | **{r['end_to_end_speedup']:.1f}x** | "
        f"{100 * r['select_index_share']:.0f}% | "
        f"{r['useful_tflops']:.0f} ({100 * r['ceiling_fraction']:.0f}%) |"
    )


PREFILL_HEADER = (
    "| method (block) | inputs | length | target CR | achieved CR | useful/computed pairs | select ms "
    "| index ms | attn ms | total ms | dense ms | kernel speedup (dense/total) | index share "
    "| end-to-end speedup (dense/(select+total)) | select+index share "
    "| useful TFLOP/s (of matmul peak) |\n" + "|---" * 16 + "|"
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
    parser.add_argument(
        "--block-sizes", type=int, nargs="+", default=[16], help="Block-Sparse block sizes (16, 32, 64)"
    )
    parser.add_argument(
        "--anchor-file", help="MInference's block_sparse_flash_attention.py, timed beside ours"
    )
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
        "anchor": [],
    }
    prefill, decode, anchor = [], [], []
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
                    kind,
                    length,
                    args.compressions,
                    dense_ms,
                    ceil_tflops,
                    args.block_m,
                    args.methods,
                    args.block_sizes,
                )
            if args.anchor_file:
                q, k, v = make_inputs("structured", length, seed=length)
                anchor += anchor_rows(args.anchor_file, q, k, v, length, args.compressions, dense_ms)
                del q, k, v
        if not args.skip_decode:
            for kind in args.inputs:
                decode += decode_rows(kind, length, args.decode_compressions, ceil_gbps)
        torch.cuda.empty_cache()
    result["prefill"], result["decode"], result["anchor"] = prefill, decode, anchor
    if prefill:
        print("\n" + PREFILL_HEADER)
        print("\n".join(_fmt(r) for r in prefill))
    if anchor:
        print("\n" + ANCHOR_HEADER)
        print("\n".join(_fmt_anchor(r) for r in anchor))
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
