"""The inference cache: what its key is made of, and a job that resumes and grows through it."""

from __future__ import annotations

import hashlib
import shutil
import stat

import pandas as pd
import pytest

from sparse_frontier import cache as cache_module
from sparse_frontier.cache import JobCache, digest, engine_identity, sample_keys
from sparse_frontier.engines.base import Generation
from sparse_frontier.io import (
    make_temp_dir,
    parquet_problem,
    remove_unreadable_parquets,
    write_parquet,
    write_text,
)
from sparse_frontier.pipeline import Cell, build_task_data, cells_from_config, run_inference

TIMING = ["prefill_ms", "decode_ms"]


class EchoEngine:
    """A deterministic engine whose output names the prompt and the method it was given, so an
    output served for the wrong sample or cell shows; it counts the prompts it is asked to run."""

    name = "echo"

    def __init__(self, tokenizer, fail_after: int | None = None):
        self.tokenizer = tokenizer
        self.calls: list[tuple[str, float, int]] = []
        self.fail_after = fail_after

    def generate(self, prompts, method, max_new_tokens, stop=()):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt("killed")  # what a job sees of a kill, short of the process dying
        self.calls.append((method.name, method.compression_ratio, len(prompts)))
        results = []
        for prompt in prompts:
            tag = hashlib.sha1(str((prompt, method.name, method.compression_ratio)).encode()).hexdigest()[:8]
            results.append(
                Generation([1], f"{method.name}:{tag}", 1 / method.compression_ratio, len(prompt), 1.0, 2.0)
            )
        return results

    def prompts_run(self) -> int:
        return sum(n for *_, n in self.calls)


@pytest.fixture(scope="module")
def data(tiny_tokenizer):
    return build_task_data("ruler_niah", tiny_tokenizer, 2048, 5, seed=0)


def job_cache(root, data, model_dir, **identity_overrides) -> JobCache:
    identity = engine_identity("hf", str(model_dir), {"dtype": "float32"}, device="cpu")
    identity.update(identity_overrides)
    return JobCache(root, "tiny", identity, data)


METHODS = {"snapkv": {"compression_ratios": [2, 4]}, "block_sparse": {"compression_ratios": [4]}}


def test_a_second_run_computes_nothing_and_loads_no_model(tmp_path, data, tiny_model_dir, tiny_tokenizer):
    cells = cells_from_config(METHODS)
    engine = EchoEngine(tiny_tokenizer)
    first = run_inference(
        engine, data, cells, model="tiny", batch_size=2, cache=job_cache(tmp_path, data, tiny_model_dir)
    )
    assert engine.prompts_run() == len(cells) * len(data) == len(first)
    uncached = run_inference(EchoEngine(tiny_tokenizer), data, cells, model="tiny", batch_size=2)
    pd.testing.assert_frame_equal(first, uncached)

    def load_nothing():
        raise AssertionError("the engine was loaded although everything was cached")

    again = run_inference(
        load_nothing, data, cells, model="tiny", batch_size=2, cache=job_cache(tmp_path, data, tiny_model_dir)
    )
    pd.testing.assert_frame_equal(again, first)


def test_a_killed_job_resumes_from_its_last_finished_batch(tmp_path, data, tiny_model_dir, tiny_tokenizer):
    cells = cells_from_config(METHODS)
    killed = EchoEngine(tiny_tokenizer, fail_after=5)
    with pytest.raises(KeyboardInterrupt):
        run_inference(
            killed, data, cells, model="tiny", batch_size=2, cache=job_cache(tmp_path, data, tiny_model_dir)
        )
    finished = killed.prompts_run()
    resumed = EchoEngine(tiny_tokenizer)
    rows = run_inference(
        resumed, data, cells, model="tiny", batch_size=2, cache=job_cache(tmp_path, data, tiny_model_dir)
    )
    assert resumed.prompts_run() == len(cells) * len(data) - finished
    whole = run_inference(EchoEngine(tiny_tokenizer), data, cells, model="tiny", batch_size=2)
    pd.testing.assert_frame_equal(rows, whole)


