"""Checks of a study that run when Snakemake reads the workflow, before any job.

Each failed check raises :class:`ConfigError` with one sentence that names the key or path and
what would fix it, so a mistake costs a second instead of a job (or a GPU-hour).
"""

from __future__ import annotations

import difflib
import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path

import yaml

#: Files that hold a model's weights in a Hugging Face folder (sharded ones have an index too).
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf")

#: What the KV-cache sizing of a job needs from a model, by the keys of ``models.<m>.resources``.
SHAPE_KEYS = ("layers", "kv_heads", "head_dim", "attention_heads")

#: The config.json fields those come from (KV heads and head size have defaults).
GEOMETRY_FIELDS = ("num_hidden_layers", "num_attention_heads", "hidden_size")


class ConfigError(ValueError):
    """A mistake in the study's configuration or its inputs, named in one sentence."""


def did_you_mean(name: str, options) -> str:
    """The end of a sentence: ``; did you mean `x`?`` for the closest option, else ``; valid: a, b.``"""
    options = sorted(str(o) for o in options)
    close = difflib.get_close_matches(str(name), options, n=1, cutoff=0.6)
    if close:
        return f"; did you mean `{close[0]}`?"
    return f"; valid: {', '.join(options)}." if options else "."


def _where(path) -> str:
    """``models.tiny-qwen2: `` for a nested key, nothing at the top level."""
    return ".".join(str(p) for p in path) + ": " if path else ""


def _unknown_names(config, schema: Mapping, path: tuple = ()) -> str | None:
    """The first key or enum value of ``config`` that the schema does not know, as a sentence."""
    if isinstance(config, Mapping) and schema.get("type", "object") == "object":
        known = schema.get("properties", {})
        names = schema.get("propertyNames", {}).get("enum")
        extra = schema.get("additionalProperties", True)
        for key, value in config.items():
            if names is not None and key not in names:
                return f"{_where(path)}unknown name `{key}`{did_you_mean(key, names)}"
            if key in known:
                sub = known[key]
            elif extra is False:
                return f"{_where(path)}unknown key `{key}`{did_you_mean(key, known)}"
            elif isinstance(extra, Mapping):
                sub = extra
            else:
                continue
            found = _unknown_names(value, sub, (*path, key))
            if found:
                return found
    elif isinstance(config, list) and isinstance(schema.get("items"), Mapping):
        for value in config:
            found = _unknown_names(value, schema["items"], path)
            if found:
                return found
    elif isinstance(config, str) and "enum" in schema and config not in schema["enum"]:
        return f"{_where(path)}unknown value `{config}`{did_you_mean(config, schema['enum'])}"
    return None


def check_config_schema(config: Mapping, schema_path: str | os.PathLike) -> None:
    """Stop on the first key, name or value the schema refuses, in one sentence.

    A misspelt key or name gets the closest valid one. Snakemake's own validation (which also
    fills the defaults) comes after this and then finds nothing to say; its message would end in
    a dump of the whole config, burying the key.
    """
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    unknown = _unknown_names(config, schema)
    if unknown:
        raise ConfigError(f"{unknown} (config/schema.yaml documents every key)")
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema).iter_errors(dict(config))
    )
    if error is not None:
        raise ConfigError(
            f"{_where(error.absolute_path)}{error.message} (config/schema.yaml documents every key)."
        )


def check_analysis_methods(phase_methods: Mapping[str, str], methods: Mapping) -> None:
    """Every ``analysis.phase_methods`` entry names a configured method of that phase."""
    from .attention import METHODS, analysis_phase, get_method

    for phase, name in phase_methods.items():
        key = f"analysis.phase_methods.{phase}"
        if name not in methods:
            raise ConfigError(
                f"{key}: `{name}` is not a configured method{did_you_mean(name, methods)} "
                "Name one of `methods`, or leave the phase out to analyse its best-scoring method."
            )
        get_method(name)  # loads the registry
        if analysis_phase(METHODS[name].phase) != phase:
            raise ConfigError(
                f"{key}: `{name}` is a {METHODS[name].phase} method, not a {phase} one; "
                f"name a configured {phase} method or leave the phase out."
            )


def check_params_by_task(methods: Mapping, tasks: list[str]) -> None:
    """Every ``methods.<m>.params_by_task`` key names a task of the study."""
    from .tasks import load_all

    for method, spec in methods.items():
        for task in spec.get("params_by_task", {}):
            if task not in tasks:
                hint = "." if task in load_all() else did_you_mean(task, tasks)
                raise ConfigError(
                    f"methods.{method}.params_by_task: `{task}` is not in `tasks`{hint} "
                    "Add it to `tasks` or remove its parameters."
                )


# ---- models: a local folder with a config and weights, or a hub id in reach


def looks_local(path: str) -> bool:
    """A filesystem path rather than a hub id (``owner/name``)."""
    return path.startswith(("/", ".", "~")) or path.count("/") > 1 or Path(path).expanduser().exists()


