"""Where the kernel tests run: natively on a CUDA GPU, or on the CPU under Triton's interpreter
(TRITON_INTERPRET=1, small float16 cases: the interpreter mishandles bf16)."""

from __future__ import annotations

import os

import pytest
import torch

ON_GPU = torch.cuda.is_available()
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
needs_kernel = pytest.mark.skipif(
    not (ON_GPU or INTERPRET), reason="needs a CUDA GPU (or TRITON_INTERPRET=1 for the small CPU cases)"
)
DEVICE = "cuda" if ON_GPU else "cpu"
DTYPE = torch.bfloat16 if ON_GPU else torch.float16


def _ptxas_available() -> bool:
    try:
        import triton.backends.nvidia as nvidia
    except ImportError:
        return False
    from pathlib import Path

    tools = Path(nvidia.__file__).parent / "bin"
    return any((tools / name).exists() for name in ("ptxas-blackwell", "ptxas"))


#: Offline compilation for sm_90: the interpreter replaces the jit functions it compiles, and it
#: needs Triton's bundled CUDA toolchain.
compiles_offline = [
    pytest.mark.skipif(INTERPRET, reason="the interpreter replaces the jit functions this compiles"),
    pytest.mark.skipif(not _ptxas_available(), reason="needs Triton's bundled CUDA toolchain (ptxas)"),
]