def test_a_new_ratio_or_more_samples_compute_only_themselves(tmp_path, tiny_tokenizer, tiny_model_dir, data):
    few = data.iloc[:3].reset_index(drop=True)
    run_inference(
        EchoEngine(tiny_tokenizer),
        few,
        cells_from_config(METHODS),
        model="tiny",
        cache=job_cache(tmp_path, few, tiny_model_dir),
    )

    grown = {**METHODS, "snapkv": {"compression_ratios": [2, 4, 8]}}
    engine = EchoEngine(tiny_tokenizer)
    rows = run_inference(
        engine, few, cells_from_config(grown), model="tiny", cache=job_cache(tmp_path, few, tiny_model_dir)
    )
    assert {(m, cr) for m, cr, _ in engine.calls} == {("snapkv", 8.0)} and engine.prompts_run() == 3
    assert len(rows) == 5 * 3

    engine = EchoEngine(tiny_tokenizer)  # 5 samples instead of 3: the first 3 are the same samples
    rows = run_inference(
        engine, data, cells_from_config(grown), model="tiny", cache=job_cache(tmp_path, data, tiny_model_dir)
    )
    assert engine.prompts_run() == 5 * 2 and len(rows) == 5 * 5
    assert sorted(rows.sample_id.unique()) == [0, 1, 2, 3, 4]


def folder_for(root, data, model_dir, cell=None, task="ruler_niah", **identity):
    return job_cache(root, data, model_dir, **identity).folder(cell or Cell("snapkv", 4.0), task)


def test_the_key_changes_with_each_input_that_decides_the_outputs(
    tmp_path, data, tiny_model_dir, monkeypatch
):
    base = folder_for(tmp_path, data, tiny_model_dir)
    settings = {"dtype": "float32"}
    changed = {
        "dtype": folder_for(tmp_path, data, tiny_model_dir, settings={"dtype": "bfloat16"}),
        "rope": folder_for(
            tmp_path, data, tiny_model_dir, settings={**settings, "hf_overrides": {"rope_scaling": 4}}
        ),
        "tensor parallel": folder_for(
            tmp_path, data, tiny_model_dir, settings={**settings, "tensor_parallel_size": 2}
        ),
        "device": folder_for(tmp_path, data, tiny_model_dir, device="cuda"),
        "engine": folder_for(tmp_path, data, tiny_model_dir, engine="vllm"),
        "ratio": folder_for(tmp_path, data, tiny_model_dir, cell=Cell("snapkv", 5.0)),
        "method": folder_for(tmp_path, data, tiny_model_dir, cell=Cell("ada_snapkv", 4.0)),
        "parameter": folder_for(
            tmp_path, data, tiny_model_dir, cell=Cell("snapkv", 4.0, {"default": {"pool_kernel": 7}})
        ),
        "parameter for this task": folder_for(
            tmp_path,
            data,
            tiny_model_dir,
            cell=Cell("snapkv", 4.0, {"by_task": {"ruler_niah": {"pool_kernel": 9}}}),
        ),
        "task": folder_for(tmp_path, data, tiny_model_dir, task="ruler_vt"),
    }
    # Weights: a copy of the model folder with one byte of the weights changed.
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    same_path = folder_for(tmp_path, data, tiny_model_dir)
    assert same_path == base
    weights = next(copy.glob("*.safetensors"))
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 1
    weights.write_bytes(bytes(raw))
    identity = engine_identity("hf", str(tiny_model_dir), settings, device="cpu")
    changed["weights"] = folder_for(
        tmp_path,
        data,
        tiny_model_dir,
        model={
            **identity["model"],
            "files": engine_identity("hf", str(copy), settings, device="cpu")["model"]["files"],
        },
    )
    changed["model path"] = folder_for(
        tmp_path, data, tiny_model_dir, model={**identity["model"], "path": "other"}
    )
    # The method's code version and the task's answer budget.
    from sparse_frontier.attention.snapkv import SnapKV

    monkeypatch.setattr(SnapKV, "version", SnapKV.version + 1)
    changed["method version"] = folder_for(tmp_path, data, tiny_model_dir)
    monkeypatch.undo()
    from sparse_frontier.tasks import get_task

    task_class = type(get_task("ruler_niah"))
    monkeypatch.setattr(
        task_class, "max_new_tokens", get_task("ruler_niah").max_new_tokens + 1, raising=False
    )
    changed["max new tokens"] = folder_for(tmp_path, data, tiny_model_dir)
    monkeypatch.undo()

    assert folder_for(tmp_path, data, tiny_model_dir) == base  # the undone changes hit again
    for what, folder in changed.items():
        assert folder != base, f"changing the {what} did not change the cache key"
    assert len(set(changed.values())) == len(changed)


