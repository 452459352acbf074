"""The pipeline's steps as library functions; workflow/scripts only call these.

data -> predictions -> scores -> one long score table. Every table carries the keys
of its cell: model, method, phase, compression_ratio, task, length, sample_id, seed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

import pandas as pd
from tqdm.auto import tqdm

from .io import terminal
from .tasks import get_task, task_parameters

if TYPE_CHECKING:  # torch is imported only by the steps that run attention (data and scoring need none)
    from collections.abc import Callable

    from .attention import AttentionMethod
    from .cache import JobCache
    from .engines import Engine

log = logging.getLogger(__name__)

#: The live progress line of inference: done/total, elapsed, ETA and throughput.
PROGRESS_FORMAT = (
    "{desc}: {percentage:3.0f}%|{bar:20}| {n_fmt}/{total_fmt} [{elapsed}, ETA {remaining}, {rate_fmt}]"
)

CELL_KEYS = ["model", "method", "phase", "compression_ratio", "task", "length", "sample_id", "seed"]


def study_task_params(task_params: dict, tasks: list[str]) -> dict[str, dict]:
    """Each study task's configured parameters that differ from its defaults.

    Parameters for a task outside ``tasks``, a parameter the task does not take, or a value it
    refuses stop the run with one sentence.
    """
    for task, params in task_params.items():
        if task not in tasks:
            raise ValueError(
                f"task_params.{task}: {task} is not in `tasks`; add it there or remove its parameters."
            )
        accepted = task_parameters(task)
        unknown = sorted(set(params) - set(accepted))
        if unknown:
            takes = f"it accepts {', '.join(accepted)}" if accepted else "it takes none"
            raise ValueError(f"task_params.{task}: unknown parameter {unknown}; {takes}.")
        get_task(task, **params)
    return {
        task: {
            key: value
            for key, value in task_params.get(task, {}).items()
            if value != task_parameters(task)[key]
        }
        for task in tasks
    }


def task_data_dir(task: str, params: dict) -> str:
    """The folder of a task's data: its name, plus a hash of its non-default parameters if it has
    any, so two settings never share a file and the defaults keep the plain name."""
    if not params:
        return task
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
    return f"{task}-{digest[:10]}"


def build_task_data(task_name: str, tokenizer, length: int, n: int, seed: int, **task_params) -> pd.DataFrame:
    """``n`` samples of one task at one target length, measured in ``tokenizer``'s tokens."""
    task = get_task(task_name, **task_params)
    samples = task.generate(tokenizer, length, n, seed)
    df = pd.DataFrame(
        {
            "task": task_name,
            "task_params": json.dumps(task_params, sort_keys=True, default=str),
            "length": length,
            "sample_id": [s.sample_id for s in samples],
            "seed": seed,
            "prompt": [s.prompt for s in samples],
            "gold": [list(s.gold) for s in samples],
            "n_tokens": [s.n_tokens for s in samples],
            # What a reader needs to check a sample by eye (needle keys, chapters, ...).
            "meta": [json.dumps(s.meta, sort_keys=True, default=str) for s in samples],
        }
    )
    bad = df[(df.n_tokens > length) | (df.n_tokens < 0.95 * length)]
    if len(bad):
        raise ValueError(
            f"Task {task_name}: {len(bad)} samples fall outside 95-100% of {length} tokens "
            f"(e.g. {int(bad.n_tokens.iloc[0])}); the task's length fitting is broken."
        )
    return df


@dataclass(frozen=True)
class Cell:
    """One method at one compression ratio (dense is the method 'dense' at ratio 1)."""

    method: str
    compression_ratio: float
    params: dict = field(default_factory=dict, hash=False, compare=False)

    def build(self, task: str) -> AttentionMethod:
        from .attention import METHODS, get_method

        params = dict(self.params.get("default", {}))
        params.update(self.params.get("by_task", {}).get(task, {}))
        try:
            return get_method(self.method, self.compression_ratio, **params)
        except TypeError as err:
            internal = ("compression_ratio", "extra")
            known = sorted(f.name for f in fields(METHODS[self.method]) if f.name not in internal)
            raise ValueError(
                f"methods.{self.method}: unknown parameter in {sorted(params)}; "
                f"it accepts {', '.join(known)}."
            ) from err


def cells_from_config(methods: dict) -> list[Cell]:
    """Dense once, then every configured method at every configured ratio other than 1.

    A ratio of 1 is dense by definition (and tested to be), so it is not run twice.
    """
    cells = [Cell("dense", 1.0)]
    for name, spec in methods.items():
        params = {"default": spec.get("params", {}), "by_task": spec.get("params_by_task", {})}
        cells += [Cell(name, float(cr), params) for cr in spec["compression_ratios"] if float(cr) != 1.0]
    return cells


def task_answer_budget(task: str, budgets: dict | None = None) -> int:
    """Tokens a prompt of ``task`` may be answered with: the configured budget
    (``inference.max_new_tokens``), else the task's own ``max_new_tokens``."""
    return int((budgets or {}).get(task) or get_task(task).max_new_tokens)


