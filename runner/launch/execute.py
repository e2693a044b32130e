"""One run, start to end, in named steps: preflight (checks, GPUs, secrets, CA bundle, allow_targets, datasets)
-> open_record (lock, code version, MLflow run, run folder, state) -> stage (code snapshot, harness, inputs)
-> prepare (the environment) -> plan (plan.json) -> hand_over (to the run's owner) -> follow (its log).

Everything that can fail on bad input fails before the MLflow run exists. Up to the hand-over, whatever happens
(a build failure, Ctrl-C, SIGTERM, a runner bug) this process closes the run FAILED or KILLED with its log;
from the hand-over on, the run's owner (runner.runs.owner) starts it and records its ending, whatever happens here.
"""

from __future__ import annotations

import getpass
import os
import shlex
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

import runner
from runner.backends import get_backend
from runner.backends.base import Backend, HandOver, Prepared
from runner.compose.spec import RunSpec
from runner.compose.validate import check_ca_bundle
from runner.datasets import record as data_record
from runner.environment.lock import Target, content_hash, locked_versions, requirement_lines, resolve_lock
from runner.errors import ConfigError, RunnerError
from runner.harness.shim import MIN_LENGTH, write_json
from runner.launch import stage as harness
from runner.runs import owner, space
from runner.runs.gitexclude import exclude_own_files
from runner.runs.rundir import FAILED, KILLED, LIVE, Outcome, RunDir
from runner.tracking.code import CodeVersion, code_version, snapshot
from runner.tracking.logtext import log_the_log
from runner.tracking.record import Recorder, log_outputs, manifest, record_inputs, stage_record
from runner.tracking.store import USERNAME, server_user


@dataclass(frozen=True)
class Result:
    run_id: str
    outcome: Outcome | None  # None for a detached run: it goes on
    job: str | None = None  # the scheduler's job, for a submitted run


