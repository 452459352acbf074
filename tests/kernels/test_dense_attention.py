"""Dense attention's fused CUDA path against its float32 reference on fresh random inputs.

Covers every case the fused path routes differently: a whole prompt (T == S), one query (T == 1)
with and without hidden cache slots, a chunk (1 < T < S), GQA ratios, ragged lengths, bf16 and
float32, and keys read through a strided view (the hf engine's preallocated cache). The GPU cases skip
without a GPU; the CPU path (torch's SDPA) is checked the same way.
"""

from __future__ import annotations

import pytest
import torch

from sparse_frontier.kernels.dense.reference import (
    dense_attention_reference,
    sliding_window_attention_reference,
)
from sparse_frontier.kernels.ops import dense_attention, sliding_window_attention

on_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def qkv(hq, hkv, t, s, d, dtype, seed, device="cuda", strided=False):
    g = torch.Generator(device="cpu").manual_seed(seed)
    q = torch.randn(hq, t, d, generator=g)
    k, v = (torch.randn(hkv, s + (37 if strided else 0), d, generator=g) for _ in range(2))
    q, k, v = (x.to(device, dtype) for x in (q, k, v))
    if strided:  # a view of the first S slots of a longer buffer, as the engine's cache hands them out
        k, v = k[:, :s], v[:, :s]
    return q, k, v


def rel_error(out, ref):
    return float((out.float() - ref.float()).norm() / ref.float().norm())


@on_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype, tol", [(torch.bfloat16, 1e-2), (torch.float32, 1e-3)])
@pytest.mark.parametrize(
    "hq, hkv, t, s",
    [(28, 4, 1000, 1000), (8, 8, 4099, 4099), (8, 2, 1, 5003), (28, 4, 1, 300), (8, 2, 77, 2051)],
)
@pytest.mark.parametrize("strided", [False, True])
def test_fused_dense_matches_reference(dtype, tol, hq, hkv, t, s, strided):
    q, k, v = qkv(hq, hkv, t, s, 128, dtype, seed=hq + t + s, strided=strided)
    out = dense_attention(q, k, v)
    ref = dense_attention_reference(q.cpu().float(), k.cpu().float(), v.cpu().float())
    assert out.dtype == dtype and out.shape == q.shape
    assert torch.isfinite(out).all()
    assert rel_error(out.cpu(), ref) < tol


@on_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("hq, hkv, s", [(28, 4, 4111), (8, 2, 640)])
def test_fused_decode_with_hidden_slots(hq, hkv, s):
    q, k, v = qkv(hq, hkv, 1, s, 128, torch.bfloat16, seed=s, strided=True)
    key_mask = torch.rand(hkv, s, generator=torch.Generator().manual_seed(1)) < 0.3
    key_mask[0] = False  # a head that sees nothing gets zeros, as in the reference
    key_mask = key_mask.cuda()
    out = dense_attention(q, k, v, key_mask)
    ref = dense_attention_reference(q.cpu().float(), k.cpu().float(), v.cpu().float(), key_mask.cpu())
    assert torch.isfinite(out).all()
    assert rel_error(out.cpu(), ref) < 1e-2
    assert out[: hq // hkv].abs().max() == 0


@on_gpu
@pytest.mark.gpu
def test_key_mask_with_many_queries_is_refused_on_cuda():
    q, k, v = qkv(4, 2, 8, 64, 64, torch.bfloat16, seed=0)
    with pytest.raises(ValueError, match="one query"):
        dense_attention(q, k, v, torch.ones(2, 64, dtype=torch.bool, device="cuda"))


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize(
    "hq, hkv, t, s", [(9, 3, 257, 257), (4, 4, 1, 301), (8, 2, 1, 77), (6, 2, 33, 130), (9, 3, 100, 100)]
)
@pytest.mark.parametrize("strided", [False, True])
def test_cpu_sdpa_matches_reference(dtype, tol, hq, hkv, t, s, strided):
    q, k, v = qkv(hq, hkv, t, s, 64, dtype, seed=hq + t + s, device="cpu", strided=strided)
    out = dense_attention(q, k, v)
    ref = dense_attention_reference(q.float(), k.float(), v.float())
    assert out.dtype == dtype and out.shape == q.shape
    assert rel_error(out, ref) < tol


@pytest.mark.parametrize("t, s", [(1, 211), (5, 64)])
def test_cpu_sdpa_with_hidden_slots(t, s):
    q, k, v = qkv(8, 2, t, s, 32, torch.float32, seed=s, device="cpu", strided=True)
    key_mask = torch.rand(2, s, generator=torch.Generator().manual_seed(2)) < 0.5
    key_mask[0] = False  # a head that sees nothing gets zeros, as in the reference
    out = dense_attention(q, k, v, key_mask)
    ref = dense_attention_reference(q, k, v, key_mask)
    assert torch.isfinite(out).all()
    assert rel_error(out, ref) < 1e-5
    assert out[:4].abs().max() == 0


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize(
    "hq, hkv, t, s, window", [(8, 2, 300, 300, 64), (4, 4, 1, 90, 32), (6, 2, 50, 170, 17)]
)
def test_sliding_window_matches_reference(dtype, tol, hq, hkv, t, s, window):
    q, k, v = qkv(hq, hkv, t, s, 32, dtype, seed=t + window, device="cpu", strided=True)
    out = sliding_window_attention(q, k, v, window)
    ref = sliding_window_attention_reference(q.float(), k.float(), v.float(), window)
    assert out.dtype == dtype and rel_error(out, ref) < tol
    # The window really hides the old keys: with the window as long as the sequence, attention is dense.
    assert rel_error(sliding_window_attention(q, k, v, s), dense_attention_reference(q, k, v)) < tol
    if t > window:
        assert rel_error(out, dense_attention_reference(q.float(), k.float(), v.float())) > 10 * tol


@on_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_sliding_window_on_cuda_matches_reference(dtype):
    q, k, v = qkv(8, 2, 3000, 3000, 128, dtype, seed=5, strided=True)
    out = sliding_window_attention(q, k, v, 512)
    ref = sliding_window_attention_reference(q.cpu().float(), k.cpu().float(), v.cpu().float(), 512)
    assert torch.isfinite(out).all() and rel_error(out.cpu(), ref) < 1e-2


@on_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("t", [16384, 1])
def test_gemma3_270m_shapes_at_16k_on_cuda(t):
    """Gemma 3 270M's attention (4 query heads on 1 kv head, head dim 256) over 16K keys, bf16: its
    global layers through the fused path (cuDNN or FlashAttention at head dim 256), its local layers
    through the sliding window. References in float32 on the GPU (4 GB of scores at 16K)."""
    s = 16384
    q, k, v = qkv(4, 1, t, s, 256, torch.bfloat16, seed=t, strided=True)
    ref = dense_attention_reference(q.float(), k.float(), v.float())
    assert rel_error(dense_attention(q, k, v), ref) < 1e-2
    window = sliding_window_attention_reference(q.float(), k.float(), v.float(), 512)
    assert rel_error(sliding_window_attention(q, k, v, 512), window) < 1e-2


def test_sliding_window_names_a_bad_window():
    q, k, v = qkv(2, 1, 4, 4, 8, torch.float32, seed=0, device="cpu")
    with pytest.raises(ValueError, match="window must be a positive integer"):
        sliding_window_attention(q, k, v, 0)
