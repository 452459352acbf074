# Config access, target lists and wildcard constraints; the rules hold no logic.

import os
import sys
from pathlib import Path
from types import SimpleNamespace

# Scripts import the library from this checkout, so a conda env needs only its dependencies.
# (Set, not required: a user need not define PYTHONPATH, so this is no `envvars:` case.)
os.environ.update(
    PYTHONPATH=os.pathsep.join(
        p
        for p in [str(Path(workflow.basedir) / "src"), os.environ.get("PYTHONPATH", "")]
        if p
    )
)

from sparse_frontier.context import check_lengths_fit
from sparse_frontier.pipeline import (
    answer_budget,
    cells_from_config,
    check_cells,
    study_task_params,
    task_data_dir,
)
from sparse_frontier.tasks.qa_sources import TASK_DATASETS
from sparse_frontier.analysis.targets import REPORT_PAGES
from sparse_frontier.io import remove_unreadable_parquets
from sparse_frontier.preflight import check_study, inside_a_job, is_dry_run

# Every mistake that needs no job to find stops the run here, in one sentence: models that
# cannot be loaded, analysis and method settings that name what the study does not run.
check_study(config, sys.argv)

MODELS = list(config["models"])
LENGTHS = [int(length) for length in config["lengths"]]
TASKS = list(config["tasks"])
TOKENIZERS = sorted({m["tokenizer"] for m in config["models"].values()})
CELLS = cells_from_config(config["methods"])
check_cells(CELLS, TASKS)  # a bad method parameter stops the run here, before any job
# Non-default task parameters (a mistake stops the run here too); they name the data folder.
TASK_PARAMS = study_task_params(config["task_params"], TASKS)
TASK_DIRS = {task: task_data_dir(task, TASK_PARAMS[task]) for task in TASKS}
TASK_OF_DIR = {folder: task for task, folder in TASK_DIRS.items()}
# A length (plus the answer budget) longer than a model's context stops the run here too.
check_lengths_fit(
    config["models"],
    LENGTHS,
    answer_budget(TASKS, config["inference"].get("max_new_tokens")),
)
# A truncated or corrupt Parquet table (a killed copy, a full disk) is removed here, so this run
# rebuilds it and everything built from it instead of failing on it or trusting what came after.
# (The inference cache checks its own entries; the raw QA downloads are checked by their fetcher.)
if not inside_a_job(sys.argv):
    for broken, problem in [
        *remove_unreadable_parquets("results", skip=("cache",)),
        *remove_unreadable_parquets("resources/qa", skip=("raw",)),
    ]:
        print(
            f"{broken} is not a readable Parquet file ({problem}); removed it, so this run rebuilds "
            "it and everything built from it (finished inference comes from the cache).",
            file=sys.stderr,
        )


wildcard_constraints:
    model="|".join(MODELS),
    tokenizer="|".join(TOKENIZERS),
    task_dir="|".join(TASK_DIRS.values()),
    length=r"\d+",
    shard=r"\d+",


def model_spec(name):
    return config["models"][name]


def models_made_by(source):
    """A wildcard pattern of the models a rule makes from ``source`` (``build`` or ``gguf``),
    so the tiny-model build and the GGUF conversion never claim each other's folders."""
    names = [name for name, spec in config["models"].items() if source in spec]
    return "|".join(names) if names else "(?!)"


def model_path(name):
    return model_spec(name)["path"]


def model_build_input(name):
    """The model folder as an input when a rule makes it (built or converted from GGUF); nothing
    for hub ids and local folders."""
    spec = model_spec(name)
    return [model_path(name)] if "build" in spec or "gguf" in spec else []


def tokenizer_model(tokenizer):
    """The first model of a tokenizer family: its tokenizer measures that family's data."""
    return next(
        name
        for name, spec in config["models"].items()
        if spec["tokenizer"] == tokenizer
    )


def task_data_tokenizer_input(wildcards):
    return model_build_input(tokenizer_model(wildcards.tokenizer))


def task_data_task(wildcards):
    return TASK_OF_DIR[wildcards.task_dir]