def _has_weights(folder: Path) -> bool:
    return any(next(folder.glob(pattern), None) for pattern in WEIGHT_PATTERNS)


def _cached_snapshot(repo_id: str) -> Path | None:
    """The local Hugging Face cache's snapshot folder of ``repo_id`` when it holds config.json."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _hub_lookup(repo_id: str) -> str | None:
    """None when the hub serves ``repo_id``; 'missing' when it does not; 'unreachable' without network."""
    from huggingface_hub import model_info
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        model_info(repo_id, timeout=10)
    except GatedRepoError:
        return "gated"
    except RepositoryNotFoundError:
        return "missing"
    except Exception:  # noqa: BLE001 - any transport failure means the same: no answer from the hub
        return "unreachable"
    return None


def check_model_source(name: str, path: str, *, dry_run: bool = False) -> None:
    """The model ``name`` at ``path`` can be loaded by its jobs.

    A local folder must hold a config.json and weights. A hub id must be in the local Hugging Face
    cache or served by the hub; when the hub cannot be reached a dry run still plans (it loads
    nothing), a real run stops.
    """
    key = f"models.{name}.path"
    if looks_local(path):
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise ConfigError(
                f"{key}: the folder {path} does not exist; point `path` at a model folder "
                "(config.json and weights) or a Hugging Face hub id such as Qwen/Qwen2.5-7B-Instruct."
            )
        if not (folder / "config.json").is_file() or not _has_weights(folder):
            lacks = (
                "config.json"
                if not (folder / "config.json").is_file()
                else "weights (*.safetensors or *.bin)"
            )
            raise ConfigError(
                f"{key}: the folder {path} has no {lacks}; it must be a Hugging Face model folder."
            )
        return
    snapshot = _cached_snapshot(path)
    if snapshot is not None:
        return
    if _hub_offline():
        raise ConfigError(
            f"{key}: {path} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
            f"download it first (`hf download {path}`) or unset HF_HUB_OFFLINE."
        )
    problem = _hub_lookup(path)
    if problem == "missing":
        raise ConfigError(
            f"{key}: the Hugging Face hub has no model {path} (or it is private); check the id, "
            "or log in (`hf auth login`) if it is private."
        )
    if problem == "gated":
        raise ConfigError(
            f"{key}: {path} is gated on the Hugging Face hub; accept its licence on its hub page and "
            "log in (`hf auth login`), or point `path` at a local copy."
        )
    if problem == "unreachable" and not dry_run:
        raise ConfigError(
            f"{key}: {path} is not in the local Hugging Face cache and the hub cannot be reached; "
            f"download it where there is network (`hf download {path}`) and run with HF_HUB_OFFLINE=1, "
            "or point `path` at a local model folder."
        )


#: Where the workflow writes a model it makes (the output of rules build_tiny_model, convert_gguf).
MADE_MODEL_DIR = "results/models"


def check_made_model(name: str, spec: Mapping) -> None:
    """A model the workflow makes (``build`` or ``gguf``) is written where its ``path`` points, and
    a GGUF model can be planned before its folder exists (its ``resources`` give the geometry)."""
    makers = [key for key in ("build", "gguf") if key in spec]
    if len(makers) > 1:
        raise ConfigError(
            f"models.{name}: `build` and `gguf` both make the model; keep one (build: a random-weight "
            "model, gguf: a trained one converted from PyPI)."
        )
    expected = f"{MADE_MODEL_DIR}/{name}"
    if Path(spec["path"]) != Path(expected):
        raise ConfigError(
            f"models.{name}.path: the workflow writes this model ({makers[0]}) to {expected}; "
            f"set `path: {expected}`."
        )
    given = spec.get("resources", {})
    converted = (Path(expected) / "config.json").is_file()
    if "gguf" in spec and not converted and not all(key in given for key in SHAPE_KEYS):
        missing = ", ".join(key for key in SHAPE_KEYS if key not in given)
        raise ConfigError(
            f"models.{name}: its jobs are planned before the GGUF is converted, so they need its "
            f"KV-cache geometry; set models.{name}.resources.{{{missing}}} (from the model card or the "
            "GGUF header)."
        )


def check_models(models: Mapping[str, Mapping], *, dry_run: bool = False) -> None:
    """Every model the workflow does not make can be loaded (:func:`check_model_source`) and
    sized for its jobs: its ``resources`` give the KV-cache geometry, or its config.json does.
    A model it makes is checked by :func:`check_made_model`."""
    for name, spec in models.items():
        if "build" in spec or "gguf" in spec:
            check_made_model(name, spec)
            continue
        check_model_source(name, spec["path"], dry_run=dry_run)
        given = spec.get("resources", {})
        if all(key in given for key in SHAPE_KEYS):
            continue
        missing = ", ".join(key for key in SHAPE_KEYS if key not in given)
        hf_config = model_config_json(spec["path"])
        if hf_config is None:
            raise ConfigError(
                f"models.{name}: its jobs cannot be sized without its config.json, which is in neither its "
                f"folder nor the local Hugging Face cache and the hub cannot be reached; fetch it "
                f"(`hf download {spec['path']} config.json`) or set models.{name}.resources.{{{missing}}}."
            )
        lacks = [key for key in GEOMETRY_FIELDS if key not in hf_config.get("text_config", hf_config)]
        if lacks:
            raise ConfigError(
                f"models.{name}: its config.json lacks {', '.join(lacks)}, which size its jobs; "
                f"set models.{name}.resources.{{{missing}}}."
            )


# ---- a model's shape for the cluster sizing, from its config.json


def kv_geometry(hf_config: Mapping) -> dict[str, int]:
    """Layers, KV heads, head size and query heads from a Hugging Face ``config.json`` dict
    (``text_config`` of a multimodal one), with the defaults transformers applies."""
    cfg = hf_config.get("text_config", hf_config)
    heads = int(cfg["num_attention_heads"])
    return {
        "layers": int(cfg["num_hidden_layers"]),
        "kv_heads": int(cfg.get("num_key_value_heads") or heads),
        "head_dim": int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads),
        "attention_heads": heads,
    }


@functools.cache
def model_config_json(path: str) -> dict | None:
    """A model's config.json from its local folder or the local Hugging Face cache, else fetched
    from the hub into that cache (once); None when neither has it."""
    if looks_local(path):
        local = Path(path).expanduser() / "config.json"
        return json.loads(local.read_text()) if local.is_file() else None
    snapshot = _cached_snapshot(path)
    if snapshot is None and not _hub_offline():
        from huggingface_hub import hf_hub_download

        try:
            snapshot = Path(hf_hub_download(path, "config.json", etag_timeout=10)).parent
        except Exception:  # noqa: BLE001 - no config to read; the caller names what to set instead
            return None
    return json.loads((snapshot / "config.json").read_text()) if snapshot else None


def model_shape_from_config(path: str) -> dict[str, int] | None:
    """:func:`kv_geometry` of the model at ``path`` (hub id or folder), or None if no complete
    config is at hand."""
    config = model_config_json(path)
    if not config or any(key not in config.get("text_config", config) for key in GEOMETRY_FIELDS):
        return None
    return kv_geometry(config)


# ---- the entry points the workflow calls


def plans_only(argv: list[str]) -> bool:
    """Whether a Snakemake command line runs no job (a dry run, a lint, a summary, a report):
    such a command may plan a study whose models this machine cannot reach."""
    flags = {
        "--dry-run",
        "--dryrun",
        "--lint",
        "--list-changes",
        "--lc",
        "--summary",
        "--detailed-summary",
        "--report",
        "--dag",
        "--rulegraph",
        "--filegraph",
        "--list-rules",
    }
    for arg in argv:
        if arg.split("=")[0] in flags:
            return True
        if arg.startswith("-") and not arg.startswith("--") and "n" in arg[1:] and arg[1:].isalpha():
            return True  # -n, also bundled as -np
    return False


def is_dry_run(argv: list[str]) -> bool:
    """Whether a Snakemake command line is a dry run (``-n``, bundled as ``-np``, or ``--dry-run``)."""
    return any(
        arg in ("--dry-run", "--dryrun")
        or (arg.startswith("-") and not arg.startswith("--") and arg[1:].isalpha() and "n" in arg[1:])
        for arg in argv
    )


def inside_a_job(argv: list[str]) -> bool:
    """Whether this is Snakemake re-reading the workflow to run jobs it was handed (a cluster job):
    the submitting process checked the study already, and a compute node may have no network."""
    return "--target-jobs" in argv


def stop_on_mistake(check, *args, **kwargs) -> None:
    """Run ``check``; a mistake it finds ends the process with its one sentence as the last line
    on screen (Snakemake would follow an exception with its traceback)."""
    try:
        check(*args, **kwargs)
    except ConfigError as err:
        raise SystemExit(f"Error in the config: {err}") from None


def check_study(config: Mapping, argv: list[str]) -> None:
    """Every check of a validated config that needs no job, in the order a reader would fix them."""
    from .pipeline import cells_from_config, check_cells, study_task_params

    def checks():
        tasks = list(config["tasks"])
        check_params_by_task(config["methods"], tasks)
        check_analysis_methods(config.get("analysis", {}).get("phase_methods", {}), config["methods"])
        try:  # the method and task parameter checks say their own sentence
            check_cells(cells_from_config(config["methods"]), tasks)
            study_task_params(config.get("task_params", {}), tasks)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if not inside_a_job(argv):
            check_models(config["models"], dry_run=plans_only(argv))

    stop_on_mistake(checks)


def check_config(config: Mapping, schema_path: str | os.PathLike) -> None:
    """:func:`check_config_schema`, ending the process with its sentence on a mistake."""
    stop_on_mistake(check_config_schema, config, schema_path)
