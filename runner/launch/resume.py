"""`runner resume RUN_ID`: a run that ended KILLED or FAILED continues from its last checkpoint, in the same
MLflow run, on its own backend (runner.runs.attempts): its plan started again as the run's next attempt."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from runner.errors import ConfigError, RunnerError
from runner.runs import attempts, owner
from runner.runs.rundir import Outcome, RunDir
from runner.tracking.record import get_run


def resume(uri: str, project: Path, run_id: str, *, from_scratch: bool, detach: bool) -> int:
    """The run's next attempt handed to its owner, then followed (not when `detach`); the exit status."""
    from mlflow import MlflowClient

    from runner.backends import get_backend

    run_dir = owner.find_run_dir(project, run_id)
    run_id = run_dir.root.name
    state = owner.read_json(run_dir.state)
    if not isinstance(state, dict):
        raise RunnerError(f"Run {run_id} was not started by this runner here: nothing to resume from here.")
    recorded = get_run(uri, run_id)
    refused = attempts.refusal(recorded.info.status, run_id)
    if refused:
        raise RunnerError(refused)
    backend = get_backend(state["backend"])
    if backend.read_plan(run_dir) is None:
        raise RunnerError(
            f"Run {run_id} ended before it started ({recorded.data.tags.get('runner.reason', 'no reason recorded')}): "
            f"nothing of it ran. Run it again with: runner reproduce {run_id}"
        )
    if not from_scratch and not attempts.has_checkpoint(run_dir):
        raise ConfigError(
            f"Run {run_id} saved no checkpoint ({run_dir.checkpoint} is empty): resuming it would start its "
            f"training over from the beginning, in the same run. To do that: runner resume {run_id} --from-scratch"
        )
    lock_fd = owner.try_claim(run_dir)
    if lock_fd is None:
        raise RunnerError(f"Run {run_id} is being settled by another runner process: try again in a moment.")
    try:
        ending = owner.ending(run_dir) or Outcome.from_record(recorded.info.status, recorded.data.tags)
        if from_scratch:
            shutil.rmtree(run_dir.checkpoint, ignore_errors=True)
            run_dir.checkpoint.mkdir()
        run_dir.endpoint.unlink(missing_ok=True)  # a port of its own again: the last one may be taken since
        number = attempts.begin(run_dir, MlflowClient(uri), run_id, ending, from_scratch=from_scratch)
        owner.mark_live(project, run_id, run_dir)
        with open(run_dir.log, "a", encoding="utf-8") as log:
            log.write(f"[runner] resumed by runner resume: attempt {number}\n")
        offset = run_dir.log.stat().st_size
        handed = backend.hand_over([run_dir], [lock_fd], None)
    finally:
        os.close(lock_fd)
    start = "from scratch" if from_scratch else "from its last checkpoint"
    print(f"[runner] run {run_id}: attempt {number}, {start} (it ended {ending.said()})", flush=True)
    if handed.jobs:
        print(f"[runner] submitted: SLURM job {handed.jobs[0]}. Follow it: runner logs -f {run_id}")
        return 0
    return follow(run_dir, run_id, offset, detach)


def follow(run_dir: RunDir, run_id: str, offset: int, detach: bool) -> int:
    owner.wait_started(run_dir)
    if detach and owner.ending(run_dir) is None:
        print(f"[runner] detached: runner attach {run_id} follows it, runner stop {run_id} stops it")
        return 0
    try:
        outcome = owner.follow(run_dir, sys.stdout, offset)
    except KeyboardInterrupt:
        return 130
    return 0 if outcome.status == "FINISHED" else 1