def task_data_params(wildcards):
    return TASK_PARAMS[task_data_task(wildcards)]


def qa_source_input(wildcards):
    """The normalised QA dataset a qa_* task draws its documents from; nothing for other tasks."""
    task = task_data_task(wildcards)
    dataset = TASK_DATASETS.get(task)
    if not dataset:
        return []
    return [TASK_PARAMS[task].get("source", f"resources/qa/{dataset}.parquet")]


def inference_data(wildcards):
    tokenizer = model_spec(wildcards.model)["tokenizer"]
    return expand(
        "results/data/{tokenizer}/{task_dir}/{length}.parquet",
        tokenizer=tokenizer,
        task_dir=[TASK_DIRS[task] for task in TASKS],
        length=wildcards.length,
    )


def inference_model_input(wildcards):
    return model_build_input(wildcards.model)


def model_build_params(wildcards):
    return model_spec(wildcards.model)["build"]


def model_gguf_params(wildcards):
    return model_spec(wildcards.model)["gguf"]


def model_path_param(wildcards):
    return model_path(wildcards.model)


def model_rope_scaling(wildcards):
    return model_spec(wildcards.model).get("rope_scaling")


def tokenizer_path_param(wildcards):
    return model_path(tokenizer_model(wildcards.tokenizer))


def prediction_shards(wildcards):
    """Every inference shard of one (model, length)."""
    n_shards = inference_shards(config, wildcards.model, wildcards.length)
    return expand(
        "results/predictions/{model}/{length}/shard{shard}.parquet",
        model=wildcards.model,
        length=wildcards.length,
        shard=range(n_shards),
    )


def prediction_files():
    """Every inference shard of the study: targets of `all`, so a missing one is rebuilt (from
    the cache) and what was built from it is redone, even when the tables downstream exist.
    """
    return [
        path
        for model in MODELS
        for length in LENGTHS
        for path in prediction_shards(SimpleNamespace(model=model, length=str(length)))
    ]


def print_inference_plan():
    """For a dry run: what each inference job computes and what it takes from the cache."""
    from sparse_frontier.cache import default_device, describe_plan
    from sparse_frontier.pipeline import inference_plan, prepare_inference

    print(
        f"The inference cache ({config['inference']['cache']}) as a job on this machine's "
        f"{default_device()} finds it (a job on another kind of device has entries of its own):",
        file=sys.stderr,
    )
    for model in MODELS:
        for length in LENGTHS:
            job = f"inference {model}/{length}"
            data = inference_data(SimpleNamespace(model=model, length=str(length)))
            if not all(Path(path).exists() for path in data):
                print(
                    f"{job}: computes all {len(CELLS)} cells (its task data is not built yet)",
                    file=sys.stderr,
                )
                continue
            prepared = prepare_inference(
                engine=config["engine"],
                model=model,
                model_path=model_path(model),
                data_paths=data,
                dtype=config["inference"]["dtype"],
                gpus=gpus_for(config, model, length),
                cache_root=config["inference"]["cache"],
                rope_scaling=model_spec(model).get("rope_scaling"),
                max_new_tokens=config["inference"]["max_new_tokens"],
            )
            n_shards = inference_shards(config, model, length)
            plans = inference_plan(
                prepared, CELLS, config["inference"]["batch_size"], n_shards
            )
            for shard, plan in enumerate(plans):
                print(describe_plan(f"{job}/shard{shard}", plan), file=sys.stderr)


def score_tables():
    return expand(
        "results/scores/{model}/{length}.parquet", model=MODELS, length=LENGTHS
    )


def model_configs():
    return expand("results/model_configs/{model}.json", model=MODELS)


def task_data_files():
    """Every task data file of the study (all tokenizers, tasks and lengths)."""
    return expand(
        "results/data/{tokenizer}/{task_dir}/{length}.parquet",
        tokenizer=TOKENIZERS,
        task_dir=[TASK_DIRS[task] for task in TASKS],
        length=LENGTHS,
    )


def model_tokenizers():
    return {name: spec["tokenizer"] for name, spec in config["models"].items()}


def report_pages():
    return list(REPORT_PAGES.values())
