# Cluster resources that follow the work (issue 7): what one inference job, i.e. one model at one
# length running every cell it owns, asks Slurm for. Pure functions of the validated config;
# the schema (config/schema.yaml) fills every `cluster:` default, so nothing here repeats a default.
#
# GPUs (= vLLM's tensor-parallel size): the fewest GPUs whose memory holds the weights plus the KV
# cache of `cluster.concurrent_sequences` sequences at the full length (prompt + answer), as the
# paper sized its runs; the count must divide the attention heads (vLLM splits heads across GPUs)
# and stay on one node. Memory and runtime grow with each retry (`attempt`), so a job killed for
# memory or time comes back larger.

import math

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger

from sparse_frontier.preflight import model_shape_from_config

# Bytes per weight / cache element of the configured inference dtype.
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def _cluster_settings(cfg):
    return cfg["cluster"]


def model_shape(cfg, model):
    """Layers, KV heads, head size and attention heads of a model (the KV cache's geometry).

    Taken from `models.<model>.resources`, from `build` for a model the workflow builds, or else
    from the model's config.json (its folder, the Hugging Face cache, or fetched once into it);
    a model without any of these stops the run with a sentence naming the keys.
    """
    spec = cfg["models"][model]
    given = spec.get("resources", {})
    keys = ("layers", "kv_heads", "head_dim", "attention_heads")
    if all(key in given for key in keys):
        return {key: int(given[key]) for key in keys}
    build = spec.get("build")
    if build is not None:
        heads = build["num_attention_heads"]
        return {
            "layers": build["num_hidden_layers"],
            "kv_heads": build["num_key_value_heads"],
            "head_dim": build["hidden_size"] // heads,
            "attention_heads": heads,
        }
    from_config = model_shape_from_config(spec["path"])
    if from_config is not None:
        return from_config
    missing = ", ".join(key for key in keys if key not in given)
    raise WorkflowError(
        f"Model '{model}' cannot be sized for the cluster: its config.json is neither in its folder nor in "
        f"the local Hugging Face cache, and the hub cannot be reached; download it (`hf download "
        f"{spec['path']} config.json`) or set models.{model}.resources.{{{missing}}}."
    )


def dtype_bytes(cfg):
    return _DTYPE_BYTES[cfg["inference"]["dtype"]]


def weights_gb(cfg, model):
    """Weight memory in GB (1e9 bytes): parameters x bytes of the inference dtype."""
    return cfg["models"][model]["params_b"] * dtype_bytes(cfg)


def kv_cache_gb(cfg, model, length):
    """KV cache in GB of `concurrent_sequences` sequences of `length` prompt + answer tokens.

    Per token and layer a K and a V vector for each KV head: 2 x layers x kv_heads x head_dim
    elements. (Sliding-window layers, as in Gemma 3, would need less: this is an upper bound.)
    """
    shape = model_shape(cfg, model)
    cluster = _cluster_settings(cfg)
    tokens = (int(length) + cluster["answer_tokens"]) * cluster["concurrent_sequences"]
    per_token = (
        2 * shape["layers"] * shape["kv_heads"] * shape["head_dim"] * dtype_bytes(cfg)
    )
    return per_token * tokens / 1e9


def tensor_parallel_options(cfg, model):
    """GPU counts vLLM can split this model over on one node: powers of two dividing the heads."""
    heads = model_shape(cfg, model)["attention_heads"]
    most = _cluster_settings(cfg)["gpus_per_node"]
    return [n for n in (2**i for i in range(0, 8)) if n <= most and heads % n == 0]


def gpus_for(cfg, model, length):
    """GPUs one inference job of `model` at `length` asks for (0: it runs on the CPU).

    `models.<model>.resources.gpus` fixes the count. Otherwise the hf engine takes
    `cluster.hf_gpus` (it uses at most one), and vLLM the fewest GPUs whose usable memory
    (gpu_mem_gb x gpu_memory_utilization - gpu_overhead_gb each) holds weights + KV cache.
    """
    fixed = cfg["models"][model].get("resources", {}).get("gpus")
    if fixed is not None:
        return int(fixed)
    cluster = _cluster_settings(cfg)
    if cfg["engine"] == "hf":
        return cluster["hf_gpus"]
    usable = (
        cluster["gpu_mem_gb"] * cluster["gpu_memory_utilization"]
        - cluster["gpu_overhead_gb"]
    )
    need = weights_gb(cfg, model) + kv_cache_gb(cfg, model, length)
    options = tensor_parallel_options(cfg, model)
    for gpus in options:
        if need / gpus <= usable:
            return gpus
    raise WorkflowError(
        f"Model '{model}' at length {length} needs {need:.0f} GB of GPU memory (weights + KV cache), more "
        f"than {options[-1] if options else 0} GPUs of {usable:.0f} usable GB hold; raise cluster.gpus_per_node "
        f"or cluster.gpu_mem_gb, lower cluster.concurrent_sequences, or drop this length."
    )