def answer_budget(tasks: list[str], budgets: dict | None = None) -> int:
    """Tokens any prompt of these tasks may be answered with: the longest task budget."""
    return max(task_answer_budget(task, budgets) for task in tasks)


def engine_settings(
    kind: str,
    *,
    dtype: str,
    length: int,
    tasks: list[str],
    gpus: int,
    model_path: str | None = None,
    rope_scaling: dict | None = None,
    max_new_tokens: dict | None = None,
) -> dict:
    """Constructor settings of an engine for one (model, length) job.

    vLLM gets a context just long enough for the longest prompt plus the longest answer
    of the job's tasks, and one tensor-parallel rank per GPU the job was given. Both engines get
    the configured ``rope_scaling`` as Hugging Face config overrides (``hf_overrides``) when that
    context exceeds the model's own positions (context.rope_overrides; it reads ``model_path``'s
    config.json).
    """
    settings: dict = {"dtype": dtype}
    if kind == "hf" and gpus > 1:
        raise ValueError(
            f"engine 'hf' runs on one device but this job has {gpus} GPUs; "
            "set `engine: vllm` for tensor parallelism, or give the job one GPU."
        )
    context = length + answer_budget(tasks, max_new_tokens)
    if kind != "hf":
        settings.update(max_model_len=context, tensor_parallel_size=max(gpus, 1))
    if rope_scaling:
        from .context import rope_overrides
        from .models import load_model_config

        overrides = rope_overrides(load_model_config(str(model_path)), rope_scaling, context)
        if overrides:
            settings["hf_overrides"] = overrides
    return settings


@dataclass
class InferenceJob:
    """What one (model, length) inference job works from: its task data, its engine's constructor
    settings and its view of the inference cache."""

    data: pd.DataFrame
    settings: dict
    cache: JobCache


def prepare_inference(
    *,
    engine: str,
    model: str,
    model_path: str,
    data_paths: list[str],
    dtype: str,
    gpus: int,
    cache_root: str,
    rope_scaling: dict | None = None,
    max_new_tokens: dict | None = None,
) -> InferenceJob:
    """Read a job's task data and key its cache; loads no model (the job and the dry run share it)."""
    from .cache import JobCache, engine_identity

    data = pd.concat([pd.read_parquet(path) for path in data_paths], ignore_index=True)
    lengths = sorted(data.length.unique())
    settings = engine_settings(
        engine,
        dtype=dtype,
        length=int(max(lengths)),
        tasks=sorted(data.task.unique()),
        gpus=gpus,
        model_path=model_path,
        rope_scaling=rope_scaling,
        max_new_tokens=max_new_tokens,
    )
    identity = engine_identity(engine, model_path, settings)
    return InferenceJob(data, settings, JobCache(cache_root, model, identity, data, max_new_tokens))


def check_cells(cells: list[Cell], tasks: list[str]) -> None:
    """Build every method for every task once, so a bad parameter stops the run before any job."""
    for cell in cells:
        for task in tasks:
            cell.build(task)


@dataclass(frozen=True)
class WorkItem:
    """One engine call: a cell on a batch of one task's samples (row positions in the data)."""

    cell: Cell
    task: str
    rows: tuple[int, ...]


def work_items(data: pd.DataFrame, cells: list[Cell], batch_size: int) -> list[WorkItem]:
    """Every (cell, task, batch) of one length in a fixed order: cell-major, so a job switches
    the method as rarely as possible."""
    items = []
    for cell in cells:
        for task, group in data.groupby("task", sort=True):
            positions = list(group.index)
            for start in range(0, len(positions), batch_size):
                items.append(WorkItem(cell, task, tuple(positions[start : start + batch_size])))
    return items


