"""The inference cache through the workflow: a job killed with SIGKILL resumes from its last
finished batch, a grown study computes only its new cells, a truncated table is rebuilt from the cache."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml
from test_workflow import ROOT, SMALL, snakemake

# Two samples, one per batch: 3 cells x 2 samples = 6 batches, each stored as it finishes.
STUDY = {**SMALL, "samples": 2, "inference": {"batch_size": 1}}
N_BATCHES = 6
PREDICTIONS = "results/predictions/tiny-qwen2/2048/shard0.parquet"
SCORES = "results/scores/tiny-qwen2/2048.parquet"
TIMING = ["prefill_ms", "decode_ms"]


def _write_config(folder: Path, study: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    configfile = folder / "study.yaml"
    configfile.write_text(yaml.safe_dump(study))
    return configfile


def _cached_batches(workdir: Path) -> list[Path]:
    return [p for p in (workdir / "results/cache/inference").rglob("*.parquet") if not p.name.startswith(".")]


def _computed(workdir: Path) -> tuple[int, int]:
    """(prompts taken from the cache, prompts computed) of the last inference job, from its log."""
    log = (workdir / "results/logs/inference/tiny-qwen2/2048/shard0.log").read_text()
    found = re.findall(r"(\d+) of (\d+) prompts x cells are in the cache; computing (\d+)", log)
    cached, _, computed = found[-1]
    return int(cached), int(computed)


def _inference_script(snakemake_pid: int) -> psutil.Process:
    """The process of the inference job's script, among Snakemake's descendants."""
    for child in psutil.Process(snakemake_pid).children(recursive=True):
        try:
            if any("inference.py" in part for part in child.cmdline()):
                return child
        except psutil.NoSuchProcess:  # a short-lived helper that ended meanwhile
            continue
    raise AssertionError("the inference job's script is not running")


def _without_timing(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path).drop(columns=TIMING)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of the small study up to its scores."""
    workdir = tmp_path_factory.mktemp("reference")
    configfile = _write_config(workdir, STUDY)
    snakemake(workdir, configfile, SCORES)
    assert _computed(workdir) == (0, N_BATCHES)
    return workdir, configfile


@pytest.mark.slow
def test_a_killed_inference_job_resumes_from_its_last_finished_batch(reference, tmp_path):
    configfile = _write_config(tmp_path, STUDY)
    command = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path),
               "--configfile", str(configfile), "--cores", "2", PREDICTIONS]
    with open(tmp_path / "first.log", "w") as log:
        run = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        while len(_cached_batches(tmp_path)) < 2:  # poll the cache: kill after some batches finished
            assert run.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no batch was cached in 10 minutes"
            time.sleep(0.1)
        _inference_script(run.pid).send_signal(signal.SIGKILL)
        assert run.wait(timeout=120) != 0
    finally:
        if run.poll() is None:
            run.kill()
    finished = len(_cached_batches(tmp_path))
    assert 2 <= finished < N_BATCHES, f"{finished} batches were cached when the job was killed"
    assert not (tmp_path / PREDICTIONS).exists()

    snakemake(tmp_path, configfile, PREDICTIONS)
    assert _computed(tmp_path) == (finished, N_BATCHES - finished)  # only the unfinished batches
    reference_dir, _ = reference
    pd.testing.assert_frame_equal(_without_timing(tmp_path / PREDICTIONS),
                                  _without_timing(reference_dir / PREDICTIONS))


@pytest.mark.slow
def test_one_more_ratio_computes_only_its_cells_and_a_truncated_table_is_rebuilt(reference):
    workdir, _ = reference
    grown = {**STUDY, "methods": {**STUDY["methods"], "snapkv": {"compression_ratios": [4, 10]}}}
    grown["inference"] = {"batch_size": 2}  # outside the key: nothing is recomputed for it
    configfile = _write_config(workdir / "grown", grown)
    plan = snakemake(workdir, configfile, "-n", SCORES)
    line = "inference tiny-qwen2/2048/shard0: computes 1 of 4 cells (2 of 8 prompts), 3 cells from the cache"
    assert line in plan
    snakemake(workdir, configfile, SCORES)
    assert _computed(workdir) == (6, 2)
    predictions = pd.read_parquet(workdir / PREDICTIONS)
    assert predictions.groupby(["method", "compression_ratio"]).size().to_dict() == {
        ("block_sparse", 4.0): 2, ("dense", 1.0): 2, ("snapkv", 4.0): 2, ("snapkv", 10.0): 2
    }

    table = workdir / PREDICTIONS
    table.write_bytes(table.read_bytes()[: table.stat().st_size // 2])
    scored = (workdir / SCORES).stat().st_mtime
    # (A plain `snakemake` names every predictions file; here, the two files this test needs.)
    rerun = snakemake(workdir, configfile, PREDICTIONS, SCORES)
    assert f"{PREDICTIONS} is not a readable Parquet file" in rerun
    assert "Traceback" not in rerun
    assert _computed(workdir) == (8, 0)  # rebuilt from the cache alone
    log = (workdir / "results/logs/inference/tiny-qwen2/2048/shard0.log").read_text()
    assert "no model is loaded" in log.split("prompts x cells are in the cache")[-1]
    pd.testing.assert_frame_equal(pd.read_parquet(table), predictions)
    assert len(pd.read_parquet(workdir / SCORES)) == 8 and (workdir / SCORES).stat().st_mtime > scored

    # Settings outside the key are no parameters of the inference rule either: nothing reruns.
    other_batches = _write_config(workdir / "batches", {**grown, "inference": {"batch_size": 4}})
    assert "Nothing to be done" in snakemake(workdir, other_batches, "-n", PREDICTIONS, SCORES)
