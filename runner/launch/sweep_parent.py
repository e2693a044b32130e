"""Sweeps: one MLflow parent run per sweep, one child per member; CPU/GPU slots; resume; the summary."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

from runner.errors import ConfigError
from runner.tracking.compare import ended_as

SWEEP_ID = "runner.sweep_id"
# The member's own overrides, a JSON list: how resume recognises it.
MEMBER = "runner.sweep.member"
PARENT = "mlflow.parentRunId"
INDEX = "runner.sweep.index"
REUSED_BY = "runner.sweep.reused_by"  # a member's tag: the later members its run answers for (same values)


@dataclass(frozen=True)
class Sweep:
    """One sweep as the runner's command started (or resumed) it: handed to Hydra with the task function, so
    that the launcher (or a task function another launcher calls) knows which sweep its members belong to."""

    id: str
    # The sweep's MLflow parent run.
    parent: str
    sweeper: str = "basic"
    objective: str | None = None
    # The members' keys the launcher was given (it adds them): a member that never got a run still counts.
    planned: set[str] = field(default_factory=set, compare=False)

    def member_tags(self, overrides: Sequence[str], index: int | None = None) -> dict[str, str]:
        """The tags that make a run a member of this sweep; `index`: its place among the launcher's members."""
        tags = {SWEEP_ID: self.id, PARENT: self.parent, MEMBER: member_key(overrides)}
        if index is not None:
            tags[INDEX] = str(index)
        return tags


@dataclass(frozen=True)
class Slots:
    """How many members run at once, and the CPUs and GPUs each slot owns."""

    parallel: int
    cpusets: tuple[str, ...]
    gpus: tuple[tuple[str, ...], ...]  # empty without GPUs


