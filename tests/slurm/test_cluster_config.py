"""The Slurm profile, the cluster settings of the config and the inference resource table (issue 7).

The resource functions of workflow/rules/resources.smk are pure functions of the validated config;
they are loaded here the way Snakemake loads them (plain Python in the .smk file) and checked
against hand-computed GPU counts for the paper's models and against properties (the fewest GPUs
that fit, retries ask for more). The dry runs check that the rules really ask for those resources
through the profile, and that the paper's grid plans the expected jobs.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = str(ROOT / "config" / "schema.yaml")


def load_config(name: str) -> dict:
    config = yaml.safe_load((ROOT / "config" / name).read_text())
    validate(config, SCHEMA)  # fills the schema's defaults, as the Snakefile does
    return config


def resource_functions(config: dict) -> dict:
    """The namespace of workflow/rules/resources.smk, bound to `config`."""
    namespace = {"config": config, "workflow": types.SimpleNamespace(remote_exec=True)}
    source = (ROOT / "workflow" / "rules" / "resources.smk").read_text()
    exec(compile(source, "resources.smk", "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def paper():
    config = load_config("paper.yaml")
    return config, resource_functions(config)


# GPUs per (model, length) at 80 GB per GPU, worked by hand: bf16 weights (2 bytes x params) plus the
# KV cache of one sequence of length + 512 tokens (2 x layers x kv_heads x head_dim x 2 bytes per
# token) must fit in 80 x 0.9 - 4 = 68 GB per GPU; the count is a power of two dividing the heads.
# e.g. qwen2.5-32b at 16K: 65.0 + 4.4 = 69.4 GB > 68 -> 2; gemma3-12b at 128K: 24.4 + 50.5 = 74.9 -> 2;
# qwen2.5-72b: 145.4 GB of weights alone -> 4 (3 would hold it but does not divide 64 heads).
EXPECTED_GPUS = {
    "qwen2.5-7b": [1, 1, 1, 1],
    "qwen2.5-14b": [1, 1, 1, 1],
    "qwen2.5-32b": [2, 2, 2, 2],
    "qwen2.5-72b": [4, 4, 4, 4],
    "llama3.1-8b": [1, 1, 1, 1],
    "llama3.1-70b": [4, 4, 4, 4],
    "gemma3-4b": [1, 1, 1, 1],
    "gemma3-12b": [1, 1, 1, 2],
    "gemma3-27b": [1, 2, 2, 2],
}


def test_configs_validate_with_cluster_defaults():
    for name in ("config.yaml", "tiny.yaml", "paper.yaml"):
        config = load_config(name)
        assert config["cluster"]["gpu_mem_gb"] == 80
        assert config["cluster"]["max_runtime_min"] >= config["cluster"]["min_runtime_min"]
    bad = load_config("paper.yaml")
    bad["cluster"]["gpu_mem_gbs"] = 40  # a misspelt key stops the run
    with pytest.raises(WorkflowError, match="gpu_mem_gbs"):
        validate(bad, SCHEMA)


def test_every_new_schema_key_is_documented():
    schema = yaml.safe_load(Path(SCHEMA).read_text())
    cluster = schema["properties"]["cluster"]["properties"]
    model_resources = schema["properties"]["models"]["additionalProperties"]["properties"]["resources"]
    for key, spec in cluster.items():
        assert {"description", "type", "default"} <= set(spec), f"cluster.{key}: description/type/default"
    for key, spec in model_resources["properties"].items():
        assert {"description", "type"} <= set(spec), f"models.*.resources.{key} lacks description/type"


def test_gpus_per_model_and_length(paper):
    config, fn = paper
    assert config["lengths"] == [16384, 32768, 65536, 128000]
    table = {m: [fn["gpus_for"](config, m, length) for length in config["lengths"]] for m in config["models"]}
    assert table == EXPECTED_GPUS


def test_gpus_are_the_fewest_that_fit(paper):
    config, fn = paper
    cluster = config["cluster"]
    usable = cluster["gpu_mem_gb"] * cluster["gpu_memory_utilization"] - cluster["gpu_overhead_gb"]
    for model, spec in config["models"].items():
        heads = spec["resources"]["attention_heads"]
        previous = 0
        for length in config["lengths"]:
            gpus = fn["gpus_for"](config, model, length)
            need = fn["weights_gb"](config, model) + fn["kv_cache_gb"](config, model, length)
            assert heads % gpus == 0 and gpus <= cluster["gpus_per_node"]
            assert need / gpus <= usable
            smaller = [n for n in fn["tensor_parallel_options"](config, model) if n < gpus]
            assert all(need / n > usable for n in smaller), f"{model}@{length}: fewer GPUs would do"
            assert gpus >= previous  # longer contexts never need fewer GPUs
            previous = gpus


def test_kv_cache_size_matches_the_geometry(paper):
    config, fn = paper
    # Qwen2.5-72B: 80 layers x 8 KV heads x 128 x 2 (K, V) x 2 bytes = 327,680 bytes per token.
    expected = 327_680 * (128_000 + 512) / 1e9
    assert fn["kv_cache_gb"](config, "qwen2.5-72b", 128_000) == pytest.approx(expected)
    assert fn["weights_gb"](config, "qwen2.5-72b") == pytest.approx(145.4)


def test_retries_ask_for_more_memory_and_time(paper):
    config, fn = paper
    for model in ("qwen2.5-7b", "qwen2.5-72b"):
        mem = [fn["mem_mb_for"](config, model, 32768, attempt) for attempt in (1, 2, 3)]
        assert mem[1] == pytest.approx(2 * mem[0], abs=1) and mem[2] == pytest.approx(3 * mem[0], abs=1)
        # Weights pass through host memory while loading: at least them plus the base.
        assert mem[0] >= (config["cluster"]["host_mem_base_gb"] + fn["weights_gb"](config, model)) * 1024
    small = copy.deepcopy(config)
    small.update(samples=1, tasks=["ruler_niah"], methods={})
    fn_small = resource_functions(small)
    runtime = [fn_small["runtime_for"](small, "qwen2.5-7b", 16384, attempt) for attempt in (1, 2)]
    assert runtime[0] == small["cluster"]["min_runtime_min"] and runtime[1] == 2 * runtime[0]
    # The full grid's work for one (model, length) exceeds the partition limit as one job...
    assert fn["runtime_for"](config, "qwen2.5-72b", 128000, 1) == config["cluster"]["max_runtime_min"]
    # ...so it is sharded, and one shard asks for at most half the limit (room for the retry).
    shards = fn["inference_shards"](config, "qwen2.5-72b", 128000)
    assert shards > 1
    half = config["cluster"]["max_runtime_min"] / 2
    assert fn["runtime_for"](config, "qwen2.5-72b", 128000, 1, shards) <= half + 1


def test_runtime_estimate_follows_the_work(paper):
    config, fn = paper
    est = fn["estimated_minutes"]
    assert est(config, "qwen2.5-7b", 32768) > est(config, "qwen2.5-7b", 16384)
    fewer = copy.deepcopy(config)
    fewer["samples"] = 10
    load = config["cluster"]["model_load_min"]
    ratio = (est(fewer, "qwen2.5-7b", 16384) - load) / (est(config, "qwen2.5-7b", 16384) - load)
    assert ratio == pytest.approx(0.1)
    # Dense once plus six methods at nine ratios each.
    assert fn["cells_per_prompt"](config) == 1 + 6 * 9


def test_sizing_errors_name_the_fix():
    config = load_config("paper.yaml")
    config["models"]["mystery"] = {"path": "org/mystery", "tokenizer": "qwen2.5", "params_b": 3.0}
    validate(config, SCHEMA)
    fn = resource_functions(config)
    with pytest.raises(WorkflowError, match=r"models\.mystery\.resources"):
        fn["gpus_for"](config, "mystery", 16384)
    config["models"]["mystery"]["resources"] = {"gpus": 2}
    assert fn["gpus_for"](config, "mystery", 16384) == 2  # a fixed count needs no geometry
    config["cluster"]["gpus_per_node"] = 2
    with pytest.raises(WorkflowError, match="gpus_per_node"):
        fn["gpus_for"](config, "qwen2.5-72b", 16384)


def test_hf_engine_runs_on_the_cpu_by_default():
    config = load_config("tiny.yaml")
    fn = resource_functions(config)
    assert config["engine"] == "hf"
    assert fn["gpus_for"](config, "tiny-qwen2", 2048) == 0
    # The built model's geometry comes from its build settings.
    assert fn["model_shape"](config, "tiny-qwen2") == {
        "layers": 2, "kv_heads": 2, "head_dim": 16, "attention_heads": 4,
    }
    config["cluster"]["hf_gpus"] = 1
    assert fn["gpus_for"](config, "tiny-qwen2", 2048) == 1


def test_slurm_profile_settings():
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert profile["retries"] >= 1 and profile["jobs"] >= 1 and profile["latency-wait"] >= 5
    assert {"mem_mb", "runtime"} <= set(profile["default-resources"])
    assert profile["slurm-status-command"] in ("sacct", "squeue")
    test = yaml.safe_load((ROOT / "profiles" / "slurm-test" / "config.yaml").read_text())
    # The test override only changes polling and concurrency, never the resources under test.
    assert not {"default-resources", "set-resources", "retries", "executor"} & set(test)
    assert test["slurm-status-command"] == "squeue" and test["slurm-init-seconds-before-status-checks"] <= 5


def dry_run(tmp_path: Path, *args: str) -> tuple[str, float]:
    """`snakemake -n` of the repository's workflow in an empty working directory."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--snakefile", str(ROOT / "Snakefile"),
         "--directory", str(tmp_path), *args],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    elapsed = time.perf_counter() - start
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout + done.stderr, elapsed


