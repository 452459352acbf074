"""Vertical-Slash's two overheads on the GPU, old against new: selection and index building.

Qwen2.5-7B attention shapes (28 query heads, 4 kv heads, head dim 128, bf16, batch 1), T = S, the
inputs of bench_kernels.py ('structured' by default; 'iid' on request). For each length and
compression ratio:

  scores      vertical_slash_scores: PyTorch (fused=False: [H, W, S] float32 softmax) vs the
              two-pass Triton kernel (kernels/vertical_slash/triton_scores.py); its tile shapes are
              swept (block_m / block_n / warps, the first entry is the default)
  select      VerticalSlash.plan end to end (scores + ranking + exact-pair budget search + lists),
              with either scoring path; 'rest' = select - scores (ranking and search, shared code)
  index       build_vertical_slash_index: PyTorch builder (~130 launches) vs the one-launch Triton
              builder (kernels/vertical_slash/triton_index.py); the walk block / warps of the Triton
              builder are swept (the first entry is the default)
  attn        the attention kernel over the index (for the index's share of index + attn)

Checks in the same run: every index field equal (exactly) between the builders and the attention
outputs over both indices equal (bitwise); scores within float tolerance of the PyTorch ones, and
the selections of both paths equal (budget n, and per head the same verticals and slashes; heads
whose cut falls on a near-tie may differ and are counted). Times: triton.testing.do_bench medians (ms).

Run:  PYTHONPATH=src:benchmarks python benchmarks/bench_vertical_slash_parts.py --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile

import torch
import triton
from bench_kernels import HQ, bench, make_inputs

from sparse_frontier.attention.vertical_slash import VerticalSlash, vertical_slash_scores
from sparse_frontier.kernels.vertical_slash.triton_index import build_vertical_slash_index_triton
from sparse_frontier.kernels.vertical_slash.triton_scores import vertical_slash_scores_triton
from sparse_frontier.kernels.vertical_slash.triton_vertical_slash import (
    SLASH_PAD,
    VerticalSlashIndex,
    build_vertical_slash_index,
    build_vertical_slash_index_torch,
    vertical_slash_attention_from_index,
)

#: (walk block, num_warps) of the Triton index builder; the first is the default.
INDEX_CONFIGS = [(4096, 8), (1024, 4), (2048, 8), (4096, 16), (8192, 16)]
#: (block_m: rows and offsets per step, block_n: keys per step of the LSE pass, num_warps) of the Triton
#: scores kernels; the first is the default.
SCORE_CONFIGS = [(64, 64, 4), (64, 64, 8), (64, 128, 8), (32, 64, 4), (128, 64, 8), (128, 128, 8)]


def indices_equal(a: VerticalSlashIndex, b: VerticalSlashIndex) -> list[str]:
    """Names of the fields that differ (empty: identical, dtype and shape included)."""
    bad = []
    for field in dataclasses.fields(VerticalSlashIndex):
        x, y = getattr(a, field.name), getattr(b, field.name)
        same = (
            torch.equal(x, y) and x.dtype == y.dtype if isinstance(x, torch.Tensor) else x == y
        )  # fmt: skip
        if not same:
            bad.append(field.name)
    return bad


def score_check(new: tuple, old: tuple) -> dict:
    """Largest score error relative to the largest score, per kind (vertical, slash)."""
    out = {}
    for name, a, b in zip(("vertical", "slash"), new, old, strict=True):
        out[f"{name}_max_err_rel"] = float((a - b).abs().max() / b.abs().max())
    return out


def selection_check(new: tuple, old: tuple) -> dict:
    """Compare two plan() results: budget, computed pairs, heads whose lists are identical."""
    v_new, s_new, c_new, info_new = new
    v_old, s_old, c_old, info_old = old
    same_heads = 0
    for h in range(v_new.shape[0]):
        vn, vo = set(v_new[h].tolist()) - {-1}, set(v_old[h].tolist()) - {-1}
        sn, so = set(s_new[h].tolist()) - {-1}, set(s_old[h].tolist()) - {-1}
        same_heads += vn == vo and sn == so
    return {
        "budget_new": info_new,
        "budget_old": info_old,
        "pairs_rel_diff": abs(c_new - c_old) / c_old,
        "heads_identical": same_heads,
        "heads": v_new.shape[0],
    }


def case(q, k, v, length: int, cr: float, window: int, rep: int) -> dict:
    # Exact-pair counting, as when the recorded results were taken.
    method = VerticalSlash(
        compression_ratio=cr, approx_window=window, density="exact", forced_in_budget=False
    )
    r: dict = {"length": length, "compression": cr, "window": window}
    # Selection.
    new_scores = vertical_slash_scores(q, k, window, fused=True)
    old_scores = vertical_slash_scores(q, k, window, fused=False)
    r.update(score_check(new_scores, old_scores))
    r["scores_old_ms"] = bench(lambda: vertical_slash_scores(q, k, window, fused=False), rep)
    r["scores_new_ms"] = bench(lambda: vertical_slash_scores(q, k, window, fused=True), rep)
    r["scores_configs_ms"] = {}
    for bm, bn, warps in SCORE_CONFIGS:

        def run(bm=bm, bn=bn, warps=warps):
            return vertical_slash_scores_triton(q, k, window, block_m=bm, block_n=bn, num_warps=warps)

        try:
            err = max(score_check(run(), old_scores).values())
            ms = bench(run, rep)
            r["scores_configs_ms"][f"{bm}/{bn}/{warps}"] = ms if err < 1e-3 else f"WRONG ({ms:.3f} ms)"
        except Exception as exc:  # a tile that does not fit (shared memory, registers) is reported
            r["scores_configs_ms"][f"{bm}/{bn}/{warps}"] = f"failed: {str(exc).splitlines()[0][:80]}"
    del new_scores, old_scores
    plan_new = method.plan(q, k, fused=True)
    plan_old = method.plan(q, k, fused=False)
    r.update(selection_check(plan_new, plan_old))
    r["select_old_ms"] = bench(lambda: method.plan(q, k, fused=False), rep)
    r["select_new_ms"] = bench(lambda: method.plan(q, k, fused=True), rep)
    r["rest_ms"] = r["select_new_ms"] - r["scores_new_ms"]
    # Index building over the new selection.
    v_idx, s_idx = plan_new[0], plan_new[1]
    old_index = build_vertical_slash_index_torch(v_idx, s_idx, length, length)
    new_index = build_vertical_slash_index(v_idx, s_idx, length, length)
    r["index_fields_differing"] = indices_equal(new_index, old_index)
    r["index_old_ms"] = bench(lambda: build_vertical_slash_index_torch(v_idx, s_idx, length, length), rep)
    r["index_new_ms"] = bench(lambda: build_vertical_slash_index(v_idx, s_idx, length, length), rep)
    r["index_configs_ms"] = {}
    for block, warps in INDEX_CONFIGS:
        fields = build_vertical_slash_index_triton(
            v_idx, s_idx, length, length, 64, 32, SLASH_PAD, block=block, num_warps=warps
        )
        ok = not indices_equal(VerticalSlashIndex(64, 32, *fields), old_index)
        ms = bench(
            lambda b=block, w=warps: build_vertical_slash_index_triton(
                v_idx, s_idx, length, length, 64, 32, SLASH_PAD, block=b, num_warps=w
            ),
            rep,
        )
        r["index_configs_ms"][f"{block}/{warps}"] = ms if ok else f"WRONG ({ms:.3f} ms)"
    out_new = vertical_slash_attention_from_index(q, k, v, new_index)
    out_old = vertical_slash_attention_from_index(q, k, v, old_index)
    r["attn_outputs_equal"] = bool(torch.equal(out_new, out_old))
    del out_new, out_old
    r["attn_ms"] = bench(lambda: vertical_slash_attention_from_index(q, k, v, new_index), rep)
    r["index_share_old"] = r["index_old_ms"] / (r["index_old_ms"] + r["attn_ms"])
    r["index_share_new"] = r["index_new_ms"] / (r["index_new_ms"] + r["attn_ms"])
    return r


HEADER = (
    "| inputs | length | CR | scores ms old -> new | select ms old -> new (rest) | index ms old -> new "
    "| index share old -> new | attn ms | index equal / attn equal | score err (v, s) "
    "| same budget, heads identical |\n" + "|---" * 11 + "|"
)


def fmt(r: dict) -> str:
    same_budget = r["budget_new"] == r["budget_old"]
    return (
        f"| {r['kind']} | {r['length']} | {r['compression']:g} "
        f"| {r['scores_old_ms']:.2f} -> **{r['scores_new_ms']:.2f}** "
        f"| {r['select_old_ms']:.2f} -> **{r['select_new_ms']:.2f}** ({r['rest_ms']:.2f}) "
        f"| {r['index_old_ms']:.3f} -> **{r['index_new_ms']:.3f}** "
        f"| {100 * r['index_share_old']:.1f}% -> {100 * r['index_share_new']:.1f}% | {r['attn_ms']:.2f} "
        f"| {'yes' if not r['index_fields_differing'] else r['index_fields_differing']} / "
        f"{'yes' if r['attn_outputs_equal'] else 'NO'} "
        f"| {r['vertical_max_err_rel']:.1e}, {r['slash_max_err_rel']:.1e} "
        f"| {'yes' if same_budget else 'NO'}, {r['heads_identical']}/{r['heads']} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("json_path", nargs="?", help="write every measured row here (atomically)")
    parser.add_argument("--json", dest="json_opt", help="same as the positional path")
    parser.add_argument("--lengths", type=int, nargs="+", default=[16384, 32768, 65536, 131072])
    parser.add_argument("--compressions", type=float, nargs="+", default=[10, 20])
    parser.add_argument("--inputs", nargs="+", default=["structured"], choices=["structured", "iid"])
    parser.add_argument("--window", type=int, default=256, help="approx_window (256; 512 for retrieval)")
    parser.add_argument("--rep", type=int, default=200, help="do_bench repetition time per measurement (ms)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_vertical_slash_parts.py needs a CUDA GPU.")
    path = args.json_path or args.json_opt
    print(
        f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}",
        flush=True,
    )
    rows = []
    for kind in args.inputs:
        for length in args.lengths:
            q, k, v = make_inputs(kind, length, seed=length)
            assert q.shape[0] == HQ
            for cr in args.compressions:
                r = case(q, k, v, length, cr, args.window, args.rep)
                r["kind"] = kind
                rows.append(r)
                print(json.dumps(r), flush=True)
            del q, k, v
            torch.cuda.empty_cache()
    print("\n" + HEADER)
    print("\n".join(fmt(r) for r in rows))
    if path:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)) or ".", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(
                {
                    "gpu": torch.cuda.get_device_name(),
                    "torch": torch.__version__,
                    "argv": sys.argv,
                    "rows": rows,
                },
                f,
                indent=1,
            )
        os.replace(tmp, path)


if __name__ == "__main__":
    main()
