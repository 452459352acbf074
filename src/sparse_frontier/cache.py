"""The inference cache: finished work kept by content, so no job computes the same thing twice.

Every batch an inference job finishes is written at once (atomically) as one small Parquet file,
under a folder whose name is a hash of everything that could change its results:

- the model: its path, plus the content of a local folder (weights hashed in full up to
  256 MiB, else by size and their first and last MiB) or, for a hub id, the revision in the
  local Hugging Face cache where there is one;
- the engine, the device kind and the engine settings that change outputs (dtype, tensor-parallel
  size, RoPE overrides; not the context capacity, which only has to hold the prompt);
- the method, all of its parameters at that ratio (defaults included) and its code ``version``
  (``AttentionMethod.version``, bumped when a method's selection changes);
- the task and its answer budget (``max_new_tokens``);

and every row carries the hash of its sample (task, task parameters, length, id, seed, prompt,
gold). A job reads the cache first, computes only the samples it lacks (and loads no model when
it lacks none), and assembles its declared output from the cache. So a killed job resumes from
its last finished batch, a new ratio or method computes only its own cells, and more samples
compute only the new samples (the generators are prefix-stable: sample i does not depend on n).

Layout: ``<root>/<model>/<method>/<task>/<key>/`` holds ``key.json`` (what the key was made of)
and one ``<batch>.parquet`` per finished batch. ``python -m sparse_frontier.cache ls`` lists it.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import sys
from pathlib import Path

import pandas as pd

from .io import parquet_problem, write_parquet, write_text

log = logging.getLogger(__name__)

#: Bumped when the layout or the meaning of a key changes; every older entry then misses.
CACHE_FORMAT = 2  # 2: decoding stops at the end of an answer (Task.stop_strings)
#: Where the cache lives unless `inference.cache` in the config says otherwise.
DEFAULT_ROOT = "results/cache/inference"
#: Engine settings that do not change what is generated (a capacity, not a computation).
_SETTINGS_WITHOUT_EFFECT = ("max_model_len",)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".pkl")
_FULL_HASH_LIMIT = 256 * 2**20  # weights up to this size are hashed in full
_EDGE_BYTES = 2**20  # larger weights: size plus the hash of their first and last MiB


def digest(obj) -> str:
    """The sha256 of ``obj`` as canonical JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _file_hash(path: Path, full: bool) -> str:
    sha = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as f:
        if full or size <= 2 * _EDGE_BYTES:
            for block in iter(lambda: f.read(2**22), b""):
                sha.update(block)
        else:
            sha.update(f.read(_EDGE_BYTES))
            f.seek(size - _EDGE_BYTES)
            sha.update(f.read(_EDGE_BYTES))
            sha.update(str(size).encode())
    return sha.hexdigest()


