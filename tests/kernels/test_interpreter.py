"""Runs the Triton kernel tests on the CPU through Triton's interpreter, in a subprocess
(TRITON_INTERPRET must be set before triton is imported). Skipped where a GPU runs them natively."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .kernel_env import INTERPRET, ON_GPU

HERE = Path(__file__).parent


@pytest.mark.skipif(ON_GPU or INTERPRET, reason="the kernel tests run natively here")
@pytest.mark.parametrize(
    "selection",
    [
        ["test_triton_kernels.py"],
        ["test_block_select.py", "-k", "kernel"],
        ["test_vertical_slash_index.py", "-k", "triton"],
        ["test_vertical_slash_scores.py", "-k", "triton"],
        ["test_vertical_slash_cells.py"],
        ["test_quest_select.py"],
    ],
    ids=[
        "attention_kernels",
        "block_select",
        "vertical_slash_index",
        "vertical_slash_scores",
        "cells",
        "quest_select",
    ],
)
def test_kernel_tests_under_interpreter(selection):
    target, *options = selection
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(HERE / target), *options],
        env=dict(os.environ, TRITON_INTERPRET="1"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and " failed" not in result.stdout
