"""The host's record of a run in MLflow: the run itself, its staged inputs, its outputs and working-directory
artifacts."""

from __future__ import annotations

import fcntl
import json
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from runner.compose.spec import RunSpec
from runner.runs.rundir import RunDir

# MLflow's limits: 100 params per batch call, 6000 characters per value.
_BATCH = 100
_MAX_VALUE = 6000
# On each of the runner's runs (and so the mark of them): the name of the MLflow experiment it is filed under.
EXPERIMENT = "runner.experiment"
# An experiment of this kind is shown by MLflow's UI in its model-training view (runs, metrics, charts), not the
# GenAI one (traces, evaluations) it would otherwise guess.
KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"


def get_run(uri: str, run_id: str) -> Any:
    """The run, or a RunnerError that says how to find run ids."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from runner.errors import RunnerError

    try:
        return MlflowClient(uri).get_run(run_id)
    except MlflowException as exc:
        raise RunnerError(f"No run {run_id} in {uri}. List runs with: runner ls") from exc


@contextmanager
def store_init_lock(uri: str) -> Iterator[None]:
    """Serialise the first touch of a SQLite store: parallel runs would race to create its tables."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    from runner.environment.lock import cache_dir, content_hash

    path = (
        cache_dir() / "locks" / f"store-{content_hash(os.path.abspath(uri[len('sqlite:///') :]))[:16]}.lock"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        yield


def experiment_id(client: Any, name: str) -> str:
    """The id of the MLflow experiment `name`, created (a model-training one) where it is missing. One the runner
    made before the kind existed (its first run is the runner's) is given the kind; another's is left as it is."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return str(client.create_experiment(name, tags={KIND: MODEL_TRAINING}))
        except MlflowException:  # created by a parallel run meanwhile; any other failure is said as is
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if KIND not in exp.tags:
        first = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"], max_results=1)
        if first and EXPERIMENT in first[0].data.tags:
            client.set_experiment_tag(exp.experiment_id, KIND, MODEL_TRAINING)
    return str(exp.experiment_id)


class Recorder:
    """Creates the MLflow run before anything starts, and always closes it."""

    def __init__(self, spec: RunSpec):
        from mlflow import MlflowClient

        self.spec = spec
        self.run_id = ""
        self.experiment_id = ""
        self.experiment = spec.experiment  # the name MLflow files the run under
        with store_init_lock(spec.tracking_uri):
            self.client = MlflowClient(spec.tracking_uri)  # creates or migrates the store, once

    def start(self, tags: dict[str, str], given_run: str | None = None) -> str:
        """Create the run; or record into `given_run`, a RUNNING run made for us (`mlflow run` hands one over).
        Its params are staged with its other inputs (stage_record), and written while it starts."""
        given = self.client.get_run(given_run) if given_run else None
        if given is not None and given.info.status == "RUNNING":
            self.run_id, self.experiment_id = given_run or "", given.info.experiment_id
            self.experiment = self.client.get_experiment(self.experiment_id).name
            self.set_tags({**tags, EXPERIMENT: self.experiment})
        else:
            self.experiment_id = experiment_id(self.client, self.experiment)
            tags = {**tags, EXPERIMENT: self.experiment}
            self.run_id = self.client.create_run(self.experiment_id, tags=tags).info.run_id
        return self.run_id

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)[:_MAX_VALUE]) for k, v in tags.items() if v is not None]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, tags=items[i : i + _BATCH])

    def log_metric(self, key: str, value: float) -> None:
        self.client.log_metric(self.run_id, key, value)

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, text, name)

    def log_artifacts(self, path: Path, artifact_path: str | None = None) -> None:
        if path.is_dir() and any(path.iterdir()):
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        elif path.is_file():
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def end(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)


def stage_record(run_dir: RunDir, params: dict[str, str], tags: dict[str, str]) -> None:
    """Stage the run's params and (more) tags for `record_inputs`."""
    staged = _read_staged(run_dir)
    staged["params"].update(params)
    staged["tags"].update(tags)
    run_dir.record_staged.write_text(json.dumps(staged))


def _read_staged(run_dir: RunDir) -> dict[str, dict[str, str]]:
    try:
        staged = json.loads(run_dir.record_staged.read_text())
    except (OSError, ValueError):
        staged = {}
    return {"params": dict(staged.get("params", {})), "tags": dict(staged.get("tags", {}))}


def record_inputs(client: Any, run_id: str, run_dir: RunDir) -> None:
    """Write the run's staged inputs (params, tags, and the files in record/) into its record, once: whoever
    owns the run does it as the run starts, an owner that takes over if the last one could not."""
    from mlflow.entities import Param, RunTag

    done = run_dir.recorded
    if done.exists():
        return
    staged = _read_staged(run_dir)
    params = [Param(k, str(v)[:_MAX_VALUE]) for k, v in staged["params"].items()]
    tags = [RunTag(k, str(v)[:_MAX_VALUE]) for k, v in staged["tags"].items()]
    for i in range(0, max(len(params), len(tags)), _BATCH):
        client.log_batch(run_id, params=params[i : i + _BATCH], tags=tags[i : i + _BATCH])
    folder = run_dir.record
    if folder.is_dir() and any(folder.iterdir()):
        client.log_artifacts(run_id, str(folder))
    done.touch()


WORKDIR = "workdir"  # artifacts: what a run wrote in its working directory (its copy of the code)
# Files, bytes: a script that downloads its data there keeps it out of the record.
WORKDIR_LIMIT = (1000, 1_000_000_000)


def log_outputs(
    client: Any,
    run_id: str,
    folder: Path,
    where: str = "output",
    unchanged: dict[str, list[int]] | None = None,
    limit: tuple[int, int] | None = None,
) -> list[str]:
    """The regular files a run wrote under `folder`, as artifacts under `where`/; links (to a host file, say)
    and other special files are never followed nor copied. With `unchanged` (a manifest: name -> [size,
    mtime_ns]), files still as the manifest has them are not kept; with `limit` (files, bytes), no more than that
    is kept. Returns what was left out, one line each for the log. (The run has ended: nothing changes the folder
    meanwhile.)"""

    said: list[str] = []
    unchanged = unchanged or {}
    files, size, over, over_size = 0, 0, 0, 0
    if (
        folder.is_symlink() or not folder.is_dir()
    ):  # a run may put a link in place of its folder: not followed
        return said
    for dirpath, dirnames, filenames in os.walk(folder):  # a linked folder is listed, never entered
        dirnames.sort()
        here = Path(dirpath)
        into = "/".join(p for p in (where, *here.relative_to(folder).parts) if p) or None
        for name in sorted(dirnames):
            if (here / name).is_symlink():
                if str((here / name).relative_to(folder)) not in unchanged:
                    said.append(
                        f"{where or '.'}/{(here / name).relative_to(folder)}: a link, not kept (only regular files are)"
                    )
                dirnames.remove(name)
        for name in sorted(filenames):
            path = here / name
            info = os.lstat(path)
            rel = str(path.relative_to(folder))
            if unchanged.get(rel) == [info.st_size, info.st_mtime_ns]:
                continue
            if not stat.S_ISREG(info.st_mode):
                said.append(
                    f"{where or '.'}/{rel}: a link or special file, not kept (only regular files are)"
                )
                continue
            if limit and (files + 1 > limit[0] or size + info.st_size > limit[1]):
                over, over_size = over + 1, over_size + info.st_size
                continue
            keep_artifact(client, run_id, path, into, f"{where or '.'}/{rel}")
            files, size = files + 1, size + info.st_size
    if over and limit:
        said.append(
            f"{where}/: {over} more file(s) ({over_size / 1e6:.1f} MB) not kept, past {limit[0]} files or "
            f"{limit[1] / 1e9:g} GB: write what matters to /output"
        )
    return said


def keep_artifact(client: Any, run_id: str, path: Path, into: str | None, named: str) -> None:
    """One file into the run's artifacts; where the store's filesystem is full, its partial copy goes and the
    record is told so (space.DiskFull), rather than failing."""
    from runner.runs import space

    try:
        client.log_artifact(run_id, str(path), into)
    except Exception as exc:
        if not space.is_full(exc):
            raise
        root = client.get_run(run_id).info.artifact_uri
        copy = Path(root.removeprefix("file://"), *(into.split("/") if into else ()), path.name)
        if "://" not in root.removeprefix("file://") and copy.is_file() and not copy.is_symlink():
            copy.unlink()
        where = copy if "://" not in root.removeprefix("file://") else path
        lead = (
            f"{named} ({space.megabytes(path.stat().st_size)}) and what follows not kept: no room for it on"
        )
        raise space.DiskFull(space.said(where, None, lead=lead)) from exc


def log_models(client: Any, run_id: str, folder: Path) -> list[str]:
    """The files of the models the run logged (each in `folder`/MODEL_ID), into each model's own artifacts;
    a folder naming a model that is not the run's is left out, and said."""
    import shutil
    import tempfile

    from mlflow.exceptions import MlflowException

    said: list[str] = []
    if folder.is_symlink() or not folder.is_dir():
        return said
    for entry in sorted(folder.iterdir()):
        try:
            owned = client.get_logged_model(entry.name).source_run_id == run_id
        except MlflowException:
            owned = False
        if not owned or entry.is_symlink() or not entry.is_dir():
            said.append(f"model {entry.name}: not a model of this run, not kept")
            continue
        with tempfile.TemporaryDirectory(prefix="runner-model-") as tmp:
            # Regular files only, as log_outputs keeps them: a link in the run's folder is never followed.
            for dirpath, dirnames, filenames in os.walk(entry):
                dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
                into = Path(tmp, os.path.relpath(dirpath, entry))
                into.mkdir(parents=True, exist_ok=True)
                for name in filenames:
                    if stat.S_ISREG(os.lstat(os.path.join(dirpath, name)).st_mode):
                        shutil.copyfile(os.path.join(dirpath, name), into / name, follow_symlinks=False)
            client.log_model_artifacts(entry.name, tmp)
    return said


def manifest(folder: Path) -> dict[str, list[int]]:
    """Every entry under `folder` (links included, not followed) -> [size, mtime_ns]: what log_outputs leaves out."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in [*filenames, *(d for d in dirnames if os.path.islink(os.path.join(dirpath, d)))]:
            info = os.lstat(os.path.join(dirpath, name))
            found[os.path.relpath(os.path.join(dirpath, name), folder)] = [info.st_size, info.st_mtime_ns]
    return found


# An escape sequence (CSI such as colours and "erase line", OSC such as titles, or a two-byte one), a carriage
# return or a backspace: what a terminal acts on instead of printing.


def is_remote(uri: str) -> bool:
    """A tracking server the run can reach by itself (a team's), rather than a store on this host."""
    return uri.startswith(("http://", "https://", "databricks"))
