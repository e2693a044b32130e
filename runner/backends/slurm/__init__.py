"""The SLURM backend: each run a SLURM job, whose process on the node is the run's owner (runner.runs.owner), and
the run a container there, exactly as the Docker backend makes it.

On the submitting machine (the login node), a run goes as far as a Docker run does before its hand-over: checks
(SLURM's own, through `sbatch --test-only`), the MLflow run on the team's tracking server, the staged inputs in
the project (on the shared filesystem), the env image built once per content hash and saved to the shared image
cache. Then, instead of an owner forked here, one `sbatch`: a job per run, or a job array for a sweep with
`sweep.parallel` as its throttle. The command returns; the terminal may close.

On the node (runner.backends.slurm.node), the job's process owns the run: it loads the image from the shared
cache when the node's engine (Docker or Podman) lacks it, starts the container, records what the run logs, and
records its ending: scancel and the time limit reach it as SIGTERM, a node failure through the controller's word.
Whatever the owner could not record (it was killed), reconciliation on the login node records from SLURM's
accounting (sacct) once the job has ended: never RUNNING after the job.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.backends.base import Backend, HandOver, Log, Plan, Prepared, RunHandle
from runner.backends.slurm import jobs
from runner.compose.spec import RunSpec
from runner.environment.lock import cache_dir
from runner.errors import ConfigError, RunnerError
from runner.harness.shim import write_json
from runner.runs import attempts
from runner.runs.rundir import Outcome, RunDir
from runner.tracking.record import is_remote

JOBS = Path(".runner") / "jobs"  # in the project: job scripts' run lists and the owners' own output
ENGINES = ("docker", "podman")
ENVS = ("folder", "archive")  # backend.envs


def job_of(run_dir: RunDir) -> str | None:
    try:
        return str(json.loads((run_dir.slurm_job).read_text())["job"])
    except (OSError, ValueError, KeyError):
        return None


def archive_path(cfg: Any, project: str, image_id: str) -> Path:
    """The env image's file in the shared image cache, by the image's id (what a node's engine then has)."""
    folder = Path(cfg.image_cache).expanduser() if cfg.image_cache else cache_dir() / "image-archives"
    return Path(project, folder) / f"{image_id.replace(':', '-')}.tar"


@dataclass(frozen=True, kw_only=True)
class SlurmPlan(Plan):
    """A SLURM run: its container (as the Docker backend's, started by the node's owner on the node's `engine`,
    its image loaded from `archive` where the engine lacks it), whether the container stays, and the job's
    `sbatch` options and name."""

    container: dict[str, Any] = field(default_factory=dict)
    engine: str = "docker"
    archive: str = ""
    keep: bool = False
    sbatch: tuple[str, ...] = ()
    name: str = ""

    def variable(self, name: str) -> str | None:
        return self.container.get("environment", {}).get(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "container": self.container,
            "engine": self.engine,
            "archive": self.archive,
            "keep": self.keep,
            "secrets": list(self.secrets),
            "sbatch": list(self.sbatch),
            "name": self.name,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SlurmPlan:
        return cls(
            container=dict(data["container"]),
            engine=data["engine"],
            archive=data["archive"],
            keep=data["keep"],
            secrets=tuple(data["secrets"]),
            sbatch=tuple(data["sbatch"]),
            name=data["name"],
        )

    @classmethod
    def of(cls, run_dir: RunDir) -> SlurmPlan:
        """The run's plan, which a submitted run has."""
        return cls.from_json(json.loads(run_dir.plan.read_text()))


class JobHandle(RunHandle):
    """A run whose job has ended without its owner recording the ending: SLURM says how it ended."""

    def __init__(self, run_id: str, job: str, run_dir: RunDir):
        super().__init__(run_id)
        self.job, self.run_dir = job, run_dir

    def wait(self, timeout: float | None = None) -> Outcome | None:
        from runner.runs.owner import read_json

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            settled = read_json(self.run_dir.settled)  # the node's owner knew the ending, then died
            if isinstance(settled, dict):
                return Outcome.from_json(settled)
            found = jobs.state(self.job)
            if found is None or found.over:
                stop = self.run_dir.stop
                return jobs.outcome(self.job, found, stop.read_text().strip() if stop.exists() else None)
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(2)

    def cancel(self, grace: float | None = None) -> None:
        jobs.cancel(self.job)


class SlurmBackend(Backend[SlurmPlan]):
    name = "slurm"
    plan_type = SlurmPlan
    sweeps_at_once = True  # one job array

    def __init__(self) -> None:
        self._docker: Any = None

    @property
    def docker(self) -> Any:
        """The Docker backend that builds the env image on this machine (made when first needed)."""
        if self._docker is None:
            from runner.backends.docker import DockerBackend

            self._docker = DockerBackend()
        return self._docker

    def options(self, spec: RunSpec) -> list[str]:
        cfg = spec.backend_config
        time_limit = jobs.time_limit(cfg.time, spec.resources.timeout)
        settings = type(cfg)(**{**vars(cfg), "time": time_limit})
        opts = jobs.options(
            settings, spec.resources.cpus, spec.resources.memory_bytes, spec.resources.gpus, spec.env.gpu
        )
        return opts + jobs.warning(time_limit) if spec.resources.max_attempts > 1 else opts

    def check(self, spec: RunSpec) -> None:
        cfg = spec.backend_config
        if not is_remote(spec.tracking_uri):
            raise ConfigError(
                f"backend=slurm records to a tracking server, not to '{spec.tracking_uri}': jobs on many nodes "
                "writing one SQLite file or folder over a shared filesystem corrupt it, and not every node can "
                "reach it. Give the team's server: tracking.uri=http://HOST:PORT (or export MLFLOW_TRACKING_URI); "
                "scripts/cluster.sh starts one on PostgreSQL."
            )
        if cfg.envs not in ENVS:
            raise ConfigError(f"backend.envs: '{cfg.envs}' is not one of {', '.join(ENVS)}.")
        if cfg.engine not in ENGINES:
            raise ConfigError(f"backend.engine: '{cfg.engine}' is not one of {', '.join(ENGINES)}.")
        jobs.check(self.options(spec))  # partition, account, QOS, GPUs, time: SLURM's own verdict
        self.docker.base_image(spec.env.image)  # the image is built here, on the submitting machine

    def host_gpus(self, spec: RunSpec) -> list[str]:
        """None: the nodes have the run's GPUs, not this machine (SLURM itself checks those: check)."""
        return []

    def lock_target(self, spec: RunSpec) -> tuple[str, str | None]:
        return self.docker.lock_target(spec)  # type: ignore[no-any-return]

    def prepare(self, spec: RunSpec, lock: str, log: Log) -> Prepared:
        """The environment, built here once per content hash (as for Docker runs): its folder in the env store,
        which the nodes mount, or an image holding it (backend.envs=archive); the run's image saved once to the
        shared image cache, from which a node that lacks it loads it."""
        archived = spec.backend_config.envs == "archive"
        prepared: Prepared = self.docker.prepare(spec, lock, log, image=archived)
        tag = prepared.tags["runner.image"]
        image_id = prepared.tags["runner.image.id"]
        archive = archive_path(spec.backend_config, spec.project_dir, image_id)
        if not archive.is_file():
            log.write(f"[runner] image {tag}: saving it to the shared image cache {archive.parent}\n")
            archive.parent.mkdir(parents=True, exist_ok=True)
            partial = archive.with_name(f".{archive.name}.{os.getpid()}.{threading.get_ident()}")
            try:
                with open(partial, "wb") as fh:
                    for chunk in self.docker.docker.images.get(image_id).save(named=True):
                        fh.write(chunk)
                partial.rename(archive)  # whole or absent: a node never loads half an image
            finally:
                partial.unlink(missing_ok=True)
        tags = {**prepared.tags, "runner.image.archive": str(archive)}
        return Prepared(prepared.env_id, tags, prepared.harness_lock, prepared.harness_site)

    def furnish(self, spec: RunSpec, run_dir: RunDir, prepared: Prepared) -> None:
        """An environment of the store: this run needs it until its job has started it (runner gc keeps it)."""
        self.docker.furnish(spec, run_dir, prepared)

    def plan(self, spec: RunSpec, run_dir: RunDir, prepared: Prepared, env: dict[str, str]) -> SlurmPlan:
        from runner.backends.docker import container_spec

        cfg = spec.backend_config
        return SlurmPlan(
            container=container_spec(
                spec, run_dir, prepared.tags["runner.image.id"], env, prepared.tags.get("runner.env.folder")
            ),
            engine=cfg.engine,
            archive=prepared.tags["runner.image.archive"],
            keep=cfg.keep_container,
            secrets=tuple(spec.env.secrets),
            sbatch=tuple(self.options(spec)),
            name=f"runner-{spec.experiment}"[:64],
        )

    def start(self, plan: SlurmPlan, run_dir: RunDir, env: dict[str, str]) -> RunHandle:
        # Only a node's owner starts a SLURM run (runner.backends.slurm.node); here, it was never submitted.
        raise RunnerError("lost: the runner process ended before the run's job was submitted")

    def hand_over(self, run_dirs: list[RunDir], lock_fds: list[int], parallel: int | None) -> HandOver:
        """Submitted: each run's job owns it from its start (it claims the lock once the caller lets go)."""
        return HandOver(tuple(self.submit(run_dirs, parallel)))

    def resubmit(self, run_dir: RunDir) -> bool:
        """The run's next attempt: a job of its own, queued to start once the current one has ended (SLURM's
        --dependency, asked from outside the container: on the node by the job's owner, or here)."""
        from mlflow import MlflowClient

        after = job_of(run_dir)
        (job,) = self.submit([run_dir], None, after=after)
        with open(run_dir.log, "a", encoding="utf-8") as log:
            log.write(f"[runner] the next attempt is SLURM job {job}, queued after job {after}\n")
        state = json.loads(run_dir.state.read_text())
        with contextlib.suppress(Exception):  # the job is queued whatever the record says meanwhile
            MlflowClient(state["tracking_uri"]).set_tag(state["run_id"], "runner.slurm.job", job)
        return True

    def submit(self, run_dirs: list[RunDir], parallel: int | None, after: str | None = None) -> list[str]:
        """One job for one run, one job array for several (at most `parallel` at once): each task the owner of
        its run, after job `after` has ended where given. The job id of each run, in order."""
        plans = [SlurmPlan.of(d) for d in run_dirs]
        if any(p.sbatch != plans[0].sbatch for p in plans):
            raise ConfigError(
                "a SLURM sweep is one job array, so its members must ask SLURM for the same resources: do not "
                "sweep over resources.* or backend.* with backend=slurm."
            )
        project = Path(json.loads(run_dirs[0].state.read_text())["project"])
        folder = project / JOBS
        folder.mkdir(parents=True, exist_ok=True)
        # A run's next attempt has a listing of its own: a sweep's (named after its first run) may still be read.
        attempt = attempts.current(run_dirs[0]) if len(run_dirs) == 1 else 1
        listing = folder / f"{run_dirs[0].root.name}{f'.attempt{attempt}' if attempt > 1 else ''}.runs"
        listing.write_text("".join(f"{d.root}\n" for d in run_dirs))
        output = folder / ("%A_%a.out" if len(run_dirs) > 1 else "%j.out")
        # -P: the job's working folder (the project's) is not searched for modules, as a project may hold a
        # package of the same name as one of the runner's.
        node = f"{shlex.quote(sys.executable)} -P -m runner.backends.slurm.node"
        # Never one inherited from elsewhere.
        index = '"$SLURM_ARRAY_TASK_ID"' if len(run_dirs) > 1 else "single"
        script = (
            "#!/bin/sh\n"
            "# The owner of this task's run (runner.backends.slurm.node) starts the run's container here and\n"
            "# records the run until it ends; scancel and the time limit reach it as SIGTERM, SLURM's warning\n"
            "# before the time limit (--signal=B:USR1) through this shell. This shell waits for it, then removes\n"
            "# the container if the owner could not (it did not end: killed, say).\n"
            "trap '' TERM\n"
            "trap 'kill -USR1 \"$owner\" 2>/dev/null' USR1\n"
            f"{node} {shlex.quote(str(listing))} {index} &\n"
            "owner=$!\n"
            'while :; do wait "$owner"; code=$?; kill -0 "$owner" 2>/dev/null || break; done\n'
            f'[ "$code" = 0 ] || {node} --leftovers {shlex.quote(str(listing))} {index}\n'
            "exit $code\n"
        )
        opts = [*plans[0].sbatch, f"--job-name={plans[0].name}", f"--output={output}", "--export=ALL"]
        opts += [f"--dependency=afterany:{after}"] if after else []
        names = hand_secrets(run_dirs, plans)
        environ = {k: v for k, v in os.environ.items() if k not in names}
        job = jobs.submit(opts, script, len(run_dirs), parallel, str(project), environ)
        ids = [f"{job}_{i}" if len(run_dirs) > 1 else job for i in range(len(run_dirs))]
        for run_dir, job_id in zip(run_dirs, ids, strict=True):
            write_json(run_dir.slurm_job, {"job": job_id, "listing": str(listing)})
        return ids

    def owned_elsewhere(self, run_dirs: list[RunDir]) -> list[RunDir]:
        """The runs among `run_dirs` whose job is queued or running (its owner is, or will be, the job's
        process), from one question to SLURM for all."""
        by_job = {job: run_dir for run_dir in run_dirs if (job := job_of(run_dir)) is not None}
        try:
            found = jobs.states(list(by_job))
        # SLURM does not answer: nothing can be told, so nothing is settled.
        except RunnerError:
            return list(by_job.values())
        return [run_dir for job, run_dir in by_job.items() if (s := found[job]) is not None and not s.over]

    def reattach(self, run_id: str, run_dir: RunDir) -> RunHandle | None:
        job = job_of(run_dir)
        return None if job is None else JobHandle(run_id, job, run_dir)

    def cancel(self, run_dir: RunDir) -> None:
        """A queued job is cancelled; a running one is its owner's to stop (it records the run, and scancel would
        give it only SLURM's KillWait to do so)."""
        job = job_of(run_dir)
        if job is None:
            return
        with contextlib.suppress(RunnerError):
            found = jobs.state(job)
            if found is not None and found.state == "PENDING":
                jobs.cancel(job)


def hand_secrets(run_dirs: list[RunDir], plans: list[SlurmPlan]) -> set[str]:
    """Each run's secrets for its job's process, in an owner-only file of its folder (the shared filesystem),
    never in the job's environment (SLURM keeps that: its state, and `sacct --env-vars`); the names."""
    names: set[str] = set()
    for run_dir, plan in zip(run_dirs, plans, strict=True):
        values = {n: os.environ[n] for n in plan.secrets if n in os.environ}
        if values:
            write_json(run_dir.job_secrets, values, private=True)
        names.update(plan.secrets)
    return names


def take_secrets(run_dir: RunDir) -> None:
    """On the node: the secrets its submitter handed the job (hand_secrets), into this process's environment."""
    path = run_dir.job_secrets
    with contextlib.suppress(OSError, ValueError):
        os.environ.update({str(k): str(v) for k, v in json.loads(path.read_text()).items()})
    path.unlink(missing_ok=True)


BACKEND = SlurmBackend
