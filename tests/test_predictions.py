"""Reading predictions: each next to its prompt's tail, gold answer and extracted answer."""

from __future__ import annotations

import pandas as pd
import pytest

from sparse_frontier.io import write_parquet
from sparse_frontier.pipeline import build_task_data
from sparse_frontier.predictions import sample_per_task
from sparse_frontier.show import main


@pytest.fixture
def finished_run(tiny_tokenizer, tmp_path):
    """results/ of a run: task data, and predictions of dense and snapkv CR 5 (one right, one wrong)."""
    data = build_task_data("ruler_niah", tiny_tokenizer, 2048, 2, 0)
    write_parquet(data, tmp_path / "results/data/tiny-bpe/ruler_niah/2048.parquet")
    rows = []
    for method, ratio in (("dense", 1.0), ("snapkv", 5.0)):
        for sample in data.itertuples():
            right = sample.sample_id == 0
            # The authors' NIAH format (the default): numbered lines inside <answer> tags.
            pairs = [g.split("=", 1) for g in sample.gold] if right else [("no-such-key", "0")]
            lines = "\n".join(f"{i}. The answer for {k} is {v}." for i, (k, v) in enumerate(pairs, 1))
            output = f"<explanation>The keys are listed.</explanation>\n<answer>\n{lines}\n</answer>"
            rows.append(
                {
                    "model": "tiny",
                    "method": method,
                    "phase": "decode" if ratio > 1 else "dense",
                    "compression_ratio": ratio,
                    "task": "ruler_niah",
                    "length": 2048,
                    "sample_id": sample.sample_id,
                    "seed": 0,
                    "output": output,
                    "gold": list(sample.gold),
                }
            )
    path = tmp_path / "results/predictions/tiny/2048/shard0.parquet"
    write_parquet(pd.DataFrame(rows), path)
    return path, data


def test_wrong_predictions_of_one_cell_are_shown_with_prompt_tail_gold_and_extracted_answer(
    finished_run, capsys
):
    path, data = finished_run
    main(
        [
            "predictions",
            str(path),
            "--task",
            "ruler_niah",
            "--method",
            "snapkv",
            "--ratio",
            "5",
            "--wrong",
            "--tail",
            "120",
        ]
    )
    shown = capsys.readouterr().out
    assert shown.count("=== ruler_niah | snapkv CR 5 | tiny | 2048 tokens") == 1
    assert "sample 1 | score 0.00" in shown and "sample 0" not in shown
    wrong = data[data.sample_id == 1].iloc[0]
    assert wrong.prompt[-120:] in shown and wrong.prompt[-400:-120] not in shown
    assert str(list(wrong.gold)) in shown
    assert "no-such-key" in shown.split("extracted:")[1]


def test_a_score_file_and_a_folder_read_the_same(finished_run, capsys):
    path, _ = finished_run
    main(["predictions", str(path.parent.parent.parent), "--method", "dense"])
    shown = capsys.readouterr().out
    assert "2 prediction(s) shown." in shown and "score 1.00" in shown


def test_a_method_that_did_not_run_is_named(finished_run):
    path, _ = finished_run
    with pytest.raises(SystemExit, match="no predictions of method `quest`; these have dense, snapkv"):
        main(["predictions", str(path), "--method", "quest"])


def test_the_report_sample_shows_each_cell_on_the_same_prompts():
    rows = pd.DataFrame(
        [
            {"task": t, "length": 1024, "sample_id": i, "method": m, "compression_ratio": r}
            for t in ("a", "b")
            for i in range(5)
            for m, r in (("dense", 1.0), ("snapkv", 2.0))
        ]
    )
    sample = sample_per_task(rows, n=2)
    for _, group in sample.groupby("task"):
        ids = group.groupby("method")["sample_id"].apply(frozenset)
        assert len(set(ids)) == 1 and len(ids.iloc[0]) == 2
