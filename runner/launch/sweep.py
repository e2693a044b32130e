"""The sweep launcher's work: members in parallel, each with its own CPU/GPU slot, failures shown at once.

Members run in threads of this process: each mostly waits on its container or subprocess, and they share
the process's tracking server. Ctrl-C (or fail_fast) sets one Stop that every running member obeys.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig

from runner.backends import backend_class, gpu
from runner.backends.base import FINISHED, Outcome, RunDir
from runner.compose.build import build_spec
from runner.compose.load import compose_config, experiment_of
from runner.compose.spec import RunSpec
from runner.compose.validate import validate
from runner.errors import ConfigError
from runner.launch.execute import Result, Stop, abandon, execute, submit
from runner.launch.sweep_parent import (
    ENV_PARENT,
    ENV_SWEEP,
    MEMBER,
    PARENT,
    PLANNED,
    SWEEP_ID,
    check_objective,
    member_key,
    plan_slots,
)

TAIL = 10  # log lines shown for a failing member
_say_lock = threading.Lock()


def say(text: str) -> None:
    """One whole line to the terminal, never interleaved with another member's."""
    with _say_lock:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


@dataclass(frozen=True)
class Member:
    index: int
    overrides: tuple[str, ...]
    cfg: DictConfig
    spec: RunSpec
    label: str  # the overrides that set this member apart from the others


def load_members(launcher: Any, job_overrides: Sequence[Sequence[str]], first: int) -> list[Member]:
    """Compose and check every member before any starts: a bad one stops the sweep with no run made."""
    members = []
    sweeper = os.environ.get("RUNNER_SWEEPER", "basic")
    for i, overrides in enumerate(job_overrides):
        # Composed as a single run's config is (and found again when the sweep's check composed it).
        own = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
        full = compose_config(Path.cwd(), own)
        experiment = experiment_of(own)
        validate(full)
        check_objective(full, sweeper)
        spec = build_spec(full, experiment=experiment, project_dir=str(Path.cwd()), environ=os.environ)
        members.append(Member(first + i + 1, tuple(overrides), full, spec, ""))
    common = set.intersection(*(set(m.overrides) for m in members)) if len(members) > 1 else set()
    return [replace(m, label=" ".join(o for o in m.overrides if o not in common)) for m in members]


def finished_before(members: list[Member]) -> dict[str, Any]:
    """On resume: the members that already FINISHED under this sweep's parent, by their overrides."""
    parent = os.environ.get(ENV_PARENT)
    if not parent or not members:
        return {}
    from mlflow import MlflowClient

    client = MlflowClient(members[0].spec.tracking_uri)
    exp_id = client.get_run(parent).info.experiment_id
    runs = client.search_runs([exp_id], f"tags.`{PARENT}` = '{parent}' and attributes.status = 'FINISHED'")
    return {r.data.tags.get(MEMBER, ""): r for r in runs}


def objective_of(spec: RunSpec, run_id: str, objective: str | None) -> float:
    """The member's objective (its last value). A finished member that never logged it is marked FAILED
    with that reason; its NaN tells the sweeper the trial failed."""
    if objective is None:
        return float("nan")
    from mlflow import MlflowClient

    client = MlflowClient(spec.tracking_uri)
    value = client.get_run(run_id).data.metrics.get(objective)
    if value is None:
        client.set_tag(run_id, "runner.reason", f"sweep.objective '{objective}' was never logged")
        client.set_terminated(run_id, "FAILED")
        say(f"[sweep] run {run_id} FAILED: sweep.objective '{objective}' was never logged")
        return float("nan")
    return float(value)


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    Path(launcher.config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)  # sweepers write results there
    members = load_members(launcher, job_overrides, initial_job_idx)
    first = members[0].spec
    if backend_class(first.backend).sweeps_at_once:
        return submit_members(launcher, members)
    host_gpus = gpu.require_host_gpus(first.resources.gpus) if first.env.gpu else []
    gpus_each = first.resources.gpus if isinstance(first.resources.gpus, int) else None
    slots = plan_slots(
        len(members),
        members[0].cfg.sweep.parallel,
        first.resources.cpus,
        gpus_each,
        sorted(os.sched_getaffinity(0)),
        host_gpus,
        first.env.gpu,
    )
    done = finished_before(members)
    PLANNED.update(member_key(m.overrides) for m in members)
    free: queue.Queue[int] = queue.Queue()
    for i in range(slots.parallel):
        free.put(i)
    stop = Stop()
    total = initial_job_idx + len(members)
    say(f"[sweep {os.environ.get(ENV_SWEEP, '?')}] {len(members)} member(s), {slots.parallel} at a time")

    def run_member(m: Member) -> Result | None:
        if member_key(m.overrides) in done:
            say(f"[sweep] member {m.index} already FINISHED: {m.label}")
            return Result(done[member_key(m.overrides)].info.run_id, Outcome(FINISHED, 0))
        slot = free.get()
        try:
            if stop.is_set():
                return None
            resources = replace(
                m.spec.resources,
                cpuset=slots.cpusets[slot],
                gpus=slots.gpus[slot] if slots.gpus else m.spec.resources.gpus,
            )
            tags = {
                SWEEP_ID: os.environ.get(ENV_SWEEP, ""),
                PARENT: os.environ.get(ENV_PARENT, ""),
                MEMBER: member_key(m.overrides),
                "runner.sweep.index": str(m.index),
            }
            say(f"[sweep] member {m.index}/{total} started: {m.label}")
            return execute(replace(m.spec, resources=resources), extra_tags=tags, echo=None, stop=stop)
        finally:
            free.put(slot)

    results: dict[int, Result | None] = {}
    with ThreadPoolExecutor(max_workers=slots.parallel, thread_name_prefix="sweep-member") as pool:
        futures: dict[Future[Result | None], Member] = {pool.submit(run_member, m): m for m in members}
        pending = set(futures)
        try:
            while pending:
                finished, pending = wait(pending, timeout=0.5, return_when="FIRST_COMPLETED")
                for fut in finished:
                    m = futures[fut]
                    results[m.index] = _report(m, fut, total)
                    failed = results[m.index] is None or results[m.index].outcome.status != FINISHED  # type: ignore[union-attr]
                    if failed and m.cfg.sweep.fail_fast and not stop.is_set():
                        say("[sweep] fail_fast: stopping the other members")
                        stop.set_because(f"fail_fast: member {m.index} failed")
        except KeyboardInterrupt:
            say("[sweep] interrupted: stopping every member")
            stop.set_because("sweep interrupted")
            wait(pending, timeout=120)
            raise
    return [_job_return(m, results.get(m.index), launcher) for m in members]


