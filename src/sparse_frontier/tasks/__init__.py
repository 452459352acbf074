"""Long-context tasks, registered by the name the config uses.

``get_task(name)`` imports every task module first, so every task (the paper's nine and
the extensions) is registered whichever one is asked for.
"""

from __future__ import annotations

import importlib
import inspect

from .base import FittedTask, Instance, Sample, Task

TASKS: dict[str, type[Task]] = {}

# One module per task family; importing a module registers its tasks.
_TASK_MODULES = ("qa", "ruler_niah", "ruler_niah_single", "ruler_vt", "ruler_cwe", "story")


def register(cls: type[Task]) -> type[Task]:
    """Class decorator: make a task selectable by its ``name``."""
    if cls.name in TASKS and TASKS[cls.name] is not cls:
        raise ValueError(f"Two task classes are registered as '{cls.name}'; task names must be unique.")
    TASKS[cls.name] = cls
    return cls


def load_all() -> dict[str, type[Task]]:
    """Import every task module (registering its tasks) and return the registry."""
    for module in _TASK_MODULES:
        importlib.import_module(f"{__name__}.{module}")
    return TASKS


def _task_class(name: str) -> type[Task]:
    load_all()
    if name not in TASKS:
        raise KeyError(f"Unknown task '{name}'; choose one of: {', '.join(sorted(TASKS))}.")
    return TASKS[name]


def get_task(name: str, **params) -> Task:
    """Build a task by registry name; an unknown name lists the known ones."""
    return _task_class(name)(**params)


def task_parameters(name: str) -> dict[str, object]:
    """The parameters a task's generator takes, with their defaults."""
    signature = inspect.signature(_task_class(name).__init__)
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name: p.default for p in list(signature.parameters.values())[1:] if p.kind in named}


__all__ = [
    "TASKS",
    "FittedTask",
    "Instance",
    "Sample",
    "Task",
    "get_task",
    "load_all",
    "register",
    "task_parameters",
]
