"""A full filesystem, said in one line: which one is full, and what frees space on it.

Whatever meets it (the store, a run's folder, the image cache, the engine's data root) is told apart by what
raised: an `OSError` with ENOSPC (its file names the filesystem), SQLite's "database or disk is full" (the store's
file), or an engine's "no space left on device" (the engine's data root)."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

from runner.errors import RunnerError
from runner.runs.rundir import RUNS

ROOM = 1 << 20  # bytes free under which a filesystem counts as full: a record's next write would not fit
START_ROOM = 16 << 20  # bytes free a run needs to start: its folder, its record's first rows
FULL_WORDS = ("no space left on device", "database or disk is full", "disk quota exceeded")


class DiskFull(RunnerError):
    exit_code = 1


def is_full(exc: BaseException | None) -> bool:
    """Whether `exc`, or what it was raised from, is a filesystem with no space left."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(words in str(exc).lower() for words in FULL_WORDS):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def full_path(exc: BaseException | None) -> Path | None:
    """The file whose write met the full filesystem, where what raised names one."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.filename:
            return Path(os.fsdecode(exc.filename))
        exc = exc.__cause__ or exc.__context__
    return None


def mount_of(path: Path) -> Path:
    """The mount point of the filesystem holding `path` (or the nearest folder of it that exists)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: Path) -> int:
    st = os.statvfs(mount_of(path))
    return st.f_bavail * st.f_frsize


def has_room(path: Path, room: int = ROOM) -> bool:
    try:
        return free_bytes(path) >= room
    except OSError:
        return True  # nothing to tell: the write itself says


def size(folder: Path) -> int:
    """Bytes of the files under `folder`, links not followed."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def biggest_runs(project: Path | None, count: int = 3) -> list[tuple[str, int]]:
    runs = project / RUNS if project is not None else None
    if runs is None or not runs.is_dir():
        return []
    sizes = [(p.name, size(p)) for p in runs.iterdir() if p.is_dir() and not p.is_symlink()]
    return sorted(sizes, key=lambda item: -item[1])[:count]


def said(where: Path, project: Path | None, what: str = "", lead: str = "no space left on") -> str:
    """The one line: the full filesystem (`where` is on it), how full, and what frees space."""
    mount = mount_of(where)
    try:
        st = os.statvfs(mount)
        room = f" ({megabytes(st.f_bavail * st.f_frsize)} free of {megabytes(st.f_blocks * st.f_frsize)})"
    except OSError:
        room = ""
    big = ", ".join(f"{run_id} {megabytes(n)}" for run_id, n in biggest_runs(project))
    frees = "`runner gc` frees what no run uses"
    if big:
        frees += (
            f"; the biggest runs here: {big} (a run deleted from the record, `mlflow runs delete --run-id ID`, "
            "has its folder freed by `runner gc`, its artifacts by `mlflow gc`)"
        )
    return f"{lead} the filesystem at {mount}{room}{what}: {frees}."


def megabytes(n: int) -> str:
    return f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def reason(exc: BaseException) -> str | None:
    """A run's ending where a full filesystem ended it before its owner had it; None for any other error."""
    if not is_full(exc):
        return None
    where = full_path(exc)
    return (
        f"no space left on the filesystem at {mount_of(where)}" if where else "no space left on a filesystem"
    )


def free_deleted_runs(project: Path, uri: str) -> str | None:
    """The folders of runs that ended and were deleted from the record (`mlflow runs delete`, the UI's delete):
    removed, links in them never followed; how much was freed, or None."""
    import shutil

    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client, freed, count = MlflowClient(uri), 0, 0
    runs = project / RUNS
    for folder in sorted(runs.iterdir()) if runs.is_dir() else []:
        if folder.is_symlink() or not (folder / "ended.json").is_file():
            continue
        try:
            gone = client.get_run(folder.name).info.lifecycle_stage == "deleted"
        except MlflowException:  # no such run in the record any more
            gone = True
        if gone:
            freed, count = freed + size(folder), count + 1
            shutil.rmtree(folder, ignore_errors=True)
    return f"Removed the folders of {count} deleted run(s); freed {megabytes(freed)}." if count else None


def check_room(project: Path, uri: str) -> None:
    """Before anything of a run exists: the filesystems of its folder, the project's own store and the image
    cache have room for what it writes first (a run that fills one later is recorded once there is room again)."""
    from runner.environment.lock import cache_dir

    store = [Path(uri.removeprefix("sqlite:///"))] if uri.startswith("sqlite:///") else []
    for where in [project / RUNS, *store, cache_dir()]:
        if not has_room(where, START_ROOM):
            raise DiskFull(said(where, project, f", which holds {where}"))


def as_error(exc: BaseException, project: Path | None, store: Callable[[], Path | None]) -> DiskFull | None:
    """`exc` as one line where it is a full filesystem (`store`: the store's file, for a store that said so),
    else None."""
    if isinstance(exc, DiskFull) or not is_full(exc):
        return exc if isinstance(exc, DiskFull) else None
    where = full_path(exc)
    if where is None and "database or disk is full" in str(exc).lower():
        where = store()
    if where is None and "no space left on device" in str(exc).lower():
        where = engine_root()
    where = where or project or Path.cwd()
    return DiskFull(said(where, project, f", which holds {where}"))


def engine_root() -> Path | None:
    """Docker's data root, where an engine said it is full (building or starting a container)."""
    try:
        import docker

        return Path(docker.from_env().info()["DockerRootDir"])
    except Exception:
        return None
