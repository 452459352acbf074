"""``VllmEngine``: the production engine, the same contract as ``HfEngine``, batched.

One ``LLM`` per engine (per inference job). Each ``generate`` call serves one batch with
one method: if the method differs from the last batch's, a ``collective_rpc`` switches it
in every worker (no reload). Requests are tagged through ``SamplingParams.extra_args`` so
the workers' per-request counters come back to the right prompt.
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any

from ...attention import AttentionMethod
from ..base import Generation
from .runtime import REQUEST_TAG
from .spec import CONFIG_KEY, method_to_spec

log = logging.getLogger(__name__)

WORKER_EXTENSION = "sparse_frontier.engines.vllm.worker.SparseWorkerExtension"

#: Settings exactness needs: a prompt's attention must see the whole prompt in one step
#: (no chunking, no cached prefix), and the Python routing must run (no CUDA graphs).
FORCED = {"enforce_eager": True, "enable_prefix_caching": False, "enable_chunked_prefill": False}


def exact_settings(settings: dict[str, Any], max_model_len: int | None, on_gpu: bool) -> dict[str, Any]:
    """``vllm.LLM`` settings with what exact sparse attention needs forced; each override is logged.

    FORCED keys; ``max_num_batched_tokens >= max_model_len`` (a prompt is never split); on GPUs
    the sparse FLASH_ATTN wrapper, registered as the ``CUSTOM`` backend (on CPUs the plugin
    wraps CPU_ATTN, the only backend there).
    """
    out = dict(settings)
    for key, value in FORCED.items():
        if key in out and out[key] != value:
            log.warning("vllm engine: %s=%r ignored; sparse attention needs %s=%r.",
                        key, out[key], key, value)
        out[key] = value
    if max_model_len is not None:
        batched = out.get("max_num_batched_tokens")
        if batched is not None and batched < max_model_len:
            log.warning("vllm engine: max_num_batched_tokens=%d raised to max_model_len=%d so a prompt is "
                        "never split.", batched, max_model_len)
        out["max_num_batched_tokens"] = max(batched or 0, max_model_len)
    if on_gpu:
        backend = out.pop("attention_backend", None)
        config = dict(out.get("attention_config") or {})
        chosen = backend or config.get("backend")
        if chosen not in (None, "CUSTOM"):
            log.warning("vllm engine: attention backend %r ignored; the sparse methods run in the CUSTOM "
                        "backend (a FLASH_ATTN wrapper).", chosen)
        config["backend"] = "CUSTOM"
        out["attention_config"] = config
    return out


def density_of(phase: str, stats: dict[str, float]) -> float:
    """Achieved density in the method's phase (engines/base.py), from summed worker counters."""
    if phase in ("prefill", "decode"):
        return stats["computed"] / stats["total"] if stats["total"] else 1.0
    if phase == "kv-compression":
        return stats["kept"] / stats["cached"] if stats["cached"] else 1.0
    return 1.0


def merge_rank_stats(per_rank: list[dict[str, dict]]) -> dict[str, dict]:
    """Sum the counters of each request over tensor-parallel ranks (each saw its own heads)."""
    merged: dict[str, dict] = {}
    for rank_stats in per_rank:
        for tag, stats in rank_stats.items():
            into = merged.setdefault(tag, {"computed": 0.0, "total": 0.0, "kept": 0.0, "cached": 0.0,
                                           "counts": {}, "decode_kv_len": {},
                                           "prompt_len": stats["prompt_len"]})
            for key in ("computed", "total", "kept", "cached"):
                into[key] += stats[key]
            for counting, work in stats.get("counts", {}).items():
                into["counts"][counting] = into["counts"].get(counting, 0.0) + work
            into["decode_kv_len"].update(stats["decode_kv_len"])
    return merged


