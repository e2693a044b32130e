"""A SLURM job's process on its node: the owner of the job's run (runner.runs.owner), with the run's container on
the node's engine.

`python -m runner.backends.slurm.node LISTING` (the job script): LISTING names one run directory per line, the
array task's line is this task's run. The process claims the run's ownership lock and owns it as an owner on a
single machine does, with these differences: the container starts on this node's engine (its image loaded from
the shared cache first if the engine lacks it); SIGTERM (scancel, or the time limit) is a stop request whose
reason says which; and the controller is asked every few seconds whether the job still runs, so that a job
SLURM has ended (a node failure) ends its run with SLURM's reason.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from runner.backends.base import RunHandle
from runner.backends.docker import attempt_name
from runner.backends.docker.envstore import ENV_PATH
from runner.backends.slurm import SlurmBackend, SlurmPlan, engine, jobs, take_secrets
from runner.errors import RunnerError
from runner.harness.shim import secret_values
from runner.runs.rundir import RunDir

VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
WATCH_EVERY = 10.0  # seconds between asking the controller how the job stands


class NodeHandle(RunHandle):
    """The run's container, and the job around it: when SLURM ends the job (a failed node), the run ends."""

    def __init__(self, container: engine.EngineHandle, job: str):
        super().__init__(container.run_id)
        self.container, self.job = container, job
        self.asked = time.monotonic()

    def wait(self, timeout: float | None = None) -> Any:
        outcome = self.container.wait(timeout)
        if outcome is not None or time.monotonic() - self.asked < WATCH_EVERY:
            return outcome
        self.asked = time.monotonic()
        try:
            found = jobs.controller_state(self.job)
        except RunnerError:  # the controller away for a while: the run goes on
            return None
        if found is not None and not found.over:
            return None
        self.container.cancel()
        return jobs.outcome(self.job, found, None)

    def cancel(self, grace: float | None = None) -> None:
        self.container.cancel(grace)

    def release(self) -> None:
        self.container.release()


class NodeBackend(SlurmBackend):
    """The SLURM backend as its job's process on the node sees it: the run is a container here."""

    def __init__(self, job: str):
        super().__init__()
        self.job = job

    def start(self, plan: SlurmPlan, run_dir: RunDir, env: dict[str, str]) -> RunHandle:
        from runner.backends.docker import with_secrets

        name = plan.engine
        kwargs = plan.container
        unseen = [
            m["Source"]
            for m in kwargs["mounts"]
            if m["Target"] == ENV_PATH and not Path(m["Source"]).is_dir()
        ]
        if unseen:
            raise RunnerError(
                f"this node does not see the environment's folder {unseen[0]}: backend.envs=folder needs the "
                "runner's cache (RUNNER_CACHE) on a filesystem every node mounts at the same path; or submit with "
                "backend.envs=archive"
            )
        loaded = engine.load_image(name, kwargs["image"], Path(plan.archive))
        run_id = self.run_id_of(kwargs)
        secrets = {n: os.environ[n] for n in plan.secrets if n in os.environ}
        # Every variable in the owner-only file the command sources (as secrets are for Docker runs): never on a
        # command line, and read by `sh` as written, whatever quotes a value holds (engines' env files differ).
        environment = {**kwargs["environment"], **env, **secrets}
        odd = [n for n in environment if not VARIABLE.fullmatch(n)]
        if odd:
            raise RunnerError(f"env.variables: '{odd[0]}' is not a variable name (letters, digits, _)")
        kwargs = with_secrets({**kwargs, "environment": {}}, run_dir, environment)
        kwargs["name"] = attempt_name(kwargs["name"], env)
        try:
            container = engine.engine_call(name, "run", *engine.run_options(kwargs, name)).strip()
        except RunnerError as exc:  # created but not started: nothing of it may stay
            engine.remove(name, kwargs["name"])
            run_dir.secrets.unlink(missing_ok=True)
            raise RunnerError(f"{name} could not start the run: {exc}") from exc
        handle = engine.EngineHandle(
            run_id, name, container, run_dir, plan.keep, secret_values(secrets, secrets)
        )
        # Its other inputs were recorded at submission; these, once the container is on its way.
        from mlflow import MlflowClient
        from mlflow.entities import RunTag

        try:  # the run goes on whatever: a failure here must not leave its container unowned
            MlflowClient(env["MLFLOW_TRACKING_URI"]).log_batch(
                run_id,
                tags=[
                    RunTag("runner.image.source", "shared cache" if loaded else "node"),
                    RunTag("runner.node", os.uname().nodename),
                ],
            )
        except Exception as exc:
            print(f"[owner] could not record the node's tags: {exc}", file=sys.stderr, flush=True)
        return NodeHandle(handle, self.job)

    @staticmethod
    def run_id_of(kwargs: dict[str, Any]) -> str:
        return str(kwargs["labels"]["runner.run_id"])

    def reattach(self, run_id: str, run_dir: RunDir) -> RunHandle | None:
        from runner.backends.docker import started_secrets

        plan = SlurmPlan.of(run_dir)
        name, container = plan.engine, container_name(plan, run_dir)
        if not engine.has(name, "container", container):
            return None
        values = {n: os.environ[n] for n in plan.secrets if n in os.environ}
        masked = secret_values(values, values) if values else started_secrets(run_dir, list(plan.secrets))
        handle = engine.EngineHandle(run_id, name, container, run_dir, plan.keep, masked)
        return NodeHandle(handle, self.job)


