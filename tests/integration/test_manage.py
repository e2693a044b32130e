"""Managing runs from another terminal: detach, logs -f, stop, reproduce."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.helpers import all_runs, free_port, git, only_run, read_artifact, run_cli, store, wait_for_ui

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


def test_reproduce_check_of_an_unchanged_project_finds_no_drift(project: Path) -> None:
    run_cli(project, *TINY, "command=echo same", check=True)
    run_id = only_run(project).info.run_id
    proc = run_cli(project, "reproduce", run_id, "--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[reproduce] no drift" in proc.stdout
    assert len(all_runs(project)) == 1


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
    check = run_cli(project, "reproduce", original.info.run_id[:10], "--check")
    assert check.returncode == 1, check.stdout + check.stderr
    assert "[reproduce] code: 1 file(s) differ from the run's: train.py" in check.stdout
    assert len(all_runs(project)) == 1  # --check runs nothing
    proc = run_cli(project, "reproduce", original.info.run_id, check=True)
    assert "[reproduce] code: HEAD is" in proc.stdout
    again = next(r for r in all_runs(project) if r.info.run_id != original.info.run_id)
    assert again.info.status == "FINISHED"
    assert again.data.tags["runner.reproduces"] == original.info.run_id
    assert again.info.experiment_id == original.info.experiment_id  # filed beside the run it reproduces
    assert again.data.tags["mlflow.source.git.commit"] == original.data.tags["mlflow.source.git.commit"]
    assert again.data.tags["runner.lock.sha256"] == original.data.tags["runner.lock.sha256"]
    assert again.data.tags["runner.env.id"] == original.data.tags["runner.env.id"]  # the same lock: reused
    assert again.data.tags["runner.env.reused"] == "true"
    assert read_artifact(project, again.info.run_id, "output/v") == "one"
    client = MlflowClient(store(project))
    assert client.get_run(again.info.run_id).data.params == original.data.params
    assert not list((project / ".runner" / "reproduce").glob("*/*"))  # the recorded tree is cleaned up


def test_a_detached_reproduction_lives_in_the_project_not_in_the_recorded_tree(project: Path) -> None:
    (project / "slow.py").write_text(
        "import os, time\ntime.sleep(3)\nopen(os.environ['RUNNER_OUTPUT'] + '/v', 'w').write('kept')\n"
    )
    run_cli(project, *TINY, "command=python slow.py", "detach=true", check=True)  # recorded detached
    original = only_run(project)
    wait_ended(project, original.info.run_id)
    proc = run_cli(project, "reproduce", original.info.run_id, check=True)  # returns while it runs
    again = next(r for r in all_runs(project) if r.info.run_id != original.info.run_id)
    assert f"run {again.info.run_id}" in proc.stdout
    assert (project / ".runner" / "runs" / again.info.run_id / "code" / "slow.py").is_file()
    assert not list((project / ".runner" / "reproduce").glob("*/*"))  # the tree went, the run did not
    ended = wait_ended(project, again.info.run_id)
    assert ended.info.status == "FINISHED", ended.data.tags.get("runner.reason")
    assert read_artifact(project, again.info.run_id, "output/v") == "kept"
    assert again.data.tags["mlflow.source.name"] == str(project)


def wait_ended(project: Path, run_id: str, timeout: float = 90) -> object:
    client = MlflowClient(store(project))
    deadline = time.time() + timeout
    while (run := client.get_run(run_id)).info.status == "RUNNING" and time.time() < deadline:
        time.sleep(0.5)
    return run


def test_ls_into_a_closed_pipe_ends_quietly(project: Path) -> None:
    run_cli(project, *TINY, "command=echo done", check=True)
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line is written (`runner ls | head` at its worst)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "runner", "ls"],
            cwd=project,
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        os.close(write)
    assert proc.returncode in (0, 141)
    assert proc.stderr == ""


def descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            with contextlib.suppress(OSError):
                kids = {int(k) for k in (task / "children").read_text().split()}
                todo.extend(kids - found)
                found |= kids
    return found


def alive(pids: set[int]) -> set[int]:
    return {p for p in pids if Path(f"/proc/{p}").exists() and "Z" not in _state(p)}


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


def test_sigterm_to_runner_ui_ends_the_server_and_its_workers(project: Path) -> None:
    port = free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "runner", "ui", "--port", str(port)],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server: set[int] = set()
    try:
        wait_for_ui(ui, port)
        server = descendants(ui.pid)
        assert len(server) >= 2  # MLflow's CLI, its server and the server's workers
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(timeout=30) == 0
        deadline = time.time() + 15
        while alive(server) and time.time() < deadline:
            time.sleep(0.2)
        assert alive(server) == set()
    finally:
        for pid in alive(server):  # whatever outlived the test
            os.kill(pid, signal.SIGKILL)
        ui.kill()
        ui.wait()
