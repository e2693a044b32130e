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
from omegaconf import DictConfig, open_dict

from runner.backends import backend_class, gpu
from runner.compose.build import build_spec
from runner.compose.load import experiment_of, explained
from runner.compose.spec import RunSpec
from runner.compose.validate import validate
from runner.errors import ConfigError
from runner.launch.execute import Result, Stop, abandon, execute, submit
from runner.launch.sweep_parent import MEMBER, PARENT, Slots, Sweep, check_objective, member_key, plan_slots
from runner.runs.rundir import FINISHED, Outcome, RunDir
from runner.tracking.logtext import raw_log, readable_log

# Log lines shown for a failing member.
TAIL = 10
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
    # The overrides that set this member apart from the others.
    label: str


def sweep_of(launcher: Any) -> Sweep:
    """The sweep the runner's command handed to Hydra with its task function."""
    sweep = getattr(launcher.task_function, "sweep", None)
    if not isinstance(sweep, Sweep):
        raise ConfigError(
            "hydra/launcher=runner runs the members of a sweep the runner starts: runner -m ..."
        )
    return sweep


def compose_member(launcher: Any, overrides: list[str]) -> DictConfig:
    """A member's config, composed as Hydra's own launchers compose theirs: the sweep's config loader (the
    project's conf/ and the runner's on its search path, struct mode) given the member's overrides. Without
    Hydra's own node, as a single run's config is; Hydra's errors as the runner's one clear line."""
    with explained(Path.cwd(), overrides):
        cfg = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, overrides)
    with open_dict(cfg):
        del cfg["hydra"]
    assert isinstance(cfg, DictConfig)
    return cfg


def load_members(
    launcher: Any, sweep: Sweep, job_overrides: Sequence[Sequence[str]], first: int
) -> list[Member]:
    """Compose and check every member before any starts: a bad one stops the sweep with no run made."""
    members = []
    for i, overrides in enumerate(job_overrides):
        full = compose_member(launcher, list(overrides))
        own = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
        validate(full)
        check_objective(full, sweep.sweeper)
        spec = build_spec(
            full,
            chosen=experiment_of(own),
            project_dir=str(Path.cwd()),
            environ=os.environ,
            overrides=own,
        )
        members.append(Member(first + i + 1, tuple(overrides), full, spec, ""))
    common = set.intersection(*(set(m.overrides) for m in members)) if len(members) > 1 else set()
    return [replace(m, label=" ".join(o for o in m.overrides if o not in common)) for m in members]


def finished_before(sweep: Sweep, members: list[Member]) -> dict[str, Any]:
    """On resume: the members that already FINISHED under this sweep's parent, by their overrides."""
    if not members:
        return {}
    from mlflow import MlflowClient

    client = MlflowClient(members[0].spec.tracking_uri)
    exp_id = client.get_run(sweep.parent).info.experiment_id
    runs = client.search_runs(
        [exp_id], f"tags.`{PARENT}` = '{sweep.parent}' and attributes.status = 'FINISHED'"
    )
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
    sweep = sweep_of(launcher)
    # Sweepers write their results there.
    Path(launcher.config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)
    members = load_members(launcher, sweep, job_overrides, initial_job_idx)
    first = members[0].spec
    if backend_class(first.backend).sweeps_at_once:
        return submit_members(launcher, sweep, members)
    return run_members(launcher, sweep, members, initial_job_idx + len(members))


def plan_member_slots(members: list[Member]) -> Slots:
    """Each slot's own CPUs (and GPUs) on this host, for members like the first."""
    first = members[0].spec
    host_gpus = gpu.require_host_gpus(first.resources.gpus) if first.env.gpu else []
    gpus_each = first.resources.gpus if isinstance(first.resources.gpus, int) else None
    return plan_slots(
        len(members),
        members[0].cfg.sweep.parallel,
        first.resources.cpus,
        gpus_each,
        sorted(os.sched_getaffinity(0)),
        host_gpus,
        first.env.gpu,
    )


