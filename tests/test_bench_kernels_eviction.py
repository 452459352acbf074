"""benchmarks/bench_kernels.py's SnapKV / Ada-SnapKV rows on the CPU (CUDA timers swapped for a clock):
the row holds the achieved ratio, a decode step over the compacted cache and its break-even."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
bench = pytest.importorskip("bench_kernels")


def clock_ms(fn, reps, warmup=True):
    if warmup:
        fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) * 1e3 / reps


@pytest.mark.parametrize("name", ["snapkv", "ada_snapkv"])
def test_eviction_row_reports_what_eviction_costs_and_saves(name, monkeypatch):
    monkeypatch.setattr(bench, "time_ms", clock_ms)
    monkeypatch.setattr(bench, "graph_ms", clock_ms)
    q, k, v = bench.make_inputs("structured", 2048, seed=3, device="cpu")
    row = bench.eviction_row(name, q, k, v, 5.0, 50.0, 1.0, ceil_gbps=100.0, reps=1, decode_reps=2)
    assert row["achieved_compression"] == pytest.approx(5.0, rel=0.01)
    kept = 2048 / 5
    if name == "ada_snapkv":  # per-head budgets: the cache is as wide as the largest head's
        assert row["cache_width"] > kept
    else:
        assert row["cache_width"] == round(kept)
    assert row["step_ms"] > 0 and row["speedup"] == pytest.approx(1.0 / row["step_ms"])
    assert row["prefill_speedup"] == pytest.approx(50.0 / row["prefill_ms"])
    extra = row["prefill_ms"] + row["compact_ms"] - 50.0
    saving = 1.0 - row["step_ms"]
    expected = max(0.0, extra) / saving if saving > 0 else math.inf
    assert row["breakeven_steps"] == pytest.approx(expected)
    key = {"method": name, "length": 2048, "compression": 5.0, "dense_kernel": "x"}
    line = bench._fmt_eviction({**row, **key})
    assert line.count("|") == bench.EVICTION_HEADER.splitlines()[0].count("|")
