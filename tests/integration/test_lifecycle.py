"""The run lifecycle, the same for every backend: a run outlives its terminal, its record comes from the engine.

Each test runs against every backend (the conformance suite): kill -9 of the terminal's runner, of every runner
process, adoption of a run still going, `runner stop` of an orphan, the spool that keeps every epoch, Ctrl-C,
detach and attach, and the endings (an exit code, a time limit) with nothing of the run left on the engine.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from runner.harness.shim import alive
from runner.runs.owner import owned
from runner.runs.rundir import RunDir
from tests.helpers import all_runs, artifacts, docker_engine, only_run, read_artifact, run_cli, store

pytestmark = pytest.mark.integration

# Logs each "epoch" through the harness's spool and one metric through the run's own MLflow client.
PROBE = """\
import os, sys, time
import mlflow
from runner.harness.spool import Spool
n, pause = int(sys.argv[1]), float(sys.argv[2])
spool = Spool()
open(os.path.join(os.environ["RUNNER_OUTPUT"], "started.txt"), "w").write("yes")
mlflow.log_metric("custom", 1.5)
for i in range(n):
    spool.log_metrics({"loss": 1.0 / (i + 1)}, step=i)
    print(f"epoch {i}", flush=True)
    time.sleep(pause)
open(os.path.join(os.environ["RUNNER_OUTPUT"], "done.txt"), "w").write("ok")
sys.exit(int(os.environ.get("PROBE_EXIT", "0")))
"""


@pytest.fixture
def probe_project(project: Path) -> Path:
    (project / "probe.py").write_text(PROBE)
    return project


def start(project: Path, backend: str, *args: str) -> subprocess.Popen[str]:
    """`runner` as a terminal would start it, in a process group of its own (so a test can kill it alone)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.Popen(
        [sys.executable, "-m", "runner", f"backend={backend}", "env.requirements=[]", *args],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def run_dir_when(project: Path, text: str, cli: subprocess.Popen[str], timeout: float = 300) -> Path:
    """The (one) run directory, once its log shows `text` and its owner supervises it."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cli.poll() is not None:
            raise AssertionError(f"runner exited {cli.returncode} first:\n{cli.communicate()[0]}")
        for run in (project / ".runner" / "runs").glob("*"):
            report = json.loads((run / "owner.json").read_text()) if (run / "owner.json").is_file() else {}
            log = (run / "run.log").read_text(errors="replace") if (run / "run.log").is_file() else ""
            if text in log and report.get("phase") == "supervising":
                return run
        time.sleep(0.2)
    raise AssertionError(f"no run showed {text!r} in {timeout} s")


def kill_9(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def owner_pid(run: Path) -> int:
    return int(json.loads((run / "owner.json").read_text())["pid"])


def wait_gone(pid: int, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while Path(f"/proc/{pid}").exists() and time.time() < deadline:
        time.sleep(0.1)


def orphan(project: Path, backend: str, command: str, *args: str, when: str = "epoch 1") -> tuple[Path, int]:
    """Start a run and, once its log shows `when`, kill -9 the terminal's runner and the run's owner: every runner
    process of it. Returns the run directory and the dead owner's pid."""
    cli = start(project, backend, command, *args)
    run = run_dir_when(project, when, cli)
    owner = owner_pid(run)
    kill_9(cli.pid)
    kill_9(owner)
    cli.communicate()
    wait_gone(owner)
    return run, owner


def wait_ended(run: Path, timeout: float = 120) -> None:
    """Until the run's ending is recorded, with no runner command run meanwhile."""
    deadline = time.time() + timeout
    while not (run / "ended.json").exists() and time.time() < deadline:
        time.sleep(0.3)


def wait_engine_ended(backend: str, run: Path, timeout: float = 120) -> None:
    """Until the engine says the run's process or container has exited (its owner is gone: nobody records)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if backend == "local" and (run / "exit_code").exists():
            return
        if backend == "docker" and all(c.status == "exited" for c in containers_left(backend, run.name)):
            return
        time.sleep(0.3)
    raise AssertionError(f"the run in {run} did not end in {timeout} s")


def losses(project: Path, run_id: str) -> list[int]:
    return sorted(m.step for m in MlflowClient(store(project)).get_metric_history(run_id, "loss"))


def engine_left(backend: str, run: Path) -> list:
    """What the engine still has of a run: its containers, or its process if that still runs."""
    if backend == "docker":
        return containers_left(backend, run.name)
    process = json.loads((run / "process.json").read_text()) if (run / "process.json").is_file() else {}
    pid = process.get("pid")
    return [pid] if pid and alive(pid, process.get("ticks")) else []


def containers_left(backend: str, run_id: str) -> list:
    if backend != "docker":
        return []
    return docker_engine().containers.list(all=True, filters={"label": f"runner.run_id={run_id}"})


def test_kill_9_of_the_terminal_changes_nothing(probe_project: Path, backend: str) -> None:
    cli = start(probe_project, backend, 'command="python probe.py 8 0.5"')
    run = run_dir_when(probe_project, "epoch 1", cli)
    kill_9(cli.pid)
    cli.communicate()
    wait_ended(run)  # no runner command needed
    done = only_run(probe_project)
    assert done.info.status == "FINISHED"
    assert losses(probe_project, done.info.run_id) == list(range(8))  # every epoch
    assert done.data.metrics["custom"] == 1.5  # the run's own MLflow call
    assert read_artifact(probe_project, done.info.run_id, "output/done.txt") == "ok"
    assert "epoch 7" in read_artifact(probe_project, done.info.run_id, "run.log")
    assert containers_left(backend, done.info.run_id) == []


def test_kill_9_of_every_runner_process_then_any_command_records_the_truth(
    probe_project: Path, backend: str
) -> None:
    run, _ = orphan(probe_project, backend, 'command="python probe.py 6 0.5"', "+env.variables.PROBE_EXIT=3")
    # Nobody owns the run now; it goes on, spooling, and ends while no runner process exists.
    wait_engine_ended(backend, run)
    assert only_run(probe_project).info.status == "RUNNING"  # the record, until a runner looks
    rows = json.loads(run_cli(probe_project, "ls", "--json", check=True).stdout)
    assert [(r["status"], r["reason"]) for r in rows] == [("FAILED", "exit code 3")]
    done = only_run(probe_project)
    assert done.data.tags["runner.exit_code"] == "3"
    assert losses(probe_project, done.info.run_id) == list(range(6))  # spooled while nobody listened
    assert read_artifact(probe_project, done.info.run_id, "output/done.txt") == "ok"
    assert "epoch 5" in read_artifact(probe_project, done.info.run_id, "run.log")
    assert {"run.log", "output/done.txt"} <= artifacts(probe_project, done.info.run_id)
    assert containers_left(backend, done.info.run_id) == []


def test_a_run_still_going_is_adopted_and_finishes(probe_project: Path, backend: str) -> None:
    run, first = orphan(probe_project, backend, 'command="python probe.py 40 0.5"')
    rows = json.loads(run_cli(probe_project, "ls", "--json", check=True).stdout)
    assert [r["status"] for r in rows] == ["RUNNING"]  # adopted: it is running
    assert owner_pid(run) != first
    wait_ended(run)  # the new owner ends it
    done = only_run(probe_project)
    assert done.info.status == "FINISHED"
    assert losses(probe_project, done.info.run_id) == list(range(40))
    log = read_artifact(probe_project, done.info.run_id, "run.log")
    assert log.count("epoch 3\n") == 1  # the new owner did not copy the output twice
    assert containers_left(backend, done.info.run_id) == []


# Prints about 150 KB at once, then as much again over a few seconds: past a 64k log limit before its owner is killed.
CHATTY = """\
import time
for i in range(6000):
    print(f"line {i:05d} " + "x" * 40, flush=i % 300 == 299)
    if i >= 3000 and i % 300 == 299:
        time.sleep(0.4)
"""


def test_an_adopted_run_keeps_its_log_within_its_limit(project: Path, backend: str) -> None:
    """The log's tail goes on from its files under the run's next owner: head and tail whole, the count exact."""
    (project / "chatty.py").write_text(CHATTY)
    passed = "[runner] the log passed resources.log_limit=64k"
    run, _ = orphan(project, backend, 'command="python chatty.py"', "resources.log_limit=64k", when=passed)
    run_cli(project, "ls", check=True)  # adopted
    wait_ended(run)
    done = only_run(project)
    assert done.info.status == "FINISHED"
    for text in ((run / "run.log").read_text(), read_artifact(project, done.info.run_id, "run.log")):
        head, rest = text.split("[runner] the log passed resources.log_limit=64k")
        said, tail = rest.split(" bytes of the log's middle were dropped (resources.log_limit=64k)")
        first = [int(n) for n in re.findall(r"^line (\d{5}) x{40}$", head, re.M)]
        last = [int(n) for n in re.findall(r"^line (\d{5}) x{40}$", tail, re.M)]
        assert first == list(range(len(first))) and last == list(range(6000 - len(last), 6000))
        # Exactly what is not shown; an owner killed between writing a piece of the output and noting so leaves that
        # piece (a line here) for the next owner to write again.
        assert int(said.rsplit("[runner] ", 1)[1]) - (6000 - len(first) - len(last)) * 52 in (0, 52)
    assert not (run / "run.log.tail").exists()


def test_stop_of_an_orphan_ends_it_killed(probe_project: Path, backend: str) -> None:
    run, _ = orphan(probe_project, backend, 'command="python probe.py 600 0.5"')
    run_id = run.name
    proc = run_cli(probe_project, "stop", run_id[:8], check=True)  # a unique start of the id will do
    assert "ends KILLED" in proc.stdout
    done = only_run(probe_project)
    assert (done.info.status, done.data.tags["runner.reason"]) == ("KILLED", "stopped by runner stop")
    assert "epoch 1" in read_artifact(probe_project, run_id, "run.log")
    assert containers_left(backend, run_id) == []
    again = run_cli(probe_project, "stop", run_id, check=True)
    assert f"Run {run_id} already ended KILLED." in again.stdout


def test_ctrl_c_still_stops_an_attached_run(probe_project: Path, backend: str) -> None:
    cli = start(probe_project, backend, 'command="python probe.py 600 0.5"')
    run = run_dir_when(probe_project, "epoch 1", cli)
    t0 = time.monotonic()
    os.killpg(cli.pid, signal.SIGINT)  # the terminal's Ctrl-C reaches the runner's process group
    out, _ = cli.communicate(timeout=120)
    assert time.monotonic() - t0 < 20, "the run did not stop within seconds"
    assert cli.returncode == 130, out
    assert "epoch 1" in out  # streamed live
    done = only_run(probe_project)
    assert (done.info.status, done.data.tags["runner.reason"]) == ("KILLED", "interrupted")
    assert (run / "ended.json").exists()
    assert read_artifact(probe_project, done.info.run_id, "output/started.txt") == "yes"  # outputs kept
    assert engine_left(backend, run) == []


# -- endings, the same on every backend -------------------------------------------------------------------


def run_on(project: Path, backend: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(project, f"backend={backend}", "env.requirements=[]", *args)


def test_a_failing_run_ends_failed_with_its_exit_code_and_log(project: Path, backend: str) -> None:
    proc = run_on(project, backend, "command=\"sh -c 'echo dying; exit 7'\"")
    assert proc.returncode == 1
    run = only_run(project)
    assert (run.info.status, run.data.tags["runner.exit_code"]) == ("FAILED", "7")
    assert run.data.tags["runner.reason"] == "exit code 7"
    assert "dying" in read_artifact(project, run.info.run_id, "run.log")
    run_dir = project / ".runner" / "runs" / run.info.run_id
    assert engine_left(backend, run_dir) == []
    # A local run maps its data mounts into this directory: every name it holds is one no mount may take.
    assert {p.name for p in run_dir.iterdir()} <= set(RunDir.RESERVED)


def test_a_run_past_its_time_limit_ends_killed_with_its_outputs(project: Path, backend: str) -> None:
    proc = run_on(
        project, backend, "resources.timeout=3", "command=\"sh -c 'echo up > $RUNNER_OUTPUT/up; sleep 120'\""
    )
    assert proc.returncode == 1
    run = only_run(project)
    assert run.info.status == "KILLED"
    assert run.data.tags["runner.reason"] == "timeout after 3 s"
    assert run.data.metrics["duration_s"] < 60
    assert read_artifact(project, run.info.run_id, "output/up").strip() == "up"
    assert engine_left(backend, project / ".runner" / "runs" / run.info.run_id) == []


def test_a_second_run_of_an_environment_builds_nothing_even_after_a_code_change(
    project: Path, backend: str
) -> None:
    run_on(project, backend, "command=echo one")
    (project / "extra.py").write_text("X = 1\n")  # a code change: code is mounted, never baked
    run_on(project, backend, "command=echo two")
    first, second = sorted(all_runs(project), key=lambda r: r.info.start_time)
    assert (first.info.status, second.info.status) == ("FINISHED", "FINISHED")
    assert first.data.tags["runner.env.id"] == second.data.tags["runner.env.id"]
    assert second.data.tags["runner.env.reused"] == "true"


def test_detach_returns_at_once_and_attach_follows_from_the_start(probe_project: Path, backend: str) -> None:
    proc = run_cli(
        probe_project,
        f"backend={backend}",
        "env.requirements=[]",
        'command="python probe.py 6 0.5"',
        "detach=true",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_id = only_run(probe_project).info.run_id
    assert f"run {run_id} started in the background" in proc.stdout
    attached = run_cli(probe_project, "attach", run_id, check=True)
    assert (
        attached.stdout.index("[runner] run ")
        < attached.stdout.index("epoch 0")
        < attached.stdout.index("epoch 5")
    )
    assert f"run {run_id} FINISHED" in attached.stdout
    assert only_run(probe_project).info.status == "FINISHED"


def test_attach_stop_logs_reproduce_of_an_unknown_run_say_so_in_one_line(project: Path) -> None:
    for verb in ("attach", "stop", "logs", "reproduce"):
        proc = run_cli(project, verb, "no-such-run")
        assert proc.returncode == 2, proc.stderr
        assert "No run" in proc.stderr and "no-such-run" in proc.stderr and "runner ls" in proc.stderr
        assert proc.stderr.strip().count("\n") == 0, proc.stderr


GUARD_PROBE = """\
import json, os, sys, time, urllib.error, urllib.request
base = os.environ["MLFLOW_TRACKING_URI"] + "/api/2.0/mlflow/"
me, other, token = os.environ["MLFLOW_RUN_ID"], sys.argv[1], os.environ["MLFLOW_TRACKING_TOKEN"]
others_model, experiment = sys.argv[2], os.environ["MLFLOW_EXPERIMENT_ID"]
answers = {}
def call(path, body=None, auth=token, method=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    req.method = method or req.get_method()
    if auth:
        req.add_header("Authorization", "Bearer " + auth)
    for _ in range(120):  # the owner serves the endpoint once the run has started: wait for it
        try:
            with urllib.request.urlopen(req, timeout=10) as answer:
                answers[path] = json.loads(answer.read())
                return answer.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except urllib.error.URLError:
            time.sleep(0.5)
seen = {
    "own": call("runs/get?run_id=" + me),
    "other": call("runs/get?run_id=" + other),
    "other_write": call("runs/set-tag", {"run_id": other, "key": "forged", "value": "1"}),
    "own_end": call("runs/update", {"run_id": me, "status": "FINISHED"}),
    "search": call("runs/search", {"experiment_ids": ["0", "1"]}),
    "no_token": call("runs/get?run_id=" + me, auth=None),
    "model_own": call("logged-models", {"experiment_id": experiment, "source_run_id": me, "name": "m"}),
    "model_of_other": call("logged-models", {"experiment_id": experiment, "source_run_id": other}),
    "read_others_model": call("logged-models/" + others_model),
    "end_others_model": call("logged-models/" + others_model, {"model_id": others_model, "status": 3}, method="PATCH"),
}
mine = answers["logged-models"]["model"]["info"]
seen["model_read_back"] = call("logged-models/" + mine["model_id"])
seen["artifacts"] = answers["runs/get?run_id=" + me]["run"]["info"]["artifact_uri"]
seen["model_files"] = mine["artifact_uri"].replace(mine["model_id"], "ID")
json.dump(seen, open("/output/seen.json", "w"))
print("ready", flush=True)
time.sleep(300)
"""

FOREIGN = """\
import json, sys, urllib.error, urllib.request
url = "http://host.docker.internal:%s/api/2.0/mlflow/runs/set-tag" % sys.argv[1]
codes = []
for auth in (None, "Bearer guessed"):
    body = json.dumps({"run_id": sys.argv[2], "key": "forged", "value": "1"}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    if auth:
        req.add_header("Authorization", auth)
    try:
        codes.append(urllib.request.urlopen(req, timeout=10).status)
    except urllib.error.HTTPError as exc:
        codes.append(exc.code)
print(codes)
"""


def test_the_tracking_endpoint_serves_its_own_run_only(project: Path) -> None:
    engine = docker_engine()
    run_cli(project, "backend=docker", "env.requirements=[]", "command=echo first", check=True)
    first = only_run(project)
    others_model = MlflowClient(store(project)).create_logged_model(
        first.info.experiment_id, source_run_id=first.info.run_id
    )
    first = first.info.run_id
    (project / "guard_probe.py").write_text(GUARD_PROBE)
    cli = start(project, "docker", f'command="python guard_probe.py {first} {others_model.model_id}"')
    try:
        run = run_dir_when(project, "ready", cli)
        port = json.loads((run / "endpoint.json").read_text())["port"]
        out = engine.containers.run(
            "runner-base:bookworm",
            ["python3", "-c", FOREIGN, str(port), run.name],
            extra_hosts={"host.docker.internal": "host-gateway"},
            remove=True,
        )
        assert out.decode().strip() == "[401, 401]"  # another container on the bridge: refused
        seen = json.loads((run / "output" / "seen.json").read_text())
        assert seen == {
            "own": 200,
            "other": 403,
            "other_write": 403,
            "own_end": 200,  # accepted, but a run cannot end itself: the status is its owner's to record
            "search": 403,
            "no_token": 401,
            "model_own": 200,  # autolog.models=true: models of its own, their files into its spool
            "model_of_other": 403,
            "read_others_model": 403,
            "end_others_model": 403,
            "model_read_back": 200,
            "artifacts": "file:///var/spool/runner/artifacts",
            "model_files": "file:///var/spool/runner/models/ID",
        }
        client = MlflowClient(store(project))
        assert client.get_run(run.name).info.status == "RUNNING"
        assert "forged" not in client.get_run(first).data.tags
        assert "forged" not in client.get_run(run.name).data.tags
    finally:
        os.killpg(cli.pid, signal.SIGINT)
        cli.communicate(timeout=120)


def test_a_run_failing_before_its_owner_stays_held_until_its_ending_is_written(project: Path) -> None:
    """A run that fails before an owner takes it (here its image's setup fails) is held by its runner until its
    ending is written: another command meanwhile cannot adopt it and record it `lost`. The store is held busy
    while the ending is being recorded, to look at the run then."""
    docker_engine()
    MlflowClient(store(project)).search_experiments()  # the store made, to hold it below
    cli = start(project, "docker", 'env.setup=["exit 3"]', "command=echo never")
    try:
        live = project / ".runner" / "live"
        deadline = time.time() + 300
        while not (live.is_dir() and any(live.iterdir())) and time.time() < deadline:
            time.sleep(0.05)
        run = RunDir(Path(next(live.iterdir()).read_text()))
        db = sqlite3.connect(project / "mlflow.db", isolation_level=None, timeout=60)
        db.execute("BEGIN EXCLUSIVE")  # the store busy: the runner's recording of the ending waits
        try:
            while "FAILED" not in run.log.read_text() and time.time() < deadline:  # the ending begins
                assert cli.poll() is None, cli.communicate()[0]
                time.sleep(0.05)
            held = []
            for _ in range(5):  # a second of it
                held.append(owned(run))
                time.sleep(0.2)
            assert not run.ended.exists()
        finally:
            db.rollback()
            db.close()
        out = cli.communicate(timeout=300)[0]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(cli.pid, signal.SIGKILL)
    assert held == [True] * 5
    recorded = MlflowClient(store(project)).get_run(run.root.name)
    assert recorded.info.status == "FAILED", out
    assert "lost" not in recorded.data.tags["runner.reason"] and "exit 3" in out


def test_an_ending_kept_before_the_engine_forgot_the_run_is_what_gets_recorded(
    project: Path, backend: str
) -> None:
    """An owner dies after the engine's copy of the run is removed but before the record is written: the next
    owner records the ending the engine gave (settled.json), not `lost`."""
    client = MlflowClient(store(project))
    run_id = client.create_run(client.create_experiment("settled")).info.run_id
    run = project / ".runner" / "runs" / run_id
    run.mkdir(parents=True)
    (run / "run.log").write_text("epoch 0\n")
    state = {
        "run_id": run_id,
        "backend": backend,
        "tracking_uri": store(project),
        "project": str(project),
        "host": socket.gethostname(),
        "timeout": None,
        "created": time.time() - 5,
        "sweep_parent": None,
    }
    (run / "state.json").write_text(json.dumps(state))
    (run / "started").write_text("{}")
    (run / "settled.json").write_text(
        json.dumps({"status": "FAILED", "exit_code": 3, "reason": "exit code 3"})
    )
    (project / ".runner" / "live").mkdir(parents=True)
    (project / ".runner" / "live" / run_id).write_text(str(run))
    run_cli(project, "ls", check=True)  # any command gives the run a new owner
    wait_ended(run)
    done = client.get_run(run_id)
    assert (done.info.status, done.data.tags["runner.exit_code"]) == ("FAILED", "3")
    assert done.data.tags["runner.reason"] == "exit code 3"
    assert "epoch 0" in read_artifact(project, run_id, "run.log")
