"""One record across interruptions: `runner resume` and `resources.max_attempts`, on every backend that runs here.

A run killed mid-training continues from its checkpoint in the same MLflow run (RUNNING again, `runner.attempt`
its number), with every epoch's point exactly once; a run its engine lost (the machine's restart, played by
killing every process of it) or stopped (the Docker engine restarted) takes its next attempt by itself where
`resources.max_attempts` allows; what cannot be resumed is refused in one line, changing nothing.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from runner.runs import attempts
from tests.helpers import RESUMABLE, all_runs, docker_engine, run_cli, run_dir, store, when_logged

pytestmark = pytest.mark.integration


@pytest.fixture
def resumable(project: Path) -> Path:
    (project / "train.py").write_text(RESUMABLE)
    return project


def start(project: Path, backend: str, *args: str, packages: str = "env.requirements=[]") -> str:
    """A detached run of `args` (in an environment of no packages, unless `packages` says): its id."""
    proc = run_cli(project, f"backend={backend}", packages, "detach=true", *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.split("[runner] run ")[1].split()[0]


def record(project: Path, run_id: str, ended: bool = True, timeout: float = 180):
    """The run's record (once it has ended, unless `ended` is False); `runner ls` is asked meanwhile."""
    client = MlflowClient(store(project))
    deadline = time.time() + timeout
    while True:
        run = client.get_run(run_id)
        if not ended or run.info.status != "RUNNING" or time.time() > deadline:
            return run
        run_cli(project, "ls")
        time.sleep(1)


def steps(project: Path, run_id: str, key: str = "loss") -> list[int]:
    return sorted(m.step for m in MlflowClient(store(project)).get_metric_history(run_id, key))


def kill_run(backend: str, project: Path, run_id: str) -> None:
    """SIGKILL to the run's code from outside, as `docker kill` or the kernel's OOM killer would: no checkpoint
    is saved then, the last one is what there is."""
    if backend == "docker":
        subprocess.run(["docker", "kill", f"runner-{run_id}"], check=True, capture_output=True)
    else:
        shim = json.loads((run_dir(project, run_id) / "process.json").read_text())["pid"]
        children = subprocess.run(["pgrep", "-P", str(shim)], capture_output=True, text=True).stdout.split()
        for pid in children:  # its code, not the shim that records its exit status
            os.kill(int(pid), signal.SIGKILL)


def test_a_killed_run_resumes_in_the_same_run_with_each_epoch_once(resumable: Path, backend: str) -> None:
    run_id = start(resumable, backend, "command=python train.py 12 0.4")
    when_logged(resumable, run_id, '"step": 4}')  # checkpointed at epoch 2: epochs 3 and 4 are replayed
    kill_run(backend, resumable, run_id)
    killed = record(resumable, run_id)
    assert killed.info.status == "FAILED", killed.data.tags
    proc = run_cli(resumable, "resume", run_id)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"[runner] run {run_id}: attempt 2, from its last checkpoint" in proc.stdout
    run = record(resumable, run_id)
    assert run.info.status == "FINISHED", proc.stdout
    assert run.data.tags["runner.attempt"] == "2"
    assert run.data.tags["runner.attempt.1"].startswith("FAILED"), run.data.tags
    assert "runner.reason" not in run.data.tags  # the first attempt's ending is not the run's
    assert steps(resumable, run_id) == list(range(12))  # every epoch once: none missing, none twice
    assert steps(resumable, run_id, "score") == list(range(12))  # its own MLflow calls' too
    log = (run_dir(resumable, run_id) / "run.log").read_text()
    assert "attempt 1 from epoch 0" in log and "attempt 2 from epoch " in log
    assert [r.info.run_id for r in all_runs(resumable)] == [run_id]  # one MLflow run


def test_what_cannot_be_resumed_is_refused_in_one_line(resumable: Path) -> None:
    done = start(resumable, "local", "command=python train.py 3 0")
    assert record(resumable, done).info.status == "FINISHED"
    # A run that saves its checkpoints elsewhere (its working folder): nothing in its checkpoint folder.
    failed = start(resumable, "local", "command=python train.py 50 0.4 .")
    when_logged(resumable, failed, '"step": 1}')
    kill_run("local", resumable, failed)
    assert record(resumable, failed).info.status == "FAILED"
    for args, said in (
        ([done], f"Run {done} ended FINISHED: there is nothing to resume"),
        ([failed], f"resuming it would start its training over from the beginning, in the same run. To do that: "
                   f"runner resume {failed} --from-scratch"),
        (["nosuchrun"], "No run 'nosuchrun' in this project."),
    ):  # fmt: skip
        proc = run_cli(resumable, "resume", *args)
        assert proc.returncode != 0
        assert said in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr
    assert record(resumable, done).info.status == "FINISHED"
    untouched = record(resumable, failed)
    assert untouched.info.status == "FAILED" and "runner.attempt" not in untouched.data.tags
    assert not (run_dir(resumable, failed) / "attempt.json").exists()
    # runner gc frees the checkpoints no attempt will read: a FINISHED run's.
    assert (run_dir(resumable, done) / "checkpoint" / "state.json").is_file()
    # A link the run left in its checkpoint folder, to a file outside it: removed, never followed.
    outside = resumable / "outside.txt"
    outside.write_text("mine")
    (run_dir(resumable, done) / "checkpoint" / "link").symlink_to(outside)
    assert attempts.gc(resumable, store(resumable)).startswith("Removed the checkpoints of 1 run(s)")
    assert not (run_dir(resumable, done) / "checkpoint").exists()
    assert outside.read_text() == "mine"