def plan_slots(
    members: int,
    parallel: int | None,
    cpus_per_member: float | None,
    gpus_per_member: int | None,
    host_cpus: Sequence[int],
    host_gpus: Sequence[str],
    use_gpu: bool,
) -> Slots:
    """Give each slot its own CPUs (and GPUs), never the same ones twice; default: as many slots as fit."""
    if use_gpu:
        per = gpus_per_member or 1
        if per > len(host_gpus):
            raise ConfigError(f"resources.gpus={per} per member, but this host has {len(host_gpus)} GPU(s).")
        gpu_slots = len(host_gpus) // per
    else:
        per, gpu_slots = 0, members
    cpu_each = math.ceil(cpus_per_member) if cpus_per_member else None
    cpu_slots = max(1, len(host_cpus) // (cpu_each or 1))
    n = parallel or min(members, cpu_slots, gpu_slots)
    n = max(1, min(n, members))
    if use_gpu and n > gpu_slots:
        raise ConfigError(
            f"sweep.parallel={n} members at once need {n * per} GPUs; this host has {len(host_gpus)}."
        )
    each = cpu_each or max(1, len(host_cpus) // n)
    cpusets = tuple(
        _cpuset([host_cpus[(i * each + j) % len(host_cpus)] for j in range(each)]) for i in range(n)
    )
    gpus = tuple(tuple(host_gpus[i * per : (i + 1) * per]) for i in range(n)) if use_gpu else ()
    return Slots(n, cpusets, gpus)


def _cpuset(cpus: list[int]) -> str:
    return ",".join(str(c) for c in sorted(set(cpus)))


def known_metrics(cfg: DictConfig) -> set[str] | None:
    """The metrics the built-in trainer logs for `cfg`; None in command mode (the command decides)."""
    if cfg.command is not None:
        return None
    names = {"loss", *(str(m) for m in cfg.train.metrics)}
    logged = set(names) | {f"test_{n}" for n in names} | {"duration_s"}
    if cfg.train.validation_split > 0:
        logged |= {f"val_{n}" for n in names}
    return logged


def check_objective(cfg: DictConfig, sweeper: str) -> None:
    objective = cfg.sweep.objective
    if objective is None:
        if sweeper != "basic":
            raise ConfigError(
                f"hydra/sweeper={sweeper} optimises a metric: set sweep.objective, e.g. sweep.objective=val_accuracy"
            )
        return
    known = known_metrics(cfg)
    if known is not None and objective not in known:
        raise ConfigError(
            f"sweep.objective: '{objective}' is never logged by this model. It logs: {', '.join(sorted(known))}."
        )


def member_key(overrides: Sequence[str]) -> str:
    return json.dumps(sorted(overrides))


def start_parent(
    uri: str, experiment: str, argv: list[str], sweeper: str, cfg: DictConfig
) -> tuple[str, str]:
    """Create the sweep's parent run; returns (sweep id, parent run id)."""
    from mlflow import MlflowClient

    from runner.tracking.record import EXPERIMENT, experiment_id, store_init_lock

    with store_init_lock(uri):
        client = MlflowClient(uri)
    exp_id = experiment_id(client, experiment)
    sweep_id = uuid.uuid4().hex[:12]
    run = client.create_run(
        exp_id,
        run_name=f"sweep-{sweep_id}",
        tags={
            SWEEP_ID: sweep_id,
            "runner.sweep.argv": json.dumps(argv),
            "runner.sweeper": sweeper,
            "runner.sweep.overrides": " ".join(a for a in argv if not a.startswith("-")),
            EXPERIMENT: experiment,
            "runner.role": "sweep",
            "runner.sweep.objective": cfg.sweep.objective or "",
            "runner.sweep.direction": cfg.sweep.direction,
        },
    )
    return sweep_id, run.info.run_id


def find_parent(uri: str, sweep_id: str) -> Any:
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    found = (
        client.search_runs(ids, f"tags.`{SWEEP_ID}` = '{sweep_id}' and tags.`runner.role` = 'sweep'")
        if ids
        else []
    )
    if not found:
        raise ConfigError(f"No sweep '{sweep_id}' in {uri}. Sweeps are listed by: runner ls")
    return found[0]


def reopen_parent(uri: str, parent_id: str) -> None:
    from mlflow import MlflowClient

    MlflowClient(uri).update_run(parent_id, status="RUNNING")


def children(uri: str, parent: Any) -> list[Any]:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    return list(
        client.search_runs(
            [parent.info.experiment_id],
            f"tags.`{PARENT}` = '{parent.info.run_id}'",
            order_by=["attributes.start_time ASC"],
        )
    )


def finish_parent(
    uri: str,
    parent_id: str,
    interrupted: bool,
    error: str | None = None,
    planned: Iterable[str] = (),
    account: dict[str, Any] | None = None,
) -> str:
    """FINISHED when every member finished (or was pruned), FAILED with the count when any failed (or the sweep
    itself broke off with `error`), KILLED when interrupted. `planned`: the keys of the members the driver was
    given, a member among them that never got a run counting as failed. `account`: the driver's own tags (trials,
    reused, the best), recorded with the runs', pruned and failed counts."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    parent = client.get_run(parent_id)
    kids = children(uri, parent)
    # The latest attempt of each member counts (resume re-runs the ones that did not finish).
    latest = {r.data.tags.get(MEMBER, ""): ended_as(r) for r in kids}
    latest.update({key: "NOT RUN" for key in planned if key not in latest})
    failed = sum(1 for s in latest.values() if s not in ("FINISHED", "PRUNED"))
    status = "KILLED" if interrupted else ("FAILED" if failed or error or not latest else "FINISHED")
    tags = {
        "runner.sweep.members": len(latest),
        "runner.sweep.runs": len(kids),
        "runner.sweep.pruned": sum(1 for r in kids if ended_as(r) == "PRUNED"),
        "runner.sweep.failed": failed,
        **best_of(kids, parent.data.tags),
        **(account or {}),
    }
    if error:
        tags["runner.reason"] = error
    for name, value in tags.items():
        client.set_tag(parent_id, name, str(value))
    client.set_terminated(parent_id, status)
    return status


def best_of(kids: list[Any], parent_tags: dict[str, str]) -> dict[str, Any]:
    """The member with the best objective among those that finished (a grid's; an Optuna sweep's driver says its
    study's own)."""
    objective = parent_tags.get("runner.sweep.objective")
    scored = [r for r in kids if objective and r.info.status == "FINISHED" and objective in r.data.metrics]
    if not scored:
        return {}
    sign = -1 if parent_tags.get("runner.sweep.direction") == "minimize" else 1
    best = max(scored, key=lambda r: sign * r.data.metrics[objective])
    swept = json.loads(best.data.tags.get(MEMBER, "[]"))
    return {
        "runner.sweep.best_member": best.data.tags.get(INDEX, ""),
        "runner.sweep.best_run": best.info.run_id,
        "runner.sweep.best_value": best.data.metrics[objective],
        "runner.sweep.best_params": json.dumps(dict(o.split("=", 1) for o in swept if "=" in o)),
    }


def summary(uri: str, parent_id: str, objective: str | None) -> str:
    """One line per member: its own overrides, status, objective, duration, run id; then the best member."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    parent = client.get_run(parent_id)
    runs = sorted(children(uri, parent), key=lambda r: int(r.data.tags.get(INDEX) or 0))
    overrides = [json.loads(r.data.tags.get(MEMBER, "[]")) for r in runs]
    common = set.intersection(*map(set, overrides)) if len(overrides) > 1 else set()
    rows = []
    for run, ovs in zip(runs, overrides, strict=True):
        end = run.info.end_time or run.info.start_time
        value = run.data.metrics.get(objective) if objective else None
        rows.append(
            (
                run.data.tags.get(INDEX, "-"),
                " ".join(o for o in ovs if o not in common),
                ended_as(run),
                "-" if value is None else f"{value:.4g}",
                f"{(end - run.info.start_time) / 1000:.1f}s",
                run.info.run_id,
            )
        )
    tags = parent.data.tags
    by_run = {row[5]: row for row in rows}
    for member, run_id in json.loads(tags.get("runner.sweep.reuses") or "[]"):
        if run_id in by_run:  # a trial that repeated an earlier one's values: that run answers for it
            _, label, _, value, _, _ = by_run[run_id]
            rows.append((str(member), label, "REUSED", value, "-", run_id))
    rows.sort(key=lambda row: int(row[0]) if row[0].isdigit() else 0)
    width = max([len(r[1]) for r in rows] + [9])
    head = f"{'#':>3}  {'MEMBER':{width}}  {'STATUS':9}  {(objective or 'OBJECTIVE').upper():>14}  {'DURATION':>9}  RUN"
    lines = [f"{i:>3}  {o:{width}}  {s:9}  {v:>14}  {d:>9}  {r}" for i, o, s, v, d, r in rows]
    if tags.get("runner.sweep.trials"):
        lines.append(
            f"trials {tags['runner.sweep.trials']}: runs {tags.get('runner.sweep.runs')}, reused "
            f"{tags.get('runner.sweep.reused', 0)}, pruned {tags.get('runner.sweep.pruned')}, failed "
            f"{tags.get('runner.sweep.failed')}"
        )
    if tags.get("runner.sweep.best_run"):
        lines.append(
            f"best: member {tags['runner.sweep.best_member']} (run {tags['runner.sweep.best_run']}) "
            f"{objective}={float(tags['runner.sweep.best_value']):.4g} with {tags['runner.sweep.best_params']}"
        )
    return "\n".join([head, *lines])
