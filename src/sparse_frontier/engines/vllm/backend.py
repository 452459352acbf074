"""A wrapper around a vLLM attention backend that routes rows to the sparse methods.

``make_sparse_backend(Base)`` subclasses a platform backend (CPU_ATTN, FLASH_ATTN), its
metadata builder and its implementation, and changes three things:

* ``Builder.build`` attaches a ``BatchPlan`` to the metadata, once per step: which rows
  belong to which request (by vLLM request id), which requests are prefilling, and which
  of them the configured method handles.
* ``Impl.forward`` sends every request the method does not touch to the wrapped kernel
  (one call per contiguous run of such requests, with metadata rebuilt for that run by
  the wrapped builder), and the others to the method:

  - prefill rows, for prefill methods (Vertical-Slash, FlexPrefill, Block-Sparse):
    ``method.prefill`` on the prompt's own q/k/v, never a dense pass first.
  - prefill rows of eviction methods (SnapKV, Ada-SnapKV), whose prefill is dense by
    definition: the wrapped kernel computes the attention, then the method's ``keep_mask``
    selects the tokens and this layer's cache is compacted: kept tokens are written, in
    prompt order, to the request's first slots.
  - decode rows, for decode methods (Quest) and compacted requests: keys and values are
    read back from the paged cache (``cache_io``) and ``method.decode`` runs on them;
    a compacted request reads only ``kept + generated`` slots.
* Sliding-window layers (Gemma 3's local layers) always go to the wrapped kernel, which keeps
  their window: the methods act on the global layers only, as in HfEngine.
* ``Impl.do_kv_cache_update`` redirects a compacted request's new token to the slot after
  its compacted tokens, so the cache stays dense from slot 0.

This is logical compression: the scheduler still holds the request's blocks for its full
length; freeing them would need a custom scheduler. No vLLM source is patched: the plugin
only registers these subclasses through vLLM's backend registry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ...attention import AttentionMethod
from ...attention.snapkv import compaction
from .adapters import adapter
from .cache_io import BlockLayout, probe_block_layout, read_kv, slots_for
from .runtime import LayerCompaction, RequestState, SparseRuntime, get_runtime


@dataclass
class BatchPlan:
    """One step's routing, shared by every layer of a KV-cache group.

    Request i owns query rows ``qsl[i]:qsl[i + 1]``; ``seq_lens[i]`` is its context length
    including this step's tokens. ``ours[i]``: the method computes request i's attention;
    ``evict[i]``: request i is an eviction method's prefill (the wrapped kernel computes its
    dense attention, then the method selects what the cache keeps). ``shrunk[i]``: request i
    decodes from a compacted cache whose heads all kept the same number of tokens in every
    layer (SnapKV), so the wrapped kernel reads it directly with this shorter context length.
    """

    method: AttentionMethod
    req_ids: list[str]
    qsl: list[int]
    seq_lens: list[int]
    prefill: list[bool]
    ours: list[bool]
    evict: list[bool]
    shrunk: dict[int, int]
    common: Any  # vllm CommonAttentionMetadata of the whole batch
    builder: Any  # the wrapped metadata builder (for per-run metadata)
    full: Any = None  # the metadata of the whole batch
    _runs: dict[tuple[int, int], Any] = field(default_factory=dict)
    #: this step's slot mapping with compacted requests redirected, per tuple of (request, position)
    #: (layers whose compactions have the same widths share it: SnapKV's are all alike)
    _redirected: dict[tuple, torch.Tensor] = field(default_factory=dict)

    @property
    def any_ours(self) -> bool:
        return any(self.ours)

    @property
    def touches(self) -> bool:
        """Whether this step needs anything beyond the wrapped kernel."""
        return any(self.ours) or any(self.evict)

    def wrapped_runs(self) -> list[tuple[int, int]]:
        """Maximal runs [a, b) of consecutive requests that the wrapped kernel handles."""
        runs, start = [], None
        for i, ours in enumerate([*self.ours, True]):
            if not ours and start is None:
                start = i
            elif ours and start is not None:
                runs.append((start, i))
                start = None
        return runs

    def run_metadata(self, a: int, b: int) -> Any:
        """The wrapped backend's metadata for requests [a, b), built once per step."""
        if (a, b) == (0, len(self.req_ids)):
            return self.full
        if (a, b) not in self._runs:
            self._runs[(a, b)] = self.builder.build_wrapped(_slice_common(self.common, a, b, self.qsl))
        return self._runs[(a, b)]