class VllmEngine:
    """Greedy batched generation in vLLM V1 with the sparse methods plugged in.

    model_dir: a Hugging Face model folder.   tensor_parallel_size: GPUs (or CPU ranks).
    dtype: vLLM's dtype ("auto", "float32", "bfloat16", ...).   max_model_len: longest prompt +
    output (default: the model's).   method: the method the workers start with (sent through
    ``additional_config``; later batches switch by RPC).   settings: any other ``vllm.LLM``
    argument; the ones in ``FORCED`` are overridden with a warning (exact sparse attention needs them).
    RoPE scaling arrives as the ``hf_overrides`` setting (:func:`sparse_frontier.context.rope_overrides`:
    complete ``rope_parameters``, since vLLM sets a dict-valued override after it has standardised
    the model's own, and ``max_position_embeddings``, from which it derives the longest context).
    """

    name = "vllm"

    def __init__(self, model_dir: str, tensor_parallel_size: int = 1, dtype: str = "auto",
                 max_model_len: int | None = None, seed: int = 0, method: AttentionMethod | None = None,
                 **settings: Any) -> None:
        from vllm import LLM
        from vllm.platforms import current_platform

        from ...models import _check_source, load_tokenizer
        from .adapters import adapter
        from .plugin import register

        _check_source(str(model_dir))
        adapter()  # an unsupported vLLM release stops here, before any model loads
        # vLLM resolves the CUSTOM backend in this process too; the entry point registers it only
        # where the package is installed (not when it runs from a source tree on PYTHONPATH).
        register()
        # The plugin names a step's requests through the V1 model runner's persistent batch
        # (``input_batch.req_ids``); on GPUs vLLM 0.32 defaults to Model Runner V2, which keeps
        # its batch local to ``execute_model``. Inherited by the engine-core and worker processes.
        if os.environ.get("VLLM_USE_V2_MODEL_RUNNER", "0").lower() in ("1", "true"):
            raise ValueError("engine 'vllm' needs vLLM's V1 model runner; unset VLLM_USE_V2_MODEL_RUNNER.")
        os.environ["VLLM_USE_V2_MODEL_RUNNER"] = "0"
        settings = exact_settings(settings, max_model_len, on_gpu=not current_platform.is_cpu())
        extra = dict(settings.pop("additional_config", None) or {})
        start_spec = _spec_of(method)
        extra[CONFIG_KEY] = {"method": start_spec}
        self.tokenizer = load_tokenizer(str(model_dir))
        self.llm = LLM(
            model=str(model_dir),
            tensor_parallel_size=tensor_parallel_size,
            dtype=dtype,
            max_model_len=max_model_len,
            seed=seed,
            worker_extension_cls=WORKER_EXTENSION,
            additional_config=extra,
            disable_log_stats=False,  # per-request timestamps for prefill_ms / decode_ms
            **settings,
        )
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        # Every worker reads its starting method from additional_config and binds its runner.
        self.llm.collective_rpc("sparse_bind")
        self._spec = start_spec
        #: configuration switches sent to the workers so far (one collective_rpc each)
        self.switches = 0
        #: the merged worker counters of the last batch, in prompt order (for tests and logs)
        self.last_stats: list[dict] = []
        #: per prompt of the last batch, per generated token: {token id: logprob} of the top
        #: ``logprobs`` candidates (empty unless ``generate`` was asked for them)
        self.last_logprobs: list[list[dict[int, float]]] = []

    def set_method(self, method: AttentionMethod | None) -> None:
        """Make every worker use ``method`` (None or dense: the wrapped kernel) from now on."""
        spec = _spec_of(method)
        if spec != self._spec:
            self.llm.collective_rpc("sparse_configure", args=(spec,))
            self._spec = spec
            self.switches += 1

    def close(self) -> None:
        """Stop vLLM's engine core and workers now (instead of at interpreter exit)."""
        engine_core = getattr(self.llm.llm_engine, "engine_core", None)
        if engine_core is not None:
            engine_core.shutdown()

    def local_heads(self) -> list[dict]:
        """Per rank: the query/KV heads its attention layers hold (tensor parallelism check)."""
        return self.llm.collective_rpc("sparse_local_heads")

    def _check(self, prompts: list[list[int]], max_new_tokens: int) -> None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}.")
        for i, prompt in enumerate(prompts):
            if not prompt:
                raise ValueError(f"Prompt {i} is empty; every prompt needs at least one token.")
            if len(prompt) + max_new_tokens > self.max_model_len:
                raise ValueError(
                    f"Prompt {i} has {len(prompt)} tokens, which with {max_new_tokens} new tokens exceeds "
                    f"max_model_len={self.max_model_len}; raise max_model_len in the engine settings."
                )

    def generate(self, prompts: list[list[int]], method: AttentionMethod,
                 max_new_tokens: int, logprobs: int = 0, stop: tuple[str, ...] = ()) -> list[Generation]:
        """Greedy generation for every prompt in one vLLM batch; results in prompt order.

        logprobs: also keep the top-``logprobs`` candidates of every step in ``last_logprobs``
        (to tell a near-tie from a real difference when two engines' greedy tokens part).
        stop: a prompt's generation ends once its text holds one of these (kept in the output).
        """
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        self._check(prompts, max_new_tokens)
        self.set_method(method)
        batch = uuid.uuid4().hex[:8]
        tags = [f"{batch}-{i}" for i in range(len(prompts))]
        params = [
            SamplingParams(temperature=0.0, max_tokens=max_new_tokens, logprobs=logprobs or None,
                           stop=list(stop) or None, include_stop_str_in_output=True,
                           extra_args={REQUEST_TAG: tag})
            for tag in tags
        ]
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params, use_tqdm=False
        )
        stats = merge_rank_stats(self.llm.collective_rpc("sparse_pop_stats", args=(tags,)))
        empty = {"computed": 0.0, "total": 0.0, "kept": 0.0, "cached": 0.0, "decode_kv_len": {}}
        self.last_stats = [stats.get(tag, empty) for tag in tags]
        self.last_logprobs = [
            [{int(t): float(c.logprob) for t, c in step.items()} for step in out.outputs[0].logprobs or []]
            for out in outputs
        ]
        results = []
        for prompt, out, counters in zip(prompts, outputs, self.last_stats, strict=True):
            ids = list(out.outputs[0].token_ids)
            prefill_ms, decode_ms = _timings(out.metrics)
            results.append(Generation(
                output_ids=ids,
                text=self.tokenizer.decode(ids, skip_special_tokens=True),
                density=density_of(method.phase, counters),
                n_prompt_tokens=len(prompt),
                prefill_ms=prefill_ms,
                decode_ms=decode_ms,
                densities={c: work / counters["total"] for c, work in counters.get("counts", {}).items()},
            ))
        return results


def _spec_of(method: AttentionMethod | None) -> dict | None:
    """What the workers receive: None for dense (the wrapped kernel alone)."""
    return None if method is None or method.phase == "dense" else method_to_spec(method)


def _timings(metrics: Any) -> tuple[float, float]:
    """(prefill_ms, decode_ms) from vLLM's per-request engine-core timestamps (NaN if missing).

    Prefill: scheduled -> first token; decode: first -> last token. In a batch these are the
    request's own latencies, which overlap with its neighbours'.
    """
    if metrics is None or not getattr(metrics, "first_token_ts", 0.0):
        return float("nan"), float("nan")
    prefill = (metrics.first_token_ts - metrics.scheduled_ts) * 1e3
    decode = (metrics.last_token_ts - metrics.first_token_ts) * 1e3
    return prefill, decode