def job_counts(output: str) -> dict[str, int]:
    stats = output[output.index("Job stats:"):]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}


def inference_resources(output: str) -> dict[tuple[str, int], dict[str, int]]:
    """{(model, length): {gpu, mem_mb, runtime}} of the planned inference jobs."""
    found = {}
    for block in re.split(r"\n(?=\[|rule |localrule )", output):
        if not block.lstrip().startswith("rule inference:"):
            continue
        wildcards = dict(re.findall(r"(\w+)=([^,\s]+)", re.search(r"wildcards: (.*)", block)[1]))
        resources = dict(re.findall(r"(\w+)=([^,\s]+)", re.search(r"resources: (.*)", block)[1]))
        found[(wildcards["model"], int(wildcards["length"]))] = {
            key: int(resources[key]) for key in ("gpu", "mem_mb", "runtime")
        }
    return found


def profile_args() -> list[str]:
    return ["--profile", str(ROOT / "profiles" / "slurm")]


def test_default_workflow_plans_through_the_profile(tmp_path):
    out, _ = dry_run(tmp_path, "--configfile", str(ROOT / "config" / "tiny.yaml"), *profile_args(),
                     "--workflow-profile", str(ROOT / "profiles" / "slurm-test"))
    config = load_config("tiny.yaml")
    fn = resource_functions(config)
    planned = inference_resources(out)
    assert set(planned) == {(m, length) for m in config["models"] for length in config["lengths"]}
    for (model, length), asked in planned.items():
        assert asked == {
            "gpu": fn["gpus_for"](config, model, length),
            "mem_mb": fn["mem_mb_for"](config, model, length, 1),
            "runtime": fn["runtime_for"](
                config, model, length, 1, fn["inference_shards"](config, model, length)
            ),
        }