def _slice_common(cm: Any, a: int, b: int, qsl: list[int]) -> Any:
    """CommonAttentionMetadata restricted to requests [a, b) (rows qsl[a]:qsl[b]).

    Which fields are per request, per row or derived is the installed release's adapter's word.
    """
    fields = adapter()
    t0, t1 = qsl[a], qsl[b]

    def part(x: Any, lo: int, hi: int) -> Any:
        return x[lo:hi] if isinstance(x, torch.Tensor | np.ndarray) else x

    def rekeyed(ranges: dict | None) -> dict | None:
        return None if ranges is None else {i - a: r for i, r in ranges.items() if a <= i < b}

    changes = {
        "query_start_loc": cm.query_start_loc[a : b + 1] - cm.query_start_loc[a],
        "query_start_loc_cpu": cm.query_start_loc_cpu[a : b + 1] - cm.query_start_loc_cpu[a],
        "num_reqs": b - a,
        "num_actual_tokens": t1 - t0,
        "max_query_len": max(qsl[i + 1] - qsl[i] for i in range(a, b)),
        "max_seq_len": int(cm.seq_lens[a:b].max()),
    }
    changes.update({name: part(getattr(cm, name), a, b) for name in fields.PER_REQUEST})
    changes.update({name: part(getattr(cm, name), t0, t1) for name in fields.PER_TOKEN})
    changes.update({name: rekeyed(getattr(cm, name)) for name in fields.REQUEST_KEYED})
    changes.update(dict.fromkeys((*fields.DERIVED, *fields.WHOLE_BATCH)))
    return cm.replace(**changes)


def has_window(window: Any) -> bool:
    """Whether a backend's ``sliding_window`` is a window (vLLM writes none as None, -1 or (-1, -1))."""
    return window not in (None, -1, (-1, -1))


def _sliding_layers(builder: Any) -> tuple[bool, bool]:
    """(all, any): whether all / any of a metadata builder's layers are sliding-window layers.

    With vLLM's hybrid cache manager the local layers form their own KV-cache group (a spec with a
    ``sliding_window``); without it they share a group with the global layers, and only each
    layer's attention implementation knows its window.
    """
    if has_window(getattr(builder.kv_cache_spec, "sliding_window", None)):
        return True, True
    context = builder.vllm_config.compilation_config.static_forward_context
    windows = [has_window(getattr(getattr(context.get(n), "impl", None), "sliding_window", None))
               for n in builder.layer_names]
    return bool(windows) and all(windows), any(windows)


def plan_batch(runtime: SparseRuntime, cm: Any, builder: Any, shrink: bool = True) -> BatchPlan | None:
    """Route one step's requests; None when no method is active or the batch is not real.

    shrink: a compacted request may decode through the wrapped kernel with a shorter context
    (False when the group also holds sliding-window layers, whose caches were not compacted).
    """
    if not runtime.active:
        return None
    method = runtime.method
    req_ids = runtime.batch_request_ids(cm.num_reqs)
    if req_ids is None:
        return None
    qsl = [int(x) for x in cm.query_start_loc_cpu[: cm.num_reqs + 1].tolist()]
    seq_lens = [int(x) for x in cm.seq_lens[: cm.num_reqs].cpu().tolist()]
    prefill, ours, evict = [], [], []
    shrunk: dict[int, int] = {}
    for i, req_id in enumerate(req_ids):
        q_len, s = qsl[i + 1] - qsl[i], seq_lens[i]
        is_prefill = q_len == s
        if q_len > 1 and not is_prefill:
            raise RuntimeError(
                f"Request {req_id} computes {q_len} of {s} tokens in one step: sparse methods need the whole "
                "prompt in one step; run with enable_chunked_prefill=False and enable_prefix_caching=False."
            )
        if is_prefill:
            runtime.start_request(req_id, s)
            ours.append(method.phase == "prefill")
            evict.append(method.phase == "kv-compression")
        else:
            state = runtime.requests.get(req_id)
            compactions = list(state.compactions.values()) if state is not None else []
            widths = {c.width for c in compactions}
            uniform = len(widths) == 1 and all(c.counts is None for c in compactions)
            if shrink and method.phase != "decode" and uniform:
                # Slots 0..width-1 hold the kept tokens, then the outputs: a plain shorter context.
                shrunk[i] = widths.pop() + s - state.prompt_len
                ours.append(False)
            else:
                ours.append(method.phase == "decode" or bool(compactions))
            if ours[-1] and state is None:  # prefilled before this method was configured
                runtime.start_request(req_id, s - 1)
            evict.append(False)
        prefill.append(is_prefill)
    return BatchPlan(method, req_ids, qsl, seq_lens, prefill, ours, evict, shrunk, cm, builder)


