"""A model's context: how many tokens it takes, RoPE scaling to take more, and the check that every
studied length fits, run when the workflow is parsed (before any job).

A model takes the ``max_position_embeddings`` of its ``config.json``; with a configured
``rope_scaling`` (a Hugging Face dict, e.g. YaRN ``{rope_type: yarn, factor: 4.0,
original_max_position_embeddings: 32768}``) it takes ``factor x original_max_position_embeddings``;
a configured ``max_context`` overrides both. A job applies the scaling only when its context (length
plus answer budget) exceeds the model's own positions, as the paper's authors did for Qwen2.5
beyond 32K: shorter lengths run the model as released.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

#: RoPE types whose ``max_position_embeddings`` is the scaled length (transformers computes YaRN's
#: default factor from it, vLLM does not multiply it by ``factor`` again); for the others
#: (linear, dynamic) it stays the model's own length.
SCALED_LENGTH_TYPES = ("yarn", "longrope", "llama3")


def _text_config(model_config: Mapping) -> Mapping:
    return model_config.get("text_config") or model_config


def local_model_config(path: str) -> dict | None:
    """The ``config.json`` of a local model folder, or of a hub id already in the Hugging Face
    cache; None when it is not on this machine (nothing is downloaded)."""
    folder = Path(path).expanduser()
    if (folder / "config.json").is_file():
        return json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if folder.exists() or path.count("/") != 1:
        return None
    from transformers.utils.hub import cached_file

    try:
        cached = cached_file(path, "config.json", local_files_only=True)
    except Exception:  # not in the cache, or not a valid repo id: nothing to read
        return None
    return json.loads(Path(cached).read_text(encoding="utf-8")) if cached else None


def own_positions(model_config: Mapping | None, rope_scaling: Mapping | None = None) -> int | None:
    """The positions a model was trained on: the scaling's ``original_max_position_embeddings``,
    else its config's ``max_position_embeddings``; None when neither is known."""
    if rope_scaling and rope_scaling.get("original_max_position_embeddings"):
        return int(rope_scaling["original_max_position_embeddings"])
    value = _text_config(model_config or {}).get("max_position_embeddings")
    return int(value) if value else None


def context_limit(spec: Mapping, model_config: Mapping | None) -> tuple[int, str] | None:
    """The most tokens (prompt + answer) a configured model takes, and where that number comes from;
    None when it cannot be known here (no ``max_context`` and no local config.json)."""
    if spec.get("max_context"):
        return int(spec["max_context"]), "its max_context"
    scaling = spec.get("rope_scaling")
    own = own_positions(model_config, scaling)
    if own is None:
        return None
    if scaling:
        factor = float(scaling["factor"])
        return int(own * factor), f"{own} positions x rope_scaling factor {factor:g}"
    return own, "its max_position_embeddings"


def check_lengths_fit(
    models: Mapping[str, Mapping],
    lengths: Iterable[int],
    answer_tokens: int,
    model_configs: Mapping[str, Mapping | None] | None = None,
) -> None:
    """Stop with one sentence naming the model, the length and the fix when a studied length plus
    the answer budget exceeds a model's context (:func:`context_limit`); a model whose limit is
    unknown is not checked. model_configs: name -> config.json dict (default: what
    :func:`study_model_config` finds on this machine)."""
    for name, spec in models.items():
        if model_configs is not None:
            model_config = model_configs.get(name)
        else:  # a max_context needs no config.json (and no look-up in the hub cache)
            model_config = None if spec.get("max_context") else study_model_config(spec)
        limit = context_limit(spec, model_config)
        if limit is None:
            continue
        tokens, source = limit
        too_long = sorted(int(n) for n in lengths if int(n) + answer_tokens > tokens)
        if too_long:
            raise ValueError(
                f"Model '{name}' takes at most {tokens} tokens ({source}), but length {too_long[-1]} "
                f"needs {too_long[-1] + answer_tokens} with the {answer_tokens}-token answer budget; "
                f"drop {', '.join(map(str, too_long))} from `lengths`, or give the model a `rope_scaling` "
                "(e.g. {rope_type: yarn, factor: 4.0, original_max_position_embeddings: "
                f"{own_positions(model_config) or 'N'}}}) or the `max_context` it really supports."
            )


def study_model_config(spec: Mapping) -> dict | None:
    """What is known before any job of a configured model's config.json: a model the workflow
    builds takes its ``build`` positions; otherwise the local or cached file, if any."""
    if "build" in spec:
        from .models import TINY_MAX_POSITIONS

        return {"max_position_embeddings": spec["build"].get("max_position_embeddings", TINY_MAX_POSITIONS)}
    return local_model_config(spec["path"])


def rope_overrides(model_config: Mapping, rope_scaling: Mapping | None, context: int) -> dict:
    """Hugging Face config fields that apply ``rope_scaling`` to a job of ``context`` tokens:
    {} when none is configured or the context fits the model's own positions.

    ``rope_parameters`` is the model's own (its ``rope_theta`` kept) updated with the scaling, and
    for YaRN-like types ``max_position_embeddings`` becomes the scaled length, as transformers and
    vLLM expect. Both engines apply these fields (vLLM as ``hf_overrides``).
    """
    if not rope_scaling:
        return {}
    own = own_positions(model_config, rope_scaling)
    if own is not None and context <= own:
        return {}
    cfg = _text_config(model_config)
    base = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    if "rope_theta" in cfg:
        base.setdefault("rope_theta", cfg["rope_theta"])
    params = {**base, **rope_scaling}
    if "type" in params:  # the legacy name of rope_type
        params.setdefault("rope_type", params.pop("type"))
    overrides = {"rope_parameters": params}
    if params.get("rope_type") in SCALED_LENGTH_TYPES and own is not None:
        params.setdefault("original_max_position_embeddings", own)
        overrides["max_position_embeddings"] = int(own * float(params["factor"]))
    return overrides
