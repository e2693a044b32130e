"""The project's code version (git commit plus uncommitted diff) and the per-run code snapshot."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Never part of a code snapshot: the runner's own state, the tracking store (and SQLite's journal files,
# which come and go while runs log), DVC-tracked data.
EXCLUDED = (".git", ".runner", "mlruns", "data", ".dvc/cache")
EXCLUDED_PREFIXES = ("mlflow.db",)


@dataclass(frozen=True)
class CodeVersion:
    commit: str | None  # None outside a git repository
    dirty: bool
    diff: str  # `git diff` against the commit, untracked files included; binary-safe


def _git(project_dir: Path, *args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> str:
    return subprocess.run(
        ["git", *args], cwd=project_dir, check=True, capture_output=True, text=True, env=env, input=stdin
    ).stdout


def code_version(project_dir: Path) -> CodeVersion:
    try:
        # One call says the commit and whether anything at all differs from it (then no diff is made).
        status = _git(
            project_dir,
            "--no-optional-locks",
            "status",
            "--porcelain=v2",
            "--branch",
            "--untracked-files=all",
            "-z",
        )
    except (subprocess.CalledProcessError, FileNotFoundError):
        return CodeVersion(commit=None, dirty=True, diff="")
    entries = [e for e in status.split("\0") if e]
    oid = next((e.split()[2] for e in entries if e.startswith("# branch.oid ")), "(initial)")
    if oid != "(initial)" and all(e.startswith("# ") for e in entries):
        return CodeVersion(commit=oid, dirty=False, diff="")
    try:
        commit = _git(project_dir, "rev-parse", "HEAD").strip()
    except subprocess.CalledProcessError:  # no commit yet
        return CodeVersion(commit=None, dirty=True, diff="")
    # Stage everything into a throw-away index so untracked files appear in the diff too.
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(tmp) / "index")}
        _git(project_dir, "read-tree", "HEAD", env=env)
        files = "\0".join(project_files(project_dir))
        if files:
            _git(
                project_dir,
                "add",
                "-A",
                "--pathspec-from-file=-",
                "--pathspec-file-nul",
                env=env,
                stdin=files,
            )
        diff = _git(project_dir, "diff", "--cached", "--binary", "HEAD", env=env)
    return CodeVersion(commit=commit, dirty=bool(diff), diff=diff)


def project_files(project_dir: Path) -> list[str]:
    """Tracked and untracked-but-not-ignored files, relative to the project."""
    try:
        out = _git(project_dir, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
        names = [n for n in out.split("\0") if n]
    except (subprocess.CalledProcessError, FileNotFoundError):
        names = [
            str(p.relative_to(project_dir)) for p in project_dir.rglob("*") if p.is_file() or p.is_symlink()
        ]
    return sorted(
        n
        for n in set(names)
        if not any(n == e or n.startswith(e + "/") for e in EXCLUDED) and not n.startswith(EXCLUDED_PREFIXES)
    )


def snapshot(project_dir: Path, dest: Path) -> int:
    """Copy the working tree as it is now (commit plus uncommitted changes) to dest; returns the file count."""
    count = 0
    for name in project_files(project_dir):
        src = project_dir / name
        if not (src.is_file() or src.is_symlink()):
            continue  # deleted in the working tree
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=False)
        count += 1
    return count
