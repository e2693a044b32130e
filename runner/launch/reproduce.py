"""`runner reproduce RUN_ID`: run again from the record alone (recorded code, config, lock), drift first.

The recorded code is checked out as a throw-away git worktree at the recorded commit with the recorded diff
applied; the recorded lock is used as it is (no re-resolution), so the same env image is found or rebuilt.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from runner.compose.schema import RunnerConfig
from runner.errors import RunnerError
from runner.tracking.record import get_run


def _artifact(client: Any, run_id: str, name: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        with tempfile.TemporaryDirectory() as tmp:
            return Path(client.download_artifacts(run_id, name, tmp)).read_text()
    except (MlflowException, OSError):
        return None


@contextmanager
def recorded_tree(project: Path, commit: str, diff: str | None, name: str) -> Iterator[Path]:
    tree = project / ".runner" / "reproduce" / name
    shutil.rmtree(tree, ignore_errors=True)
    tree.parent.mkdir(parents=True, exist_ok=True)
    git = ["git", "-C", str(project)]
    proc = subprocess.run(
        [*git, "worktree", "add", "--detach", "--quiet", str(tree), commit], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RunnerError(f"The recorded commit {commit[:12]} is not in this repository: git fetch it first.")
    try:
        if diff:
            subprocess.run(
                ["git", "-C", str(tree), "apply", "--binary", "-"],
                input=diff,
                text=True,
                check=True,
                capture_output=True,
            )
        yield tree
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(tree)], capture_output=True)


def changed_files(recorded: Path, project: Path) -> list[str]:
    """The files that differ between the recorded code and this checkout (added, removed or changed)."""
    from runner.tracking.code import project_files

    def content(root: Path, name: str) -> bytes | None:
        path = root / name
        try:
            return os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
        except OSError:
            return None

    names = set(project_files(recorded)) | set(project_files(project))
    return sorted(n for n in names if content(recorded, n) != content(project, n))


def drift(project: Path, recorded: Path, run: Any, lock: str, fresh_lock: str | None) -> list[str]:
    """What differs between the record and this checkout, file by file; empty when nothing does."""
    from runner.environment.lock import locked_versions
    from runner.tracking.code import code_version

    lines = []
    now = code_version(project)
    commit = run.data.tags.get("mlflow.source.git.commit", "")
    if now.commit != commit:
        lines.append(f"code: HEAD is {str(now.commit)[:12]}, the run used {commit[:12]}")
    files = changed_files(recorded, project)
    if files:
        shown = ", ".join(files[:12]) + (f" and {len(files) - 12} more" if len(files) > 12 else "")
        lines.append(f"code: {len(files)} file(s) differ from the run's: {shown}")
    if fresh_lock is not None and fresh_lock != lock:
        old, new = set(locked_versions(lock)), set(locked_versions(fresh_lock))
        changed = sorted(old ^ new, key=lambda v: v.split("==")[0])
        moved: dict[str, Any] = {}
        for v in changed:
            name, _, version = v.partition("==")
            moved.setdefault(name, ["-", "-"])[v in new] = version
        lines.append(
            f"packages: {len(moved)} would resolve differently today: "
            + ", ".join(f"{n} {a} -> {b}" for n, (a, b) in sorted(moved.items()))
        )
    return lines


def pinned_data(tags: dict[str, str]) -> list[str]:
    """The run's mounts pinned to the exact commits it used (`mnist@latest` may mean more data today)."""
    names = [
        k[len("runner.data.") : -len(".rev")]
        for k in tags
        if k.startswith("runner.data.") and k.endswith(".rev")
    ]
    return [f"{n}@{tags[f'runner.data.{n}.rev']}:{tags[f'runner.data.{n}.mount']}" for n in sorted(names)]


def _fresh_lock(spec: Any) -> str | None:
    from runner.backends import get_backend
    from runner.environment.lock import Target, requirement_lines, resolve_lock

    try:
        target = Target(*get_backend(spec.backend).lock_target(spec))
        lines = requirement_lines(spec.env, Path(spec.source))
        return resolve_lock(
            lines, target, spec.env.ca_bundle, os.environ, fresh=True, index_url=spec.env.index_url
        )
    except RunnerError:
        return None  # unresolvable today: the recorded lock is all there is


