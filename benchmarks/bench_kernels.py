"""Kernel benchmark: what a user pays for sparse attention, against the fastest dense kernel in the same run.

Qwen2.5-7B attention shapes (28 query heads, 4 kv heads, head dim 128, bf16, batch 1), structured
inputs by default (see ``make_inputs``). One row per method, length and compression ratio:

prefill (Block-Sparse at the paper's 16 x 16 blocks, Vertical-Slash, FlexPrefill; ratios use each
method's own count, the kernel-cell count for Vertical-Slash and FlexPrefill by default):
  end to end  ``method.prefill(q, k, v)``: selection + index building + kernel, host work included,
              what the engine pays per layer (the headline: dense / end to end);
  select      the method's ``plan`` (importance estimation, budget search, top-k)
  index       the kernel's index from the plan;   kernel  the sparse kernel alone over that index
  bound       the pairs the method must compute, at cuDNN's rate in this run: dense x pairs / causal
              pairs (selection free; a kernel at cuDNN's per-tile rate on a perfect mask);
  stages      where selection time goes (Block-Sparse: pooling, fused block selection; Vertical-Slash
              and FlexPrefill: last-window scores, ranking, budget search).
decode (Quest, shared pages per KV group):
  step        selection + attention replayed from one CUDA graph (the fused path: page scores from the
              kept summaries, exact threshold top-n, attention over the page list); L2 flushed between
              replays, like dense;
  attention   the attention over the selected pages alone;   select  scores + top-n alone (the
              top-n kernel alone in brackets)
  eager       ``Quest.decode`` with its kept summaries, launched from Python (the hf engine's path)
  previous    Triton page scores + torch.topk + page-mask attention (the unfused path), graph-replayed
  bound       summaries + selected pages read once at this run's copy bandwidth; dense bound: the cache.
eviction (SnapKV, Ada-SnapKV; on the prefill inputs):
  prefill     ``method.prefill(q, k, v)``: dense attention + the window's scores + the keep mask, against
              dense prefill (below 1x: eviction pays at prefill);   select  the keep mask alone
  compaction  the kept keys and values gathered to the front (once per sequence, as the engines do)
  step        one decode step over the compacted cache (``method.decode``, with the key mask that
              hides the padding of heads keeping fewer tokens), graph-replayed like dense decode
  bound       the kept keys and values read once at the copy bandwidth
  break-even  decode steps after which the step's saving has paid for the prefill's extra work

Timing: one warm-up call (compilation), then ``--reps`` calls timed one by one with CUDA events
(median). A failing row is printed as such and the others still run; the JSON is rewritten after
every row. ``--minutes`` stops starting new rows past a wall-clock budget.

Run:  python benchmarks/bench_kernels.py --json $OUT/kernels.json
      [--lengths 16384 32768] [--methods block_sparse vertical_slash flexprefill snapkv ada_snapkv quest]
      [--reps 5] [--skip-eviction]
      [--block-sizes 16 64] [--inputs structured iid] [--anchor-file minference_block_sparse.py]
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import signal
import statistics
import sys
import time
import traceback
from collections.abc import Callable

import torch
import torch.nn.functional as F
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel

from sparse_frontier.attention import get_method
from sparse_frontier.attention.block_sparse import BlockSparse, _pool
from sparse_frontier.attention.flexprefill import FlexPrefill
from sparse_frontier.attention.quest import (
    PageSummaries,
    Quest,
    _selection_inputs,
    quest_decode_fused,
    select_pages,
)
from sparse_frontier.attention.snapkv import SnapKV, compaction, padding_mask
from sparse_frontier.attention.vertical_slash import VerticalSlash, VerticalSlashIndex, vertical_slash_scores
from sparse_frontier.kernels import ops
from sparse_frontier.kernels.block_sparse.reference import block_sparse_pairs
from sparse_frontier.kernels.block_sparse.triton_block_sparse import (
    block_sparse_attention_from_index,
    build_block_sparse_index,
)
from sparse_frontier.kernels.quest.triton_quest import quest_decode_attention_triton
from sparse_frontier.kernels.quest.triton_select import (
    quest_page_list_attention_triton,
    quest_select_top_pages_triton,
    quest_selection_scores_triton,
)
from sparse_frontier.kernels.vertical_slash.reference import vertical_slash_pairs
from sparse_frontier.kernels.vertical_slash.triton_vertical_slash import (
    build_vertical_slash_index,
    vertical_slash_attention_from_index,
)

HQ, HKV, D = 28, 4, 128
PAGE = 16
PREFILL_METHODS = ("block_sparse", "vertical_slash", "flexprefill")
EVICTION_METHODS = ("snapkv", "ada_snapkv")


def bench(fn: Callable[[], object], rep_ms: int = 400) -> float:
    """Median milliseconds of fn over about rep_ms of repeats (triton.testing.do_bench, L2 flushed)."""
    return float(triton.testing.do_bench(fn, warmup=max(25, rep_ms // 4), rep=rep_ms, return_mode="median"))


_FLUSH: list[torch.Tensor] = []


def _flush_l2() -> None:
    """Overwrite more than the L2 cache (H200: 60 MB) so a timed call starts from memory."""
    if not _FLUSH:
        _FLUSH.append(torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda"))
    _FLUSH[0].zero_()


def time_ms(fn: Callable[[], object], reps: int, warmup: bool = True) -> float:
    """Median ms of ``reps`` calls of fn, each timed alone with CUDA events after an L2 flush.

    Host work inside fn counts (a synchronising call makes the end event wait for it)."""
    if warmup:
        fn()
    times = []
    for _ in range(reps):
        _flush_l2()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def graph_ms(fn: Callable[[], object], reps: int) -> float:
    """Median ms of fn captured once in a CUDA graph and replayed ``reps`` times (L2 flushed before
    each), as serving engines run decode: no launch gaps from Python."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):  # compile and warm the allocator outside the capture
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return time_ms(graph.replay, reps)