def cells_per_prompt(cfg):
    """Cells every (task, sample) prompt runs through: dense once plus each method x ratio != 1."""
    return 1 + sum(
        sum(1 for ratio in spec["compression_ratios"] if ratio != 1)
        for spec in cfg["methods"].values()
    )


def prompt_flops(cfg, model, length):
    """Forward FLOPs of one prompt: 2 N L for the weights plus 2 x layers x heads x head_dim x L^2
    for causal attention (QK^T and PV, half the square each). Dense, so an upper bound for sparse cells.
    """
    shape = model_shape(cfg, model)
    n_params = cfg["models"][model]["params_b"] * 1e9
    length = int(length)
    attention = (
        2 * shape["layers"] * shape["attention_heads"] * shape["head_dim"] * length**2
    )
    return 2 * n_params * length + attention


def estimated_minutes(cfg, model, length):
    """Wall time of one inference job, first attempt: model load + every prompt x cell at the
    sustained throughput (cluster.gpu_tflops per GPU, or cluster.cpu_gflops on the CPU), times
    cluster.runtime_safety for decoding, tokenization and stragglers."""
    cluster = _cluster_settings(cfg)
    prompts = len(cfg["tasks"]) * cfg["samples"] * cells_per_prompt(cfg)
    gpus = gpus_for(cfg, model, length)
    flops_per_s = (
        gpus * cluster["gpu_tflops"] * 1e12 if gpus else cluster["cpu_gflops"] * 1e9
    )
    compute_min = prompts * prompt_flops(cfg, model, length) / flops_per_s / 60
    return cluster["model_load_min"] + compute_min * cluster["runtime_safety"]


def runtime_for(cfg, model, length, attempt=1, shards=1):
    """Minutes to ask for: the estimate for one of ``shards`` equal shares of the work (the model
    load is paid by each), at least cluster.min_runtime_min, times the attempt, capped at
    cluster.max_runtime_min (the partition's limit)."""
    cluster = _cluster_settings(cfg)
    load = cluster["model_load_min"]
    estimate = load + (estimated_minutes(cfg, model, length) - load) / shards
    wanted = max(cluster["min_runtime_min"], estimate) * attempt
    return int(min(math.ceil(wanted), cluster["max_runtime_min"]))


def mem_mb_for(cfg, model, length, attempt=1):
    """Host memory in MB: a base for the process plus the weights, which pass through host memory
    while loading; on the CPU also the KV cache. Times the attempt."""
    cluster = _cluster_settings(cfg)
    need_gb = cluster["host_mem_base_gb"] + weights_gb(cfg, model)
    if gpus_for(cfg, model, length) == 0:
        need_gb += kv_cache_gb(cfg, model, length)
    return int(math.ceil(need_gb * 1024 * attempt))


def inference_shards(cfg, model, length):
    """Jobs the cells of one (model, length) are split into so that each fits half the time
    limit (the second attempt asks for twice the time); each job loads the model once.
    """
    limit = _cluster_settings(cfg)["max_runtime_min"] / 2
    load = _cluster_settings(cfg)["model_load_min"]
    compute = estimated_minutes(cfg, model, length) - load
    return max(1, math.ceil(compute / max(limit - load, 1)))


# ---- what the inference job asks Slurm for, named in its `resources` (Snakemake passes wildcards, attempt)


def inference_threads(wildcards):
    """Every core the run is given (--cores). A cluster executor gives no total (it takes --jobs):
    there the job's own allocation decides (the Slurm profile's cpus_per_task for inference), and
    inside the job, where Snakemake runs with that many cores, this gives them all."""
    try:
        return workflow.cores
    except WorkflowError:
        return 1


def inference_gpus(wildcards):
    return gpus_for(config, wildcards.model, wildcards.length)


def inference_mem_mb(wildcards, attempt):
    return mem_mb_for(config, wildcards.model, wildcards.length, attempt)


def inference_runtime(wildcards, attempt):
    shards = inference_shards(config, wildcards.model, wildcards.length)
    return runtime_for(config, wildcards.model, wildcards.length, attempt, shards)


def inference_shard_count(wildcards):
    return inference_shards(config, wildcards.model, wildcards.length)