def renamed(cfg: DictConfig) -> bool:
    """Targets recorded while the example builders shipped with the runner (`runner.models.X` is the project's
    `models.X` now); True when there were any."""
    moved = False
    for node in (cfg.model, cfg.dataset):
        if OmegaConf.is_dict(node) and str(node.get("_target_", "")).startswith("runner.models."):
            node._target_ = str(node._target_).removeprefix("runner.")
            moved = True
    return moved


def with_builders(tree: Path, project: Path) -> list[str]:
    """A record made while the builders shipped with the runner names `models.X`, which its code may lack: the
    project's models/ goes into the recorded tree (said as drift). Links stay links, as the code snapshot keeps
    them: what they point at on this host never enters the run's code."""
    source = project / "models"
    if (tree / "models").is_dir() or source.is_symlink() or not source.is_dir():
        return []
    shutil.copytree(source, tree / "models", symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    return [
        "models/: the record's model builders shipped with the runner then; the project's models/ is used"
    ]


def reproduce(uri: str, project: Path, run_id: str, check: bool = False) -> int:
    """Run `run_id` again from its record; with `check`, only report the drift (exit 1 if there is any)."""
    from mlflow import MlflowClient

    from runner.compose.build import build_spec
    from runner.compose.validate import validate
    from runner.launch.execute import execute

    client = MlflowClient(uri)
    run = get_run(uri, run_id)
    run_id = run.info.run_id
    config, lock = _artifact(client, run_id, "config.yaml"), _artifact(client, run_id, "requirements.lock")
    commit = run.data.tags.get("mlflow.source.git.commit")
    if not config or lock is None or not commit:  # an empty lock is a lock: an env of no packages
        raise RunnerError(
            f"Run {run_id} lacks a config, lock or commit in its record: it cannot be reproduced."
        )
    diff = _artifact(client, run_id, "code.diff") or ""
    cfg = OmegaConf.merge(OmegaConf.structured(RunnerConfig), OmegaConf.create(config))  # typed, struct mode
    assert isinstance(cfg, DictConfig)
    cfg.data = pinned_data(run.data.tags) or cfg.data
    builders_moved = renamed(cfg)
    validate(cfg)
    with recorded_tree(project, commit, diff, f"{run_id}-{os.getpid()}") as tree:
        # the code comes from the recorded tree; the new run lives in the project (the tree goes on return)
        # The params it recorded, the values the user set among them (compose.params), are recorded again.
        spec = build_spec(
            cfg, chosen="default", project_dir=str(project), environ=os.environ, overrides=run.data.params
        )
        # Filed beside the run it reproduces.
        experiment = client.get_experiment(run.info.experiment_id).name
        spec = replace(spec, experiment=experiment, tracking_uri=uri, code_dir=str(tree))
        recorded_file = run.data.tags.get("runner.requirements_file")
        if recorded_file:  # the file the run used (found by name, perhaps), or none: not what is here today
            spec = replace(
                spec,
                env=replace(spec.env, requirements_file=None if recorded_file == "none" else recorded_file),
            )
        moved = (with_builders(tree, project) if builders_moved else []) + drift(
            project, tree, run, lock, _fresh_lock(spec)
        )
        for line in moved or ["no drift: code and packages are as recorded"]:
            print(f"[reproduce] {line}", flush=True)
        if check:
            return 1 if moved else 0
        if moved:
            print("[reproduce] running the recorded code with the recorded lock", flush=True)
        result = execute(spec, extra_tags={"runner.reproduces": run_id}, lock=lock)
    status = result.outcome.status if result.outcome else "RUNNING"
    print(f"[reproduce] run {result.run_id} {status} (reproduces {run_id})")
    return 0 if status in ("FINISHED", "RUNNING") else 1
