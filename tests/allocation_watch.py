"""Watch every tensor an operation produces: the largest one says whether anything is O(T * S)."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LargestTensor(TorchDispatchMode):
    """Within the block, ``numel`` and ``op`` of the largest tensor any aten op produced.

    Sees what fused kernels and Triton wrappers allocate too (their outputs come from aten ops);
    peak-memory bounds miss a quadratic tensor that is small enough, this does not.
    """

    def __init__(self):
        super().__init__()
        self.numel, self.op = 0, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for x in tree_flatten(out)[0]:
            if isinstance(x, torch.Tensor) and x.numel() > self.numel:
                self.numel, self.op = x.numel(), str(func)
        return out
