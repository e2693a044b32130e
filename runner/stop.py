"""`runner stop RUN_ID`: stop a running run from another terminal; it ends KILLED with its outputs kept."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from runner.errors import RunnerError
from runner.tracking import STOP_TAG, get_run

GRACE = 10  # seconds between SIGINT and SIGKILL


def stop(uri: str, project: Path, run_id: str) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    run = get_run(uri, run_id)
    if run.info.status != "RUNNING":
        return f"Run {run_id} already ended {run.info.status}."
    client.set_tag(run_id, STOP_TAG, "true")  # the runner that owns the run then records KILLED
    if _stop_container(run_id) or _stop_process(project / ".runner" / "runs" / run_id / "pid"):
        return f"Stopping run {run_id}: it ends KILLED, its log and outputs kept."
    # Nothing runs it any more (its runner died): close the record so it is not left RUNNING.
    client.set_tag(run_id, "runner.reason", "stopped by runner stop: no process was running it")
    client.set_terminated(run_id, "KILLED")
    return f"Run {run_id} had no process left; marked KILLED."


def _stop_container(run_id: str) -> bool:
    try:
        from runner.backends.docker import client, runner_containers

        containers = [c for c in runner_containers(client(), run_id, kinds=("run",)) if c.status == "running"]
    except RunnerError:
        return False
    for c in containers:
        c.kill(signal="SIGINT")  # as Ctrl-C would; then, after a grace period, for good
        with contextlib.suppress(Exception):
            c.wait(timeout=GRACE)
            continue
        with contextlib.suppress(Exception):
            c.kill()
    return bool(containers)


def _stop_process(pid_file: Path) -> bool:
    """SIGINT to a local run's process group, SIGKILL after the grace period; False if none was running."""
    try:
        pgid = int(pid_file.read_text())
        os.killpg(pgid, signal.SIGINT)
    except (OSError, ValueError):
        return False
    deadline = time.monotonic() + GRACE
    while time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
    with contextlib.suppress(OSError):
        os.killpg(pgid, signal.SIGKILL)
    return True
