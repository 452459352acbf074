"""The README as a user meets it: a bare default run ends with its summary, then every command of
the README's Daily use block runs as written in a copy of that finished run."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHECKOUT = ["Snakefile", "config", "envs", "profiles", "src", "workflow"]


def daily_use_commands() -> list[str]:
    """The commands of the README's Daily use block, comments dropped."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Daily use", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def run(command: str, cwd: Path) -> str:
    """``command`` as a user types it: snakemake and python are this interpreter's."""
    argv = shlex.split(command)
    program = {"snakemake": [sys.executable, "-m", "snakemake"], "python": [sys.executable]}[argv[0]]
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    done = subprocess.run(
        [*program, *argv[1:]], cwd=cwd, capture_output=True, text=True, timeout=900, env=env
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"`{command}` failed:\n{output[-4000:]}"
    return output


@pytest.fixture(scope="module")
def finished_default_run(tmp_path_factory):
    """A fresh copy of the checkout after a bare `snakemake` (the profile supplies the cores), its
    default config being the tiny study."""
    copy = tmp_path_factory.mktemp("checkout")
    for name in CHECKOUT:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, copy / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, copy / name)
    # The tiny study stands in for the default one: the commands are the same, and the test needs
    # neither the trained model's download nor its ten minutes.
    shutil.copy2(ROOT / "config/tiny.yaml", copy / "config/config.yaml")
    output = run("snakemake", copy)
    return copy, output


@pytest.mark.slow
def test_a_finished_run_prints_its_summary_and_the_report_shows_tables_and_predictions(finished_default_run):
    copy, output = finished_default_run
    summary = (copy / "results/summary.md").read_text()
    config = yaml.safe_load((copy / "config/config.yaml").read_text())
    for model in config["models"]:
        for length in config["lengths"]:
            assert f"## {model}, {length} tokens" in summary
    assert "| prefill | block_sparse |" in summary
    tail = output[output.index("# Results") :]
    assert "| decode | snapkv |" in tail and "max lossless CR" in tail  # printed after the jobs
    run("snakemake --report report.html", copy)
    report = (copy / "report.html").read_text(errors="ignore")
    assert "tables.html" in report and "predictions.html" in report
    predictions = (copy / "results/report/predictions.html").read_text()
    assert "ruler_niah | snapkv CR 5" in predictions and "<th>extracted</th>" in predictions


@pytest.mark.slow
def test_every_daily_use_command_of_the_readme_runs_as_written(finished_default_run):
    copy, _ = finished_default_run
    commands = daily_use_commands()
    assert len(commands) >= 5
    outputs = {command: run(command, copy) for command in commands}
    assert "Nothing to be done" in outputs["snakemake -n"]
    assert "Nothing to be done" in outputs["snakemake -n --rerun-triggers params"]
    assert re.search(r"rule max_compression:", outputs["snakemake --forcerun max_compression"])
    assert "inference" in outputs["snakemake --configfile config/paper.yaml -n"].split("Job stats:")[1]
    shown = next(out for command, out in outputs.items() if "sparse_frontier.show predictions" in command)
    assert "snapkv CR 5" in shown and "extracted:" in shown
