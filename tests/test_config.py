"""The config schema: the shipped configs validate, mistakes stop the run with the key named."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "config/schema.yaml")


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / "config" / name).read_text())


@pytest.mark.parametrize(
    "name", ["config.yaml", "tiny.yaml", "paper.yaml", "gpu-smollm2.yaml", "gpu-gemma3.yaml"]
)
def test_shipped_configs_validate(name):
    if not (ROOT / "config" / name).exists():
        pytest.skip(f"config/{name} not written yet")
    config = load(name)
    validate(config, SCHEMA)
    assert config["analysis"]["alpha"] == 0.05  # defaults are filled in


@pytest.mark.parametrize(
    ("mutate", "named"),
    [
        (lambda c: c.update(lenghts=[1024]), "lenghts"),
        (lambda c: c["models"]["tiny-qwen2"].update(paramz_b=1), "paramz_b"),
        (lambda c: c.update(tasks=["ruler_nia"]), "ruler_nia"),
        (lambda c: c["methods"].update(block_sparse={"compression_ratios": [0.5]}), "0.5"),
        (lambda c: c["methods"].update(quest_v2={"compression_ratios": [2]}), "quest_v2"),
        (lambda c: c.update(engine="tgi"), "tgi"),
        (lambda c: c["inference"].update(batch_size=0), "batch_size"),
        (lambda c: c.update(task_params={"ruler_niah": {"answer_format": "tagged"}}), "tagged"),
        (lambda c: c["models"]["tiny-qwen2"].update(rope_scaling={"rope_type": "yarn", "factor": "auto"}),
         "original_max_position_embeddings"),
        (lambda c: c["models"]["tiny-qwen2"].update(rope_scaling={"rope_type": "yarn", "factor": "twice"}),
         "twice"),
    ],
)
def test_schema_rejects_and_names_the_mistake(mutate, named):
    config = copy.deepcopy(load("tiny.yaml"))
    mutate(config)
    with pytest.raises(WorkflowError) as err:
        validate(config, SCHEMA)
    assert named in str(err.value)


def dry_run_fails(config: dict, tmp_path) -> str:
    """Plan ``config`` with snakemake; it must fail before planning any job. Returns its output."""
    configfile = tmp_path / "bad.yaml"
    configfile.write_text(yaml.safe_dump(config))
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", str(configfile)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode != 0
    assert "Job stats" not in run.stdout
    return run.stdout + run.stderr


def test_bad_key_stops_snakemake_before_any_job(tmp_path):
    config = load("tiny.yaml")
    config["sampels"] = 3
    assert "sampels" in dry_run_fails(config, tmp_path)


def test_unknown_method_parameter_stops_snakemake_with_its_name(tmp_path):
    config = load("tiny.yaml")
    config["methods"]["block_sparse"]["params"] = {"blok_size": 32}
    output = dry_run_fails(config, tmp_path)
    assert "methods.block_sparse: unknown parameter in ['blok_size']" in output


def test_schema_documents_exactly_each_tasks_parameters_and_defaults():
    from sparse_frontier.tasks import load_all, task_parameters

    documented = yaml.safe_load(Path(SCHEMA).read_text())["properties"]["task_params"]["properties"]
    for task in load_all():
        keys = documented.get(task, {}).get("properties", {})
        assert set(keys) == set(task_parameters(task)), task
        for key, spec in keys.items():
            assert spec["description"] and spec["type"]
            assert spec.get("default", None) == task_parameters(task)[key], (task, key)


def test_unknown_task_parameter_stops_snakemake_with_its_name(tmp_path):
    config = load("tiny.yaml")
    config["task_params"] = {"ruler_niah": {"num_keys": 2}}
    output = dry_run_fails(config, tmp_path)
    assert "task_params.ruler_niah: unknown parameter ['num_keys']; it accepts answer_format." in output


def test_task_params_give_the_data_a_folder_of_its_own(tmp_path):
    """Only non-default values change a task's data folder, and two settings never share one."""
    config = load("tiny.yaml")
    config["tasks"] = ["ruler_niah", "ruler_vt"]
    settings = {"default": {}, "same": {"chains": 8}, "one": {"chains": 1}, "two": {"chains": 2}}
    folders = {}
    for name, params in settings.items():
        config["task_params"] = {"ruler_vt": params} if params else {}
        configfile = tmp_path / f"{name}.yaml"
        configfile.write_text(yaml.safe_dump(config))
        run = subprocess.run(
            [sys.executable, "-m", "snakemake", "-n", "--configfile", str(configfile), "-d", str(tmp_path)],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        planned = set(re.findall(r"results/data/tiny-bpe/([\w-]+)/2048\.parquet", run.stdout))
        assert "ruler_niah" in planned and len(planned) == 2, planned
        folders[name] = (planned - {"ruler_niah"}).pop()
    assert folders["default"] == folders["same"] == "ruler_vt"
    assert folders["one"].startswith("ruler_vt-") and folders["two"].startswith("ruler_vt-")
    assert folders["one"] != folders["two"]


def test_a_length_beyond_the_model_context_stops_snakemake_before_any_job(tmp_path):
    # A local model folder whose config.json takes 1024 positions, studied at 2048 tokens.
    model = tmp_path / "short-model"
    model.mkdir()
    (model / "config.json").write_text(
        '{"model_type": "qwen2", "max_position_embeddings": 1024, '
        '"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64}'
    )
    (model / "model.safetensors").write_bytes(b"")  # a model folder holds weights (checked first)
    config = load("tiny.yaml")
    config["models"] = {"short": {"path": str(model), "tokenizer": "short", "params_b": 0.001}}
    config["lengths"] = [2048]
    output = dry_run_fails(config, tmp_path)
    assert (
        "Model 'short' takes at most 1024 tokens (its max_position_embeddings), but length 2048 needs 2304"
        in output
    )
    assert "drop 2048 from `lengths`, or give the model a `rope_scaling`" in output


QWEN_POSITIONS = {"max_position_embeddings": 32768}  # Qwen2.5's config.json


def test_paper_grid_fits_its_models_with_yarn():
    from sparse_frontier.context import check_lengths_fit, context_limit
    from sparse_frontier.pipeline import answer_budget

    config = load("paper.yaml")
    validate(config, SCHEMA)
    models = config["models"]
    check_lengths_fit(models, config["lengths"], answer_budget(config["tasks"]))
    # Qwen2.5 takes its max_context with YaRN scaled per job (the authors' factor: auto), with a
    # fixed factor 4 131072 tokens even where max_context is left out, and 32768 without scaling
    assert models["qwen2.5-7b"]["rope_scaling"]["factor"] == "auto"
    assert context_limit(models["qwen2.5-7b"], QWEN_POSITIONS)[0] == 131072
    qwen = {k: v for k, v in models["qwen2.5-7b"].items() if k != "max_context"}
    fixed = {**qwen, "rope_scaling": {**qwen["rope_scaling"], "factor": 4.0}}
    assert context_limit(fixed, QWEN_POSITIONS)[0] == 131072
    without = {k: v for k, v in qwen.items() if k != "rope_scaling"}
    with pytest.raises(ValueError, match="Model 'qwen2.5-7b' takes at most 32768 tokens"):
        check_lengths_fit({"qwen2.5-7b": without}, config["lengths"], 512, {"qwen2.5-7b": QWEN_POSITIONS})