def hardware_ceilings() -> tuple[float, float]:
    """(bf16 matmul TFLOP/s, device copy GB/s counting bytes read + written), measured here."""
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    tflops = 2 * 8192**3 / bench(lambda: a @ b, rep_ms=200) / 1e9
    x = torch.randn(2**30 // 2, device="cuda", dtype=torch.bfloat16)  # 1 GiB
    y = torch.empty_like(x)
    gbps = 2 * x.numel() * 2 / bench(lambda: y.copy_(x), rep_ms=200) / 1e6
    return tflops, gbps


def make_inputs(
    kind: str, length: int, seed: int, device: str = "cuda"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q [HQ, L, D], k/v [HKV, L, D] bf16 of the given kind:

    structured  keys/queries share a slowly drifting content signal (local attention) plus a few
                heavy-hitter keys every query likes (vertical attention), the shape of real heads;
    iid         i.i.d. Gaussian q, k: no structure, so selections scatter (the adversarial case).
    """
    g = torch.Generator(device=device).manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, device=device)

    v = randn(HKV, length, D)
    if kind == "iid":
        q, k = randn(HQ, length, D), randn(HKV, length, D)
    elif kind == "structured":
        width = 255  # content drifts over ~width tokens: nearby keys match the query best
        noise = randn(HKV * D, 1, length + width - 1)
        content = F.avg_pool1d(noise, width, stride=1).view(HKV, D, length).transpose(1, 2) * math.sqrt(width)
        heavy_dir = randn(HKV, 1, D)
        heavy = (torch.rand(HKV, length, 1, generator=g, device=device) < 0.003).float()
        k = content + 0.5 * randn(HKV, length, D) + 2.0 * heavy * heavy_dir
        group = HQ // HKV
        q = content.repeat_interleave(group, 0) + 0.5 * randn(HQ, length, D)
        q = q + 0.5 * heavy_dir.repeat_interleave(group, 0)
        q, k = q / 2, k / 2  # keep logits in the range trained models show (peaks ~10-20)
    else:
        raise ValueError(f"unknown input kind {kind!r}; use 'structured' or 'iid'.")
    return tuple(x.bfloat16().contiguous() for x in (q, k, v))


def dense_prefill(q, k, v, reps: int = 5) -> tuple[float, str, dict]:
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

                times[f"{name}{'' if gqa else '(kv expanded)'}"] = time_ms(run, reps)
                break
            except RuntimeError as err:
                print(
                    f"  [dense] {name} gqa={gqa} unavailable: {str(err).splitlines()[0][:100]}",
                    file=sys.stderr,
                )
    best = min(times, key=times.get)
    return times[best], best, times


def dense_decode(q1, k, v, reps: int) -> tuple[float, str, dict]:
    """Fastest dense decode over the whole cache, graph-replayed: SDPA backends and our split-K kernel."""
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

            times[name] = graph_ms(run, reps)
        except Exception as err:  # noqa: BLE001 - a backend that cannot run (or be captured) is skipped
            print(f"  [dense decode] {name} unavailable: {str(err).splitlines()[0][:100]}", file=sys.stderr)
    all_pages = torch.ones(HQ, math.ceil(k.shape[1] / PAGE), dtype=torch.bool, device="cuda")
    times["triton split-K (all pages)"] = graph_ms(
        lambda: quest_decode_attention_triton(q1, k, v, all_pages), reps
    )
    best = min(times, key=times.get)
    return times[best], best, times


def secondary(fn: Callable[[], float]) -> float:
    """A breakdown or comparison column: NaN (printed as such) rather than losing the row if it fails."""
    try:
        return fn()
    except Exception:  # noqa: BLE001
        traceback.print_exc(file=sys.stderr)
        return float("nan")


def block_sparse_work(index, t: int) -> int:
    """Query-key pairs the kernel actually multiplies (listed key blocks x tile rows)."""
    return int(index.count.long().sum()) * index.block_size * index.block_m


def vertical_slash_work(index) -> int:
    """Query-key pairs the kernel multiplies: vertical chunks plus slash chunks, over all tiles."""
    bm, bn = index.block_m, index.block_n
    vert_chunks = int(((index.vert_count.long() + bn - 1) // bn).sum())
    return (vert_chunks + int(index.chunk_count.long().sum())) * bm * bn


def block_sparse_case(q, k, v, cr: float, block_size: int, block_m: int, reps: int) -> dict:
    """Block-Sparse through the method's own code: plan (budget + fused block selection), index, kernel."""
    t, s = q.shape[1], k.shape[1]
    method = BlockSparse(compression_ratio=cr, block_size=block_size)
    mask, computed, info = method.plan(q, k)
    bm = max(block_m, block_size)
    index = build_block_sparse_index(mask, t, s, bm, block_size)
    pool_ms = secondary(lambda: time_ms(lambda: (_pool(q, block_size), _pool(k, block_size)), reps))
    select_ms = time_ms(lambda: method.plan(q, k), reps)
    return {
        "label": f"block_sparse ({block_size})",
        "count": "exact",
        "computed": computed / q.shape[0],
        "pairs": block_sparse_pairs(mask, t, s, block_size),
        "work": block_sparse_work(index, t),
        "end_to_end_ms": time_ms(lambda: method.prefill(q, k, v), reps),
        "select_ms": select_ms,
        "index_ms": time_ms(lambda: build_block_sparse_index(mask, t, s, bm, block_size), reps),
        "kernel_ms": time_ms(lambda: block_sparse_attention_from_index(q, k, v, index), reps),
        "stages_ms": {"pool": pool_ms, "block select + budget": select_ms - pool_ms},
    }


def vertical_slash_case(q, k, v, method: VerticalSlash, block_m: int, reps: int) -> dict:
    """Vertical-Slash / FlexPrefill through the method's own code, with the selection's stages timed."""
    t, s = q.shape[1], k.shape[1]
    v_idx, s_idx, computed, info = method.plan(q, k)
    index = build_vertical_slash_index(v_idx, s_idx, t, s, block_m)
    vertical, slash = vertical_slash_scores(q, k, method.approx_window)
    ranking = VerticalSlashIndex.build(vertical, slash, t, method.sinks, method.local)
    target = HQ * t * (t + 1) / 2 / method.compression_ratio
    window, sinks, local = method.approx_window, method.sinks, method.local
    stages = {
        "scores": secondary(lambda: time_ms(lambda: vertical_slash_scores(q, k, window), reps)),
        "ranking": secondary(
            lambda: time_ms(lambda: VerticalSlashIndex.build(vertical, slash, t, sinks, local), reps)
        ),
        "budget search": secondary(lambda: time_ms(lambda: method.budgets(ranking, target), reps)),
    }
    return {
        "label": method.name,
        "count": method.density,
        "computed": computed / q.shape[0],
        "pairs": vertical_slash_pairs(v_idx, s_idx, t, s),
        "work": vertical_slash_work(index),
        "end_to_end_ms": time_ms(lambda: method.prefill(q, k, v), reps),
        "select_ms": time_ms(lambda: method.plan(q, k), reps),
        "index_ms": time_ms(lambda: build_vertical_slash_index(v_idx, s_idx, t, s, block_m), reps),
        "kernel_ms": time_ms(lambda: vertical_slash_attention_from_index(q, k, v, index), reps),
        "stages_ms": stages,
    }


def prefill_row(name, block_size, q, k, v, cr, dense_ms, ceil_tflops, args) -> dict:
    t = q.shape[1]
    if name == "block_sparse":
        m = block_sparse_case(q, k, v, cr, block_size, args.block_m, args.reps)
    else:
        method = (
            VerticalSlash(compression_ratio=cr)
            if name == "vertical_slash"
            else FlexPrefill(compression_ratio=cr)
        )
        m = vertical_slash_case(q, k, v, method, args.block_m, args.reps)
    causal = t * (t + 1) / 2  # per head
    return {
        **m,
        "length": t,
        "compression": cr,
        "achieved_compression": causal / m["computed"],
        "exact_compression": causal / (m["pairs"] / HQ),
        "useful_over_computed": m["pairs"] / m["work"],
        "dense_ms": dense_ms,
        "speedup": dense_ms / m["end_to_end_ms"],
        "kernel_speedup": dense_ms / m["kernel_ms"],
        "bound_ms": dense_ms * (m["pairs"] / HQ) / causal,
        "select_share": (m["select_ms"] + m["index_ms"]) / m["end_to_end_ms"],
        "useful_tflops": 4 * m["pairs"] * D / m["kernel_ms"] / 1e9,
        "ceiling_fraction": 4 * m["pairs"] * D / m["kernel_ms"] / 1e9 / ceil_tflops,
    }


def _fmt_prefill(r: dict) -> str:
    if "error" in r:
        return (
            f"| {r['label']} | {r['length']} | {r['compression']:g} | failed: {r['error'][:90]} |" + " |" * 8
        )
    stages = ", ".join(f"{k} {v:.2f}" for k, v in r["stages_ms"].items())
    return (
        f"| {r['label']} | {r['length'] // 1024}K | {r['compression']:g} | {r['achieved_compression']:.1f} "
        f"({r['count']}), {r['exact_compression']:.1f} (pairs) | {r['end_to_end_ms']:.2f} | "
        f"**{r['speedup']:.2f}x** | {r['kernel_speedup']:.2f}x | {r['dense_ms'] / r['bound_ms']:.1f}x | "
        f"{r['select_ms']:.2f} / {r['index_ms']:.2f} / {r['kernel_ms']:.2f} | "
        f"{100 * r['select_share']:.0f}% | "
        f"{stages} | {r['useful_tflops']:.0f} ({100 * r['ceiling_fraction']:.0f}%) |"
    )


PREFILL_HEADER = (
    "| method (block) | length | target CR | achieved CR (method's count), (exact pairs) | end to end ms "
    "| **speedup, end to end** | kernel only | bound (pairs at cuDNN's rate) | select / index / kernel ms "
    "| select+index share | selection stages ms | useful TFLOP/s (of matmul peak) |\n" + "|---" * 12 + "|"
)


def quest_row(q1, k, v, cr, dense_ms, ceil_gbps, reps) -> dict:
    """Quest's decode step at one ratio over an up-to-date cache (summaries kept, as during decoding)."""
    s = k.shape[1]
    method = Quest(compression_ratio=cr)
    summaries = PageSummaries(PAGE)
    _, low, high, n, current = _selection_inputs(method, k, summaries)
    n_pages = low.shape[1]

    def select():  # scores with their histogram, then the top n (the step's first three launches)
        scores, hist = quest_selection_scores_triton(q1, low, high, n_pages, current, True)
        return quest_select_top_pages_triton(scores, n, histogram=hist)

    pages = select()
    scores, hist = quest_selection_scores_triton(q1, low, high, n_pages, current, True)
    low32, high32 = low.float(), high.float()  # the unfused path kept float32 summaries
    group = HQ // HKV

    def previous():
        scores = ops.quest_page_scores(q1, low32, high32).view(HKV, group, -1).sum(1)
        mask = select_pages(scores, n, current).repeat_interleave(group, 0)
        return ops.quest_decode_attention(q1, k, v, mask)

    fused_out = quest_decode_fused(method, q1, k, v, summaries)[0].float()
    previous_out = previous().float()
    memo: dict = {}
    method.decode(q1, k, v, memo=memo)

    summary_bytes = 2 * low.numel() * low.element_size()
    page_bytes = 2 * HKV * min(n * PAGE, s) * D * k.element_size()
    r = {
        "method": "quest",
        "length": s,
        "compression": cr,
        "pages_per_head": n,
        "achieved_compression": s / min(s, (n - 1) * PAGE + s - current * PAGE),
        "step_ms": graph_ms(lambda: quest_decode_fused(method, q1, k, v, summaries), reps),
        "attn_ms": secondary(
            lambda: graph_ms(lambda: quest_page_list_attention_triton(q1, k, v, pages), reps)
        ),
        "select_ms": secondary(lambda: graph_ms(select, reps)),
        "topn_ms": secondary(
            lambda: graph_ms(lambda: quest_select_top_pages_triton(scores, n, histogram=hist), reps)
        ),
        "eager_ms": secondary(lambda: time_ms(lambda: method.decode(q1, k, v, memo=memo), reps)),
        "previous_ms": secondary(lambda: graph_ms(previous, reps)),
        "dense_ms": dense_ms,
        "bound_ms": (summary_bytes + page_bytes) / (ceil_gbps * 1e6),
        "dense_bound_ms": 2 * HKV * s * D * k.element_size() / (ceil_gbps * 1e6),
        "rel_diff_vs_previous": float((fused_out - previous_out).norm() / previous_out.norm()),
    }
    r["speedup"] = dense_ms / r["step_ms"]
    return r


def _fmt_decode(r: dict) -> str:
    if "error" in r:
        return f"| {r['length'] // 1024}K | {r['compression']:g} | failed: {r['error'][:90]} |" + " |" * 9
    us = {k: 1e3 * r[k + "_ms"] for k in "step attn select topn eager previous dense bound".split()}
    cells = [
        f"{r['length'] // 1024}K", f"{r['compression']:g}", f"{r['achieved_compression']:.1f}",
        str(r["pages_per_head"]), f"{us['step']:.1f}", f"**{r['speedup']:.2f}x**",
        f"{us['attn']:.1f} ({r['dense_ms'] / r['attn_ms']:.1f}x)",
        f"{us['select']:.1f} ({us['topn']:.1f})",
        f"{us['eager']:.0f}", f"{us['previous']:.1f} ({r['dense_ms'] / r['previous_ms']:.2f}x)",
        f"{us['dense']:.1f} ({r['dense_kernel']})",
        f"{us['bound']:.1f} ({r['dense_ms'] / r['bound_ms']:.1f}x)", f"{1e3 * r['dense_bound_ms']:.1f}",
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


DECODE_HEADER = (
    "| length | target CR | achieved CR | pages per kv head | step µs (graph) | **speedup, step** "
    "| attention µs (speedup) | select µs (top-n alone) | eager step µs | previous path µs (speedup) "
    "| dense µs (kernel) "
    "| bound µs (speedup) | dense bound µs |\n" + "|---" * 13 + "|"
)


def eviction_row(name, q, k, v, cr, dense_prefill_ms, dense_decode_ms, ceil_gbps, reps, decode_reps) -> dict:
    """SnapKV or Ada-SnapKV: what eviction adds to the prefill and saves per decode step.

    prefill: ``method.prefill`` (dense attention, the window's scores, the keep mask) against dense;
    compaction: the kept keys and values gathered to the front, once per sequence, as the engines do;
    step: one decode step over the compacted cache (``method.decode``, with the key mask that hides
    the padding of heads keeping fewer tokens), replayed from a CUDA graph like dense decode.
    """
    method: SnapKV = get_method(name, cr)
    keep = method.prefill(q, k, v).keep
    order, counts = compaction(keep)
    index = order[:, :, None].expand(-1, -1, k.shape[-1])
    kc, vc = k.gather(1, index), v.gather(1, index)
    key_mask = padding_mask(counts)
    q1, memo = q[:, -1:].contiguous(), {}
    r = {
        "method": name,
        "achieved_compression": keep.numel() / int(counts.sum()),
        "cache_width": order.shape[1],
        "prefill_ms": time_ms(lambda: method.prefill(q, k, v), reps),
        "select_ms": secondary(lambda: time_ms(lambda: method.keep_mask(q, k), reps)),
        "compact_ms": secondary(lambda: time_ms(lambda: (k.gather(1, index), v.gather(1, index)), reps)),
        "step_ms": graph_ms(lambda: method.decode(q1, kc, vc, key_mask, memo).out, decode_reps),
        "dense_prefill_ms": dense_prefill_ms,
        "dense_ms": dense_decode_ms,
        "bound_ms": 2 * int(counts.sum()) * k.shape[-1] * k.element_size() / (ceil_gbps * 1e6),
    }
    r["prefill_speedup"] = dense_prefill_ms / r["prefill_ms"]
    r["speedup"] = dense_decode_ms / r["step_ms"]
    # Decode steps after which the step's saving has paid for the prefill's extra work.
    extra = r["prefill_ms"] + (0.0 if math.isnan(r["compact_ms"]) else r["compact_ms"]) - dense_prefill_ms
    saving = dense_decode_ms - r["step_ms"]
    r["breakeven_steps"] = max(0.0, extra) / saving if saving > 0 else float("inf")
    return r


def _fmt_eviction(r: dict) -> str:
    if "error" in r:
        failed = f"failed: {r['error'][:90]}"
        return f"| {r['method']} | {r['length'] // 1024}K | {r['compression']:g} | {failed} |" + " |" * 8
    cells = [
        r["method"], f"{r['length'] // 1024}K", f"{r['compression']:g}", f"{r['achieved_compression']:.1f}",
        f"{r['prefill_ms']:.2f} ({r['prefill_speedup']:.2f}x)", f"{r['select_ms']:.2f}",
        f"{r['compact_ms']:.2f}",
        f"{1e3 * r['step_ms']:.1f}", f"**{r['speedup']:.2f}x**",
        f"{1e3 * r['bound_ms']:.1f} ({r['dense_ms'] / r['bound_ms']:.1f}x)",
        f"{1e3 * r['dense_ms']:.1f} ({r['dense_kernel']})", f"{r['breakeven_steps']:.0f}",
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


EVICTION_HEADER = (
    "| method | length | target CR | achieved CR | prefill ms (speedup) | select ms | compaction ms "
    "| decode step µs (graph) | **speedup, step** | step bound µs (speedup) | dense step µs (kernel) "
    "| break-even decode steps |\n" + "|---" * 12 + "|"
)


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


def check_targets(prefill: list[dict], decode: list[dict]) -> list[str]:
    """The issue's targets, met or missed, from the rows that ran."""
    lines = []

    def find(rows, **key):
        return next(
            (r for r in rows if "error" not in r and all(r.get(k) == v for k, v in key.items())), None
        )

    for label, length, cr, want in (
        ("block_sparse (16)", 131072, 20, 7.0),
        ("vertical_slash", 131072, 20, 6.0),
    ):
        r = find(prefill, label=label, length=length, compression=cr)
        if r:
            lines.append(
                f"{label} 128K CR 20 end to end {r['speedup']:.2f}x (target {want:g}x): "
                f"{'met' if r['speedup'] >= want else 'missed'}"
            )
    slow = [r for r in prefill if "error" not in r and r["length"] >= 16384 and r["speedup"] <= 1.0]
    ran = [r for r in prefill if "error" not in r and r["length"] >= 16384]
    if ran:
        lines.append(
            f"prefill rows at >= 16K faster than dense end to end: {len(ran) - len(slow)} of {len(ran)}"
            + "".join(
                f"; slower: {r['label']} {r['length'] // 1024}K CR {r['compression']:g} {r['speedup']:.2f}x"
                for r in slow
            )
        )
    for length, cr, want in ((131072, 20, 4.0), (32768, 10, 2.0)):
        r = find(decode, length=length, compression=cr)
        if r:
            lines.append(
                f"quest {length // 1024}K CR {cr:g} step {r['speedup']:.2f}x (target {want:g}x): "
                f"{'met' if r['speedup'] >= want else 'missed'}"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--lengths",
        type=int,
        nargs="+",
        default=[131072, 65536, 32768, 16384],
        help="longest first by default",
    )
    parser.add_argument("--compressions", type=float, nargs="+", default=[2, 5, 10, 20])
    every = [*PREFILL_METHODS, *EVICTION_METHODS, "quest"]
    parser.add_argument("--methods", nargs="+", default=every, choices=every)
    parser.add_argument(
        "--block-sizes", type=int, nargs="+", default=[16], help="Block-Sparse blocks (16, 32, 64)"
    )
    parser.add_argument("--inputs", nargs="+", default=["structured"], choices=["structured", "iid"])
    parser.add_argument(
        "--block-m", type=int, default=64, help="query rows per prefill kernel tile (64 or 128)"
    )
    parser.add_argument("--reps", type=int, default=3, help="timed calls per measurement (median)")
    parser.add_argument(
        "--decode-reps", type=int, default=30, help="timed graph replays per decode measurement"
    )
    parser.add_argument(
        "--minutes", type=float, default=5.5, help="start no new row after this much wall time"
    )
    parser.add_argument(
        "--anchor-file", help="MInference's block_sparse_flash_attention.py, timed beside ours"
    )
    parser.add_argument(
        "--skip-prefill", action="store_true", help="no Block-Sparse / Vertical-Slash / FlexPrefill rows"
    )
    parser.add_argument("--skip-eviction", action="store_true", help="no SnapKV / Ada-SnapKV rows")
    parser.add_argument("--skip-decode", action="store_true", help="no Quest rows")
    parser.add_argument("--json", help="write every measured row here (rewritten after each row)")
    args = parser.parse_args()
    skipped = (
        (PREFILL_METHODS if args.skip_prefill else ())
        + (("quest",) if args.skip_decode else ())
        + (EVICTION_METHODS if args.skip_eviction else ())
    )
    args.methods = [m for m in args.methods if m not in skipped]
    if not torch.cuda.is_available():
        sys.exit(
            "bench_kernels.py needs a CUDA GPU; run it on one (the CPU has only the PyTorch references)."
        )
    started = time.monotonic()

    def out_of_time() -> bool:
        return time.monotonic() - started > 60 * args.minutes

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
        "eviction": [],
        "anchor": [],
        "skipped": [],
    }

    def save() -> None:
        if args.json:
            with open(args.json + ".tmp", "w") as f:
                json.dump(result, f, indent=1, default=str)
            os.replace(args.json + ".tmp", args.json)

    def guarded(rows: list, key: dict, fmt, fn: Callable[[], dict]) -> None:
        """Run one row (key's fields added to it); a failure is recorded and printed, and the next
        row still runs."""
        if out_of_time():
            result["skipped"].append(key)
            return
        try:
            row = {**fn(), **key}
        except Exception as err:  # noqa: BLE001 - one failed row must not lose the others
            traceback.print_exc(file=sys.stderr)
            row = {**key, "error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
            torch.cuda.empty_cache()
        rows.append(row)
        print(fmt(row), flush=True)
        save()

    def measure() -> None:
        prefill_methods = [m for m in args.methods if m in PREFILL_METHODS]
        eviction_methods = [m for m in args.methods if m in EVICTION_METHODS]
        for length in args.lengths:
            for kind in args.inputs:
                if (prefill_methods or eviction_methods) and not out_of_time():
                    q, k, v = make_inputs(kind, length, seed=length)
                    dense_ms, dense_name, dense_all = dense_prefill(q, k, v, max(args.reps, 3))
                    dense_tflops = 4 * HQ * length * (length + 1) / 2 * D / dense_ms / 1e9
                    print(
                        f"dense prefill {length} ({kind}): {dense_all} -> {dense_name} {dense_ms:.2f} ms "
                        f"({dense_tflops:.0f} TFLOP/s, {100 * dense_tflops / ceil_tflops:.0f}% of matmul)",
                        flush=True,
                    )
                    result["dense"][f"{length}/{kind}"] = {
                        "best": dense_name,
                        "ms": dense_ms,
                        "all": dense_all,
                    }
                    for cr in args.compressions:
                        for name in prefill_methods:
                            for size in args.block_sizes if name == "block_sparse" else [None]:
                                label = f"block_sparse ({size})" if size else name
                                key = {"label": label, "inputs": kind, "length": length, "compression": cr}
                                run = functools.partial(
                                    prefill_row, name, size, q, k, v, cr, dense_ms, ceil_tflops, args
                                )
                                guarded(result["prefill"], key, _fmt_prefill, run)
                    if eviction_methods and not out_of_time():
                        q1 = q[:, -1:].contiguous()
                        decode_ms, decode_name, decode_all = dense_decode(q1, k, v, args.decode_reps)
                        print(f"dense decode {length} ({kind}): {decode_all} -> {decode_name}", flush=True)
                        for cr in args.compressions:
                            for name in eviction_methods:
                                key = {"method": name, "inputs": kind, "length": length, "compression": cr,
                                       "dense_kernel": decode_name}  # fmt: skip
                                run = functools.partial(
                                    eviction_row, name, q, k, v, cr, dense_ms, decode_ms, ceil_gbps,
                                    args.reps, args.decode_reps,
                                )
                                guarded(result["eviction"], key, _fmt_eviction, run)
                        del q1
                    if args.anchor_file and kind == "structured" and not out_of_time():
                        try:
                            result["anchor"] += anchor_rows(
                                args.anchor_file, q, k, v, length, args.compressions, dense_ms
                            )
                        except Exception:  # noqa: BLE001
                            traceback.print_exc(file=sys.stderr)
                    del q, k, v
                    torch.cuda.empty_cache()
                if "quest" in args.methods and not out_of_time():
                    q, k, v = make_inputs(kind, length, seed=length + 1)
                    q1 = q[:, -1:].contiguous()
                    del q
                    dense_ms, dense_name, dense_all = dense_decode(q1, k, v, args.decode_reps)
                    print(f"dense decode {length} ({kind}): {dense_all} -> {dense_name}", flush=True)
                    for cr in args.compressions:
                        key = {
                            "method": "quest", "inputs": kind, "length": length, "compression": cr,
                            "dense_kernel": dense_name, "dense_all": dense_all,
                        }  # fmt: skip
                        run = functools.partial(
                            quest_row, q1, k, v, cr, dense_ms, ceil_gbps, args.decode_reps
                        )
                        guarded(result["decode"], key, _fmt_decode, run)
                    del q1, k, v
                    torch.cuda.empty_cache()

    def stop(signum, frame):  # a timeout's SIGTERM: still print the tables of what ran
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        measure()
    except KeyboardInterrupt:
        print("\ninterrupted: the tables below hold the rows measured so far", flush=True)
    print("\n== summary ==")
    print(
        f"GPU: {result['gpu']}; bf16 matmul {ceil_tflops:.0f} TFLOP/s, copy {ceil_gbps:.0f} GB/s; "
        f"{time.monotonic() - started:.0f} s; command: {' '.join(sys.argv)}"
    )
    if result["prefill"]:
        print("\n" + PREFILL_HEADER)
        print("\n".join(_fmt_prefill(r) for r in result["prefill"]))
    if result["anchor"]:
        print("\n" + ANCHOR_HEADER)
        print("\n".join(_fmt_anchor(r) for r in result["anchor"]))
    if result["decode"]:
        print("\n" + DECODE_HEADER)
        print("\n".join(_fmt_decode(r) for r in result["decode"]))
    if result["eviction"]:
        print("\n" + EVICTION_HEADER)
        print("\n".join(_fmt_eviction(r) for r in result["eviction"]))
    result["targets"] = check_targets(result["prefill"], result["decode"])
    print("\n" + "\n".join(f"- {line}" for line in result["targets"]))
    if result["skipped"]:
        print(
            f"\nnot run (out of the {args.minutes:g}-minute budget): {len(result['skipped'])} rows, "
            + ", ".join(
                f"{r.get('label', r.get('method'))} {r['length'] // 1024}K CR {r['compression']:g}"
                for r in result["skipped"]
            )
        )
    save()


if __name__ == "__main__":
    main()