def _layer_plan(layer_name: str) -> BatchPlan | None:
    """The plan attached to this layer's metadata in the running forward pass."""
    from vllm.forward_context import get_forward_context

    metadata = get_forward_context().attn_metadata
    if isinstance(metadata, list):
        metadata = metadata[0]
    if isinstance(metadata, dict):
        metadata = metadata.get(layer_name)
    return getattr(metadata, "sparse_plan", None)


class SparseImplMixin:
    """Routing on top of a backend implementation (placed first in the MRO)."""

    _sparse_base: type  # the wrapped implementation class
    _sparse_layout: BlockLayout | None = None

    # -- helpers ---------------------------------------------------------------------------

    def _write_cache(self, layer: Any, key: torch.Tensor, value: torch.Tensor, kv_cache: torch.Tensor,
                     slots: torch.Tensor) -> None:
        """Store key/value [n, Hkv, D] at ``slots`` with the wrapped backend's own writer."""
        self._sparse_base.do_kv_cache_update(self, layer, key, value, kv_cache, slots)

    def _layout(self, layer: Any, kv_cache: torch.Tensor) -> BlockLayout:
        """The learned layout of this layer's cache (probed again if its block shape changes)."""
        layout = self._sparse_layout
        if layout is None or layout.block_shape != tuple(kv_cache.shape[1:]):
            layout = probe_block_layout(lambda k, v, c, s: self._write_cache(layer, k, v, c, s),
                                        kv_cache, self.num_kv_heads, self.head_size)
            self._sparse_layout = layout
        return layout

    def _check_supported(self) -> None:
        from vllm.v1.attention.backend import AttentionType

        problems = [
            (getattr(self, "alibi_slopes", None) is not None, "ALiBi"),
            (bool(getattr(self, "logits_soft_cap", None)), "logit soft-capping"),
            (getattr(self, "sinks", None) is not None, "attention sinks"),
            (str(self.kv_cache_dtype) != "auto", f"kv_cache_dtype={self.kv_cache_dtype}"),
            (self.attn_type != AttentionType.DECODER, "non-decoder attention"),
            (getattr(self, "kv_sharing_target_layer_name", None) is not None, "KV sharing across layers"),
        ]
        for bad, what in problems:
            if bad:
                raise NotImplementedError(
                    f"Sparse attention methods do not support {what}; run this model with the dense method."
                )

    def _q_scale(self) -> float:
        """Methods scale by 1/sqrt(D); a model's own scale is folded into q (as HfEngine does)."""
        factor = self.scale * math.sqrt(self.head_size)
        return 1.0 if math.isclose(factor, 1.0, rel_tol=1e-6) else factor

    # -- vLLM entry points -------------------------------------------------------------------

    def do_kv_cache_update(self, layer: Any, key: torch.Tensor, value: torch.Tensor, kv_cache: torch.Tensor,
                           slot_mapping: torch.Tensor) -> None:
        plan = _layer_plan(layer.layer_name)
        if plan is not None:
            runtime = get_runtime()
            moved = []  # (request, the new token's compacted position)
            for i, req_id in enumerate(plan.req_ids):
                state = runtime.requests.get(req_id)
                comp = state.compactions.get(layer.layer_name) if state and not plan.prefill[i] else None
                if comp is not None:
                    # After the kept tokens and the earlier outputs.
                    moved.append((i, comp.width + plan.seq_lens[i] - 1 - state.prompt_len))
            if moved:
                where = tuple(moved)
                if where not in plan._redirected:
                    rows = torch.tensor([plan.qsl[i] for i, _ in moved], device=slot_mapping.device)
                    block_rows = plan.common.block_table_tensor[[i for i, _ in moved]]
                    positions = torch.tensor([p for _, p in moved], device=block_rows.device)
                    block = self._layout(layer, kv_cache).block_size
                    blocks = block_rows.long().gather(1, (positions // block)[:, None])[:, 0]
                    redirected = slot_mapping.clone()
                    redirected[rows] = (blocks * block + positions % block).to(redirected.dtype)
                    plan._redirected[where] = redirected
                slot_mapping = plan._redirected[where]
        self._sparse_base.do_kv_cache_update(self, layer, key, value, kv_cache, slot_mapping)

    def forward(self, layer: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                kv_cache: torch.Tensor, attn_metadata: Any, output: torch.Tensor,
                output_scale: torch.Tensor | None = None,
                output_block_scale: torch.Tensor | None = None) -> torch.Tensor:
        """query [T, Hq, D], key/value [T, Hkv, D], output [T, Hq, D]; rows grouped by request."""
        plan = getattr(attn_metadata, "sparse_plan", None) if attn_metadata is not None else None
        if plan is None or not plan.touches or has_window(self.sliding_window):
            return self._sparse_base.forward(self, layer, query, key, value, kv_cache, attn_metadata, output,
                                             output_scale, output_block_scale)
        self._check_supported()
        for a, b in plan.wrapped_runs():
            r0, r1 = plan.qsl[a], plan.qsl[b]
            self._sparse_base.forward(self, layer, query[r0:r1], key[r0:r1], value[r0:r1], kv_cache,
                                      plan.run_metadata(a, b), output[r0:r1])
        runtime = get_runtime()
        for i, req_id in enumerate(plan.req_ids):
            if not (plan.ours[i] or plan.evict[i]):
                continue
            state = runtime.requests[req_id]
            rows = slice(plan.qsl[i], plan.qsl[i + 1])
            if plan.evict[i]:
                self._evict(layer, plan, i, state, query[rows], key[rows], value[rows], kv_cache,
                            output[rows])
            elif plan.prefill[i]:
                self._prefill(plan, state, query[rows], key[rows], value[rows], output[rows])
            else:
                self._decode(layer, plan, i, state, query[rows], kv_cache, output[rows])
        return output

    # -- the two sparse paths ----------------------------------------------------------------

    def _heads_first(self, query: torch.Tensor, key: torch.Tensor,
                     value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[T, H, D] rows -> the methods' [H, T, D], with the model's scale folded into q."""
        q = query.transpose(0, 1)
        if (factor := self._q_scale()) != 1.0:
            q = q * factor
        return q, key.transpose(0, 1), value.transpose(0, 1)

    def _prefill(self, plan: BatchPlan, state: RequestState, query: torch.Tensor, key: torch.Tensor,
                 value: torch.Tensor, output: torch.Tensor) -> None:
        """A prefill method on one whole prompt: query [T, Hq, D], key/value [T, Hkv, D] -> output."""
        result = plan.method.prefill(*self._heads_first(query, key, value))
        output.copy_(result.out.transpose(0, 1))
        state.computed += result.computed
        state.total += result.total
        for counting, work in result.counts.items():
            state.counts[counting] = state.counts.get(counting, 0.0) + work

    def _evict(self, layer: Any, plan: BatchPlan, i: int, state: RequestState, query: torch.Tensor,
               key: torch.Tensor, value: torch.Tensor, kv_cache: torch.Tensor, output: torch.Tensor) -> None:
        """An eviction method's prompt: dense attention was computed by the wrapped kernel (eviction
        methods prefill densely); the method picks the tokens to keep and the cache is compacted.

        A method that exposes ``keep_mask(q, k)`` (SnapKV, Ada-SnapKV) only selects; any other
        ``kv-compression`` method runs its full ``prefill``, whose output then replaces the kernel's.
        """
        q, k, v = self._heads_first(query, key, value)
        keep_mask = getattr(plan.method, "keep_mask", None)
        if callable(keep_mask):
            keep = keep_mask(q, k)
        else:
            result = plan.method.prefill(q, k, v)
            output.copy_(result.out.transpose(0, 1))
            keep = result.keep
        if keep is not None:
            self._compact(layer, plan, i, state, keep, key, value, kv_cache)

    def _compact(self, layer: Any, plan: BatchPlan, i: int, state: RequestState, keep: torch.Tensor,
                 key: torch.Tensor, value: torch.Tensor, kv_cache: torch.Tensor) -> None:
        """Write the kept tokens (keep [Hkv, T] bool) of every head to the request's first slots.

        Heads may keep different numbers of tokens (Ada-SnapKV): the compacted width is the
        largest head's count and a per-head mask hides the padding, as in HfEngine.
        """
        order, counts = compaction(keep)  # kept positions first, in prompt order; [Hkv, W], [Hkv]
        width = order.shape[1]
        state.kept += float(counts.sum())
        state.cached += float(keep.numel())
        if not bool(keep.all()):  # keeping everything leaves the cache as it is
            index = order.T[:, :, None].expand(-1, -1, key.shape[-1])  # [W, Hkv, D]
            slots = slots_for(plan.common.block_table_tensor[i], torch.arange(width),
                              self._layout(layer, kv_cache).block_size)
            self._write_cache(layer, key.gather(0, index).contiguous(), value.gather(0, index).contiguous(),
                              kv_cache, slots)
        uniform = bool((counts == width).all())
        state.compactions[layer.layer_name] = LayerCompaction(width, None if uniform else counts)

    def _decode(self, layer: Any, plan: BatchPlan, i: int, state: RequestState, query: torch.Tensor,
                kv_cache: torch.Tensor, output: torch.Tensor) -> None:
        """One decode row: query [1, Hq, D] against the request's cache -> output [1, Hq, D]."""
        method = plan.method
        comp = state.compactions.get(layer.layer_name)
        key_mask = None
        if comp is None:
            length = plan.seq_lens[i]
        else:
            length = comp.width + plan.seq_lens[i] - state.prompt_len
            if comp.counts is not None:
                slot = torch.arange(length, device=comp.counts.device)
                key_mask = (slot[None, :] < comp.counts[:, None]) | (slot[None, :] >= comp.width)
        k, v = read_kv(kv_cache, self._layout(layer, kv_cache), plan.common.block_table_tensor[i], length)
        q = query.transpose(0, 1)
        if (factor := self._q_scale()) != 1.0:
            q = q * factor
        # The request's cache is append-only between steps (compaction happens once, at prefill), so
        # what the method derives from it may be kept across steps (Quest's page summaries).
        memo = state.memos.setdefault(layer.layer_name, {})
        result = method.decode(q, k, v, None if key_mask is None else key_mask.to(k.device), memo)
        output.copy_(result.out.transpose(0, 1))
        if method.phase == "decode":
            state.computed += result.computed
            state.total += result.total
        state.decode_kv_len[layer.layer_name] = length
        state.decode_calls += 1


def make_sparse_backend(base: type, module: str, name: str | None = None) -> type:
    """Subclass backend ``base`` (and its builder and impl) with the sparse routing.

    module: the module that binds the result to the name ``Sparse<Base>Backend`` (vLLM imports it
    from there).   name: what ``get_name()`` returns, a member of ``AttentionBackendEnum`` (default: base's).
    """
    base_impl = base.get_impl_cls()
    base_builder = base.get_builder_cls()

    class Builder(base_builder):  # type: ignore[misc, valid-type]
        def build(self, common_prefix_len: int, common_attn_metadata: Any, fast_build: bool = False) -> Any:
            runtime = get_runtime()
            if not hasattr(self, "_sparse_sliding"):
                self._sparse_sliding = _sliding_layers(self)
            all_sliding, any_sliding = self._sparse_sliding
            plan = None if all_sliding else plan_batch(
                runtime, common_attn_metadata, self, shrink=not any_sliding
            )
            if plan is not None and plan.shrunk:
                seq_lens = common_attn_metadata.seq_lens.clone()
                for i, length in plan.shrunk.items():
                    seq_lens[i] = length
                    state = runtime.requests[plan.req_ids[i]]
                    state.decode_kv_len.update(dict.fromkeys(self.layer_names, length))
                    state.decode_calls += len(self.layer_names)
                # max_seq_len stays an upper bound; positions (RoPE) are untouched.
                common_attn_metadata = common_attn_metadata.replace(
                    seq_lens=seq_lens, **dict.fromkeys(adapter().DERIVED)
                )
                plan.common = common_attn_metadata
            metadata = super().build(common_prefix_len, common_attn_metadata, fast_build)
            if plan is not None:
                plan.full = metadata
            metadata.sparse_plan = plan
            return metadata

        def build_wrapped(self, common_attn_metadata: Any) -> Any:
            """The wrapped builder's metadata for a sub-batch (no plan: the kernel reads it)."""
            return base_builder.build(self, 0, common_attn_metadata)

    class Impl(SparseImplMixin, base_impl):  # type: ignore[misc, valid-type]
        _sparse_base = base_impl

    class Backend(base):  # type: ignore[misc, valid-type]
        @staticmethod
        def get_impl_cls() -> type:
            return Impl

        @staticmethod
        def get_builder_cls() -> type:
            return Builder

    if name is not None:
        Backend.get_name = staticmethod(lambda: name)  # type: ignore[method-assign]
    for cls, suffix in ((Builder, "MetadataBuilder"), (Impl, "Impl"), (Backend, "Backend")):
        cls.__name__ = cls.__qualname__ = f"Sparse{base.__name__.removesuffix('Backend')}{suffix}"
        # vLLM finds a backend again by ``module.qualname`` (its ``get_path``): the defining module.
        cls.__module__ = module
    return Backend
