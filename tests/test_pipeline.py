"""The pipeline library: cells, the score table's keys, atomic writes."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest

from sparse_frontier.engines.base import Generation
from sparse_frontier.io import write_parquet
from sparse_frontier.pipeline import (
    CELL_KEYS,
    Cell,
    build_task_data,
    cells_from_config,
    check_cells,
    collect_scores,
    engine_settings,
    run_inference,
    score_predictions,
    shard_of,
    study_task_params,
    task_data_dir,
    work_items,
)


def test_cells_run_dense_once_and_skip_ratio_one():
    cells = cells_from_config(
        {"block_sparse": {"compression_ratios": [1, 2, 5]}, "quest": {"compression_ratios": [1.5]}}
    )
    assert [(c.method, c.compression_ratio) for c in cells] == [
        ("dense", 1.0), ("block_sparse", 2.0), ("block_sparse", 5.0), ("quest", 1.5)
    ]


def test_per_task_parameters_override_defaults():
    (cell,) = cells_from_config(
        {"snapkv": {"compression_ratios": [4], "params": {"approx_window": 256},
                    "params_by_task": {"ruler_niah": {"approx_window": 512}}}}
    )[1:]
    assert cell.build("ruler_niah").approx_window == 512
    assert cell.build("ruler_vt").approx_window == 256


def test_counting_and_page_options_reach_the_methods_and_bad_values_stop_the_run():
    cells = cells_from_config({
        "vertical_slash": {"compression_ratios": [4], "params": {"density": "exact"}},
        "quest": {"compression_ratios": [4], "params": {"share_pages": False}},
    })
    assert cells[1].build("ruler_niah").density == "exact"
    assert cells[2].build("ruler_niah").share_pages is False
    assert get_default("flexprefill", "density") == "kernel" and get_default("quest", "share_pages") is True
    bad = cells_from_config({"flexprefill": {"compression_ratios": [4], "params": {"density": "tiles"}}})
    with pytest.raises(ValueError, match="density must be one of exact, kernel"):
        check_cells(bad, ["ruler_niah"])


def get_default(method: str, option: str):
    return getattr(cells_from_config({method: {"compression_ratios": [2]}})[1].build("ruler_niah"), option)


def test_task_data_lengths_and_keys(tiny_tokenizer):
    data = build_task_data("ruler_niah", tiny_tokenizer, 2048, 3, seed=0)
    assert list(data.sample_id) == [0, 1, 2]
    assert data.n_tokens.between(0.95 * 2048, 2048).all()
    measured = [len(tiny_tokenizer(p, add_special_tokens=False).input_ids) for p in data.prompt]
    assert measured == list(data.n_tokens)


def test_task_params_passed_on_change_the_data(tiny_tokenizer):
    four_hops = build_task_data("ruler_vt", tiny_tokenizer, 2048, 2, seed=0, chains=1)
    two_hops = build_task_data("ruler_vt", tiny_tokenizer, 2048, 2, seed=0, chains=1, hops=2)
    assert set(four_hops.task_params) == {'{"chains": 1}'}
    assert [len(gold) for gold in four_hops.gold] == [5, 5]
    assert [len(gold) for gold in two_hops.gold] == [3, 3]


def test_study_task_params_keep_only_non_default_values():
    config = {"ruler_vt": {"chains": 8, "hops": 2, "shuffle": True}, "ruler_cwe": {"common_freq": 30}}
    assert study_task_params(config, ["ruler_vt", "ruler_cwe", "ruler_niah"]) == {
        "ruler_vt": {"hops": 2}, "ruler_cwe": {}, "ruler_niah": {}
    }
    assert study_task_params({}, ["ruler_vt"]) == {"ruler_vt": {}}


@pytest.mark.parametrize(
    ("config", "sentence"),
    [
        ({"ruler_vt": {"chain": 2}},
         "task_params.ruler_vt: unknown parameter ['chain']; "
         "it accepts chains, hops, shuffle, answer_format."),
        ({"ruler_niah": {"keys": 2}},
         "task_params.ruler_niah: unknown parameter ['keys']; it accepts answer_format."),
        ({"ruler_cwe": {"common_freq": 4}},
         "task_params.ruler_cwe: ruler_cwe is not in `tasks`; add it there or remove its parameters."),
        ({"ruler_vt": {"chains": 0}}, "ruler_vt needs 1 <= chains"),
    ],
)
def test_study_task_params_refuse_mistakes_in_one_sentence(config, sentence):
    with pytest.raises(ValueError) as err:
        study_task_params(config, ["ruler_vt", "ruler_niah"])
    assert str(err.value).startswith(sentence)


def test_task_data_dir_hashes_non_default_params_only():
    assert task_data_dir("ruler_vt", {}) == "ruler_vt"
    one = task_data_dir("ruler_vt", {"chains": 1, "shuffle": False})
    assert one.startswith("ruler_vt-") and one == task_data_dir("ruler_vt", {"shuffle": False, "chains": 1})
    settings = ({"chains": 2, "shuffle": False}, {"chains": 1}, {"shuffle": False})
    others = {task_data_dir("ruler_vt", params) for params in settings}
    assert one not in others and len(others) == 3
    assert task_data_dir("ruler_cwe", {"common_freq": 4}) != task_data_dir("ruler_vt", {"common_freq": 4})


class _CountingEngine:
    """Generations with set densities: Vertical-Slash reports two countings, the rest one."""

    name = "fake"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def generate(self, prompts, method, max_new_tokens, stop=()):
        densities = {"exact": 0.04, "kernel": 0.05} if method.name == "vertical_slash" else {}
        density = densities.get("kernel", 0.2)
        return [Generation([5], "x", density, len(p), 1.0, 0.0, densities) for p in prompts]


def test_prediction_rows_record_both_densities(tiny_tokenizer):
    data = build_task_data("ruler_niah", tiny_tokenizer, 2048, 2, seed=0)
    cells = [Cell("vertical_slash", 20.0), Cell("quest", 5.0)]
    rows = run_inference(_CountingEngine(tiny_tokenizer), data, cells, model="m").set_index("method")
    assert rows.loc["vertical_slash", "density_exact"].tolist() == [0.04, 0.04]
    assert rows.loc["vertical_slash", "density_kernel"].tolist() == [0.05, 0.05]
    assert rows.loc["vertical_slash", "density"].tolist() == [0.05, 0.05]  # the calibrated one
    quest = rows.loc["quest"]
    assert (quest.density_exact == 0.2).all() and (quest.density_kernel == 0.2).all()


def _scores(**overrides) -> pd.DataFrame:
    row = dict(model="m", method="dense", phase="dense", compression_ratio=1.0, task="ruler_niah",
               length=1024, sample_id=0, seed=0, score=1.0)
    row.update(overrides)
    return pd.DataFrame([row])


def test_collect_scores_keeps_keys_first_and_rejects_overlaps():
    table = collect_scores([_scores(sample_id=1), _scores(sample_id=0)])
    assert list(table.columns[: len(CELL_KEYS)]) == CELL_KEYS
    assert list(table.sample_id) == [0, 1]
    with pytest.raises(ValueError, match="Duplicate score rows"):
        collect_scores([_scores(), _scores(score=0.0)])


def test_atomic_write_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "out.parquet"
    with pytest.raises(pa.ArrowException):
        write_parquet(pd.DataFrame({"a": [object()]}), target)  # pyarrow cannot write it
    assert list(tmp_path.iterdir()) == []
    write_parquet(pd.DataFrame({"a": [1]}), target)
    assert pd.read_parquet(target).a.tolist() == [1]


def test_engine_settings_follow_the_job():
    assert engine_settings("hf", dtype="float32", length=2048, tasks=["ruler_niah"], gpus=0) == {
        "dtype": "float32"
    }
    vllm = engine_settings("vllm", dtype="bfloat16", length=16384, tasks=["ruler_niah"], gpus=4)
    assert vllm["tensor_parallel_size"] == 4
    assert vllm["max_model_len"] > 16384
    with pytest.raises(ValueError, match="engine 'hf' runs on one device"):
        engine_settings("hf", dtype="float32", length=2048, tasks=["ruler_niah"], gpus=2)


def test_engine_settings_scale_rope_only_beyond_the_model_positions(tiny_model_dir):
    # The tiny model takes 32768 positions; YaRN over 16384 of them applies from 16K + answer on.
    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16384}
    for kind in ("hf", "vllm"):
        job = dict(dtype="float32", tasks=["ruler_niah"], gpus=1, model_path=str(tiny_model_dir))
        assert "hf_overrides" not in engine_settings(kind, length=8192, rope_scaling=yarn, **job)
        assert "hf_overrides" not in engine_settings(kind, length=32768, rope_scaling=None, **job)
        over = engine_settings(kind, length=32768, rope_scaling=yarn, **job)["hf_overrides"]
        assert over["rope_parameters"]["rope_type"] == "yarn"
        assert over["rope_parameters"]["rope_theta"] == 10000.0  # the tiny model's own base
        assert over["max_position_embeddings"] == 65536


def test_shards_partition_the_work_contiguously():
    data = pd.DataFrame({"task": ["a"] * 5 + ["b"] * 3, "prompt": ["p"] * 8})
    cells = cells_from_config({"block_sparse": {"compression_ratios": [2, 4]}})
    items = work_items(data, cells, batch_size=2)
    # cell-major: every batch of the first cell before the next cell's
    assert [item.cell.compression_ratio for item in items] == [1.0] * 5 + [2.0] * 5 + [4.0] * 5
    assert [item.rows for item in items[:5]] == [(0, 1), (2, 3), (4,), (5, 6), (7,)]
    for n_shards in (1, 2, 4, 15, 16):
        shards = [shard_of(items, i, n_shards) for i in range(n_shards)]
        assert [item for shard in shards for item in shard] == items
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
    with pytest.raises(ValueError, match="Shard 3 does not exist; there are 3"):
        shard_of(items, 3, 3)


def test_predictions_are_scored_in_the_answer_format_they_were_prompted_with():
    gold = ["ABCDE", "FGHIJ"]
    predictions = pd.DataFrame(
        {"task": ["ruler_vt"] * 2, "output": ["<answer>ABCDE FGHIJ</answer>\nDone.", "Answer: ABCDE, FGHIJ"],
         "gold": [gold, gold]}
    )
    # the authors read the tagged names, or every word of an untagged response
    assert list(score_predictions(predictions).score) == [1.0, 0.25]
    structured = score_predictions(predictions, {"ruler_vt": {"answer_format": "structured"}})
    assert list(structured.score) == [0.0, 1.0]
    assert set(structured.task_category) == {"high_dispersion"}


def test_inference_progress_goes_live_to_the_terminal_not_the_log(tiny_tokenizer, tmp_path, monkeypatch):
    import io
    import logging
    import sys

    from sparse_frontier import pipeline
    from sparse_frontier.engines.base import Generation
    from sparse_frontier.io import log_to_file

    class EchoEngine:
        name = "echo"
        tokenizer = tiny_tokenizer

        def generate(self, prompts, method, max_new_tokens, stop=()):
            return [Generation([1], "Answer: x", 1.0, len(p), 1.0, 1.0) for p in prompts]

    screen = io.StringIO()
    monkeypatch.setattr(pipeline, "terminal", lambda: screen)
    log = tmp_path / "inference.log"
    saved = sys.stderr
    try:
        log_to_file(log)
        data = build_task_data("ruler_niah", tiny_tokenizer, 2048, 3, 0)
        rows = run_inference(
            EchoEngine(), data, cells_from_config({"snapkv": {"compression_ratios": [2]}}), model="m"
        )
    finally:
        sys.stderr = saved
        logging.basicConfig(force=True)
    assert len(rows) == 6
    shown = screen.getvalue()
    assert "inference m 2048 shard 1/1" in shown and "6/6" in shown
    assert "ETA" in shown and "prompts/s" in shown
    assert "6/6" not in log.read_text() and "6 prompts in" in log.read_text()
