"""Quest's fused decode step (kernels/quest/triton_select.py) against the method's PyTorch definition.

Fresh random inputs; on the CPU under TRITON_INTERPRET=1 (small float16 cases), on a GPU at the
7B shapes with a 128K cache. Output buffers are poisoned so an unwritten entry fails.
"""

from __future__ import annotations

import math

import pytest
import torch
import triton

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
    out, hist = quest_selection_scores_triton(q, buf_low, buf_high, n_pages, current, shared)
    ref = quest_page_scores_reference(q.float(), low, high)
    if shared:
        ref = ref.view(hkv, hq // hkv, -1).sum(1)
    assert out.shape == ref.shape
    assert torch.all(out[:, current] == float("inf"))
    keep = torch.arange(n_pages, device=DEVICE) != current
    torch.testing.assert_close(out[:, keep], ref[:, keep], rtol=1e-4, atol=1e-3)
    assert torch.equal(hist, _top_bits_histogram(out))


@needs_kernel
@pytest.mark.parametrize("shared", [True, False])
def test_histogram_counts_pages_crowded_into_few_bins(shared):
    """Real rows crowd into a few bins (~20 of 4096 at 128K): keys constant over long stretches put
    whole tiles, and the ragged tail, into one bin; others into two or three."""
    hq, hkv, s, d = 4, 2, 16 * 150 + 5, 32
    q, k, _, g = _inputs(hq, hkv, s, d, seed=11)
    k[0] = 1.0  # every page of kv head 0 has the same bounds: one bin for the whole row
    k[1, : s // 2] = torch.randint(1, 4, (s // 2, 1), generator=g, device=DEVICE).to(k.dtype)
    low, high = page_bounds(k, 16)
    n_pages = low.shape[1]
    low, high = low.to(k.dtype), high.to(k.dtype)
    out, hist = quest_selection_scores_triton(q, low, high, n_pages, n_pages - 1, shared)
    assert torch.equal(hist, _top_bits_histogram(out))
    assert int(hist.sum()) == out.numel()


def _order_keys(scores: torch.Tensor) -> torch.Tensor:
    """int64 keys with the float order (-0.0 = 0.0), the definition the kernels' int32 keys follow."""
    bits = torch.where(scores == 0, 0.0, scores).view(torch.int32).long()
    return torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)


def _top_bits_histogram(scores: torch.Tensor) -> torch.Tensor:
    """Per row, how many scores have each value of the key's top 12 bits (the selection's first level)."""
    bins = (_order_keys(scores) >> 20) + 2048
    return torch.zeros(scores.shape[0], 4096, dtype=torch.int32, device=scores.device).scatter_add_(
        1, bins, torch.ones_like(bins, dtype=torch.int32)
    )


def _hard_rows(n_pages: int, seed: int) -> torch.Tensor:
    """Rows that stress the exact top-n: spread values, many ties, all negative with -0.0 and 0.0,
    the current page at +inf, one value everywhere, and near-equal values that share the top 24 key
    bits (the last passes decide them)."""
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    scores = torch.randn(7, n_pages, generator=g, device=DEVICE) * 30
    scores[1] = torch.round(scores[1] / 10)  # many ties: the lower pages must win them
    scores[2] = -scores[2].abs()  # all negative
    scores[2, ::5] = -0.0
    scores[2, 1::7] = 0.0
    scores[3, n_pages // 2] = float("inf")  # the current page
    scores[4] = 7.0  # one value everywhere
    near = torch.randint(0, 300, (n_pages,), generator=g, device=DEVICE, dtype=torch.int32)
    scores[5] = (torch.tensor(1.0e3, device=DEVICE).view(torch.int32) + near).view(torch.float32)
    scores[6] = -scores[5]
    return scores


@needs_kernel
@pytest.mark.parametrize(
    "chunk,block",
    [(None, None), (64, None), (128, "3 blocks")],
    ids=["defaults", "many-programs", "many-programs-blocked"],
)
@pytest.mark.parametrize("as_list", [True, False])
@pytest.mark.parametrize("n_pages", [1, 37, 300] + ([700, 8192, 8193, 20_000] if ON_GPU else []))
def test_top_pages_are_the_stable_top_n(n_pages, as_list, chunk, block):
    """Exact top-n against a stable sort, with the row in registers or in several blocks, one
    program per row or many; both outputs poisoned so an unwritten entry fails."""
    scores = _hard_rows(n_pages, seed=n_pages + as_list)
    if block == "3 blocks":  # (few: the interpreter runs each block of each pass in Python)
        block = max(16, triton.next_power_of_2(n_pages) // 4)
    for n in sorted({1, 2, n_pages // 20, n_pages // 2, n_pages - 1, n_pages} & set(range(1, n_pages + 1))):
        want = _stable_top(scores, n)
        if as_list:
            out = torch.full((7, n), -7, dtype=torch.int32, device=DEVICE)
            quest_select_top_pages_triton(scores, n, as_list=True, out=out, chunk=chunk, block=block)
            assert torch.all(out[:, 1:] > out[:, :-1]), "the list must be ascending and distinct"
            got = torch.zeros_like(want).scatter_(1, out.long(), True)
        else:
            got = torch.ones(7, n_pages, dtype=torch.bool, device=DEVICE)
            got.view(torch.uint8).fill_(3)  # neither 0 nor 1: an unwritten entry fails
            quest_select_top_pages_triton(scores, n, as_list=False, out=got, chunk=chunk, block=block)
            assert set(got.view(torch.uint8).unique().tolist()) <= {0, 1}
        assert torch.equal(got, want), f"n={n}"


@needs_kernel
def test_top_pages_with_one_reduction_per_pass():
    """The GPU's reduction of the three counts as one tuple, also run (slowly) by the interpreter."""
    scores = _hard_rows(37, seed=5)[[1, 2, 5]]  # ties, +-0.0, keys equal in their top 24 bits
    for n in (1, 9):
        out = quest_select_top_pages_triton(scores, n, chunk=16, block=16, paired=True)
        got = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, out.long(), True)
        assert torch.equal(got, _stable_top(scores, n)), f"n={n}"


@needs_kernel
def test_top_pages_of_a_long_row_in_many_programs():
    """8192 pages (a 128K cache): the size the decode step selects from, cut into 16 programs per row."""
    scores = _hard_rows(8192, seed=3)[[0, 1, 3, 5]]
    for n in (1, 410, 4096):
        out = torch.full((4, n), -7, dtype=torch.int32, device=DEVICE)
        quest_select_top_pages_triton(scores, n, out=out, chunk=512)
        got = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, out.long(), True)
        assert torch.all(out[:, 1:] > out[:, :-1])
        assert torch.equal(got, _stable_top(scores, n)), f"n={n}"


@needs_kernel
def test_top_pages_match_the_methods_selection():
    """On distinct scores, +inf at the current page gives exactly Quest's select_pages."""
    p, current, n = 900, 899, 45
    g = torch.Generator(device=DEVICE).manual_seed(1)
    scores = torch.randn(3, p, generator=g, device=DEVICE)
    fused = scores.clone()
    fused[:, current] = float("inf")
    mask = quest_select_top_pages_triton(fused, n, as_list=False, chunk=64)
    assert torch.equal(mask, select_pages(scores, n, current))


@needs_kernel
def test_top_pages_reject_an_impossible_budget():
    with pytest.raises(ValueError, match="n_select must be in"):
        quest_select_top_pages_triton(torch.zeros(1, 4, device=DEVICE), 5)
    with pytest.raises(ValueError, match="histogram must be int32"):
        quest_select_top_pages_triton(torch.zeros(2, 4, device=DEVICE), 1, histogram=torch.zeros(1, 4096))


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
            {
                "WRITE_LIST": True,
                "WRITE_MASK": False,
                "CHUNK": 256,
                "BLOCK": 8192,
                "SINGLE": True,
                "PAIRED": True,
            },
            {},
        ),
        (
            "select",
            {
                "WRITE_LIST": False,
                "WRITE_MASK": True,
                "CHUNK": 2048,
                "BLOCK": 1024,
                "SINGLE": False,
                "PAIRED": True,
            },
            {},
        ),
        ("histogram", {}, {}),
        ("attention", {}, {}),
    ],
    ids=["scores-shared", "scores-per-head", "select-list", "select-mask-blocked", "histogram", "attention"],
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
        pointers = {"Q": "*bf16", "LOW": "*bf16", "HIGH": "*bf16", "SCORES": "*fp32", "HIST": "*i32"}
    elif kernel == "select":
        fn = m.quest_select_pages_kernel
        pointers = {"SCORES": "*fp32", "HIST": "*i32", "LIST": "*i32", "MASK": "*u8"}
    elif kernel == "histogram":
        fn = m.quest_top_bits_histogram_kernel
        consts = {"BLOCK": 1024}
        pointers = {"SCORES": "*fp32", "HIST": "*i32"}
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
    warps = 8 if kernel == "select" else 4
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
