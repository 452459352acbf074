"""The inference cache: what its key is made of, resuming, growing, and the files it writes."""

from __future__ import annotations

import logging
import os
import shutil

import pandas as pd
import pytest

from sparse_frontier import cache as cache_module
from sparse_frontier.cache import JobCache, cell_key, digest, engine_identity, sample_keys
from sparse_frontier.engines.base import Generation
from sparse_frontier.io import make_temp_dir, remove_unreadable_parquets, write_parquet
from sparse_frontier.pipeline import Cell, build_task_data, cells_from_config, run_inference

TIMING = ["prefill_ms", "decode_ms"]


class _FakeEngine:
    """Outputs that depend on the prompt and the method only; counts the prompts it is given.
    ``fail_after`` batches, it dies the way a killed job does (nothing after it is written)."""

    name = "fake"

    def __init__(self, tokenizer, fail_after: int | None = None, prefill_ms: float = 1.0):
        self.tokenizer = tokenizer
        self.fail_after = fail_after
        self.prefill_ms = prefill_ms
        self.batches = 0
        self.prompts = 0

    def generate(self, prompts, method, max_new_tokens):
        if self.fail_after is not None and self.batches == self.fail_after:
            raise KeyboardInterrupt("killed")
        self.batches += 1
        self.prompts += len(prompts)
        return [
            Generation([1, 2], f"{method.name}@{method.compression_ratio:g}:{sum(p) % 9973}",
                       1 / method.compression_ratio, len(p), self.prefill_ms, 2.0)
            for p in prompts
        ]


@pytest.fixture(scope="module")
def data(tiny_tokenizer):
    return build_task_data("ruler_niah", tiny_tokenizer, 2048, 4, seed=0)


CELLS = cells_from_config(
    {"block_sparse": {"compression_ratios": [2, 4]}, "snapkv": {"compression_ratios": [4]}}
)


def _identity(model_dir, **changes):
    settings = {"dtype": "float32", **changes.pop("settings", {})}
    kind, device = changes.pop("engine", "hf"), changes.pop("device", "cpu")
    return engine_identity(kind, str(model_dir), settings, device=device)


def _run(engine, data, root, model_dir, batch_size=1, cells=CELLS, **identity_changes):
    job_cache = JobCache(root, "tiny", _identity(model_dir, **identity_changes), data)
    return run_inference(engine, data, cells, model="tiny", batch_size=batch_size, cache=job_cache)


def test_a_killed_job_resumes_from_its_last_finished_batch(tiny_tokenizer, tiny_model_dir, data,
                                                            tmp_path):
    whole = run_inference(_FakeEngine(tiny_tokenizer), data, CELLS, model="tiny", batch_size=1)
    killed = _FakeEngine(tiny_tokenizer, fail_after=5)
    with pytest.raises(KeyboardInterrupt):
        _run(killed, data, tmp_path, tiny_model_dir)
    resumed = _FakeEngine(tiny_tokenizer)
    rows = _run(resumed, data, tmp_path, tiny_model_dir)
    assert killed.prompts == 5 and resumed.prompts == len(CELLS) * len(data) - 5
    pd.testing.assert_frame_equal(rows, whole)  # the same rows in the same order, timings included


def test_outside_the_key_hits_batch_size_log_level_and_timings(tiny_tokenizer, tiny_model_dir, data,
                                                                tmp_path):
    first = _run(_FakeEngine(tiny_tokenizer), data, tmp_path, tiny_model_dir, batch_size=1)
    again = _FakeEngine(tiny_tokenizer, prefill_ms=99.0)
    logging.getLogger("sparse_frontier").setLevel(logging.DEBUG)
    try:
        rows = _run(again, data, tmp_path, tiny_model_dir, batch_size=3)
    finally:
        logging.getLogger("sparse_frontier").setLevel(logging.NOTSET)
    assert again.prompts == 0
    pd.testing.assert_frame_equal(rows, first)
    # A capacity (vLLM's max_model_len) decides nothing either.
    assert _identity(tiny_model_dir, settings={"max_model_len": 4096}) == _identity(tiny_model_dir)


def test_a_grown_study_computes_only_its_new_cells_and_samples(tiny_tokenizer, tiny_model_dir,
                                                                tmp_path):
    small = build_task_data("ruler_niah", tiny_tokenizer, 2048, 3, seed=0)
    _run(_FakeEngine(tiny_tokenizer), small, tmp_path, tiny_model_dir)

    more_samples = build_task_data("ruler_niah", tiny_tokenizer, 2048, 4, seed=0)
    engine = _FakeEngine(tiny_tokenizer)
    _run(engine, more_samples, tmp_path, tiny_model_dir)
    assert engine.prompts == len(CELLS)  # sample 3 only, in each cell

    one_more_ratio = CELLS + [Cell("snapkv", 10.0)]
    engine = _FakeEngine(tiny_tokenizer)
    rows = _run(engine, more_samples, tmp_path, tiny_model_dir, cells=one_more_ratio)
    assert engine.prompts == len(more_samples)
    assert len(rows) == len(one_more_ratio) * len(more_samples)

    changed = cells_from_config({"block_sparse": {"compression_ratios": [2, 4], "params": {"block_size": 32}},
                                 "snapkv": {"compression_ratios": [4]}})
    engine = _FakeEngine(tiny_tokenizer)
    _run(engine, more_samples, tmp_path, tiny_model_dir, cells=changed)
    assert engine.prompts == 2 * len(more_samples)  # block_sparse's two ratios; dense and snapkv cached


SNAPKV_4 = Cell("snapkv", 4.0)


