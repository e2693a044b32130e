"""A run's `data=[...]`: each entry resolved to an exact version and materialised once per checksum.

Materialised copies live in `.runner/datasets/MD5/`: hard links into the DVC cache (a copy only where the cache
is on another file system), files 0444 and folders 0555, built in a temporary folder and renamed into place, so a
version is either complete or absent. Mounting a version that is already there reads one tag and stats one folder:
the cost does not grow with the data.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from runner.datasets import catalog
from runner.datasets.entry import DataMount, DataRef, parse_all
from runner.datasets.errors import ChecksumMismatch, DataMissing, UnknownDataset, UnknownVersion
from runner.datasets.repo import DataRepo

MOUNTS_DIR = Path(".runner") / "datasets"


def resolve(project: Path, entries: tuple[str, ...]) -> tuple[DataMount, ...]:
    """Every entry resolved and materialised; raises a RunnerError before anything of the run exists."""
    refs = parse_all(entries)
    if not refs:
        return ()
    repo = DataRepo(project)
    return tuple(_mount(repo, ref) for ref in refs)


def _mount(repo: DataRepo, ref: DataRef) -> DataMount:
    known = catalog.versions(repo)
    mine = [v for v in known if v.name == ref.name]
    if not mine:
        raise UnknownDataset(ref.name, sorted({v.name for v in known}))
    version = _pick(repo, ref, mine)
    tree = None
    if isinstance(version, catalog.Version):
        number, rev, md5 = str(version.number), version.rev, version.md5
    else:  # a git rev with no version tag on it
        rev = version
        tree = repo.tree(ref.name, rev)
        if tree is None:
            raise UnknownVersion(ref.name, ref.version, [v.number for v in mine])
        md5 = str(tree.hash_info.value)
        number = next((str(v.number) for v in mine if v.md5 == md5), ref.version)
    folder = repo.root / MOUNTS_DIR / md5.removesuffix(".dir")
    if not folder.is_dir():
        _materialise(repo, ref.name, rev, md5, tree, folder)
    files, size = _facts(version, folder)
    return DataMount(ref.name, number, rev, md5, files, size, str(folder), ref.target)


def _pick(repo: DataRepo, ref: DataRef, mine: list[catalog.Version]) -> catalog.Version | str:
    if ref.version == "latest":
        return mine[-1]
    if ref.version.isdigit():
        for v in mine:
            if v.number == int(ref.version):
                return v
        raise UnknownVersion(ref.name, ref.version, [v.number for v in mine])
    commit = repo.rev(ref.version)
    if commit is None:
        raise UnknownVersion(ref.name, ref.version, [v.number for v in mine])
    return next((v for v in mine if v.rev == commit), commit)


def _facts(version: catalog.Version | str, folder: Path) -> tuple[int, int]:
    if isinstance(version, catalog.Version):
        return version.files, version.size
    files = [p for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def _materialise(repo: DataRepo, name: str, rev: str, md5: str, tree: Any, folder: Path) -> None:
    """Link every file of the version from the DVC cache into `folder`, checked against its md5."""
    tree = tree if tree is not None else repo.tree(name, rev)
    if tree is None or tree.hash_info.value != md5:
        raise ChecksumMismatch(
            f"{name} at {rev[:12]}: data.dvc there does not hold checksum {md5}; the version tag and the "
            "commit disagree. Check the tag with: git show data/..."
        )
    odb = repo.dvc.cache.local
    entries = [(key, str(hi.value)) for key, _, hi in tree]
    if any(not odb.exists(oid) for _, oid in entries):
        repo.fetch(name, rev)
    tmp = folder.parent / f".tmp-{folder.name}-{uuid.uuid4().hex[:8]}"
    try:
        for key, oid in entries:
            src = odb.oid_to_path(oid)
            if not os.path.exists(src):
                raise DataMissing(f"{name} at {rev[:12]}, file {'/'.join(key)}", repo.remote_label())
            dst = tmp.joinpath(*key)
            dst.parent.mkdir(parents=True, exist_ok=True)
            _link(src, dst)
            _verify(name, key, oid, dst, src)
        _seal(tmp)
        try:
            tmp.rename(folder)
        except OSError as exc:  # a parallel run made it first: theirs is the same content
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    finally:
        if tmp.exists():
            _remove(tmp)


def _link(src: str, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.copy2(src, dst)  # the DVC cache is on another file system: one copy per checksum
    if dst.stat().st_mode & 0o222:
        os.chmod(dst, 0o444)


def _verify(name: str, key: tuple[str, ...], oid: str, dst: Path, src: str) -> None:
    h = hashlib.md5()
    with open(dst, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != oid:
        os.unlink(src)  # a damaged cache entry: drop it, so the next attempt fetches it again
        raise ChecksumMismatch(
            f"{name}: file {'/'.join(key)} has md5 {h.hexdigest()}, the version records {oid}. The damaged copy "
            "was removed from the DVC cache and nothing was mounted; run again to fetch it anew, and if this "
            "repeats the remote's copy is damaged: push a good one (dvc push)."
        )


def _seal(root: Path) -> None:
    for d, _, _ in os.walk(root):
        os.chmod(d, 0o555)


def _remove(root: Path) -> None:
    for d, _, _ in os.walk(root):
        os.chmod(d, 0o755)
    shutil.rmtree(root)


def link_into(run_root: Path, mounts: tuple[DataMount, ...]) -> None:
    """The local backend's layout: mount point /a/b is $RUNNER_ROOT/a/b, a link to the read-only copy."""
    for m in mounts:
        path = run_root.joinpath(*Path(m.target).parts[1:])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(m.source, target_is_directory=True)
