"""What travels into a run: the in-run harness (`runner.harness`: `python -m runner.harness.train`) and the
data readers and reports a config may name (`dataset._target_`, `evaluate._target_`). Nothing of the host side (backends, owner, agent,
MLflow's side of the record) goes in: a run gets only what it runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import runner

# Files and folders of the runner package, kept importable as `runner.*` so that config targets keep their names.
MODULES = ("__init__.py", "errors.py", "loaders.py", "harness", "mnist", "vqa")


def copy_to(dest: Path) -> None:
    """The harness as package `runner` under `dest` (put on the run's PYTHONPATH)."""
    source = Path(runner.__file__).parent
    target = dest / "runner"
    target.mkdir(parents=True, exist_ok=True)
    for name in MODULES:
        if (source / name).is_dir():
            shutil.copytree(
                source / name, target / name, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True
            )
        else:
            shutil.copy2(source / name, target / name)