class Tee:
    """A log that goes to the terminal and to the run's log file; safe to write from several threads."""

    def __init__(self, path: Path, echo: TextIO | None):
        self._path = path
        self._file = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 (closed by close())
        self._echo = echo
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            # Closed once the plan is written; a failure to hand over is still said in the run's log.
            if self._file.closed:
                self._file = open(self._path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
            self._file.write(text)
            if self._echo is not None:
                self._echo.write(text)
                self._echo.flush()
        return len(text)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """`kill` and `scancel` stop the runner like Ctrl-C does, so the run is closed KILLED."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def in_project(module: str, project: Path) -> bool:
    """True when the dotted `module` is a module or package of the project's own files (found, never imported:
    the project's code runs in its runs only)."""
    from importlib.machinery import PathFinder

    path: list[str] | None = [str(project)]
    for part in module.split("."):
        found = PathFinder.find_spec(part, path)
        if found is None or (found.origin is None and not found.submodule_search_locations):
            return False
        path = list(found.submodule_search_locations or [])
    return True


def read_secrets(names: tuple[str, ...]) -> dict[str, str]:
    missing = [n for n in names if n not in os.environ]
    if missing:
        raise ConfigError(
            f"env.secrets: {', '.join(missing)} not set in this shell. Export it first: export {missing[0]}=..."
        )
    return {n: os.environ[n] for n in names}


def refuse_recorded_secrets(spec: RunSpec, secrets: dict[str, str]) -> None:
    """A secret reaches a run by name only: its value in a recorded param, the config or the command (through
    `${oc.env:NAME}`, say) would put it in the record for anyone who reads it."""
    for name, value in secrets.items():
        if len(value) < MIN_LENGTH:
            continue
        where = [k for k, v in spec.params if value in v]
        if where or value in spec.config_yaml or any(value in a for a in spec.argv):
            raise ConfigError(
                f"{where[0] if where else 'the config'} holds the value of the secret {name} (an ${{oc.env:{name}}} "
                f"there?); it would be recorded. A secret reaches the run by name only: env.secrets=[{name}]."
            )


class Stop(threading.Event):
    """Set by a sweep to stop its running members (Ctrl-C, fail_fast), with the reason recorded on each."""

    reason = "stopped"

    def set_because(self, reason: str) -> None:
        self.reason = reason
        self.set()


@dataclass
class Launch:
    """What the steps of one run share once its record is open."""

    spec: RunSpec
    backend: Backend[Any]
    recorder: Recorder
    run_dir: RunDir
    lock: str  # the environment's lock (requirements.lock)
    diff: str  # the code's uncommitted changes
    lock_fd: int  # the run's ownership lock: ours while we prepare, the owner's from the hand-over on
    started: float
    log: Tee
    offset: int = 0  # how much of the run's log is written before the hand-over (the rest is followed)

    @property
    def run_id(self) -> str:
        return self.recorder.run_id


def execute(
    spec: RunSpec,
    extra_tags: dict[str, str] | None = None,
    echo: TextIO | None = sys.stdout,
    stop: Stop | None = None,
    given_run: str | None = None,
    lock: str | None = None,
    batch: list[tuple[RunDir, int]] | None = None,
) -> Result:
    """Prepare `spec`'s run, hand it to its owner (runner.runs.owner) and follow it to its end (or, detached, to
    its start). Raises RunnerError (before any run exists) on bad input. A run handed to a scheduler's job is
    not followed; with `batch` (a sweep's), it is added there, its ownership lock held, for `submit`."""
    backend = get_backend(spec.backend)
    spec, gpus = preflight(spec, backend)
    run = open_record(spec, backend, gpus, lock, extra_tags, given_run, echo)
    handed = until_hand_over(run, batch)
    if handed is None:  # a sweep's: `submit` hands it over with the others
        return Result(run.run_id, None)
    if handed.jobs:  # submitted: its job owns it, elsewhere
        recorded(run.recorder.client, run.run_dir, handed.jobs[0])
        return Result(run.run_id, None, handed.jobs[0])
    return follow(run, echo, stop)


def preflight(spec: RunSpec, backend: Backend[Any]) -> tuple[RunSpec, list[str]]:
    """Everything that can fail on bad input, before anything of the run exists: the spec with its datasets
    resolved, and this machine's GPUs the run gets."""
    backend.check(spec)
    space.check_room(Path(spec.project_dir), spec.tracking_uri)
    gpus = backend.host_gpus(spec)
    # All set here: the owner reads them from the environment it inherits. None may be in the record.
    refuse_recorded_secrets(spec, read_secrets(spec.env.secrets))
    # It is mounted into builds and runs: a file of certificates, and nothing else.
    if spec.env.ca_bundle:
        check_ca_bundle(spec.env.ca_bundle)
    for module in spec.allow_targets:
        if not in_project(module, Path(spec.source)):
            raise ConfigError(
                f"allow_targets: '{module}' is not a module of the project ({spec.source}): no "
                f"{module.replace('.', '/')}.py or {module.replace('.', '/')}/__init__.py there."
            )
    # Exact versions, materialised read-only, before anything of the run exists.
    if spec.data:
        from runner.datasets.mount import resolve

        spec = replace(spec, mounts=resolve(Path(spec.project_dir), spec.data))
    return spec, gpus


def lock_and_version(spec: RunSpec, backend: Backend[Any], lock: str | None) -> tuple[str, CodeVersion]:
    """The environment's lock (resolved unless given: a reproduction passes the recorded one) and the code's
    version; git's three calls go on while the lock is found."""
    with ThreadPoolExecutor(1) as pool:
        versioning = pool.submit(code_version, Path(spec.source))
        if lock is None:
            lock = resolve_lock(
                requirement_lines(spec.env, Path(spec.source)),
                Target(*backend.lock_target(spec)),
                spec.env.ca_bundle,
                os.environ,
                index_url=spec.env.index_url,
            )
        return lock, versioning.result()


def run_tags(
    spec: RunSpec, gpus: list[str], lock: str, version: CodeVersion, extra_tags: dict[str, str] | None
) -> dict[str, str]:
    return {
        "runner.backend": spec.backend,
        "runner.host": socket.gethostname(),
        "runner.seed": str(spec.seed),
        "runner.gpus": ",".join(gpus) or "none",
        "runner.command": shlex.join(spec.argv),
        "runner.version": runner.__version__,
        "runner.lock.sha256": content_hash(lock),
        "runner.requirements_file": spec.env.requirements_file or "none",
        "runner.git.dirty": str(version.dirty).lower(),
        "mlflow.source.git.commit": version.commit or "",
        "mlflow.source.name": spec.project_dir,
        "mlflow.user": server_user(spec.tracking_uri) or getpass.getuser(),  # the server's account first
        **data_record.tags(spec.mounts),
        **(extra_tags or {}),
    }


def open_record(
    spec: RunSpec,
    backend: Backend[Any],
    gpus: list[str],
    lock: str | None,
    extra_tags: dict[str, str] | None,
    given_run: str | None,
    echo: TextIO | None,
) -> Launch:
    """The MLflow run, its folder (ours to prepare: its ownership lock held) and its state, marked live."""
    lock, version = lock_and_version(spec, backend, lock)
    exclude_own_files(Path(spec.project_dir))  # before the store and the run's folder are made
    recorder = Recorder(spec)
    run_id = recorder.start(run_tags(spec, gpus, lock, version, extra_tags), given_run=given_run)
    project = Path(spec.project_dir)
    run_dir = RunDir.of(project, run_id)
    for d in (run_dir.code, run_dir.output, run_dir.harness, run_dir.spool, run_dir.checkpoint):
        d.mkdir(parents=True, exist_ok=True)
    lock_fd = owner.try_claim(run_dir)
    assert lock_fd is not None
    started = time.time()
    write_json(
        run_dir.state,
        {
            "run_id": run_id,
            "backend": spec.backend,
            "tracking_uri": spec.tracking_uri,
            "project": str(project),
            "host": socket.gethostname(),
            "timeout": spec.resources.timeout,
            "max_attempts": spec.resources.max_attempts,
            "log_limit": spec.resources.log_limit,
            "created": started,
            "sweep_parent": (extra_tags or {}).get("mlflow.parentRunId"),
            "idle_timeout": spec.resources.idle_timeout if spec.session else None,
        },
    )
    owner.mark_live(project, run_id, run_dir)
    log = Tee(run_dir.log, echo)
    log.write(f"[runner] run {run_id} ({recorder.experiment}, backend={spec.backend})\n")
    return Launch(spec, backend, recorder, run_dir, lock, version.diff, lock_fd, started, log)


def until_hand_over(run: Launch, batch: list[tuple[RunDir, int]] | None) -> HandOver | None:
    """Stage, prepare, plan and hand over (None: added to `batch`). Whatever goes wrong before the hand-over
    closes the run here, FAILED or KILLED with its reason; from the hand-over on, its owner records it."""
    outcome = Outcome(FAILED, reason="runner error")
    handed_over = False
    try:
        with sigterm_as_interrupt():
            try:
                stage(run)
                plan(run, prepare(run))
                handed = hand_over(run, batch)
                handed_over = True
                return handed
            except KeyboardInterrupt:
                run.log.write("\n[runner] interrupted before the run started\n")
                outcome = Outcome(KILLED, reason="interrupted")
                raise
            except RunnerError as exc:
                outcome = Outcome(FAILED, reason=str(exc))
                run.log.write(f"[runner] {exc}\n")
                raise
            except Exception as exc:
                said = space.reason(exc) or f"runner error: {type(exc).__name__}: {exc}"
                outcome = Outcome(FAILED, reason=said)
                raise
    finally:
        try:
            if not handed_over:
                _finish(run.recorder, run.run_dir, outcome, run.started, run.log)
        finally:
            os.close(run.lock_fd)  # held until the ending is written: no other command adopts the run


def stage(run: Launch) -> None:
    """The run's inputs: code snapshot, harness, resolved config; and, for its record (written by the owner
    while the run starts: tracking.record_inputs), the config, lock, package list, diff and params."""
    spec, run_dir = run.spec, run.run_dir
    snapshot(Path(spec.source), run_dir.code)
    # What the run then writes there is kept.
    write_json(run_dir.code_manifest, manifest(run_dir.code))
    harness.copy_to(run_dir.harness)
    run_dir.config.write_text(spec.config_yaml)
    record = run_dir.record
    record.mkdir(exist_ok=True)
    (record / "config.yaml").write_text(spec.config_yaml)
    (record / "requirements.lock").write_text(run.lock)
    (record / "packages.txt").write_text("\n".join(locked_versions(run.lock)) + "\n")
    if run.diff:
        (record / "code.diff").write_text(run.diff)
    stage_record(run_dir, dict(spec.params), {})
    data_record.log_inputs(run.recorder.client, run.run_id, spec.project_dir, spec.mounts)


def prepare(run: Launch) -> Prepared:
    """The run's environment, built or reused, and named in its record; what the run's folder needs from the
    backend besides (Backend.furnish)."""
    prepared = run.backend.prepare(run.spec, run.lock, run.log)
    # The runner's own in-run packages, apart from the run's lock (which is the project's resolution alone).
    (run.run_dir.record / "harness.lock").write_text(prepared.harness_lock)
    tags = {
        "runner.env.id": prepared.env_id,
        "runner.harness.lock.sha256": content_hash(prepared.harness_lock),
    }
    stage_record(run.run_dir, dict(run.spec.params), {**tags, **prepared.tags})
    run.backend.furnish(run.spec, run.run_dir, prepared)
    return prepared


def plan(run: Launch, prepared: Prepared) -> None:
    """How the run starts, decided and written (plan.json) for its owner; the log is the owner's from here."""
    spec = run.spec
    env = {
        **dict(spec.env.variables),
        # The account on the team's server: its password is among the secrets (tracking.store.server_secrets).
        **({USERNAME: user} if (user := server_user(spec.tracking_uri)) else {}),
        "MLFLOW_RUN_ID": run.run_id,
        "MLFLOW_EXPERIMENT_ID": run.recorder.experiment_id,
        "PYTHONHASHSEED": str(spec.seed),
        # No __pycache__ among what the run wrote in its folder.
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        **({"RUNNER_AUTOLOG": spec.autolog} if spec.autolog else {}),
    }
    planned = run.backend.plan(spec, run.run_dir, prepared, env)
    write_json(run.run_dir.plan, planned.to_json(), private=True)
    if planned.said:
        run.log.write(planned.said)
    run.log.close()
    run.offset = run.run_dir.log.stat().st_size


def hand_over(run: Launch, batch: list[tuple[RunDir, int]] | None) -> HandOver | None:
    """The run to its owner, with its ownership lock; or, a sweep's, into `batch` (None), its lock held there."""
    if batch is not None:
        batch.append((run.run_dir, os.dup(run.lock_fd)))
        return None
    return run.backend.hand_over([run.run_dir], [run.lock_fd], None)


def follow(run: Launch, echo: TextIO | None, stop: Stop | None) -> Result:
    """Once its owner has started it: a session's address said, then the run's log followed to its end (or,
    detached, not at all)."""
    owner.wait_started(run.run_dir)
    if run.spec.session is not None:
        announce(run.spec, run.run_dir, run.recorder, echo)
    if run.spec.detach and owner.ending(run.run_dir) is None:
        return Result(run.run_id, None)
    with sigterm_as_interrupt():
        return Result(run.run_id, owner.follow(run.run_dir, echo, run.offset, stop))


def announce(spec: RunSpec, run_dir: RunDir, recorder: Recorder, echo: TextIO | None) -> None:
    """A session's address, once JupyterLab answers there (its token in it: to this terminal, never the record)."""
    from runner.runs import session

    access = session.read(run_dir)
    deadline = time.monotonic() + 300
    while access and owner.ending(run_dir) is None and time.monotonic() < deadline:
        if session.answers(access):
            recorder.set_tags({"runner.session.url": f"http://127.0.0.1:{access['port']}/lab"})
            if echo is not None:
                echo.write(
                    f"[runner] JupyterLab is up: {session.url(access)}\n"
                    f"  it stops itself after {spec.resources.idle_timeout} s without use; now: runner stop "
                    f"{recorder.run_id}\n"
                )
                echo.flush()
            return
        time.sleep(0.2)


def submit(
    backend: Backend[Any], batch: list[tuple[RunDir, int]], parallel: int | None, uri: str
) -> list[str]:
    """Hand a sweep's staged runs to the scheduler at once (one job array); their job ids. If the scheduler
    refuses, every run ends FAILED with its words."""
    from mlflow import MlflowClient

    try:
        jobs = list(
            backend.hand_over([run_dir for run_dir, _ in batch], [fd for _, fd in batch], parallel).jobs
        )
    except BaseException as exc:
        abandon(batch, exc)
        raise
    for _, fd in batch:
        os.close(fd)
    client = MlflowClient(uri)
    for (run_dir, _), job in zip(batch, jobs, strict=True):
        recorded(client, run_dir, job)
    return jobs


def recorded(client: Any, run_dir: RunDir, job: str) -> None:
    """A submitted run's job and inputs in its record now, not when the job starts (hours later, maybe). Best
    effort: the job's owner records the inputs too, and nothing here may end a run its job owns."""
    try:
        client.set_tag(run_dir.root.name, "runner.slurm.job", job)
        record_inputs(client, run_dir.root.name, run_dir)
    except Exception as exc:
        print(f"[runner] could not record run {run_dir.root.name}'s inputs yet: {exc}", file=sys.stderr)


def abandon(batch: list[tuple[RunDir, int]], exc: BaseException) -> None:
    """Staged runs that will never be submitted: each ends KILLED (interrupted) or FAILED (why), its lock let go."""
    if isinstance(exc, KeyboardInterrupt):
        outcome = Outcome(KILLED, reason="interrupted")
    else:
        said = str(exc) if isinstance(exc, RunnerError) else f"runner error: {type(exc).__name__}: {exc}"
        outcome = Outcome(FAILED, reason=said)
    for run_dir, fd in batch:
        try:
            if owner.ending(run_dir) is None:
                owner.Owner(run_dir).finish(outcome)
        finally:
            os.close(fd)
    batch.clear()


def _finish(recorder: Recorder, run_dir: RunDir, outcome: Outcome, started: float, log: Tee) -> None:
    """Record the ending of a run that failed before its owner took over; each step is guarded so the status
    is always set. (From the hand-over on, the owner records the ending: runner.owner.)"""
    log.write(
        f"[runner] run {recorder.run_id} {outcome.status}"
        + (f": {outcome.reason}" if outcome.reason and outcome.status != "FINISHED" else "")
        + "\n"
    )
    log.close()
    steps = [
        lambda: record_inputs(recorder.client, recorder.run_id, run_dir),
        lambda: recorder.set_tags(outcome.tags()),
        lambda: recorder.log_metric("duration_s", round(time.time() - started, 3)),
        lambda: log_outputs(recorder.client, recorder.run_id, run_dir.output),
        lambda: log_the_log(recorder.client, recorder.run_id, run_dir.log),
    ]
    for step in steps:
        try:
            step()
        except Exception as exc:  # keep going: the status below matters most
            print(f"[runner] could not record part of run {recorder.run_id}: {exc}", file=sys.stderr)
    recorder.end(outcome.status)
    write_json(
        run_dir.ended,
        outcome.to_json(),
    )
    (Path(recorder.spec.project_dir) / LIVE / recorder.run_id).unlink(missing_ok=True)
