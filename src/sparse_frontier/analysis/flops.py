"""FLOPS model of a decoder-only transformer with sparse attention (paper Appendix D).

The paper's equations (3)-(9) did not survive text extraction, and the authors' released code has
no FLOPS model; this module re-derives them from the prose, counting 2 FLOPs per multiply-add as
Hoffmann et al. (2022, Appendix F) do, for the architecture of a Hugging Face ``config.json``
(GQA, SwiGLU MLP):

Prefill over L tokens (all terms summed over the ``n_layers`` layers where they are per layer):

    embedding     2 L d V                      (the lookup as a one-hot matmul, as Hoffmann et al.)
    qkv           2 L d (H + 2 H_kv) d_h       (per layer)
    attention     rho P(L) H (4 d_h + 3)       (per layer; QK^T and AV, 3 for the softmax)
    output proj.  2 L H d_h d                  (per layer)
    mlp           2 L 3 d f                    (per layer; gate, up and down projections)
    output layer  2 L d V

with d the hidden size, H / H_kv the query / key-value heads, d_h the head dim, f the MLP size,
V the vocabulary, rho the attention density (1/compression) and P(L) the query-key pairs of
attention over L tokens, by the ``convention`` (:data:`FLOPS_CONVENTIONS`):

- ``paper`` (the default): P(L) = L^2, the full square, as the paper counts it. Its Appendix D puts
  the move to the quadratic regime "beyond 16K-48K" and finds larger sparse models cheaper than
  smaller dense ones at 128K; for the Qwen2.5 shapes the full square gives 30K-55K and keeps that
  crossover, the causal count gives 60K-110K and loses it (docs/analysis.md).
- ``causal``: P(L) = L (L + 1) / 2, the pairs under the causal mask that a kernel really computes
  (the count the recorded densities are defined over).

Decoding costs one new token attending to the L cached ones (the paper: generation is far shorter
than the context): every "L" above becomes 1 and P(L) becomes L (paper) or L + 1 (causal, the
token also attends to itself).

Importance estimation (the cost of choosing what to compute), per layer:

- Vertical-Slash (prefill; FlexPrefill estimates the same way): the last ``last_q`` queries score all
  L keys, ``last_q L H (2 d_h + 3)``; the scores are summed over queries (verticals) and along
  diagonals (slashes), ``2 last_q L H``; top-k over both, ``L H (log2 n_v + log2 n_s)``; index
  building, one entry per selected vertical and slash per 64-query block, ``(L / 64) H (n_v + n_s)``.
  The budget is split evenly: n_v = n_s = rho P(L) / (2 L), so the selection covers rho P(L) pairs.
- Quest (decode): each of the L / page_size pages is scored from its per-channel key minimum and
  maximum, ``(L / page) H 4 d_h``, then top-k, ``(L / page) H log2 k`` with k = rho L / page pages.
- Block-Sparse (prefill): mean-pooled 16-token query and key blocks, ``2 L H d_h``, and their block
  scores, ``P(L / 16) H 2 d_h``.
- Eviction methods (SnapKV, Ada-SnapKV) score once at the end of prefill; that cost is not part of
  decoding and is left out.

Counts are floats (a 72B model at 128K tokens exceeds 2^63).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

#: How attention query-key pairs are counted -> the words a table or figure states it in.
FLOPS_CONVENTIONS = {
    "paper": "attention over L² query-key pairs (the paper's convention)",
    "causal": "attention over the L(L+1)/2 causal query-key pairs",
}

COMPONENTS = ("embedding", "qkv", "attention", "output_proj", "mlp", "output_layer", "indexing")
#: Components that grow linearly with the number of tokens processed (Figure 12's "linear" regime).
LINEAR_COMPONENTS = ("embedding", "qkv", "output_proj", "mlp", "output_layer")

#: How each method chooses what to compute (its importance-estimation cost); absent: free.
INDEXING = {
    "vertical_slash": "vertical_slash",
    "flexprefill": "vertical_slash",
    "block_sparse": "block_sparse",
    "quest": "quest",
}


@dataclass(frozen=True)
class ModelShape:
    """The dimensions of a decoder-only transformer that its FLOPS depend on."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int

    @classmethod
    def from_hf_config(cls, config: Mapping, name: str = "the model config") -> ModelShape:
        """Read the shape from a Hugging Face ``config.json`` dict (``text_config`` of multimodal ones).

        ``head_dim`` defaults to hidden_size / num_attention_heads and ``num_key_value_heads`` to
        ``num_attention_heads`` (plain multi-head attention), as transformers does.
        """
        cfg = config.get("text_config", config)
        required = [
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "vocab_size",
        ]
        missing = [k for k in required if cfg.get(k) is None]
        if missing:
            raise ValueError(
                f"{name} lacks {', '.join(missing)}; the FLOPS model needs a decoder config.json with "
                "hidden_size, num_hidden_layers, num_attention_heads, intermediate_size and vocab_size."
            )
        heads = int(cfg["num_attention_heads"])
        head_dim = cfg.get("head_dim") or int(cfg["hidden_size"]) // heads
        return cls(
            hidden_size=int(cfg["hidden_size"]),
            num_layers=int(cfg["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(head_dim),
            intermediate_size=int(cfg["intermediate_size"]),
            vocab_size=int(cfg["vocab_size"]),
        )

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> ModelShape:
        with open(path, encoding="utf-8") as f:
            return cls.from_hf_config(json.load(f), name=str(path))


def check_convention(convention: str) -> None:
    if convention not in FLOPS_CONVENTIONS:
        raise ValueError(
            f"unknown FLOPS convention {convention!r}; set analysis.flops_convention to "
            "'paper' (L^2 attention pairs, as the paper) or 'causal' (L(L+1)/2 pairs)."
        )


def attention_pairs(n: np.ndarray | float, convention: str = "paper") -> np.ndarray:
    """Query-key pairs of self-attention over n tokens: n^2 (paper) or n (n + 1) / 2 (causal)."""
    check_convention(convention)
    n = np.asarray(n, dtype=float)
    return n * n if convention == "paper" else n * (n + 1) / 2


def decode_pairs(n: np.ndarray | float, convention: str = "paper") -> np.ndarray:
    """Pairs of one new token against n cached ones: n (paper) or n + 1 (causal: itself too)."""
    check_convention(convention)
    n = np.asarray(n, dtype=float)
    return n if convention == "paper" else n + 1


def _log2_at_least_1(x: np.ndarray) -> np.ndarray:
    return np.log2(np.maximum(x, 2.0))


def indexing_flops(
    shape: ModelShape,
    method: str,
    phase: str,
    length: np.ndarray | float,
    density: np.ndarray | float,
    last_q: int = 256,
    page_size: int = 16,
    convention: str = "paper",
) -> np.ndarray:
    """FLOPS of a method's importance estimation, summed over layers (module docstring)."""
    L = np.asarray(length, dtype=float)
    rho = np.asarray(density, dtype=float)
    kind = INDEXING.get(method)
    h, dh, layers = shape.num_heads, shape.head_dim, shape.num_layers
    zero = np.zeros(np.broadcast(L, rho).shape)
    if kind == "vertical_slash" and phase == "prefill":
        q = np.minimum(float(last_q), L)
        n_each = np.maximum(rho * attention_pairs(L, convention) / (2 * L), 1.0)
        scores = q * L * h * (2 * dh + 3)
        aggregate = 2 * q * L * h
        topk = 2 * L * h * _log2_at_least_1(n_each)
        index = (L / 64) * h * 2 * n_each
        return layers * (scores + aggregate + topk + index)
    if kind == "quest" and phase == "decode":
        pages = L / page_size
        k = np.maximum(rho * pages, 1.0)
        return layers * pages * h * (4 * dh + _log2_at_least_1(k))
    if kind == "block_sparse" and phase == "prefill":
        pool = 2 * L * h * dh
        block_scores = attention_pairs(L / 16, convention) * h * 2 * dh
        return layers * (pool + block_scores)
    return zero


def flops_breakdown(
    shape: ModelShape,
    phase: str,
    length: np.ndarray | float,
    density: np.ndarray | float = 1.0,
    method: str = "dense",
    last_q: int = 256,
    page_size: int = 16,
    convention: str = "paper",
) -> dict[str, np.ndarray]:
    """FLOPS per component (keys: :data:`COMPONENTS` and ``total``) of one prefill or decoding step.

    phase: "prefill" (process L tokens) or "decode" (one token against L cached); "dense" and
    "kv-compression" map to their phase's cost only through ``density``, so pass the phase the
    sparsity acts in. length, density: scalars or arrays that broadcast together. convention: how
    attention pairs are counted (module docstring).
    """
    if phase not in ("prefill", "decode"):
        raise ValueError(f"phase must be 'prefill' or 'decode' for the FLOPS model, got {phase!r}.")
    L = np.asarray(length, dtype=float)
    rho = np.asarray(density, dtype=float)
    if np.any(rho <= 0) or np.any(rho > 1):
        raise ValueError("attention density must lie in (0, 1]; it is 1 / compression_ratio.")
    d, v, layers = shape.hidden_size, shape.vocab_size, shape.num_layers
    h, hkv, dh, f = shape.num_heads, shape.num_kv_heads, shape.head_dim, shape.intermediate_size
    tokens = L if phase == "prefill" else np.ones_like(L)
    pairs = attention_pairs(L, convention) if phase == "prefill" else decode_pairs(L, convention)
    out = {
        "embedding": 2 * tokens * d * v,
        "qkv": layers * 2 * tokens * d * (h + 2 * hkv) * dh,
        "attention": layers * rho * pairs * h * (4 * dh + 3),
        "output_proj": layers * 2 * tokens * h * dh * d,
        "mlp": layers * 2 * tokens * 3 * d * f,
        "output_layer": 2 * tokens * d * v,
        "indexing": indexing_flops(shape, method, phase, L, rho, last_q, page_size, convention),
    }
    shape_b = np.broadcast(L, rho).shape
    out = {k: np.broadcast_to(np.asarray(val, dtype=float), shape_b).copy() for k, val in out.items()}
    out["total"] = sum(out[k] for k in COMPONENTS)
    return out


def flops_table(
    shapes: Mapping[str, ModelShape],
    cells: pd.DataFrame,
    last_q: int = 256,
    page_size: int = 16,
    convention: str = "paper",
) -> pd.DataFrame:
    """FLOPS of every (model, phase, method, length, compression_ratio) row of ``cells``.

    Dense rows (phase "dense") are expanded into both a prefill and a decode row, since dense is the
    baseline of both. Adds ``flops_<component>`` columns, ``flops_total``, ``attention_share``
    (attention + indexing over total) and ``flops_convention``. Raises, naming the model, when a
    model has no shape.
    """
    check_convention(convention)
    keys = ["model", "phase", "method", "length", "compression_ratio"]
    cells = cells[keys].drop_duplicates()
    missing = sorted(set(cells["model"]) - set(shapes))
    if missing:
        raise ValueError(
            f"no config.json for model(s) {', '.join(missing)}; the FLOPS table needs "
            "results/model_configs/<model>.json for every model in the score table."
        )
    phase = cells["phase"].replace({"kv-compression": "decode"})
    dense = cells[phase == "dense"]
    cells = pd.concat(
        [cells[phase != "dense"].assign(phase=phase[phase != "dense"])]
        + [dense.assign(phase=p) for p in ("prefill", "decode")],
        ignore_index=True,
    ).drop_duplicates()
    parts = []
    for (model, ph, method), g in cells.groupby(["model", "phase", "method"], sort=True):
        density = 1.0 / g["compression_ratio"].to_numpy(float)
        br = flops_breakdown(
            shapes[model], ph, g["length"].to_numpy(float), density, method, last_q, page_size, convention
        )
        part = g.copy()
        for k in (*COMPONENTS, "total"):
            part[f"flops_{k}"] = br[k]
        parts.append(part)
    if not parts:
        return pd.DataFrame(
            columns=[
                *keys,
                *(f"flops_{k}" for k in (*COMPONENTS, "total")),
                "attention_share",
                "flops_convention",
            ]
        )
    out = pd.concat(parts, ignore_index=True)
    out["attention_share"] = (out["flops_attention"] + out["flops_indexing"]) / out["flops_total"]
    out["flops_convention"] = convention
    return out.sort_values(keys).reset_index(drop=True)


#: The paper's method per phase (its best), drawn in Figure 12 where a study ran none in that phase.
PAPER_METHODS = {"prefill": "vertical_slash", "decode": "quest"}


def flops_by_length(
    shapes: Mapping[str, ModelShape],
    lengths: np.ndarray,
    compression_ratios: tuple[float, ...] = (1.0, 5.0, 20.0),
    methods: Mapping[str, str] | None = None,
    convention: str = "paper",
) -> pd.DataFrame:
    """FLOPS against length for each model and phase (Figure 12), dense and a few compressions.

    methods: phase -> the sparse method whose indexing cost is added (default: the paper's best per
    phase, :data:`PAPER_METHODS`).
    """
    methods = dict(methods or PAPER_METHODS)
    curves = pd.DataFrame(
        [
            {"phase": phase, "method": methods.get(phase, "dense"), "compression_ratio": cr, "studied": True}
            for phase in ("prefill", "decode")
            for cr in compression_ratios
            if cr != 1.0
        ],
        columns=["phase", "method", "compression_ratio", "studied"],
    )
    return flops_curves(shapes, lengths, curves, convention=convention)


def studied_curves(cells: pd.DataFrame, paper_ratios: tuple[float, ...] = (5.0, 20.0)) -> pd.DataFrame:
    """The sparse curves of Figure 12 for a study: each method it ran, per phase, at its lowest and
    highest ratio (``studied`` True); in a phase where it ran none, the paper's method at
    ``paper_ratios`` (``studied`` False, so the figure can say so).

    cells: rows with phase (prefill | decode | kv-compression | dense), method, compression_ratio.
    """
    phase = cells["phase"].replace({"kv-compression": "decode"})
    sparse = cells.assign(phase=phase)[(phase != "dense") & (cells["compression_ratio"] != 1)]
    rows = []
    for ph in ("prefill", "decode"):
        ran = sparse[sparse["phase"] == ph]
        if len(ran):
            for method, g in ran.groupby("method", sort=True):
                for cr in sorted({g["compression_ratio"].min(), g["compression_ratio"].max()}):
                    rows.append(
                        {"phase": ph, "method": method, "compression_ratio": float(cr), "studied": True}
                    )
        else:
            rows += [
                {"phase": ph, "method": PAPER_METHODS[ph], "compression_ratio": cr, "studied": False}
                for cr in paper_ratios
            ]
    return pd.DataFrame(rows, columns=["phase", "method", "compression_ratio", "studied"])


def flops_curves(
    shapes: Mapping[str, ModelShape], lengths: np.ndarray, curves: pd.DataFrame, convention: str = "paper"
) -> pd.DataFrame:
    """FLOPS against length for each model: dense in both phases, then each row of ``curves``
    (phase, method, compression_ratio, studied; indexing cost included).

    Adds ``flops_linear`` (the components that grow with tokens, not context) so the figure can mark
    the linear/quadratic crossover.
    """
    dense = pd.DataFrame(
        {"phase": ["prefill", "decode"], "method": "dense", "compression_ratio": 1.0, "studied": True}
    )
    rows = []
    for model, shape in shapes.items():
        for curve in pd.concat([dense, curves], ignore_index=True).itertuples(index=False):
            br = flops_breakdown(
                shape,
                curve.phase,
                lengths,
                1.0 / curve.compression_ratio,
                curve.method,
                convention=convention,
            )
            rows.append(
                pd.DataFrame(
                    {
                        "model": model,
                        "phase": curve.phase,
                        "method": curve.method,
                        "compression_ratio": curve.compression_ratio,
                        "studied": bool(curve.studied),
                        "length": np.asarray(lengths, dtype=np.int64),
                        "flops_total": br["total"],
                        "flops_linear": sum(br[k] for k in LINEAR_COMPONENTS),
                        "flops_attention": br["attention"] + br["indexing"],
                        "flops_convention": convention,
                    }
                )
            )
    return pd.concat(rows, ignore_index=True)


def crossover_length(shape: ModelShape, phase: str, convention: str = "paper") -> float:
    """The length at which dense attention FLOPS equal the linear part (Figure 12's regime change).

    Prefill: linear = L·c with c the per-token linear FLOPS, attention = k·P(L) with
    k = ℓ·H·(4 d_h + 3), so the full square (paper) gives L = c / k and the causal count
    L = 2c / k - 1. Decode: the linear part is c and attention k·L (paper) or k·(L + 1) (causal),
    so L = c / k or c / k - 1.
    """
    check_convention(convention)
    causal = convention == "causal"
    per_token = flops_breakdown(shape, "decode", 1.0)  # every linear term is per token
    c = float(sum(per_token[name] for name in LINEAR_COMPONENTS))
    k = shape.num_layers * shape.num_heads * (4 * shape.head_dim + 3)
    if phase == "prefill":
        return 2 * c / k - 1 if causal else c / k
    if phase == "decode":
        return c / k - 1 if causal else c / k
    raise ValueError(f"phase must be 'prefill' or 'decode', got {phase!r}.")


def crossover_table(shapes: Mapping[str, ModelShape], convention: str = "paper") -> pd.DataFrame:
    """Per model and phase: the length where attention overtakes the linear part (dense)."""
    rows = [
        {
            "model": m,
            "phase": ph,
            "crossover_length": crossover_length(s, ph, convention),
            "flops_convention": convention,
        }
        for m, s in shapes.items()
        for ph in ("prefill", "decode")
    ]
    return pd.DataFrame(rows, columns=["model", "phase", "crossover_length", "flops_convention"])


def shape_table(shapes: Mapping[str, ModelShape]) -> pd.DataFrame:
    """The shapes the FLOPS were computed from, one row per model (for the record)."""
    return pd.DataFrame([{"model": m, **asdict(s)} for m, s in shapes.items()])
