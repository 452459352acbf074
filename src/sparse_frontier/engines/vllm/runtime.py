"""The sparse-attention state of ONE vLLM worker process.

Every worker (one per tensor-parallel rank) holds a ``SparseRuntime``: the configured
method, a handle on the model runner (to name the requests of the running batch), and
per-request state keyed by vLLM's request id. It is filled only from inside the worker:
at start-up from ``additional_config`` and afterwards through ``collective_rpc`` calls
(``worker.SparseWorkerExtension``); nothing is set in the driver and inherited.

Per request it keeps what the paper's metrics need (Section 3: achieved density, not the
target) and what eviction needs: after an eviction method's prefill, each layer's cache
is compacted (kept tokens first) and decoding reads ``kept + generated`` slots.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from ...attention import AttentionMethod
from ...attention.common import HeadGroup, set_head_group
from .spec import CONFIG_KEY, method_from_spec

log = logging.getLogger(__name__)

#: SamplingParams.extra_args key under which the engine tags each request.
REQUEST_TAG = "sparse_frontier_request"


@dataclass
class LayerCompaction:
    """One layer's cache after eviction: kept tokens occupy slots 0..width-1.

    counts: [Hkv] kept tokens per head, or None when every head kept ``width`` (no padding).
    """

    width: int
    counts: torch.Tensor | None


@dataclass
class RequestState:
    """What one request's attention calls share across layers and steps (local heads only)."""

    tag: str
    prompt_len: int
    computed: float = 0.0
    total: float = 0.0
    kept: float = 0.0
    cached: float = 0.0
    #: prefill work under each counting, for methods that report several (AttentionResult.counts)
    counts: dict[str, float] = field(default_factory=dict)
    compactions: dict[str, LayerCompaction] = field(default_factory=dict)
    #: per layer: the number of cache slots the last decode step read
    decode_kv_len: dict[str, int] = field(default_factory=dict)
    #: decode rows the method handled, summed over layers
    decode_calls: int = 0
    #: per layer: what the method derived from this request's append-only cache (``decode``'s memo)
    memos: dict[str, dict] = field(default_factory=dict)

    def stats(self) -> dict[str, Any]:
        return {
            "prompt_len": self.prompt_len,
            "computed": self.computed,
            "total": self.total,
            "kept": self.kept,
            "cached": self.cached,
            "counts": dict(self.counts),
            "decode_kv_len": dict(self.decode_kv_len),
            "decode_calls": self.decode_calls,
        }


class SparseRuntime:
    """Process-local state; see the module docstring."""

    def __init__(self) -> None:
        self.method: AttentionMethod | None = None
        self.runner: Any = None
        self.requests: dict[str, RequestState] = {}

    # -- configuration -------------------------------------------------------------------

    def configure(self, spec: dict | None) -> None:
        """Switch the method for the next batches; stale per-request state is dropped."""
        self.method = method_from_spec(spec)
        self.requests.clear()

    def bind(self, runner: Any, vllm_config: Any) -> None:
        """Attach this worker's model runner and take the run's method from ``additional_config``.

        ``additional_config["sparse_frontier"]["method"]`` is the spec the run starts with
        (``spec.method_to_spec``; absent or None = dense).
        """
        if not (hasattr(runner, "input_batch") and hasattr(runner, "requests")):
            raise RuntimeError(
                f"{type(runner).__name__} has no persistent input batch; the sparse plugin needs vLLM's "
                "V1 model runner (VLLM_USE_V2_MODEL_RUNNER=0, which VllmEngine sets)."
            )
        self.runner = runner
        set_head_group(tensor_parallel_heads())
        extra = vllm_config.additional_config or {}
        settings = extra.get(CONFIG_KEY, {}) if isinstance(extra, dict) else {}
        self.configure(settings.get("method"))

    @property
    def active(self) -> bool:
        """True when some method must see this process's attention calls."""
        return self.method is not None and self.method.phase != "dense" and self.runner is not None

    # -- requests --------------------------------------------------------------------------

    def batch_request_ids(self, num_reqs: int) -> list[str] | None:
        """Request ids of the running batch, in row order (vLLM's input batch order).

        None when the batch is not a real one (vLLM's profiling and warm-up runs).
        """
        ids = list(self.runner.input_batch.req_ids[:num_reqs])
        if len(ids) != num_reqs or any(i is None or i not in self.runner.requests for i in ids):
            return None
        return ids

    def start_request(self, req_id: str, prompt_len: int) -> RequestState:
        """A request's prefill begins (again, after a preemption): fresh state."""
        cached = self.runner.requests[req_id]
        prompt_tokens = len(cached.prompt_token_ids or ())
        if prompt_len > prompt_tokens > 0:
            # vLLM preempted this request and recomputes prompt + outputs in one prefill: the
            # method now sees its outputs as prompt, unlike an uninterrupted run (docs/vllm.md).
            log.warning("sparse_frontier: request %s was preempted and is recomputed (%d tokens, prompt %d); "
                        "give the KV cache more room or lower max_num_seqs for exact runs.",
                        req_id, prompt_len, prompt_tokens)
        params = cached.sampling_params
        extra = (params.extra_args or {}) if params is not None else {}
        state = RequestState(tag=str(extra.get(REQUEST_TAG, req_id)), prompt_len=prompt_len)
        self.requests[req_id] = state
        return state

    def pop_stats(self, tags: list[str] | None = None) -> dict[str, dict]:
        """Stats of the named requests (all when None), removed from the runtime."""
        out: dict[str, dict] = {}
        for req_id, state in list(self.requests.items()):
            if tags is None or state.tag in tags:
                out[state.tag] = state.stats()
                del self.requests[req_id]
        return out


def tensor_parallel_heads() -> HeadGroup | None:
    """The head group of this worker's tensor-parallel ranks, None when it holds every head.

    Budget searches that decide one budget per layer (Vertical-Slash, FlexPrefill, Ada-SnapKV)
    sum and gather through it, so TP > 1 takes the same decisions as TP 1 (docs/vllm.md). The
    collectives go straight to ``torch.distributed`` on vLLM's TP groups: the gloo ``cpu_group``
    for CPU tensors, the ``device_group`` (NCCL) for GPU ones, both exact for int64 counts
    (vLLM's own CPU all-reduce path is meant for activations, not integer counts).
    """
    import torch.distributed as dist
    from vllm.distributed.parallel_state import get_tp_group

    tp = get_tp_group()
    if tp.world_size == 1:
        return None

    def group_of(x: torch.Tensor) -> Any:
        return tp.cpu_group if x.device.type == "cpu" else tp.device_group

    def tp_sum(x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        dist.all_reduce(out, group=group_of(x))
        return out

    def tp_gather(x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(tp.world_size)]
        dist.all_gather(parts, x.contiguous(), group=group_of(x))
        return torch.cat(parts, 0)

    return HeadGroup(tp_sum, tp_gather, rank=tp.rank_in_group, size=tp.world_size)


_RUNTIME = SparseRuntime()


def get_runtime() -> SparseRuntime:
    """This process's runtime (created at import, filled by the worker extension)."""
    return _RUNTIME