@pytest.mark.slow
def test_paper_grid_plans_the_expected_jobs(tmp_path):
    out, seconds = dry_run(tmp_path, "--configfile", str(ROOT / "config" / "paper.yaml"), *profile_args())
    print(f"paper grid dry run: {seconds:.1f} s")  # measured, not asserted (docs/cluster.md reports it)
    config = load_config("paper.yaml")
    models, lengths, tasks = config["models"], config["lengths"], config["tasks"]
    tokenizers = {spec["tokenizer"] for spec in models.values()}
    counts = job_counts(out)
    # One inference job (one model load) per shard of each (model, length), shards sized to the
    # time limit; scoring per (model, length); task data per (tokenizer, task, length).
    fn = resource_functions(config)
    shards = {(m, length): fn["inference_shards"](config, m, length) for m in models for length in lengths}
    assert counts["inference"] == sum(shards.values())
    assert counts["evaluate"] == len(models) * len(lengths)
    assert counts["task_data"] == len(tokenizers) * len(tasks) * len(lengths)
    planned = inference_resources(out)
    assert {key: asked["gpu"] for key, asked in planned.items()} == {
        (model, length): EXPECTED_GPUS[model][i] for model in models for i, length in enumerate(lengths)
    }
    for key, asked in planned.items():
        assert asked["runtime"] <= config["cluster"]["max_runtime_min"] / 2 + 1, key


def test_shards_keep_each_job_within_half_the_limit(paper):
    config, fn = paper
    half = config["cluster"]["max_runtime_min"] / 2
    load = config["cluster"]["model_load_min"]
    for model in config["models"]:
        for length in config["lengths"]:
            shards = fn["inference_shards"](config, model, length)
            compute = fn["estimated_minutes"](config, model, length) - load
            assert load + compute / shards <= half  # each shard fits, with room for a doubled retry
            if shards > 1:  # and one shard fewer would not
                assert load + compute / (shards - 1) > half
    small = load_config("tiny.yaml")
    assert resource_functions(small)["inference_shards"](small, "tiny-qwen2", 1024) == 1


def test_slurm_test_override_puts_inference_on_one_gpu():
    """tests/slurm/inference_on_gpu.yaml, layered on the tiny study by ci/slurm_test.sh."""
    config = yaml.safe_load((ROOT / "config" / "tiny.yaml").read_text())
    config.setdefault("cluster", {}).update(
        yaml.safe_load((ROOT / "tests" / "slurm" / "inference_on_gpu.yaml").read_text())["cluster"]
    )
    validate(config, SCHEMA)
    fn = resource_functions(config)
    cells = [(m, length) for m in config["models"] for length in config["lengths"]]
    assert {fn["gpus_for"](config, m, length) for m, length in cells} == {1}