def _hub_revision(repo_id: str) -> str | None:
    """The commit the local Hugging Face cache resolves ``repo_id``'s main branch to, if it has one."""
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:
        return None
    ref = Path(HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "refs" / "main"
    return ref.read_text().strip() if ref.is_file() else None


def model_fingerprint(path: str) -> dict:
    """What identifies a model's weights and tokenizer: the path, plus the files of a local folder
    or the revision of a hub id (None where the local hub cache does not know it)."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        return {"path": path, "revision": _hub_revision(path)}
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    weights_size = sum(p.stat().st_size for p in files if p.suffix in _WEIGHT_SUFFIXES)
    full = weights_size <= _FULL_HASH_LIMIT
    return {
        "path": path,
        "files": {
            str(p.relative_to(folder)): _file_hash(p, full or p.suffix not in _WEIGHT_SUFFIXES) for p in files
        },
    }


def default_device() -> str:
    """The device kind an engine loaded here runs on (what the hf engine picks by itself)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def engine_identity(kind: str, model_path: str, settings: dict, device: str | None = None) -> dict:
    """The part of every cache key that one inference job shares: model, engine, device, settings."""
    return {
        "format": CACHE_FORMAT,
        "model": model_fingerprint(model_path),
        "engine": kind,
        "device": device or default_device(),
        "settings": {k: v for k, v in settings.items() if k not in _SETTINGS_WITHOUT_EFFECT},
    }


def cell_key(identity: dict, cell, task: str, budgets: dict | None = None) -> dict:
    """Everything that decides one cell's outputs on one task, but the samples themselves (whose
    key holds the task parameters, and so where an answer ends)."""
    from .pipeline import task_answer_budget

    method = cell.build(task)
    return {
        **identity,
        "method": cell.method,
        "method_version": type(method).version,
        "params": dataclasses.asdict(method),
        "task": task,
        "max_new_tokens": task_answer_budget(task, budgets),
    }


def sample_keys(data: pd.DataFrame) -> pd.Series:
    """One hash per sample of the task data (index-aligned): whatever the engine is given of it."""
    columns = ["task", "task_params", "length", "sample_id", "seed", "prompt", "gold"]
    return pd.Series(
        [
            digest([row[c] if c != "gold" else [str(g) for g in row[c]] for c in columns])
            for _, row in data[columns].iterrows()
        ],
        index=data.index,
        dtype=object,
    )


class JobCache:
    """One inference job's view of the cache: its model name, engine identity and task data."""

    def __init__(
        self, root: str | Path, model: str, identity: dict, data: pd.DataFrame, budgets: dict | None = None
    ):
        self.root = Path(root)
        self.budgets = budgets
        self.model = model
        self.identity = identity
        self.data = data
        self.sample_key = sample_keys(data)
        self._keys: dict = {}
        self._finished: dict[Path, set[str]] = {}

    def key(self, cell, task: str) -> dict:
        if (cell, task) not in self._keys:
            self._keys[cell, task] = cell_key(self.identity, cell, task, self.budgets)
        return self._keys[cell, task]

    def folder(self, cell, task: str) -> Path:
        key = self.key(cell, task)
        return self.root / self.model / key["method"] / task / digest(key)[:24]

    def _entries(self, folder: Path) -> list[Path]:
        """The readable entries of a cell; one that cannot be read is removed (and recomputed)."""
        entries = []
        for path in sorted(folder.glob("[!.]*.parquet")):
            problem = parquet_problem(path)
            if problem:
                log.warning(
                    "cache entry %s is unreadable (%s); removed, its samples are recomputed", path, problem
                )
                path.unlink(missing_ok=True)
            else:
                entries.append(path)
        return entries

    def finished(self, cell, task: str) -> set[str]:
        """The sample keys this cell already has in the cache for ``task``."""
        folder = self.folder(cell, task)
        if folder not in self._finished:
            import pyarrow.parquet as pq

            self._finished[folder] = {
                key
                for path in self._entries(folder)
                for key in pq.read_table(path, columns=["sample_key"]).column("sample_key").to_pylist()
            }
        return self._finished[folder]

    def missing(self, items: list) -> list:
        """``items`` (WorkItems) cut down to their samples the cache lacks; fully cached ones dropped."""
        todo = []
        for item in items:
            done = self.finished(item.cell, item.task)
            rows = tuple(i for i in item.rows if self.sample_key[i] not in done)
            if rows:
                todo.append(dataclasses.replace(item, rows=rows))
        return todo

    def store(self, item, rows: list[dict]) -> None:
        """Write one finished batch (its prediction rows, in ``item.rows`` order) durably at once."""
        folder = self.folder(item.cell, item.task)
        if not (folder / "key.json").exists():
            key = self.key(item.cell, item.task)
            write_text(json.dumps(key, indent=1, sort_keys=True, default=str), folder / "key.json")
        keys = [self.sample_key[i] for i in item.rows]
        table = pd.DataFrame(rows).assign(sample_key=keys)
        write_parquet(table, folder / f"{digest(sorted(keys))[:24]}.parquet")
        self._finished.setdefault(folder, set()).update(keys)

    def assemble(self, items: list) -> pd.DataFrame:
        """The prediction rows of ``items`` in their order, all read from the cache."""
        parts = []
        for (cell, task), group in _grouped(items).items():
            folder = self.folder(cell, task)
            entries = [pd.read_parquet(p) for p in self._entries(folder)]
            cached = pd.concat(entries, ignore_index=True) if entries else pd.DataFrame({"sample_key": []})
            cached = cached.drop_duplicates("sample_key").set_index("sample_key")
            wanted = [self.sample_key[i] for item in group for i in item.rows]
            lacking = [k for k in wanted if k not in cached.index]
            if lacking:
                raise RuntimeError(
                    f"The inference cache lost {len(lacking)} rows of {cell.method} "
                    f"x{cell.compression_ratio:g} on {task} while this job ran (under {folder}); "
                    "run the job again to recompute them."
                )
            parts.append(cached.loc[wanted].reset_index(drop=True).assign(model=self.model))
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

    def plan(self, items: list) -> dict[str, int]:
        """How much of ``items`` the job computes and how much it takes from the cache."""
        todo = self.missing(items)
        cells = {(item.cell, item.task) for item in items}
        computed_cells = {(item.cell, item.task) for item in todo}
        return {
            "cells": len({cell for cell, _ in cells}),
            "cells_to_compute": len({cell for cell, _ in computed_cells}),
            "prompts": sum(len(item.rows) for item in items),
            "prompts_to_compute": sum(len(item.rows) for item in todo),
        }


def _grouped(items: list) -> dict:
    groups: dict = {}
    for item in items:
        groups.setdefault((item.cell, item.task), []).append(item)
    return groups


def describe_plan(job: str, plan: dict[str, int]) -> str:
    """One line of the dry run: what an inference job computes and what it takes from the cache."""
    cached_cells = plan["cells"] - plan["cells_to_compute"]
    return (
        f"{job}: computes {plan['cells_to_compute']} of {plan['cells']} cells "
        f"({plan['prompts_to_compute']} of {plan['prompts']} prompts), {cached_cells} cells from the cache"
    )


def cache_contents(root: str | Path) -> pd.DataFrame:
    """One row per cached cell: model, method, ratio, task, prompts, bytes, folder."""
    import pyarrow.parquet as pq

    rows = []
    for key_file in sorted(Path(root).glob("*/*/*/*/key.json")):
        folder = key_file.parent
        key = json.loads(key_file.read_text())
        entries = [p for p in folder.glob("[!.]*.parquet") if parquet_problem(p) is None]
        rows.append(
            {
                "model": folder.parts[-4],
                "method": key["method"],
                "compression_ratio": key["params"].get("compression_ratio"),
                "task": key["task"],
                "prompts": sum(pq.ParquetFile(p).metadata.num_rows for p in entries),
                "batches": len(entries),
                "bytes": sum(p.stat().st_size for p in folder.iterdir()),
                "engine": key["engine"],
                "device": key["device"],
                "folder": str(folder),
            }
        )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sparse_frontier.cache", description="What the inference cache holds."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("ls", help="list the cached cells (one line per model, method, ratio, task)")
    ls.add_argument("--root", default=DEFAULT_ROOT, help=f"the cache folder (default {DEFAULT_ROOT})")
    ls.add_argument("--model", help="only this model (its name in the config)")
    ls.add_argument("--method", help="only this method")
    ls.add_argument("--folders", action="store_true", help="show each cell's folder (to delete one)")
    args = parser.parse_args(argv)

    contents = cache_contents(args.root)
    if contents.empty:
        print(f"The inference cache at {args.root} is empty.")
        return 0
    if args.model:
        contents = contents[contents.model == args.model]
    if args.method:
        contents = contents[contents.method == args.method]
    columns = ["model", "method", "compression_ratio", "task", "prompts", "batches", "engine", "device"]
    columns += ["folder"] if args.folders else []
    with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_colwidth", 120):
        print(contents.sort_values(columns[:4])[columns].to_string(index=False))
    print(
        f"{len(contents)} cells, {int(contents.prompts.sum())} prompts, "
        f"{contents.bytes.sum() / 2**20:.1f} MiB in {args.root}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