def test_the_key_ignores_what_does_not_decide_the_outputs(
    tmp_path, data, tiny_model_dir, tiny_tokenizer, caplog
):
    import logging

    base = folder_for(tmp_path, data, tiny_model_dir)
    capacity = engine_identity(
        "hf", str(tiny_model_dir), {"dtype": "float32", "max_model_len": 99999}, device="cpu"
    )
    assert (
        job_cache(tmp_path, data, tiny_model_dir, **capacity).folder(Cell("snapkv", 4.0), "ruler_niah")
        == base
    )
    # Batch size, log level and timings: a run at other settings takes everything from the cache.
    cells = [Cell("snapkv", 4.0)]
    run_inference(
        EchoEngine(tiny_tokenizer),
        data,
        cells,
        model="tiny",
        batch_size=1,
        cache=job_cache(tmp_path, data, tiny_model_dir),
    )
    caplog.set_level(logging.DEBUG)
    engine = EchoEngine(tiny_tokenizer)
    run_inference(
        engine, data, cells, model="tiny", batch_size=4, cache=job_cache(tmp_path, data, tiny_model_dir)
    )
    assert engine.calls == []


def test_sample_keys_change_with_the_sample_only(data):
    keys = sample_keys(data)
    assert keys.is_unique
    edited = data.copy()
    edited.loc[1, "prompt"] = edited.prompt[1] + " "
    assert (sample_keys(edited) != keys).tolist() == [False, True, False, False, False]
    regolded = data.copy()
    regolded.at[2, "gold"] = ["other"]
    assert (sample_keys(regolded) != keys).tolist() == [False, False, True, False, False]
    reordered = data.iloc[::-1]
    assert sample_keys(reordered).loc[data.index].tolist() == keys.tolist()


def test_an_unreadable_entry_is_recomputed(tmp_path, data, tiny_model_dir, tiny_tokenizer):
    cells = [Cell("snapkv", 4.0)]
    run_inference(
        EchoEngine(tiny_tokenizer),
        data,
        cells,
        model="tiny",
        batch_size=2,
        cache=job_cache(tmp_path, data, tiny_model_dir),
    )
    entry = sorted(
        job_cache(tmp_path, data, tiny_model_dir).folder(cells[0], "ruler_niah").glob("*.parquet")
    )[0]
    lost = len(pd.read_parquet(entry))
    entry.write_bytes(entry.read_bytes()[:100])
    engine = EchoEngine(tiny_tokenizer)
    rows = run_inference(
        engine, data, cells, model="tiny", batch_size=2, cache=job_cache(tmp_path, data, tiny_model_dir)
    )
    assert engine.prompts_run() == lost and len(rows) == len(data)