def container_name(plan: SlurmPlan, run_dir: RunDir) -> str:
    """The container of the run's current attempt."""
    from runner.runs import attempts

    return attempt_name(plan.container["name"], {"RUNNER_ATTEMPT": str(attempts.current(run_dir))})


def leftovers(run_dir: RunDir) -> int:
    """After the owner: its container, if the owner was killed before removing it (a run never outlives its job)."""
    plan = SlurmPlan.of(run_dir)
    if not plan.keep:
        engine.remove(plan.engine, container_name(plan, run_dir))
    run_dir.secrets.unlink(missing_ok=True)
    return 0


def interruption(job: str, ends: float | None) -> str | None:
    """Why SLURM signals the job, where it is not a cancellation: its time limit (the controller's planned end),
    or its preemption by another job (the controller's word)."""
    if ends is not None and time.time() >= ends - 5:
        return jobs.TIMEOUT_REASON
    try:
        found = jobs.controller_state(job)
    except RunnerError:
        return None
    return f"preempted: SLURM job {job} was preempted" if found and found.state == "PREEMPTED" else None


def main(argv: list[str]) -> int:
    from runner.runs import owner

    clean = argv[0] == "--leftovers"
    if (
        not clean
    ):  # MLflow takes a second or more to import: meanwhile, the job is looked up and the run started
        # Without pandas, which this process never uses: MLflow imports it only for its dataset classes where it is
        # installed (mlflow-skinny goes without), and it is a third of MLflow's import, CPU the node's runs lose.
        sys.modules.setdefault("pandas", None)  # type: ignore[arg-type]
        threading.Thread(target=lambda: __import__("mlflow.tracking"), daemon=True).start()
    listing, index = Path(argv[-2]).read_text().splitlines(), argv[-1]  # index: the array task's, or "single"
    run_dir = RunDir(Path(listing[0 if index == "single" else int(index)]))
    if clean:
        return leftovers(run_dir)
    job = os.environ["SLURM_JOB_ID"] if index == "single" else f"{os.environ['SLURM_ARRAY_JOB_ID']}_{index}"
    take_secrets(run_dir)
    deadline = time.monotonic() + 60
    lock_fd = owner.try_claim(run_dir)
    while lock_fd is None and time.monotonic() < deadline:  # a login node's runner settling it lets go soon
        time.sleep(1)
        lock_fd = owner.try_claim(run_dir)
    if lock_fd is None:
        print(f"[owner] run {run_dir.root.name} is owned by another process: nothing to do", file=sys.stderr)
        return 1
    ends = jobs.end_time(job)

    def on_term(signum: int, frame: Any) -> None:  # scancel, preemption or the time limit: SLURM says which
        why = interruption(job, ends)
        if why is None:
            owner.request_stop(run_dir, f"cancelled: SLURM job {job} was cancelled")
        elif not run_dir.interrupt.exists():  # the run checkpoints, and continues where it may
            run_dir.interrupt.write_text(why)

    def on_warning(signum: int, frame: Any) -> None:  # SLURM's --signal before the time limit
        if not run_dir.interrupt.exists():
            run_dir.interrupt.write_text(f"{jobs.TIMEOUT_REASON} is near")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGUSR1, on_warning)
    for name in ("SIGINT", "SIGHUP"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    if owner.ending(run_dir) is not None:
        return 0
    owner.Owner(run_dir, backend=NodeBackend(job)).run()
    # Its container again, should the owner's removal have failed: here, not in a second process (the job script
    # starts one only after an owner that did not end).
    return leftovers(run_dir)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
