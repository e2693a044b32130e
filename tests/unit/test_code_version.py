"""The code version recorded with each run: the commit, and whether (and how) the project's files differ from it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from runner.tracking.code import CodeVersion, code_version


def git(where: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", *args],
        cwd=where,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def committed(where: Path) -> str:
    git(where, "init", "-q", ".")
    (where / "train.py").write_text("print('hi')\n")
    git(where, "add", "-A")
    git(where, "commit", "-qm", "first")
    return git(where, "rev-parse", "HEAD").strip()


def test_a_clean_checkout_is_its_commit_with_no_diff(tmp_path: Path) -> None:
    head = committed(tmp_path)
    assert code_version(tmp_path) == CodeVersion(commit=head, dirty=False, diff="")


def test_a_changed_and_a_new_file_make_it_dirty_with_both_in_the_diff(tmp_path: Path) -> None:
    head = committed(tmp_path)
    (tmp_path / "train.py").write_text("print('changed')\n")
    (tmp_path / "new.py").write_text("x = 1\n")
    version = code_version(tmp_path)
    assert version.commit == head and version.dirty
    assert "+print('changed')" in version.diff and "+x = 1" in version.diff


def test_the_runners_own_folders_and_changes_outside_the_project_leave_it_clean(tmp_path: Path) -> None:
    head = committed(tmp_path)
    project = tmp_path / "project"
    project.mkdir()
    (project / "model.py").write_text("y = 2\n")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "project")
    head = git(tmp_path, "rev-parse", "HEAD").strip()
    (tmp_path / "train.py").write_text("print('elsewhere')\n")  # the repository's, not the project's
    (project / "mlruns").mkdir()
    (project / "mlruns" / "meta.yaml").write_text("x: 1\n")  # the store: never code
    assert code_version(project) == CodeVersion(commit=head, dirty=False, diff="")


def test_no_repository_or_no_commit_yet_is_no_commit(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("print('hi')\n")
    outside = code_version(tmp_path)
    git(tmp_path, "init", "-q", ".")
    assert outside.commit is None and code_version(tmp_path).commit is None