def test_cache_ls_lists_each_cell(tmp_path, data, tiny_model_dir, tiny_tokenizer, capsys):
    run_inference(
        EchoEngine(tiny_tokenizer),
        data,
        cells_from_config(METHODS),
        model="tiny",
        batch_size=2,
        cache=job_cache(tmp_path, data, tiny_model_dir),
    )
    assert cache_module.main(["ls", "--root", str(tmp_path), "--method", "snapkv"]) == 0
    shown = capsys.readouterr().out
    assert "2 cells, 10 prompts" in shown and "block_sparse" not in shown
    contents = cache_module.cache_contents(tmp_path)
    assert sorted(zip(contents.method, contents.compression_ratio, contents.prompts, strict=True)) == [
        ("block_sparse", 4.0, 5),
        ("dense", 1.0, 5),
        ("snapkv", 2.0, 5),
        ("snapkv", 4.0, 5),
    ]
    cache_module.main(["ls", "--root", str(tmp_path / "nothing")])
    assert "is empty" in capsys.readouterr().out


def test_writes_follow_the_umask(tmp_path, tiny_model_dir):
    import os

    old = os.umask(0o022)
    try:
        write_text("x", tmp_path / "a.txt")
        write_parquet(pd.DataFrame({"a": [1]}), tmp_path / "a.parquet")
        folder = make_temp_dir(tmp_path / "model")
        os.umask(0o002)
        write_text("x", tmp_path / "b.txt")
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "a.txt") == mode(tmp_path / "a.parquet") == 0o644
    assert mode(folder) == 0o755
    assert mode(tiny_model_dir) == 0o777 & ~old  # the model folder a build renames into place
    assert mode(tmp_path / "b.txt") == 0o664


def test_unreadable_parquets_are_found_and_removed(tmp_path):
    good, cut, cached = tmp_path / "good.parquet", tmp_path / "sub/cut.parquet", tmp_path / "cache/x.parquet"
    for path in (good, cut, cached):
        write_parquet(pd.DataFrame({"a": range(1000)}), path)
    for path in (cut, cached):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert parquet_problem(good) is None and "Parquet" in parquet_problem(cut)
    removed = remove_unreadable_parquets(tmp_path, skip=("cache",))
    assert [path for path, _ in removed] == [cut]
    assert good.exists() and not cut.exists() and cached.exists()


def test_digest_is_order_free_for_mappings():
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1}) != digest({"a": 1, "b": [2, 1]})


def test_assembling_what_the_cache_lost_says_so(tmp_path, data, tiny_model_dir, tiny_tokenizer):
    from sparse_frontier.pipeline import work_items

    cells = [Cell("snapkv", 4.0)]
    cache = job_cache(tmp_path, data, tiny_model_dir)
    run_inference(EchoEngine(tiny_tokenizer), data, cells, model="tiny", cache=cache)
    shutil.rmtree(cache.folder(cells[0], "ruler_niah"))  # e.g. a user clearing it while the job ran
    with pytest.raises(RuntimeError, match="lost 5 rows of snapkv x4 on ruler_niah"):
        cache.assemble(work_items(data, cells, 8))


def test_a_changed_parameter_recomputes_that_method_only(tmp_path, data, tiny_model_dir, tiny_tokenizer):
    run_inference(EchoEngine(tiny_tokenizer), data, cells_from_config(METHODS), model="tiny",
                  cache=job_cache(tmp_path, data, tiny_model_dir))
    changed = {**METHODS, "snapkv": {**METHODS["snapkv"], "params": {"pool_kernel": 7}}}
    engine = EchoEngine(tiny_tokenizer)
    run_inference(engine, data, cells_from_config(changed), model="tiny",
                  cache=job_cache(tmp_path, data, tiny_model_dir))
    assert {(m, cr) for m, cr, _ in engine.calls} == {("snapkv", 2.0), ("snapkv", 4.0)}
    assert engine.prompts_run() == 2 * len(data)


@pytest.mark.parametrize(
    ("argv", "dry"),
    [(["-n"], True), (["-np", "all"], True), (["--dry-run"], True), (["--dryrun"], True),
     (["--cores", "2"], False), (["--notemp"], False), (["-c2"], False), ([], False)],
)
def test_dry_runs_are_recognised(argv, dry):
    from sparse_frontier.preflight import is_dry_run

    assert is_dry_run(["snakemake", *argv]) is dry
