"""Input checks shared by the public ops: one clear sentence per mistake."""

from __future__ import annotations

import torch


def check_qkv(op: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """q [Hq, T, D], k and v [Hkv, S, D], Hq a multiple of Hkv, T <= S, one device and dtype."""
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise ValueError(
            f"{op}: q, k, v must be 3-D [heads, tokens, head_dim]; got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)} (drop the batch dimension, one sequence per call)."
        )
    hq, t, d = q.shape
    hkv, s, dk = k.shape
    if v.shape != k.shape:
        raise ValueError(f"{op}: v must have k's shape {tuple(k.shape)}, got {tuple(v.shape)}.")
    if dk != d:
        raise ValueError(f"{op}: q head_dim {d} differs from k head_dim {dk}; they must match.")
    if hkv == 0 or hq % hkv:
        raise ValueError(f"{op}: query heads ({hq}) must be a multiple of key/value heads ({hkv}) for GQA.")
    if t > s:
        raise ValueError(f"{op}: more queries ({t}) than keys ({s}); queries must be the last T of S keys.")
    if not (q.device == k.device == v.device):
        raise ValueError(f"{op}: q, k, v are on different devices ({q.device}, {k.device}, {v.device}).")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"{op}: q, k, v have different dtypes ({q.dtype}, {k.dtype}, {v.dtype}); cast them.")


def check_mask(op: str, name: str, mask: torch.Tensor, shape: tuple[int, ...], device: torch.device) -> None:
    """A boolean mask of an exact shape on the attention tensors' device."""
    if mask.dtype != torch.bool:
        raise ValueError(f"{op}: {name} must be a bool tensor, got {mask.dtype}.")
    if tuple(mask.shape) != shape:
        raise ValueError(f"{op}: {name} must have shape {shape}, got {tuple(mask.shape)}.")
    if mask.device != device:
        raise ValueError(f"{op}: {name} is on {mask.device} but q is on {device}; move it.")


def check_index(op: str, name: str, idx: torch.Tensor, hq: int, upper: int, device: torch.device) -> None:
    """[Hq, N] int64 index whose entries are < upper (negative entries are padding)."""
    if idx.dtype != torch.int64 or idx.dim() != 2 or idx.shape[0] != hq:
        raise ValueError(
            f"{op}: {name} must be an int64 tensor of shape [{hq}, N], got {idx.dtype} {tuple(idx.shape)}."
        )
    if idx.device != device:
        raise ValueError(f"{op}: {name} is on {idx.device} but q is on {device}; move it.")
    if idx.numel() and int(idx.max()) >= upper:
        raise ValueError(
            f"{op}: {name} holds {int(idx.max())}, beyond the valid range [0, {upper}); "
            "use negative values only as padding."
        )


def check_triton_head_dim(op: str, d: int) -> None:
    """The Triton kernels tile the head dim with tl.arange, which needs a power of two >= 16."""
    if d < 16 or d & (d - 1):
        raise ValueError(
            f"{op}: the Triton kernel needs head_dim a power of two >= 16, got {d}; zero-pad q, k, v to the "
            "next power of two D' and multiply q by sqrt(D'/D), or run on CPU tensors (PyTorch reference)."
        )