def test_a_run_its_machine_lost_takes_its_next_attempt_by_itself(resumable: Path) -> None:
    """Every process of a local run killed (its owner, its shim and its code: as a machine's restart would): the
    next `runner` command gives it a new owner, which finds the engine lost it and starts attempt 2 of 2."""
    run_id = start(resumable, "local", "command=python train.py 10 0.4", "resources.max_attempts=2")
    when_logged(resumable, run_id, '"step": 3}')
    folder = run_dir(resumable, run_id)
    owner = json.loads((folder / "owner.json").read_text())["pid"]
    shim = json.loads((folder / "process.json").read_text())["pid"]
    os.kill(owner, signal.SIGKILL)
    os.killpg(shim, signal.SIGKILL)
    run = record(resumable, run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["runner.attempt"] == "2"
    assert run.data.tags["runner.attempt.1"].startswith("FAILED: lost"), run.data.tags
    assert steps(resumable, run_id) == list(range(10))
    assert steps(resumable, run_id, "score") == list(range(10))


def restart_docker_engine() -> None:
    """The Docker engine stopped and started again, as a daemon's upgrade or crash and restart would: every
    container it runs is stopped with it (SIGTERM, then SIGKILL)."""
    if subprocess.run(["systemctl", "is-active", "--quiet", "docker"], capture_output=True).returncode == 0:
        subprocess.run(["systemctl", "restart", "docker"], check=True)
    else:  # started by hand (setup.sh where there is no systemd): the same command again
        pid = int(
            subprocess.run(["pidof", "dockerd"], capture_output=True, text=True, check=True).stdout.split()[0]
        )
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        os.kill(pid, signal.SIGTERM)
        deadline = time.time() + 90
        while Path(f"/proc/{pid}").exists() and time.time() < deadline:
            time.sleep(0.2)
        command = shlex.join(a.decode() for a in argv)
        subprocess.run(["sh", "-c", f"nohup {command} >>/var/log/dockerd.log 2>&1 &"], check=True)
    deadline = time.time() + 90
    while subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        assert time.time() < deadline, "the Docker engine did not come back"
        time.sleep(0.5)


def test_a_run_whose_docker_engine_restarted_goes_on_by_itself(resumable: Path) -> None:
    docker_engine()
    run_id = start(resumable, "docker", "command=python train.py 14 0.4", "resources.max_attempts=2")
    when_logged(resumable, run_id, '"step": 3}')
    restart_docker_engine()
    run = record(resumable, run_id)
    assert run.info.status == "FINISHED", (run_dir(resumable, run_id) / "run.log").read_text()
    tags = run.data.tags
    assert tags["runner.attempt"] == "2"
    assert tags["runner.attempt.1"].startswith("FAILED: the engine stopped the run"), tags
    assert steps(resumable, run_id) == list(range(14))
    assert steps(resumable, run_id, "score") == list(range(14))
    log = (run_dir(resumable, run_id) / "run.log").read_text()
    assert "checkpoint saved: stopping" in log  # the engine's SIGTERM reached the code, which saved
    leftover = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=runner.run_id={run_id}"], capture_output=True, text=True
    )
    assert leftover.stdout.split() == []


def test_the_built_in_trainer_killed_in_its_container_resumes_each_epoch_once(project: Path) -> None:
    """keras_mlp's container killed (SIGKILL: nothing saved then) after its second epoch; `runner resume` goes on
    from the last epoch's checkpoint in the same run, which ends with one point per epoch and its test scores."""
    docker_engine()
    run_id = start(
        project, "docker", "train.batch_size=1", "train.epochs=6", packages="+experiment=keras_mlp"
    )
    when_logged(project, run_id, "Epoch 3/6", timeout=300)
    kill_run("docker", project, run_id)
    assert record(project, run_id).info.status == "FAILED"
    proc = run_cli(project, "resume", run_id)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[runner] resuming from the checkpoint at epoch 2" in proc.stdout, proc.stdout
    run = record(project, run_id)
    assert run.info.status == "FINISHED" and run.data.tags["runner.attempt"] == "2"
    for key in ("loss", "accuracy"):
        assert steps(project, run_id, key) == list(range(6)), key
    assert 0 <= run.data.metrics["test_accuracy"] <= 1