def run_members(launcher: Any, sweep: Sweep, members: list[Member], total: int) -> list[JobReturn]:
    """The members on this host, `sweep.parallel` at a time, each in its own slot; their returns to Hydra."""
    slots = plan_member_slots(members)
    done = finished_before(sweep, members)
    sweep.planned.update(member_key(m.overrides) for m in members)
    free: queue.Queue[int] = queue.Queue()
    for i in range(slots.parallel):
        free.put(i)
    stop = Stop()
    say(f"[sweep {sweep.id}] {len(members)} member(s), {slots.parallel} at a time")

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
            tags = sweep.member_tags(m.overrides, m.index)
            say(f"[sweep] member {m.index}/{total} started: {m.label}")
            return execute(replace(m.spec, resources=resources), extra_tags=tags, echo=None, stop=stop)
        finally:
            free.put(slot)

    results = follow_members(members, run_member, slots.parallel, stop, total)
    return [_job_return(m, results.get(m.index), launcher) for m in members]


def follow_members(
    members: list[Member], run_member: Any, parallel: int, stop: Stop, total: int
) -> dict[int, Result | None]:
    """Run every member in a pool of `parallel` threads; report each as it ends; on a failure with
    sweep.fail_fast, or Ctrl-C, stop the others."""
    results: dict[int, Result | None] = {}
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="sweep-member") as pool:
        futures: dict[Future[Result | None], Member] = {pool.submit(run_member, m): m for m in members}
        pending = set(futures)
        try:
            while pending:
                finished, pending = wait(pending, timeout=0.5, return_when="FIRST_COMPLETED")
                for fut in finished:
                    m = futures[fut]
                    result = results[m.index] = _report(m, fut, total)
                    failed = result is None or (
                        result.outcome is not None and result.outcome.status != FINISHED
                    )
                    if failed and m.cfg.sweep.fail_fast and not stop.is_set():
                        say("[sweep] fail_fast: stopping the other members")
                        stop.set_because(f"fail_fast: member {m.index} failed")
        except KeyboardInterrupt:
            say("[sweep] interrupted: stopping every member")
            stop.set_because("sweep interrupted")
            wait(pending, timeout=120)
            raise
    return results


def submit_members(launcher: Any, sweep: Sweep, members: list[Member]) -> list[JobReturn]:
    """A scheduler's sweep: every member staged (its MLflow run, inputs and image), then all submitted at once as
    one job array with `sweep.parallel` as its throttle. Returns without waiting: the members end on the
    cluster, and the last of them closes the sweep."""
    from runner.backends import get_backend

    if sweep.sweeper != "basic":
        raise ConfigError(
            "a sweep on a cluster is submitted at once, so a sweeper that waits for results to choose the next "
            "trials (optuna) cannot drive it: use the basic sweeper with backend=slurm, or backend=docker."
        )
    first = members[0]
    backend = get_backend(first.spec.backend)
    done = finished_before(sweep, members)
    batch: list[tuple[RunDir, int]] = []
    results: dict[int, Result] = {}
    try:
        for m in members:
            if member_key(m.overrides) in done:
                say(f"[sweep] member {m.index} already FINISHED: {m.label}")
                continue
            tags = sweep.member_tags(m.overrides, m.index)
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
    # A runner error inside one member: reported, the others go on.
    except Exception as exc:
        say(f"[sweep] member {m.index}/{total} could not run ({m.label}): {exc}")
        return None
    if result is None:
        return None
    status = result.outcome.status if result.outcome else "started (detached)"
    say(f"[sweep] member {m.index}/{total} {status}: {m.label} (run {result.run_id})")
    if status != FINISHED:
        log = RunDir.of(Path(m.spec.project_dir), result.run_id).log
        # Its last lines as a terminal shows them: a progress bar once, not each of its redraws.
        lines = readable_log(raw_log(log)).splitlines()[-TAIL:] if log.is_file() else []
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
