"""A run's attempts: one MLflow run across the interruptions of its engine.

A run that its engine stopped or lost (a time limit, a failed node, a restarted engine: `Outcome.interrupted`)
takes its next attempt by itself while it has attempts left (`resources.max_attempts`); any run that ended KILLED
or FAILED takes one when asked (`runner resume`). Each attempt starts the same plan again with `RUNNER_ATTEMPT` set;
the run's code continues from what it saved in its checkpoint folder (`$RUNNER_CHECKPOINT_DIR`), and its record
stays the one MLflow run: RUNNING again, `runner.attempt` its number, `runner.attempt.N` how attempt N ended.

Each epoch is in the history once: a metric point of a step that an earlier attempt recorded is not recorded
again (the attempt replays the epochs after its checkpoint, and the earlier attempt logged some of them already).
`attempt.json` holds the attempt's number, the earlier endings and these recorded steps (`floor`).
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any

from runner.harness.shim import write_json
from runner.runs.rundir import FINISHED, RUNS, Outcome, RunDir

GRACE = 15.0  # seconds a run has, once asked to checkpoint and stop (SIGTERM), before it is killed


def read(run_dir: RunDir) -> dict[str, Any]:
    try:
        data = json.loads(run_dir.attempt.read_text())
    except (OSError, ValueError):
        data = None
    return data if isinstance(data, dict) else {"attempt": 1, "endings": [], "floor": {}}


def current(run_dir: RunDir) -> int:
    return int(read(run_dir).get("attempt", 1))


def floor(run_dir: RunDir) -> dict[str, int]:
    """Per metric, the last step that earlier attempts recorded."""
    return {str(k): int(v) for k, v in read(run_dir).get("floor", {}).items()}


def continues(run_dir: RunDir, state: dict[str, Any], outcome: Outcome) -> bool:
    """Whether the run takes another attempt by itself: its engine interrupted it, it has attempts left, and
    nobody asked it to stop."""
    return (
        outcome.interrupted
        and current(run_dir) < int(state.get("max_attempts") or 1)
        and not run_dir.stop.exists()
    )


def has_checkpoint(run_dir: RunDir) -> bool:
    folder = run_dir.checkpoint
    return folder.is_dir() and any(folder.iterdir())


def recorded_steps(client: Any, run_id: str) -> dict[str, int]:
    """The last step of each metric in the record."""
    keys = client.get_run(run_id).data.metrics
    return {key: max(m.step for m in client.get_metric_history(run_id, key)) for key in keys}


def begin(run_dir: RunDir, client: Any, run_id: str, ending: Outcome, *, from_scratch: bool = False) -> int:
    """The next attempt of the run, after one that ended `ending`: recorded (the run RUNNING again, its attempt
    and the last one's ending in its tags), what the last attempt left removed, its number returned. The spool
    must be in the record first: its steps are the floor the next attempt's points must be above (none for an
    attempt `from_scratch`, whose points follow the earlier ones)."""
    from mlflow.entities import RunTag

    data = read(run_dir)
    number = int(data.get("attempt", 1)) + 1
    kept = {} if from_scratch else recorded_steps(client, run_id)
    write_json(
        run_dir.attempt,
        {
            "attempt": number,
            "endings": [*data.get("endings", []), ending.to_json()],
            "floor": kept,
            "from_scratch": from_scratch,
        },
    )
    for name in RunDir.ATTEMPT_FILES:
        (run_dir.root / name).unlink(missing_ok=True)
    tags = [RunTag("runner.attempt", str(number)), RunTag(f"runner.attempt.{number - 1}", ending.said())]
    client.log_batch(run_id, tags=tags)
    for name in ("runner.exit_code", "runner.reason"):  # the last attempt's ending, no longer the run's
        with contextlib.suppress(Exception):  # not there
            client.delete_tag(run_id, name)
    if client.get_run(run_id).info.status != "RUNNING":
        client.update_run(run_id, status="RUNNING")
    return number


def said(run_dir: RunDir, state: dict[str, Any]) -> str:
    """ "attempt 2 of 6", or "" for a run on its first attempt with no other."""
    number, most = current(run_dir), int(state.get("max_attempts") or 1)
    if number == 1 and most == 1:
        return ""
    return f"attempt {number} of {max(most, number)}"


def refusal(status: str, run_id: str) -> str | None:
    """Why a run of this recorded status cannot be resumed (None: it can)."""
    if status == FINISHED:
        return f"Run {run_id} ended FINISHED: there is nothing to resume. Run it again with: runner reproduce {run_id}"
    if status in ("RUNNING", "SCHEDULED"):
        return f"Run {run_id} is still {status}: nothing to resume. Follow it with: runner attach {run_id}"
    return None


def gc(project: Path, uri: str) -> str | None:
    """Free the checkpoints no attempt will read: those of runs that ended FINISHED and of runs deleted from the
    record (KILLED and FAILED runs keep theirs, for `runner resume`); say how much, or None where none was."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client, freed, count = MlflowClient(uri), 0, 0
    runs = project / RUNS
    for folder in sorted(runs.iterdir()) if runs.is_dir() else []:
        run_dir = RunDir(folder)
        # A link in place of the folder is the run's doing (a local run can make one): never followed.
        if run_dir.checkpoint.is_symlink() or not has_checkpoint(run_dir) or not run_dir.ended.is_file():
            continue
        try:
            run = client.get_run(folder.name)
            gone = run.info.status == FINISHED or run.info.lifecycle_stage == "deleted"
        except MlflowException:  # no such run in the record any more
            gone = True
        if gone:
            freed += sum(
                f.stat().st_size for f in run_dir.checkpoint.rglob("*") if f.is_file() and not f.is_symlink()
            )
            shutil.rmtree(run_dir.checkpoint, ignore_errors=True)
            count += 1
    return f"Removed the checkpoints of {count} run(s); freed {freed / 1e6:.1f} MB." if count else None