def _key(model_dir, data, cell=SNAPKV_4, task="ruler_niah", **identity_changes):
    """The cache folder of ``cell`` and the keys of the samples: what decides a hit."""
    job_cache = JobCache("root", "tiny", _identity(model_dir, **identity_changes), data)
    return job_cache.folder(cell, task), tuple(job_cache.sample_key)


def test_every_input_of_the_key_misses(tiny_model_dir, data, tmp_path, monkeypatch):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    base = _key(model, data)
    assert _key(model, data) == base

    def misses(**changes):
        other = _key(changes.pop("model_dir", model), changes.pop("data", data), **changes)
        return other[0] != base[0] or other[1] != base[1]

    assert misses(engine="vllm")
    assert misses(device="cuda")
    assert misses(settings={"dtype": "bfloat16"})
    assert misses(settings={"hf_overrides": {"rope_parameters": {"rope_type": "yarn", "factor": 2.0}}})
    assert misses(settings={"tensor_parallel_size": 2})
    assert misses(cell=Cell("snapkv", 5.0))
    assert misses(cell=Cell("ada_snapkv", 4.0))
    assert misses(cell=Cell("snapkv", 4.0, {"default": {"approx_window": 64}}))
    assert misses(cell=Cell("snapkv", 4.0, {"by_task": {"ruler_niah": {"approx_window": 64}}}))
    assert not misses(cell=Cell("snapkv", 4.0, {"by_task": {"ruler_vt": {"approx_window": 64}}}))
    assert misses(task="ruler_vt")
    sample_changes = [("prompt", "another"), ("seed", 1), ("gold", ["x"]), ("task_params", '{"a": 1}')]
    for column, value in sample_changes:
        changed = data.copy()
        changed.at[0, column] = value
        assert misses(data=changed), column

    from sparse_frontier.attention.snapkv import SnapKV
    from sparse_frontier.tasks.ruler_niah import RulerNIAH

    with monkeypatch.context() as patch:
        patch.setattr(SnapKV, "version", SnapKV.version + 1)
        assert misses()
    with monkeypatch.context() as patch:
        patch.setattr(RulerNIAH, "max_new_tokens", 17)
        assert misses()

    weights = next(model.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    assert misses()
    shutil.copytree(tiny_model_dir, model, dirs_exist_ok=True)
    (model / "tokenizer.json").write_text((model / "tokenizer.json").read_text() + " ")
    assert misses()


def test_a_hub_model_is_keyed_by_its_cached_revision(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert cache_module.model_fingerprint("org/model") == {"path": "org/model", "revision": None}
    ref = tmp_path / "models--org--model" / "refs" / "main"
    ref.parent.mkdir(parents=True)
    ref.write_text("abc123\n")
    assert cache_module.model_fingerprint("org/model")["revision"] == "abc123"


def test_an_unreadable_entry_is_recomputed(tiny_tokenizer, tiny_model_dir, data, tmp_path):
    _run(_FakeEngine(tiny_tokenizer), data, tmp_path, tiny_model_dir)
    entry = next(tmp_path.rglob("snapkv/**/[!.]*.parquet"))
    entry.write_bytes(entry.read_bytes()[:100])
    engine = _FakeEngine(tiny_tokenizer)
    _run(engine, data, tmp_path, tiny_model_dir)
    assert engine.prompts == 1


def test_sample_keys_ignore_columns_the_engine_never_sees(data):
    annotated = data.assign(meta="{}", n_tokens=0)
    assert sample_keys(annotated).tolist() == sample_keys(data).tolist()
    assert sample_keys(data).is_unique


def test_cache_ls_lists_cells(tiny_tokenizer, tiny_model_dir, data, tmp_path, capsys):
    _run(_FakeEngine(tiny_tokenizer), data, tmp_path, tiny_model_dir, batch_size=2)
    assert cache_module.main(["ls", "--root", str(tmp_path), "--method", "block_sparse"]) == 0
    shown = capsys.readouterr().out
    assert "block_sparse" in shown and "snapkv" not in shown.split("cells,")[0]
    assert "2 cells, 8 prompts" in shown
    assert cache_module.main(["ls", "--root", str(tmp_path / "nothing")]) == 0
    assert "is empty" in capsys.readouterr().out


def test_key_json_says_what_the_key_was_made_of(tiny_tokenizer, tiny_model_dir, data, tmp_path):
    _run(_FakeEngine(tiny_tokenizer), data, tmp_path, tiny_model_dir)
    key_file = next(tmp_path.rglob("snapkv/ruler_niah/*/key.json"))
    key = cell_key(_identity(tiny_model_dir), Cell("snapkv", 4.0), "ruler_niah")
    assert key_file.parent.name == digest(key)[:24]
    assert pd.read_json(key_file, typ="series")["params"]["compression_ratio"] == 4.0


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_and_folders_follow_the_umask(tmp_path, umask):
    saved = os.umask(umask)
    try:
        write_parquet(pd.DataFrame({"a": [1]}), tmp_path / "t.parquet")
        folder = make_temp_dir(tmp_path / "model")
    finally:
        os.umask(saved)
    assert (tmp_path / "t.parquet").stat().st_mode & 0o777 == 0o666 & ~umask
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask


def test_unreadable_parquets_are_removed_and_named(tmp_path):
    good, cut, hidden, cached = (tmp_path / p for p in ("a/good.parquet", "a/cut.parquet", "a/.tmp.parquet",
                                                       "cache/x.parquet"))
    for path in (good, cut, hidden, cached):
        write_parquet(pd.DataFrame({"a": range(100)}), path)
    for path in (cut, hidden, cached):
        path.write_bytes(path.read_bytes()[:50])
    removed = remove_unreadable_parquets(tmp_path, skip=("cache",))
    assert [path for path, _ in removed] == [cut]
    assert removed[0][1]  # says what is wrong
    assert good.exists() and hidden.exists() and cached.exists() and not cut.exists()
