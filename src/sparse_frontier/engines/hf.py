"""The reference engine: Hugging Face ``transformers`` with the methods plugged in.

Every attention call of the model goes through ``_sparse_attention``, registered as
an attention implementation, which hands each sequence's q/k/v to the configured
method. Several sequences decode in one forward pass (``_Batch``): the linear layers see the
batch, attention sees one sequence at a time. Generation is a greedy loop of our own (not
``generate``) because the eviction methods shrink the cache: positions are passed explicitly,
so RoPE stays right however many tokens the cache holds. The cache lives in preallocated buffers
(``_BufferLayer``): a decode step writes its token in place instead of copying the whole cache.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from ..attention import AttentionMethod
from ..attention.snapkv import compaction, padding_mask
from ..kernels.ops import sliding_window_attention
from .base import Generation

log = logging.getLogger(__name__)

ATTN_IMPLEMENTATION = "sparse_frontier"


@dataclass
class _SequenceState:
    """What one sequence's attention calls share: the method and the work they counted."""

    method: AttentionMethod
    prefill_computed: float = 0.0
    prefill_total: float = 0.0
    #: prefill work under each counting, for methods that report several (AttentionResult.counts)
    prefill_counts: dict[str, float] = field(default_factory=dict)
    decode_computed: float = 0.0
    decode_total: float = 0.0
    kept: float = 0.0
    cached: float = 0.0
    #: per layer: [Hkv, S] bool mask of readable cache slots (eviction with per-head budgets)
    key_masks: dict[int, torch.Tensor] = field(default_factory=dict)
    #: per layer: [Hkv, S] bool keep mask returned by an eviction method's prefill
    keeps: dict[int, torch.Tensor] = field(default_factory=dict)
    #: per layer: what the method keeps across decode steps (``AttentionMethod.decode``'s memo)
    memos: dict[int, dict] = field(default_factory=dict)
    #: when set (benchmarks), (start, end) CUDA events around every attention call, read after a sync
    attention_events: list | None = None

    def density(self) -> float:
        phase = self.method.phase
        if phase == "prefill":
            return self.prefill_computed / self.prefill_total
        if phase == "decode":
            return self.decode_computed / self.decode_total if self.decode_total else 1.0
        if phase == "kv-compression":
            return self.kept / self.cached
        return 1.0


def _sparse_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention interface for a ``_Batch``: query [B, Hq, T, D]; key and value one
    [1, Hkv, S_b, D] tensor per sequence (lists from ``_Batch.update``: sequences hold different
    numbers of tokens) -> [B, T, Hq, D], each sequence through its own method state."""
    batch: _Batch | None = kwargs.get("sparse_batch")
    if batch is None:
        raise RuntimeError(
            "The sparse_frontier attention needs `sparse_batch`; run the model through HfEngine."
        )
    head_dim = query.shape[-1]
    if scaling is not None and not math.isclose(scaling, head_dim**-0.5):
        # Methods scale by 1/sqrt(D); fold a model's own scale (e.g. Gemma's) into q.
        query = query * (scaling * math.sqrt(head_dim))
    if kwargs.get("softcap"):
        raise NotImplementedError(
            "This model soft-caps its attention logits (e.g. Gemma 2), which the sparse_frontier attention "
            "does not implement; run a model without attention soft-capping."
        )
    window = kwargs.get("sliding_window")
    rows = zip(batch.sequences, query, key, value, strict=True)
    out = [_attend_sequence(seq.state, module.layer_idx, q, k[0], v[0], window) for seq, q, k, v in rows]
    return torch.cat(out), None


def _attend_sequence(state: _SequenceState, layer: int, q, k, v, window: int | None) -> torch.Tensor:
    """One sequence's attention in one layer -> [1, T, Hq, D]: through its method, or the layer's own
    sliding window; between CUDA events when the sequence is timed."""
    timed = state.attention_events is not None
    if timed:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
    out = _attend(state, layer, q, k, v) if window is None else _attend_window(q, k, v, window)
    if timed:
        end.record()
        state.attention_events.append((start, end))
    return out


def _attend(state: _SequenceState, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """One layer's attention for one sequence through its method -> [1, T, Hq, D]."""
    method = state.method
    if q.shape[1] > 1:
        if k.shape[1] != q.shape[1]:
            raise ValueError("Prefill must start from an empty cache (no prefix caching, no chunking).")
        result = method.prefill(q, k, v)
        state.prefill_computed += result.computed
        state.prefill_total += result.total
        for counting, work in result.counts.items():
            state.prefill_counts[counting] = state.prefill_counts.get(counting, 0.0) + work
        if result.keep is not None:
            state.keeps[layer] = result.keep
    else:
        key_mask = state.key_masks.get(layer)
        if key_mask is not None and key_mask.shape[1] < k.shape[1]:
            grown = key_mask.new_ones(key_mask.shape[0], k.shape[1] - key_mask.shape[1])
            key_mask = torch.cat([key_mask, grown], dim=1)
            state.key_masks[layer] = key_mask
        result = method.decode(q, k, v, key_mask, state.memos.setdefault(layer, {}))
        state.decode_computed += result.computed
        state.decode_total += result.total
    return result.out.transpose(0, 1).unsqueeze(0)


