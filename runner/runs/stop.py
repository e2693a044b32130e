"""`runner stop RUN_ID`: stop a run from any terminal; it ends KILLED with its log and outputs kept.

The stop is a request to the run's owner (runner.runs.owner), which signals the run (SIGINT, then SIGKILL after a
grace period) and records the ending; a run whose owner was lost has been given a new one by then (every
command reconciles first).
"""

from __future__ import annotations

import time
from pathlib import Path

from runner.runs import owner
from runner.tracking.record import get_run

GRACE = 10  # seconds between SIGINT and SIGKILL
REASON = "stopped by runner stop"


def stop(uri: str, project: Path, run_id: str) -> str:
    run_dir = owner.find_run_dir(project, run_id)
    run_id = run_dir.root.name
    run = get_run(uri, run_id)
    if run.info.status != "RUNNING":
        return f"Run {run_id} already ended {run.info.status}."
    if not (run_dir.state).is_file():
        return _close_unowned(uri, run_id)
    owner.request_stop(run_dir, REASON)  # its owner obeys it, wherever it runs
    if owner.owned_elsewhere([run_dir]):  # a queued job on a cluster has no owner yet: the scheduler drops it
        from runner.backends import get_backend

        get_backend((owner.read_json(run_dir.state) or {})["backend"]).cancel(run_dir)
    deadline = time.monotonic() + GRACE + 30
    while time.monotonic() < deadline:
        ended = owner.ending(run_dir)
        if ended is not None:
            return f"Run {run_id} stopped: it ends {ended.status}, its log and outputs kept."
        # No owner (it died, or a cancelled job never had one): a new one records it.
        if not owner.owned(run_dir):
            owner.adopt(run_dir, wait=0)
        time.sleep(0.5)
    return f"Stopping run {run_id}: it ends KILLED, its log and outputs kept (see: runner ls)."


def _close_unowned(uri: str, run_id: str) -> str:
    """A RUNNING record this runner never owned (made by an older version): close it, since nothing runs it."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    client.set_tag(run_id, "runner.reason", f"{REASON}: no process was running it")
    client.set_terminated(run_id, "KILLED")
    return f"Run {run_id} had no process left; marked KILLED."
