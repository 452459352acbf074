"""Quest's fused decode step (kernels/quest/triton_select.py) against the method's PyTorch definition.

Fresh random inputs; on the CPU under TRITON_INTERPRET=1 (small float16 cases), on a GPU at the
7B shapes with a 128K cache. Output buffers are poisoned so an unwritten entry fails.
"""

from __future__ import annotations

import math

import pytest
import torch

from sparse_frontier.attention.quest import Quest, page_bounds, select_pages
from sparse_frontier.kernels.quest.reference import (
    quest_decode_attention_reference,
    quest_page_scores_reference,
)
from sparse_frontier.kernels.quest.triton_select import (
    quest_page_list_attention_triton,
    quest_select_top_pages_triton,
    quest_selection_scores_triton,
)

from .kernel_env import DEVICE, DTYPE, ON_GPU, compiles_offline, needs_kernel

REL_TOL = 1e-2 if ON_GPU else 2e-3
# (Hq, Hkv, S, D): Qwen2.5-7B's 7:1 groups at 128K on a GPU; ragged lengths, 2:1 and 1:1 groups.
DECODE = (
    [(28, 4, 131_077, 128), (8, 2, 5000, 128), (4, 4, 333, 64)]
    if ON_GPU
    else [(4, 2, 1100, 32), (7, 1, 300, 16), (2, 2, 64, 16)]
)


def _inputs(hq, hkv, s, d, seed):
    g = torch.Generator(device=DEVICE).manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g, device=DEVICE).to(DTYPE)

    return rand(hq, 1, d), rand(hkv, s, d), rand(hkv, s, d), g


def _stable_top(scores: torch.Tensor, n: int) -> torch.Tensor:
    """The definition: the n best pages per row, ties to the lower page; bool mask."""
    order = scores.argsort(dim=1, descending=True, stable=True)[:, :n]
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, order, True)


