"""The runner's own files in a project (its state, the project's MLflow store) kept out of the project's
`git status`: those git does not ignore yet are added to the repository's own `.git/info/exclude`, never to a file
of the user's (`runner init` writes them into .gitignore, where a team shares them)."""

from __future__ import annotations

import fcntl
import subprocess
from pathlib import Path

# Each pattern, with a path git would meet it as.
OWN = {".runner/": ".runner/", "mlflow.db*": "mlflow.db", "mlruns/": "mlruns/"}


def exclude_own_files(project: Path) -> None:
    """Have git ignore the runner's files in `project`, where it does not already; nothing outside a git
    repository. Idempotent: a pattern git ignores (by any file) is not added again."""
    missing = _not_ignored(project)
    if not missing:
        return
    where = subprocess.run(
        ["git", "rev-parse", "--git-path", "info/exclude"], cwd=project, capture_output=True, text=True
    )
    if where.returncode != 0:
        return
    exclude = project / where.stdout.strip()
    exclude.parent.mkdir(parents=True, exist_ok=True)
    with open(exclude, "a+", encoding="utf-8") as fh:
        # Runs starting side by side: one writes, the others find it written.
        fcntl.flock(fh, fcntl.LOCK_EX)
        missing = _not_ignored(project)
        fh.seek(0)
        text = fh.read()
        if missing:
            sep = "" if not text or text.endswith("\n") else "\n"
            fh.write(f"{sep}# the runner's records and state\n" + "".join(f"{p}\n" for p in missing))


def _not_ignored(project: Path) -> list[str]:
    """The runner's patterns git does not ignore in `project`; none outside a git repository."""
    found = subprocess.run(
        ["git", "check-ignore", "--no-index", *OWN.values()], cwd=project, capture_output=True, text=True
    )
    # 0: some are ignored, 1: none are; anything else (no repository, no git): nothing to do.
    if found.returncode not in (0, 1):
        return []
    ignored = set(found.stdout.splitlines())
    return [pattern for pattern, path in OWN.items() if path not in ignored]