def _attend_window(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int) -> torch.Tensor:
    """A sliding-window layer (Gemma 3's local layers): its own windowed dense attention -> [1, T, Hq, D].

    The sparse methods act on the global layers only, so these calls add nothing to the density
    counts. In decode, transformers' sliding cache layer hands over just the window.
    """
    return sliding_window_attention(q, k, v, window).transpose(0, 1).unsqueeze(0)


def _register_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_IMPLEMENTATION, _sparse_attention)


class _BufferLayer(DynamicLayer):
    """A full-attention cache layer in preallocated buffers [1, Hkv, capacity, D].

    transformers' DynamicLayer concatenates every new token onto the whole cache (a copy of the
    cache per token and layer); here a step writes its token in place and attention reads a view.
    The buffers double when a sequence outgrows them.
    """

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        b, h, n, d = key_states.shape
        capacity = max(self.capacity, n)
        self._keys = key_states.new_empty(b, h, capacity, d)
        self._values = value_states.new_empty(b, h, capacity, value_states.shape[-1])
        self.length = 0
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start, end = self.length, self.length + key_states.shape[-2]
        if end > self._keys.shape[-2]:
            self._grow(max(end, 2 * self._keys.shape[-2]))
        self._keys[:, :, start:end] = key_states
        self._values[:, :, start:end] = value_states
        self._set_length(end)
        # A prefill from an empty cache attends to its own (contiguous) states, as with DynamicLayer.
        return (key_states, value_states) if start == 0 else (self.keys, self.values)

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the slots ``index`` [1, Hkv, W, D] (gather indices along the sequence), in order."""
        width = index.shape[2]
        self._keys[:, :, :width] = torch.gather(self.keys, 2, index)
        self._values[:, :, :width] = torch.gather(self.values, 2, index)
        self._set_length(width)

    def _grow(self, capacity: int) -> None:
        for name in ("_keys", "_values"):
            old = getattr(self, name)
            new = old.new_empty(*old.shape[:2], capacity, old.shape[-1])
            new[:, :, : self.length] = old[:, :, : self.length]
            setattr(self, name, new)

    def _set_length(self, length: int) -> None:
        self.length = length
        self.keys, self.values = self._keys[:, :, :length], self._values[:, :, :length]


def _new_cache(config, capacity: int):
    """transformers' cache for this model, its full-attention layers in preallocated buffers."""
    cache = DynamicCache(config=config)
    layers = cache.layers
    cache.layers = [_BufferLayer(capacity) if type(layer) is DynamicLayer else layer for layer in layers]
    return cache


def _compact_cache(cache, state: _SequenceState) -> None:
    """Apply an eviction method's keep masks: gather kept tokens to the front of each layer.

    Heads may keep different numbers of tokens (Ada-SnapKV); the cache is then as long
    as the largest head's budget and a per-head key mask hides the padding.
    """
    for layer, keep in state.keeps.items():
        cache_layer = cache.layers[layer]
        keys = cache_layer.keys  # [1, Hkv, S, D]
        keep = keep.to(keys.device)
        order, counts = compaction(keep)
        state.kept += float(counts.sum())
        state.cached += float(keep.numel())
        cache_layer.keep(order[None, :, :, None].expand(1, -1, -1, keys.shape[-1]))
        if (key_mask := padding_mask(counts)) is not None:
            state.key_masks[layer] = key_mask
    state.keeps.clear()


