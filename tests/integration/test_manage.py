"""Managing runs from another terminal: detach, logs -f, stop, reproduce."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import all_runs, git, run_cli, store
from tests.integration.test_local_run import only_run, read_artifact

pytestmark = pytest.mark.integration

TINY = ("backend=local", "env.requirements=[]")


def test_detach_then_follow_then_stop(project: Path) -> None:
    t0 = time.time()
    proc = run_cli(project, *TINY, "command=\"sh -c 'echo tick; sleep 120'\"", "detach=true", check=True)
    assert time.time() - t0 < 90
    run_id = only_run(project).info.run_id
    assert f"run {run_id} started in the background" in proc.stdout
    assert only_run(project).info.status == "RUNNING"
    follow = subprocess.Popen(
        [sys.executable, "-m", "runner", "logs", "-f", run_id],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(3)
    assert follow.poll() is None  # still following a running run
    stopped = run_cli(project, "stop", run_id, check=True)
    assert "ends KILLED" in stopped.stdout
    out, _ = follow.communicate(timeout=60)  # -f returns once the run has ended
    assert "tick" in out
    deadline = time.time() + 30
    while only_run(project).info.status == "RUNNING" and time.time() < deadline:
        time.sleep(0.5)
    run = only_run(project)
    assert (run.info.status, run.data.tags["runner.reason"]) == ("KILLED", "stopped by runner stop")
    assert "tick" in read_artifact(project, run.info.run_id, "run.log")


def test_stop_of_an_ended_run_changes_nothing(project: Path) -> None:
    run_cli(project, *TINY, "command=echo done", check=True)
    run = only_run(project)
    assert "already ended FINISHED" in run_cli(project, "stop", run.info.run_id, check=True).stdout
    assert only_run(project).info.status == "FINISHED"


def test_reproduce_runs_the_recorded_code_with_the_recorded_lock(project: Path) -> None:
    (project / "train.py").write_text(
        "import os\nopen(os.environ['RUNNER_OUTPUT'] + '/v', 'w').write('one')\n"
    )
    run_cli(project, *TINY, "command=python train.py", check=True)  # train.py uncommitted: recorded as a diff
    original = only_run(project)
    # The project moves on: a new commit and a changed file.
    (project / "train.py").write_text(
        "import os\nopen(os.environ['RUNNER_OUTPUT'] + '/v', 'w').write('two')\n"
    )
    git(project, "add", "-A")
    git(project, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "later")
    proc = run_cli(project, "reproduce", original.info.run_id, check=True)
    assert "[reproduce] code: HEAD is" in proc.stdout
    again = next(r for r in all_runs(project) if r.info.run_id != original.info.run_id)
    assert again.info.status == "FINISHED"
    assert again.data.tags["runner.reproduces"] == original.info.run_id
    assert again.data.tags["mlflow.source.git.commit"] == original.data.tags["mlflow.source.git.commit"]
    assert again.data.tags["runner.lock.sha256"] == original.data.tags["runner.lock.sha256"]
    assert read_artifact(project, again.info.run_id, "output/v") == "one"
    client = MlflowClient(store(project))
    assert client.get_run(again.info.run_id).data.params == original.data.params
    assert not list((project / ".runner" / "reproduce").glob("*/*"))  # the recorded tree is cleaned up