def shard_of(items: list, shard: int, n_shards: int) -> list:
    """The ``shard``-th of ``n_shards`` contiguous, near-equal slices of ``items``."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"Shard {shard} does not exist; there are {n_shards} (0 to {n_shards - 1}).")
    size, extra = divmod(len(items), n_shards)
    start = shard * size + min(shard, extra)
    return items[start : start + size + (shard < extra)]


def inference_plan(
    job: InferenceJob, cells: list[Cell], batch_size: int, n_shards: int
) -> list[dict[str, int]]:
    """Per shard: how many cells and prompts it computes and how many it takes from the cache."""
    items = work_items(job.data, cells, batch_size)
    return [job.cache.plan(shard_of(items, shard, n_shards)) for shard in range(n_shards)]


def run_inference(
    engine: Engine | Callable[[], Engine],
    data: pd.DataFrame,
    cells: list[Cell],
    *,
    model: str,
    batch_size: int = 8,
    shard: int = 0,
    n_shards: int = 1,
    cache: JobCache | None = None,
    max_new_tokens: dict | None = None,
) -> pd.DataFrame:
    """This shard's share of every cell over every sample of ``data`` (all tasks of one length);
    one row per sample per cell. The shards of a (model, length) together cover each pair once.
    ``max_new_tokens`` are answer budgets by task (:func:`task_answer_budget`); decoding also
    stops once a task's answer is complete (``Task.stop_strings``).

    With a ``cache`` (sparse_frontier.cache), only the samples it lacks are computed, each
    finished batch is stored in it at once, and the result is read back from it; ``engine`` may
    then be a function that loads the engine, called only if something is left to compute.
    """
    items = shard_of(work_items(data, cells, batch_size), shard, n_shards)
    todo = items if cache is None else cache.missing(items)
    n_total, n_todo = (sum(len(item.rows) for item in group) for group in (items, todo))
    if cache is not None:
        log.info("%d of %d prompts x cells are in the cache; computing %d", n_total - n_todo, n_total, n_todo)
    if not hasattr(engine, "generate"):  # a loader: a model is loaded only for work to do
        if todo:
            engine = engine()
        else:
            log.info("nothing to compute: the predictions are assembled from the cache, no model is loaded")
    lengths = "/".join(str(n) for n in sorted(data.length.unique()))
    started = time.perf_counter()
    rows = []
    tokenized: dict[int, list[int]] = {}  # each prompt is tokenized once, however many cells run it
    with tqdm(
        total=n_total,
        initial=n_total - n_todo,
        desc=f"inference {model} {lengths} shard {shard + 1}/{n_shards}",
        unit=" prompts",
        bar_format=PROGRESS_FORMAT,
        file=terminal(),
        mininterval=1.0,
    ) as bar:
        for item in todo:
            batch = _generate_batch(engine, data, item, model, tokenized, max_new_tokens)
            if cache is not None:
                cache.store(item, batch)
            rows += batch
            bar.update(len(item.rows))
    seconds = time.perf_counter() - started
    log.info("%d prompts in %.1f s (%.2f prompts/s)", len(rows), seconds, len(rows) / max(seconds, 1e-9))
    return pd.DataFrame(rows) if cache is None else cache.assemble(items)


def _generate_batch(
    engine: Engine,
    data: pd.DataFrame,
    item: WorkItem,
    model: str,
    tokenized: dict[int, list[int]],
    max_new_tokens: dict | None = None,
) -> list[dict]:
    """One engine call: the prediction rows of ``item``'s samples under its cell, in row order."""
    from .attention import analysis_phase

    method = item.cell.build(item.task)
    for i in item.rows:
        if i not in tokenized:
            tokenized[i] = engine.tokenizer(data.prompt[i], add_special_tokens=False).input_ids
    # The task as prompted (its answer format decides where an answer ends).
    task = get_task(item.task, **json.loads(data.task_params[item.rows[0]] or "{}"))
    results = engine.generate(
        [tokenized[i] for i in item.rows],
        method,
        task_answer_budget(item.task, max_new_tokens),
        stop=task.stop_strings,
    )
    rows = []
    for i, gen in zip(item.rows, results, strict=True):
        sample = data.loc[i]
        rows.append(
            {
                "model": model,
                "method": item.cell.method,
                "phase": analysis_phase(method.phase),
                "compression_ratio": item.cell.compression_ratio,
                "task": item.task,
                "length": int(sample.length),
                "sample_id": int(sample.sample_id),
                "seed": int(sample.seed),
                "output": gen.text,
                # The greedy tokens, so a sparse answer can be compared with dense's (agreement.py).
                "output_ids": [int(t) for t in gen.output_ids],
                "gold": list(sample.gold),
                "density": gen.density,
                "achieved_compression": 1.0 / gen.density if gen.density else float("inf"),
                # Both countings of the same work, where a method has two (the rest: equal).
                "density_exact": gen.densities.get("exact", gen.density),
                "density_kernel": gen.densities.get("kernel", gen.density),
                "n_prompt_tokens": gen.n_prompt_tokens,
                "n_output_tokens": len(gen.output_ids),
                "prefill_ms": gen.prefill_ms,
                "decode_ms": gen.decode_ms,
                "engine": engine.name,
            }
        )
    return rows


def score_predictions(predictions: pd.DataFrame, task_params: dict[str, dict] | None = None) -> pd.DataFrame:
    """Add each row's task score (answer extraction included) and the task's category.

    ``task_params`` are the study's task parameters by task name: a task is scored as it was
    prompted (its ``answer_format`` decides which extraction rules read the output).
    """
    scored = predictions.copy()
    task_params = task_params or {}
    tasks = {name: get_task(name, **task_params.get(name, {})) for name in set(scored.task)}
    scores, categories = [], []
    for task_name, output, gold in zip(scored.task, scored.output, scored.gold, strict=True):
        task = tasks[task_name]
        scores.append(float(task.score(output, tuple(gold))))
        categories.append(task.category)
    scored["score"] = scores
    scored["task_category"] = categories
    return scored


def collect_scores(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """The one long score table: every cell's rows, keys first, sorted for stable diffs."""
    df = pd.concat(tables, ignore_index=True)
    duplicated = df.duplicated(CELL_KEYS)
    if duplicated.any():
        first = df[duplicated].iloc[0]
        raise ValueError(f"Duplicate score rows for cell {dict(first[CELL_KEYS])}; two inputs overlap.")
    columns = CELL_KEYS + [c for c in df.columns if c not in CELL_KEYS]
    return df[columns].sort_values(CELL_KEYS, ignore_index=True)