@dataclass
class _Sequence:
    """One prompt being generated: its cache, its attention state and the next position."""

    cache: object
    state: _SequenceState
    position: int

    def release(self) -> None:
        """Free what only decoding needs (the cache, the methods' memos and key masks); the state's
        counts stay for the result."""
        self.cache = None
        self.state.memos.clear()
        self.state.key_masks.clear()


class _Batch:
    """Sequences that go through one forward pass together, as its ``past_key_values``.

    The linear layers run on all rows at once (in decode they read the weights once for the batch);
    each row writes its new keys and values to its own sequence's cache, and attention receives
    each row's keys and values separately, so sequences of different lengths, evicted caches and
    per-sequence method state (page summaries, key masks) stay as they are for one sequence.
    """

    def __init__(self, sequences: list[_Sequence]):
        self.sequences = sequences

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        rows = [
            seq.cache.update(key_states[i : i + 1], value_states[i : i + 1], layer_idx)
            for i, seq in enumerate(self.sequences)
        ]
        return [k for k, _ in rows], [v for _, v in rows]


class HfEngine:
    """Greedy generation with ``transformers`` on CPU or one GPU: prompts prefilled one at a time,
    decoded together."""

    name = "hf"

    def __init__(self, model_dir: str, dtype: str = "float32", device: str | None = None, hf_overrides=None):
        from transformers import AutoModelForCausalLM

        from ..models import _check_source, load_tokenizer

        _check_source(str(model_dir))
        _register_attention()
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = AutoModelForCausalLM.from_pretrained(
            str(model_dir),
            dtype=getattr(torch, dtype),
            attn_implementation=ATTN_IMPLEMENTATION,
            **(hf_overrides or {}),  # config fields, e.g. RoPE scaling (context.rope_overrides)
        )
        self._setup(model.to(device), load_tokenizer(str(model_dir)))

    @classmethod
    def from_model(cls, model, tokenizer=None) -> HfEngine:
        """An engine around a model already built (benchmarks: random weights from a config.json).

        Without a tokenizer, generations carry token ids and an empty text.
        """
        _register_attention()
        model.set_attn_implementation(ATTN_IMPLEMENTATION)
        engine = cls.__new__(cls)
        engine._setup(model, tokenizer)
        return engine

    def _setup(self, model, tokenizer) -> None:
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.tokenizer = tokenizer
        self.eos_ids = self._eos_ids()

    def _eos_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id
        ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
        if self.tokenizer is not None and self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    @torch.inference_mode()
    def generate(
        self, prompts: list[list[int]], method: AttentionMethod, max_new_tokens: int,
        stop: tuple[str, ...] = (),
    ) -> list[Generation]:
        """Greedy generation: each prompt is prefilled on its own (lengths differ, and a prefill is a
        large matrix product already), then all are decoded together, one forward pass per step for
        the prompts still going, so the weights are read once per step for the whole batch. Every
        prompt's cache is held until the batch ends (``inference.batch_size`` bounds the memory).

        ``decode_ms`` is a prompt's share of the decode steps it took part in: a step's time split
        evenly between the prompts in it.
        """
        if not prompts:
            return []
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        first_logits, sequences, prefill_ms = [], [], []
        for prompt in prompts:
            start = time.perf_counter()
            logits, sequence = self.prefill(prompt, method, max_new_tokens)
            sync()
            prefill_ms.append((time.perf_counter() - start) * 1e3)
            first_logits.append(logits)
            sequences.append(sequence)

        outputs: list[list[int]] = [[] for _ in prompts]
        decode_ms = [0.0] * len(prompts)
        active, logits = list(range(len(prompts))), torch.stack(first_logits)
        clock = time.perf_counter()
        while active:
            tokens = logits.argmax(-1).tolist()
            going = []
            for i, token in zip(active, tokens, strict=True):
                outputs[i].append(token)
                done = token in self.eos_ids or len(outputs[i]) >= max_new_tokens
                if done or self._stopped(outputs[i], stop):
                    sequences[i].release()  # finished: its memory goes back before the batch ends
                else:
                    going.append(i)
            if going:
                logits = self._forward([[outputs[i][-1]] for i in going], [sequences[i] for i in going])
            sync()
            now = time.perf_counter()
            for i in active:
                decode_ms[i] += (now - clock) * 1e3 / len(active)
            active, clock = going, now

        return [
            self._generation(output, prompt, sequence.state, prefill, decode)
            for output, prompt, sequence, prefill, decode in zip(
                outputs, prompts, sequences, prefill_ms, decode_ms, strict=True
            )
        ]

    @torch.inference_mode()
    def prefill(
        self, prompt: list[int], method: AttentionMethod, max_new_tokens: int = 0, timed: bool = False
    ) -> tuple[torch.Tensor, _Sequence]:
        """Run the prompt (and an eviction method's compaction) -> (next-token logits [V], sequence).

        ``max_new_tokens`` sizes the cache buffers; ``timed`` records CUDA events around every
        attention call in ``sequence.state.attention_events``.
        """
        if not prompt:
            raise ValueError("Cannot generate from an empty prompt.")
        state = _SequenceState(method, attention_events=[] if timed else None)
        sequence = _Sequence(_new_cache(self.model.config, len(prompt) + max_new_tokens), state, 0)
        logits = self._forward([prompt], [sequence])[0]
        if state.keeps:
            _compact_cache(sequence.cache, state)
        return logits, sequence

    @torch.inference_mode()
    def step(self, token: int, sequence: _Sequence) -> torch.Tensor:
        """One decode step: feed ``token``, return the next-token logits [V]."""
        return self._forward([[token]], [sequence])[0]

    @torch.inference_mode()
    def forced_agreement(
        self, prompt: list[int], method: AttentionMethod, reference: list[int]
    ) -> list[bool]:
        """Teacher-forced on ``reference`` (e.g. dense's greedy output): per step, whether ``method``'s
        greedy token is the reference's. A diagnostic of how far a method departs from dense that,
        unlike comparing free runs, does not stop at the first difference."""
        logits, sequence = self.prefill(prompt, method, len(reference))
        hits = []
        for i, token in enumerate(reference):
            hits.append(int(logits.argmax()) == token)
            if i + 1 < len(reference):
                logits = self.step(token, sequence)
        return hits

    def _forward(self, ids: list[list[int]], sequences: list[_Sequence]) -> torch.Tensor:
        """One forward pass of as many new tokens for each sequence -> next-token logits [B, V]."""
        input_ids = torch.tensor(ids, device=self.device)
        starts = torch.tensor([[seq.position] for seq in sequences], device=self.device)
        batch = _Batch(sequences)
        out = self.model(
            input_ids=input_ids,
            position_ids=starts + torch.arange(input_ids.shape[1], device=self.device),
            past_key_values=batch,
            use_cache=True,
            sparse_batch=batch,
            logits_to_keep=1,
        )
        for seq in sequences:
            seq.position += input_ids.shape[1]
        return out.logits[:, -1]

    def _stopped(self, output: list[int], stop: tuple[str, ...]) -> bool:
        """Whether the output's tail holds a stop string (a string of n characters spans at most n
        tokens, so only that many are decoded per step)."""
        if not stop or self.tokenizer is None:
            return False
        tail = self.tokenizer.decode(output[-max(map(len, stop)) :], skip_special_tokens=True)
        return any(s in tail for s in stop)

    def _generation(
        self, output: list[int], prompt: list[int], state: _SequenceState, prefill_ms: float, decode_ms: float
    ) -> Generation:
        text = self.tokenizer.decode(output, skip_special_tokens=True) if self.tokenizer is not None else ""
        densities = {c: work / state.prefill_total for c, work in state.prefill_counts.items()}
        return Generation(output, text, state.density(), len(prompt), prefill_ms, decode_ms, densities)
