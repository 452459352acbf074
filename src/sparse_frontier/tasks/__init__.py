"""Long-context tasks, registered by the name the config uses."""

from __future__ import annotations

from .base import Sample, Task

TASKS: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
    """Class decorator: make a task selectable by its ``name``."""
    TASKS[cls.name] = cls
    return cls


def get_task(name: str, **params) -> Task:
    """Build a task by registry name; an unknown name lists the known ones."""
    from . import ruler_niah  # noqa: F401  (registers on import)

    if name not in TASKS:
        raise KeyError(f"Unknown task '{name}'; choose one of: {', '.join(sorted(TASKS))}.")
    return TASKS[name](**params)


__all__ = ["TASKS", "Sample", "Task", "get_task", "register"]