def submit_members(launcher: Any, members: list[Member]) -> list[JobReturn]:
    """A scheduler's sweep: every member staged (its MLflow run, inputs and image), then all submitted at once as
    one job array with `sweep.parallel` as its throttle. Returns without waiting: the members end on the
    cluster, and the last of them closes the sweep."""
    from runner.backends import get_backend

    if os.environ.get("RUNNER_SWEEPER", "basic") != "basic":
        raise ConfigError(
            "a sweep on a cluster is submitted at once, so a sweeper that waits for results to choose the next "
            "trials (optuna) cannot drive it: use the basic sweeper with backend=slurm, or backend=docker."
        )
    first = members[0]
    backend = get_backend(first.spec.backend)
    done = finished_before(members)
    batch: list[tuple[RunDir, int]] = []
    results: dict[int, Result] = {}
    try:
        for m in members:
            if member_key(m.overrides) in done:
                say(f"[sweep] member {m.index} already FINISHED: {m.label}")
                continue
            tags = {
                SWEEP_ID: os.environ.get(ENV_SWEEP, ""),
                PARENT: os.environ.get(ENV_PARENT, ""),
                MEMBER: member_key(m.overrides),
                "runner.sweep.index": str(m.index),
            }
            results[m.index] = execute(m.spec, extra_tags=tags, echo=None, batch=batch)
    except BaseException as exc:
        abandon(batch, exc)
        raise
    parallel = first.cfg.sweep.parallel
    if batch:
        jobs = submit(backend, batch, parallel, first.spec.tracking_uri)
        array = jobs[0].split("_")[0]
        say(
            f"[sweep] {len(batch)} member(s) submitted as SLURM job array {array}"
            + (f", {parallel} at a time" if parallel else "")
        )
        for m in members:
            if m.index in results:
                say(f"  member {m.index}: run {results[m.index].run_id} ({m.label})")
    return [_job_return(m, None, launcher) for m in members]


def _report(m: Member, fut: Future[Result | None], total: int) -> Result | None:
    try:
        result = fut.result()
    except Exception as exc:  # a runner error inside one member: reported, the others go on
        say(f"[sweep] member {m.index}/{total} could not run ({m.label}): {exc}")
        return None
    if result is None:
        return None
    status = result.outcome.status if result.outcome else "started (detached)"
    say(f"[sweep] member {m.index}/{total} {status}: {m.label} (run {result.run_id})")
    if status != FINISHED:
        log = Path(m.spec.project_dir, ".runner", "runs", result.run_id, "run.log")
        lines = log.read_text(errors="replace").splitlines()[-TAIL:] if log.is_file() else []
        sys.stdout.write("".join(f"    | {ln}\n" for ln in lines))
        sys.stdout.flush()
    return result


def _job_return(m: Member, result: Result | None, launcher: Any) -> JobReturn:
    ret = JobReturn(
        overrides=list(m.overrides),
        cfg=m.cfg,
        hydra_cfg=launcher.config,
        working_dir=os.getcwd(),
        task_name="runner",
        status=JobStatus.COMPLETED,
    )
    # A failed member is a NaN objective: the sweep goes on and Optuna records the trial as failed.
    ok = result is not None and result.outcome is not None and result.outcome.status == FINISHED
    objective = m.cfg.sweep.objective
    ret.return_value = objective_of(m.spec, result.run_id, objective) if ok and result else float("nan")
    return ret
