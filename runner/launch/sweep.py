"""A sweep's members: each a run composed from its own overrides, started in its own CPU/GPU slot and followed to its
end (runner.launch.sweep_owner drives them), or, on a scheduler, all submitted at once as one job array."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from runner.backends import get_backend, gpu
from runner.compose.build import build_spec
from runner.compose.load import compose_config, experiment_of
from runner.compose.spec import RunSpec
from runner.compose.validate import validate
from runner.launch.execute import Result, Stop, abandon, execute, submit
from runner.launch.sweep_parent import Slots, Sweep, check_objective, plan_slots
from runner.launch.trials import Trial
from runner.runs import owner
from runner.runs.rundir import Outcome, RunDir
from runner.tracking.logtext import raw_log, readable_log

TAIL = 10  # log lines shown for a member that did not finish


@dataclass(frozen=True)
class Member:
    trial: Trial
    cfg: DictConfig
    spec: RunSpec

    @property
    def index(self) -> int:
        return self.trial.number + 1


def compose_member(project: Path, trial: Trial, sweeper: str) -> Member:
    """A member's config from its own overrides, checked as a single run's is."""
    overrides = list(trial.overrides)
    cfg = compose_config(project, overrides)
    validate(cfg)
    check_objective(cfg, sweeper)
    spec = build_spec(
        cfg,
        chosen=experiment_of(overrides),
        project_dir=str(project),
        environ=os.environ,
        overrides=overrides,
    )
    return Member(trial, cfg, replace(spec, detach=False))


def plan_member_slots(spec: RunSpec, members: int, parallel: int | None) -> Slots:
    """Each slot's own CPUs (and GPUs) on this host, for members like `spec`."""
    host_gpus = gpu.require_host_gpus(spec.resources.gpus) if spec.env.gpu else []
    gpus_each = spec.resources.gpus if isinstance(spec.resources.gpus, int) else None
    return plan_slots(
        members,
        parallel,
        spec.resources.cpus,
        gpus_each,
        sorted(os.sched_getaffinity(0)),
        host_gpus,
        spec.env.gpu,
    )


def run_member(
    member: Member, sweep: Sweep, slots: Slots | None, slot: int, stop: Stop, extra: dict[str, str]
) -> Result:
    """Start the member in its slot and follow it to its end (a scheduler's job, too: its owner is elsewhere)."""
    spec = member.spec
    if slots is not None:
        resources = replace(
            spec.resources,
            cpuset=slots.cpusets[slot],
            gpus=slots.gpus[slot] if slots.gpus else spec.resources.gpus,
        )
        spec = replace(spec, resources=resources)
    tags = {**sweep.member_tags(member.trial.overrides, member.index), **extra}
    result = execute(spec, extra_tags=tags, echo=None, stop=stop)
    if result.outcome is None:  # submitted: followed through its run's folder, which its job's owner writes
        run_dir = RunDir.of(Path(spec.project_dir), result.run_id)
        result = Result(result.run_id, owner.follow(run_dir, None, stop=stop))
    return result


def follow_member(project: Path, run_id: str, stop: Stop) -> Result:
    """A member an earlier driver started: followed to its end."""
    return Result(run_id, owner.follow(RunDir.of(project, run_id), None, stop=stop))


def log_tail(project: Path, run_id: str) -> list[str]:
    """A member's last log lines as a terminal shows them (a progress bar once, not each of its redraws)."""
    log = RunDir.of(project, run_id).log
    return readable_log(raw_log(log)).splitlines()[-TAIL:] if log.is_file() else []


def objective_of(uri: str, run_id: str, objective: str | None) -> tuple[float | None, str | None]:
    """A finished member's objective (its last value), or why it has none: a member that never logged it is marked
    FAILED with that reason."""
    if objective is None:
        return None, None
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    value = client.get_run(run_id).data.metrics.get(objective)
    if value is None:
        why = f"sweep.objective '{objective}' was never logged"
        client.set_tag(run_id, "runner.reason", why)
        client.set_terminated(run_id, "FAILED")
        return None, why
    return float(value), None


def submit_members(sweep: Sweep, members: list[Member], done: set[str], say: Any) -> None:
    """A scheduler's sweep: every member staged (its MLflow run, inputs and image), then all submitted at once as
    one job array with `sweep.parallel` as its throttle. Returns without waiting: the members end on the cluster,
    and the last of them closes the sweep."""
    from runner.launch.trials import key

    first = members[0]
    backend = get_backend(first.spec.backend)
    batch: list[tuple[RunDir, int]] = []
    results: dict[int, Result] = {}
    try:
        for m in members:
            if key(m.trial.overrides) in done:
                say(f"[sweep] member {m.index} already FINISHED: {m.trial.label}")
                continue
            tags = sweep.member_tags(m.trial.overrides, m.index)
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
                say(f"  member {m.index}: run {results[m.index].run_id} ({m.trial.label})")


def ended_as(outcome: Outcome | None) -> str:
    """How a member ended, as the sweep's table says it."""
    if outcome is None:
        return "NOT RUN"
    return "PRUNED" if outcome.status == "KILLED" and outcome.reason == PRUNED else outcome.status


PRUNED = "pruned"
