"""`runner data add NAME PATH` and `runner data add NAME --from-run RUN_ID`: the next version of a dataset."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from runner.datasets import catalog
from runner.datasets.entry import check_name
from runner.datasets.errors import DatasetError
from runner.datasets.repo import COMMITTED, DATA_DIR, DVC_FILE, DataRepo


@dataclass(frozen=True)
class Added:
    version: catalog.Version
    new: bool  # False: identical to the latest version, which is returned instead


def add(
    project: Path, name: str, source: Path, message: str | None = None, from_run: str | None = None
) -> Added:
    check_name(name)
    if not source.exists():
        raise DatasetError(f"{source} does not exist. Give a file or a folder: runner data add {name} PATH")
    repo = DataRepo(project)
    with repo.lock(), _as_folder(source, project) as folder:
        if not any(p.is_file() for p in folder.rglob("*")):
            raise DatasetError(f"{source} holds no files: a dataset needs at least one.")
        repo.ensure_ready()
        md5 = _md5(repo, folder)
        existing = catalog.versions(repo, name)
        if existing and existing[-1].md5 == md5:
            return Added(existing[-1], new=False)
        repo.sync_workspace()
        number = existing[-1].number + 1 if existing else 1
        version = _commit(repo, name, number, folder, message or f"from {source.name}", from_run)
    _push(repo, version)
    return Added(version, new=True)


@contextmanager
def _as_folder(source: Path, project: Path) -> Iterator[Path]:
    """A folder holding the data: the source itself, or a folder holding the one file given."""
    if source.is_dir():
        yield source
        return
    (project / ".runner").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=project / ".runner", prefix="data-") as tmp:
        shutil.copy2(source, Path(tmp) / source.name)
        yield Path(tmp)


def _md5(repo: DataRepo, folder: Path) -> str:
    """DVC's checksum of the folder, computed the way `dvc add` does, without storing anything."""
    from dvc_data.hashfile.build import build
    from dvc_objects.fs.local import LocalFileSystem

    _, _, obj = build(repo.dvc.cache.local, str(folder), LocalFileSystem(), "md5", dry_run=True)
    return str(obj.hash_info.value)


def _commit(
    repo: DataRepo, name: str, number: int, folder: Path, message: str, from_run: str | None
) -> catalog.Version:
    """Put the folder in data/NAME, `dvc add data`, commit data.dvc, tag it. Undone as a whole on failure."""
    head = repo.rev("HEAD")
    target = repo.data / name
    try:
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(folder, target, symlinks=False)
        repo.run_dvc("add", DATA_DIR)
        md5 = repo.workspace_md5(name)
        files = [p for p in target.rglob("*") if p.is_file()]
        size = sum(p.stat().st_size for p in files)
        paths = [p for p in COMMITTED if (repo.root / p).exists()]
        repo.git("add", "--", *paths)
        repo.git("commit", "--quiet", "-m", f"data: {name}@{number}", "--only", "--", *paths)
        tag = catalog.tag_name(name, number)
        repo.git(
            "tag", "-a", tag, "-F", "-", stdin=catalog.tag_message(message, md5, len(files), size, from_run)
        )
    except BaseException:
        _undo(repo, head)
        raise
    return next(v for v in catalog.versions(repo, name) if v.number == number)


def _undo(repo: DataRepo, head: str | None) -> None:
    """Back to the last committed state: data.dvc as at `head`, and data/ checked out to match."""
    if repo.rev("HEAD") != head and head is not None:
        repo.git("reset", "--soft", head)
    if head is not None and repo.top_md5(head):
        repo.git("checkout", head, "--", DVC_FILE)
        repo.sync_workspace()
    else:  # the first version: data/ held nothing before
        (repo.root / DVC_FILE).unlink(missing_ok=True)
        shutil.rmtree(repo.data, ignore_errors=True)


def _push(repo: DataRepo, version: catalog.Version) -> None:
    from dvc.exceptions import DvcException

    try:
        repo.run_dvc("push", targets=[f"{DATA_DIR}/{version.name}"])
    except DvcException as exc:
        raise DatasetError(
            f"{version.label} was made, but pushing it to {repo.remote_label()} failed ({exc}). "
            "Push it later with: dvc push"
        ) from exc