@needs_kernel
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("hq,hkv,s,d", DECODE)
def test_selection_scores_are_quests_bounds(hq, hkv, s, d, shared):
    q, k, _, _ = _inputs(hq, hkv, s, d, seed=s + shared)
    low, high = page_bounds(k, 16)
    n_pages, current = low.shape[1], (s - 1) // 16
    # Summaries kept in the keys' dtype inside a longer buffer, the current page's row stale (NaN).
    buf_low, buf_high = (
        torch.full((hkv, n_pages + 7, d), float("nan"), dtype=k.dtype, device=DEVICE) for _ in "lh"
    )
    buf_low[:, :n_pages], buf_high[:, :n_pages] = low.to(k.dtype), high.to(k.dtype)
    buf_low[:, current], buf_high[:, current] = float("nan"), float("nan")
    out = quest_selection_scores_triton(q, buf_low, buf_high, n_pages, current, shared)
    ref = quest_page_scores_reference(q.float(), low, high)
    if shared:
        ref = ref.view(hkv, hq // hkv, -1).sum(1)
    assert out.shape == ref.shape
    assert torch.all(out[:, current] == float("inf"))
    keep = torch.arange(n_pages, device=DEVICE) != current
    torch.testing.assert_close(out[:, keep], ref[:, keep], rtol=1e-4, atol=1e-3)


@needs_kernel
@pytest.mark.parametrize("chunk", [None, 128])
@pytest.mark.parametrize("as_list", [True, False])
@pytest.mark.parametrize("n_pages", [1, 37, 300] + ([700, 8192, 8193, 20_000] if ON_GPU else []))
def test_top_pages_are_the_stable_top_n(n_pages, as_list, chunk):
    """Exact top-n with the row in registers (default) and in several chunks (chunk=128)."""
    g = torch.Generator(device=DEVICE).manual_seed(n_pages + as_list)
    scores = torch.randn(5, n_pages, generator=g, device=DEVICE) * 30
    scores[1] = torch.round(scores[1] / 10)  # many ties: the lower pages must win them
    scores[2] = -scores[2].abs()  # all negative
    scores[3, n_pages // 2] = float("inf")  # the current page
    scores[4] = 7.0  # one value everywhere
    for n in sorted({1, max(1, n_pages // 20), max(1, n_pages // 2), n_pages}):
        want = _stable_top(scores, n)
        if as_list:
            out = torch.full((5, n), -7, dtype=torch.int32, device=DEVICE)
            quest_select_top_pages_triton(scores, n, as_list=True, out=out, chunk=chunk)
            assert torch.all(out[:, 1:] > out[:, :-1]), "the list must be ascending and distinct"
            got = torch.zeros_like(want).scatter_(1, out.long(), True)
        else:
            got = torch.ones(5, n_pages, dtype=torch.bool, device=DEVICE)
            got.view(torch.uint8).fill_(3)  # neither 0 nor 1: an unwritten entry fails
            quest_select_top_pages_triton(scores, n, as_list=False, out=got, chunk=chunk)
            assert set(got.view(torch.uint8).unique().tolist()) <= {0, 1}
        assert torch.equal(got, want), f"n={n}"


@needs_kernel
def test_top_pages_match_the_methods_selection():
    """On distinct scores, +inf at the current page gives exactly Quest's select_pages."""
    p, current, n = 900, 899, 45
    g = torch.Generator(device=DEVICE).manual_seed(1)
    scores = torch.randn(3, p, generator=g, device=DEVICE)
    fused = scores.clone()
    fused[:, current] = float("inf")
    mask = quest_select_top_pages_triton(fused, n, as_list=False)
    assert torch.equal(mask, select_pages(scores, n, current))


@needs_kernel
def test_top_pages_reject_an_impossible_budget():
    with pytest.raises(ValueError, match="n_select must be in"):
        quest_select_top_pages_triton(torch.zeros(1, 4, device=DEVICE), 5)
    with pytest.raises(ValueError, match="larger page_size"):
        quest_select_top_pages_triton(torch.zeros(1, 2**16, device=DEVICE), 5)


@needs_kernel
@pytest.mark.parametrize("hq,hkv,s,d", DECODE)
def test_page_list_attention_matches_reference(hq, hkv, s, d):
    q, k, v, g = _inputs(hq, hkv, s, d, seed=s + 11)
    n_pages = math.ceil(s / 16)
    for n in sorted({1, max(1, n_pages // 10), n_pages}):
        chosen = torch.rand(hkv, n_pages, generator=g, device=DEVICE).argsort(1)[:, :n]
        page_list = chosen.sort(1).values.int()
        page_mask = torch.zeros(hkv, n_pages, dtype=torch.bool, device=DEVICE).scatter_(1, chosen, True)
        out = torch.full_like(q, float("nan"))
        quest_page_list_attention_triton(q, k, v, page_list, out=out, pages_per_prog=4)
        ref = quest_decode_attention_reference(
            q.float(), k.float(), v.float(), page_mask.repeat_interleave(hq // hkv, 0)
        )
        assert not torch.isnan(out).any()
        assert float((out.float() - ref).norm() / ref.norm()) < REL_TOL


@needs_kernel
@pytest.mark.parametrize("ratio", [5.0, 20.0])
@pytest.mark.parametrize("share_pages", [True, False])
@pytest.mark.parametrize("hq,hkv,s,d", DECODE)
def test_fused_decode_step_is_quests_definition(hq, hkv, s, d, share_pages, ratio):
    """The whole fused step (summaries kept across steps, scores, top-n, attention) against the
    method's PyTorch plan and the reference attention; same pages up to ties of the bounds."""
    from sparse_frontier.attention.quest import PageSummaries, quest_decode_fused

    q, k, v, _ = _inputs(hq, hkv, s, d, seed=s + 5)
    method = Quest(compression_ratio=ratio, share_pages=share_pages)
    summaries = PageSummaries(16)
    summaries.full_bounds(k[:, : s - 17])  # an earlier step: later pages are summarised incrementally
    out, n = quest_decode_fused(method, q, k, v, summaries)
    plan = method.plan(q.cpu().float(), k.cpu().float())  # the definition, in float32 on the CPU
    ref = quest_decode_attention_reference(q.cpu().float(), k.cpu().float(), v.cpu().float(), plan)
    assert int(plan[0].sum()) == n
    assert float((out.cpu().float() - ref).norm() / ref.norm()) < REL_TOL


@compiles_offline[0]
@compiles_offline[1]
@pytest.mark.parametrize(
    "kernel,consts,pointers",
    [
        ("scores", {"SHARED": True}, {}),
        ("scores", {"SHARED": False}, {}),
        (
            "select",
            {"WRITE_LIST": True, "WRITE_MASK": False, "CHUNK": 8192, "SINGLE": True, "PAIRED_REDUCE": True},
            {},
        ),
        (
            "select",
            {"WRITE_LIST": False, "WRITE_MASK": True, "CHUNK": 1024, "SINGLE": False, "PAIRED_REDUCE": True},
            {},
        ),
        ("attention", {}, {}),
    ],
    ids=["scores-shared", "scores-per-head", "select-list", "select-mask-chunked", "attention"],
)
def test_compiles_for_hopper_without_a_gpu(kernel, consts, pointers):
    """The fused step's kernels lower to sm_90 machine code offline: the interpreter runs Python, so
    it misses what only the compiler rejects (types of loop-carried values, unsigned promotion)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from sparse_frontier.kernels.quest import triton_select as m

    if kernel == "scores":
        fn = m.quest_selection_scores_kernel
        consts = {**consts, "GROUP": 7, "GROUP_PAD": 16, "BLOCK_P": 64, "HEAD_DIM": 128}
        pointers = {"Q": "*bf16", "LOW": "*bf16", "HIGH": "*bf16", "SCORES": "*fp32"}
    elif kernel == "select":
        fn = m.quest_select_top_pages_kernel
        pointers = {"SCORES": "*fp32", "LIST": "*i32", "MASK": "*u8"}
    else:
        fn = m.quest_page_list_attention_kernel
        consts = {
            "GROUP": 7,
            "GROUP_PAD": 16,
            "PAGE": 16,
            "PAGES_PER_PROGRAM": 8,
            "BLOCK_N": 64,
            "HEAD_DIM": 128,
        }
        pointers = {"Q": "*bf16", "K": "*bf16", "V": "*bf16", "LIST": "*i32", "M_PART": "*fp32",
                    "L_PART": "*fp32", "O_PART": "*fp32", "qk_scale": "fp32"}  # fmt: skip
    signature = {a: "constexpr" if a in consts else pointers.get(a, "i32") for a in fn.arg_names}
    source = ASTSource(fn, signature, constexprs=consts)
    warps = 16 if kernel == "select" else 4
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    assert compiled.asm["cubin"]


@pytest.mark.skipif(not ON_GPU, reason="CUDA graphs and the sync debug mode need a GPU")
def test_fused_step_never_synchronises_and_replays_from_a_cuda_graph():
    """The whole step runs with synchronising calls forbidden, and one captured graph replayed on a
    new query gives what the step computes for it afresh."""
    from sparse_frontier.attention.quest import PageSummaries, quest_decode_fused

    hq, hkv, s, d = DECODE[0]
    q, k, v, g = _inputs(hq, hkv, s, d, seed=9)
    method = Quest(compression_ratio=20.0)
    summaries = PageSummaries(16)
    quest_decode_fused(method, q, k, v, summaries)  # compile, and bring the summaries up to date
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        quest_decode_fused(method, q, k, v, summaries)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    static_q = q.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        quest_decode_fused(method, static_q, k, v, summaries)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out, _ = quest_decode_fused(method, static_q, k, v, summaries)
    new_q = torch.randn(q.shape, generator=g, device=DEVICE).to(DTYPE)
    static_q.copy_(new_q)
    graph.replay()
    fresh, _ = quest_decode_fused(method, new_q, k, v, summaries)
    torch.testing.assert_close(static_out, fresh, rtol=0, atol=0)
