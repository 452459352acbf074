"""Small I/O helpers: atomic writes (nothing half-written is left behind, and what is written gets
the user's umask, as a plain ``open`` would), Parquet files checked for readability, script logging."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path


def current_umask() -> int:
    """The process's umask (read by setting it, so set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | Path) -> None:
    """Give a file or folder the permissions ``open``/``mkdir`` would: ``mkstemp`` and ``mkdtemp``
    create them private (0600/0700), which hides shared results from collaborators."""
    base = 0o777 if Path(path).is_dir() else 0o666
    os.chmod(path, base & ~current_umask())


def make_temp_dir(beside: str | Path) -> Path:
    """A fresh hidden folder next to ``beside`` (to fill, then rename onto it), with the umask's mode."""
    beside = Path(beside)
    beside.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=beside.parent, prefix=f".{beside.name}."))
    apply_umask(tmp)
    return tmp


@contextmanager
def atomic_dir(path: str | Path):
    """Yield a fresh folder beside ``path`` (with the umask's mode) that replaces ``path`` only if the
    block succeeds; otherwise it is removed, so no half-written folder is ever left at ``path``."""
    path = Path(path)
    tmp = make_temp_dir(path)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds.

    The file is flushed to disk before the rename, so a machine that dies right after leaves
    either the old file or the whole new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        apply_umask(tmp)
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_parquet(df, path: str | Path) -> None:
    """Write a DataFrame to Parquet atomically."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_text(text: str, path: str | Path) -> None:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def parquet_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a readable Parquet file (truncated, empty, not Parquet), or None if it is.

    Reads only the footer: a file cut short loses its footer first.
    """
    import pyarrow.parquet as pq

    try:
        pq.ParquetFile(path).close()
    except Exception as err:  # pyarrow raises several types for a broken file
        return f"{type(err).__name__}: {err}".splitlines()[0]
    return None


def remove_unreadable_parquets(folder: str | Path, skip: tuple[str, ...] = ()) -> list[tuple[Path, str]]:
    """Delete every unreadable ``*.parquet`` under ``folder`` (outside its ``skip`` subfolders and
    hidden files, which are writes in progress), so that the workflow sees it missing and rebuilds
    it and what depends on it; returns each file removed with what was wrong with it."""
    folder = Path(folder)
    removed = []
    for path in sorted(folder.rglob("*.parquet")) if folder.is_dir() else []:
        relative = path.relative_to(folder)
        if relative.parts[0] in skip or any(part.startswith(".") for part in relative.parts):
            continue
        problem = parquet_problem(path)
        if problem is not None:
            path.unlink()
            removed.append((path, problem))
    return removed


def log_to_file(log_path: str | Path | None, level: int = logging.INFO) -> None:
    """Send logging and stderr (tracebacks, progress bars) of a Snakemake script to its rule's log."""
    if log_path is None:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    stream = open(log_path, "a", buffering=1)  # noqa: SIM115 - lives as long as the script
    sys.stderr = stream
    logging.basicConfig(
        level=level, stream=stream, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )


def terminal():
    """The stream of the terminal Snakemake runs in (stderr before :func:`log_to_file` moved it),
    for progress a person watches live while the log keeps the record."""
    return sys.__stderr__ or sys.stderr
