"""The pure pieces of backend=slurm and mode=jupyter: sbatch options, SLURM endings as run endings, the engine's
command line, JupyterLab's command, the port, and what `runner notebook pull` copies."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from runner.backends.slurm import engine, jobs
from runner.backends.slurm.config import SlurmConfig
from runner.errors import RunnerError
from runner.runs import session
from runner.tracking.record import manifest


def test_sbatch_options_come_from_the_config_and_the_runs_resources() -> None:
    cfg = SlurmConfig(
        partition="gpu", account="lab", qos="high", time="90", sbatch_options=["--constraint=a100"]
    )
    opts = jobs.options(cfg, cpus=2.5, memory_bytes=3 * 2**30, gpus=2, gpu=True)
    assert opts == [
        "--no-requeue", "--partition=gpu", "--account=lab", "--qos=high", "--time=90", "--cpus-per-task=3",
        "--mem=3072M", "--gres=gpu:2", "--constraint=a100",
    ]  # fmt: skip
    assert jobs.options(SlurmConfig(), None, None, None, False) == ["--no-requeue"]
    assert jobs.options(SlurmConfig(), None, None, ("0", "3"), True)[-1] == "--gres=gpu:2"


def test_the_time_limit_leaves_the_owner_room_to_stop_and_record() -> None:
    assert jobs.time_limit("2:00:00", 30) == "2:00:00"  # the config's own wins
    assert jobs.time_limit(None, 61) == "7"  # 2 minutes of run, 5 to load the image and to record
    assert jobs.time_limit(None, None) is None


@pytest.mark.parametrize(
    "state,stop,status,reason",
    [
        (jobs.JobState("CANCELLED", "0:15"), None, "KILLED", "cancelled: SLURM job 7 was cancelled (scancel)"),
        (jobs.JobState("CANCELLED", "0:15"), "stopped by runner stop", "KILLED", "stopped by runner stop"),
        (jobs.JobState("TIMEOUT", "0:0"), None, "KILLED", jobs.TIMEOUT_REASON),
        (jobs.JobState("NODE_FAIL", "0:0", "NodeDown"), None, "FAILED", "SLURM job 7 NODE_FAIL (NodeDown), exit 0:0"),
        (jobs.JobState("COMPLETED", "0:0"), None, "FAILED", "lost: SLURM job 7 ended without the run's ending being recorded"),
        (None, None, "FAILED", "lost: SLURM has no record of job 7"),
    ],
)  # fmt: skip
def test_a_jobs_ending_is_the_runs_when_its_owner_could_not_record_it(state, stop, status, reason) -> None:
    outcome = jobs.outcome("7", state, stop)
    assert (outcome.status, outcome.reason) == (status, reason)


def test_a_job_still_queued_or_going_is_not_over() -> None:
    assert not jobs.JobState("PENDING").over and not jobs.JobState("COMPLETING").over
    assert jobs.JobState("NODE_FAIL").over and jobs.JobState("OUT_OF_MEMORY").over


def test_one_sacct_answers_for_every_job_a_waiting_arrays_tasks_included(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked = []

    def call(*argv: str, timeout: float = 60) -> object:
        asked.append(argv)
        if argv[0] == "scontrol":
            return type("Proc", (), {"returncode": 1, "stdout": "", "stderr": "Invalid job id specified"})()
        out = "5|RUNNING|0:0|None\n7_1|COMPLETED|0:0|None\n7_[2-4,9%2]|PENDING|0:0|JobArrayTaskLimit\n"
        return type("Proc", (), {"returncode": 0, "stdout": out, "stderr": ""})()

    monkeypatch.setattr(jobs, "_call", call)
    found = jobs.states(["5", "7_1", "7_3", "7_9", "8"])
    # The controller only for the job that sacct did not list.
    assert [a[0] for a in asked] == ["sacct", "scontrol"]
    assert asked[0][asked[0].index("-j") + 1] == "5,7_1,7_3,7_9,8"
    assert {job: s.state if s else None for job, s in found.items()} == {
        "5": "RUNNING",
        "7_1": "COMPLETED",
        "7_3": "PENDING",
        "7_9": "PENDING",
        "8": None,
    }
    assert found["7_3"].reason == "JobArrayTaskLimit"  # type: ignore[union-attr]
    assert jobs.array_ids("7_[0-2%1]") == ["7_0", "7_1", "7_2"] and jobs.array_ids("12") == ["12"]
    assert jobs.states([]) == {}


def container(**more: object) -> dict:
    return {
        "name": "runner-abc", "user": "1000:1000", "working_dir": "/code", "labels": {"runner.run_id": "abc"},
        "mounts": [{"Source": "/p/run/code", "Target": "/code", "ReadOnly": False},
                   {"Source": "/data/v1", "Target": "/data", "ReadOnly": True}],
        "environment": {"SECRETISH": "value"}, "network_mode": "host", "init": True, "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"], "image": "sha256:1", "command": ["python", "t.py"], **more,
    }  # fmt: skip


def test_the_engine_command_line_is_the_docker_backends_container(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "getuid", lambda: 0)
    argv = engine.run_options(
        container(nano_cpus=2_000_000_000, mem_limit=2**30, memswap_limit=2**30), "docker"
    )
    assert argv[-3:] == ["sha256:1", "python", "t.py"]
    assert "type=bind,source=/data/v1,target=/data,readonly" in argv
    assert "type=bind,source=/p/run/code,target=/code" in argv
    for flag, value in (
        ("--user", "1000:1000"),
        ("--network", "host"),
        ("--cpus", "2"),
        ("--memory", str(2**30)),
    ):
        assert argv[argv.index(flag) + 1] == value
    assert "--init" in argv and "no-new-privileges" in argv and "ALL" in argv
    assert not any("value" in a for a in argv) and "--env" not in argv  # variables never on a command line
    assert "--userns=keep-id" not in argv


def test_rootless_podman_keeps_the_users_uid_and_gpus_are_slurms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "getuid", lambda: 1000)
    assert "--userns=keep-id" in engine.run_options(container(), "podman")
    assert "--userns=keep-id" not in engine.run_options(container(), "docker")
    monkeypatch.setenv("SLURM_JOB_GPUS", "2,5")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # job-relative: not what the engine reads
    docker = engine.run_options(container(device_requests=[{}]), "docker")
    assert docker[docker.index("--gpus") + 1] == '"device=2,5"'
    podman = engine.run_options(container(device_requests=[{}]), "podman")
    assert "nvidia.com/gpu=2" in podman and "nvidia.com/gpu=5" in podman
    monkeypatch.delenv("SLURM_JOB_GPUS")
    with pytest.raises(RunnerError, match="SLURM gave this job no GPU"):
        engine.run_options(container(device_requests=[{}]), "docker")


def test_a_mount_path_with_a_comma_is_refused_not_split() -> None:
    odd = container(mounts=[{"Source": "/p/a,readonly=false", "Target": "/data", "ReadOnly": True}])
    with pytest.raises(RunnerError, match="comma"):
        engine.run_options(odd, "docker")


def test_jupyterlab_culls_and_stops_itself_and_takes_its_token_from_the_environment() -> None:
    argv = session.command(120)
    assert (
        "--ServerApp.shutdown_no_activity_timeout=130" in argv
    )  # after the owner's own check: it records `idle`
    assert (
        "--MappingKernelManager.cull_idle_timeout=120" in argv
        and "--MappingKernelManager.cull_interval=60" in argv
    )
    assert "--MappingKernelManager.cull_connected=False" in argv
    assert not any("token" in a.lower() for a in argv)
    assert "--MappingKernelManager.cull_interval=5" in session.command(10)


def test_a_taken_port_gives_another_and_says_so() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        got, said = session.port_for(port)
    assert got != port and said and f"port {port} is taken" in said and str(got) in said


def test_pull_copies_what_the_session_wrote_and_never_a_newer_project_file(tmp_path: Path) -> None:
    code, project = tmp_path / "code", tmp_path / "project"
    code.mkdir()
    project.mkdir()
    for folder in (code, project):
        (folder / "same.py").write_text("x = 1\n")
        (folder / "edited.txt").write_text("before\n")
    staged = manifest(code)
    since = time.time()
    time.sleep(0.01)
    (code / "new.ipynb").write_text("{}")
    (code / "sub").mkdir()
    (code / "sub" / "deep.txt").write_text("deep")
    (code / "edited.txt").write_text("in the session\n")
    (code / ".ipynb_checkpoints").mkdir()
    (code / ".ipynb_checkpoints" / "new-checkpoint.ipynb").write_text("{}")
    (code / "link").symlink_to("/etc/passwd")
    (code / ".git" / "hooks").mkdir(parents=True)  # what a hostile run plants for the host to run
    (code / ".git" / "hooks" / "pre-commit").write_text("#!/bin/sh\ntouch /tmp/pwned\n")
    (code / "run.sh").write_text("echo hi\n")
    (code / "run.sh").chmod(0o755)
    (code / "outside").mkdir()
    (code / "outside" / "f.txt").write_text("through a link")
    (project / "outside").symlink_to(tmp_path / "elsewhere")  # the project's own link: never written through
    (tmp_path / "elsewhere").mkdir()
    (project / "edited.txt").write_text("edited here meanwhile\n")  # newer than the session's start
    ledger: dict[str, str] = {}
    copied, refused = session.pull(code, staged, project, since, ledger)
    assert copied == ["new.ipynb", "run.sh", "sub/deep.txt"] and refused == ["edited.txt", "outside/f.txt"]
    assert (project / "sub" / "deep.txt").read_text() == "deep"
    assert (project / "edited.txt").read_text() == "edited here meanwhile\n"
    assert not (project / "link").exists() and not (project / ".ipynb_checkpoints").exists()
    assert not (project / ".git").exists() and not any((tmp_path / "elsewhere").iterdir())
    assert (project / "run.sh").stat().st_mode & 0o777 == 0o644  # data, never made runnable here
    (code / "new.ipynb").write_text(
        '{"again": 1}'
    )  # the session goes on; a second pull replaces its own copy
    copied, refused = session.pull(code, staged, project, since, ledger)
    assert copied == ["new.ipynb"] and (project / "new.ipynb").read_text() == '{"again": 1}'
    assert refused == ["edited.txt", "outside/f.txt"]


def test_slurm_warns_a_run_with_attempts_before_a_time_limit_of_ten_minutes_or_more() -> None:
    from runner.backends.slurm.jobs import limit_minutes, warning

    spelled = {"1": 1, "10": 10, "1:30": 1.5, "2:00:00": 120, "1-0": 1440, "1-2:30": 1590, "1-0:0:30": 1440.5}
    assert {text: limit_minutes(text) for text in spelled} == spelled
    assert limit_minutes(None) is None and limit_minutes("soon") is None
    assert (
        warning("9") == [] and warning(None) == []
    )  # SLURM may send it up to a minute early: not for short limits
    assert warning("10") == warning("2:00:00") == ["--signal=B:USR1@120"]


ACCOUNT = {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "s3cret-pw-123"}


@pytest.mark.parametrize(
    "uri,given,secrets",
    [
        ("http://mlflow.lab:5000", ACCOUNT, ("API_KEY", "MLFLOW_TRACKING_PASSWORD")),
        ("http://mlflow.lab:5000", {"MLFLOW_TRACKING_PASSWORD": "x"}, ("API_KEY",)),  # no user: no account
        ("sqlite:///p/mlflow.db", ACCOUNT, ("API_KEY",)),  # a store on this host: nobody to log in to
    ],
)
def test_a_team_servers_password_is_passed_on_by_name_where_a_user_is_exported(
    uri: str, given: dict[str, str], secrets: tuple[str, ...]
) -> None:
    from runner.compose.build import build_spec
    from runner.compose.load import compose_config

    root = Path(__file__).resolve().parents[2]
    cfg = compose_config(root, ["+experiment=keras_mlp", f"tracking.uri={uri}", "env.secrets=[API_KEY]"])
    spec = build_spec(cfg, chosen="keras_mlp", project_dir="/p", environ=given)
    assert spec.env.secrets == secrets
    assert "s3cret-pw-123" not in spec.config_yaml


def test_a_jobs_secrets_reach_its_node_in_an_owner_only_file_it_removes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runner.backends.slurm import SlurmPlan, hand_secrets, take_secrets
    from runner.runs.rundir import RunDir

    run_dir = RunDir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret-pw-123")
    names = hand_secrets([run_dir], [SlurmPlan(secrets=("MLFLOW_TRACKING_PASSWORD", "UNSET_ONE"))])
    assert names == {"MLFLOW_TRACKING_PASSWORD", "UNSET_ONE"}  # what sbatch's environment goes without
    assert run_dir.job_secrets.stat().st_mode & 0o777 == 0o600
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    take_secrets(run_dir)
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "s3cret-pw-123"
    assert not run_dir.job_secrets.exists()


def test_a_refused_account_is_one_line_with_the_user_never_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import PERMISSION_DENIED, RESOURCE_DOES_NOT_EXIST, UNAUTHENTICATED

    from runner.cli.main import server_refusal

    for name, value in ACCOUNT.items():
        monkeypatch.setenv(name, value)
    said = "API request to endpoint /api/2.0/mlflow/runs/create failed with error code 401 != 200."
    error = server_refusal(MlflowException(said, error_code=UNAUTHENTICATED))
    assert error is not None and "refused user 'alice' (on /api/2.0/mlflow/runs/create)" in str(error)
    assert "s3cret-pw-123" not in str(error) and "\n" not in str(error)
    denied = server_refusal(MlflowException("Permission denied", error_code=PERMISSION_DENIED))
    assert denied is not None and "user 'alice'" in str(denied) and "EDIT permission" in str(denied)
    assert server_refusal(MlflowException("Run not found", error_code=RESOURCE_DOES_NOT_EXIST)) is None
    assert server_refusal(ValueError("x")) is None
