"""Untrusted runs and configs: what a run writes cannot pull host files into the record, and config values
that would reach mounts or the record are refused in one line, before any run exists."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from runner.environment.lock import cache_dir
from tests.helpers import all_runs, artifacts, docker_engine, folder, git, only_run, read_artifact, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("git_identity")]


@pytest.mark.parametrize("backend", ["docker", "local"])
def test_links_in_the_output_are_never_followed_into_the_record(
    project: Path, tmp_path: Path, backend: str
) -> None:
    if backend == "docker":
        docker_engine()
    secret = tmp_path / "host-secret.txt"
    secret.write_text("the host's secret")
    (project / "links.sh").write_text(
        f"ln -s '{secret}' wleak\n"  # in its working directory too, which is kept as workdir/
        'cd "$RUNNER_OUTPUT"\n'
        f"ln -s '{secret}' leak\n"  # a host file, named from inside the run
        f"ln -s '{tmp_path}' leakdir\n"
        "mkdir sub && echo kept > sub/result.txt\n"
    )
    run_cli(project, f"backend={backend}", "env.requirements=[]", "command=sh links.sh", check=True)
    run = only_run(project)
    kept = artifacts(project, run.info.run_id, "output") | artifacts(project, run.info.run_id, "output/sub")
    assert "output/sub/result.txt" in kept
    assert not {"output/leak", "output/leakdir"} & kept
    assert "workdir/wleak" not in artifacts(project, run.info.run_id, "workdir")
    assert read_artifact(project, run.info.run_id, "output/sub/result.txt").strip() == "kept"
    log = read_artifact(project, run.info.run_id, "run.log")
    assert "output/leak: a link or special file, not kept" in log
    assert "workdir/wleak: a link or special file, not kept" in log
    assert "the host's secret" not in log


SPOOL_LINKS = """import os, sys
import mlflow

spool, secret = os.environ["RUNNER_SPOOL"], sys.argv[1]
os.symlink(os.path.dirname(secret), spool + "/artifacts")  # its artifacts folder: a host folder
client = mlflow.MlflowClient()
model = client.create_logged_model(os.environ["MLFLOW_EXPERIMENT_ID"], source_run_id=os.environ["MLFLOW_RUN_ID"])
mine = spool + "/models/" + model.model_id
os.makedirs(mine)
open(mine + "/kept.txt", "w").write("kept")
os.symlink(secret, mine + "/leak.txt")  # in its own model's files
os.makedirs(spool + "/models/m-forged")  # a model that is not its own
open(spool + "/models/m-forged/x.txt", "w").write("forged")
"""


@pytest.mark.parametrize("backend", ["docker", "local"])
def test_links_in_the_spool_are_never_followed_into_the_record(
    project: Path, tmp_path: Path, backend: str
) -> None:
    """What a run's own MLflow logs reaches the record through its spool: a link there is never followed, and
    only the run's own models take files."""
    if backend == "docker":
        docker_engine()
    secret = tmp_path / "host-secret.txt"
    secret.write_text("the host's secret")
    (project / "spool_links.py").write_text(SPOOL_LINKS)
    run_cli(
        project,
        f"backend={backend}",
        "env.requirements=[]",
        f"command='python spool_links.py {secret}'",
        check=True,
    )
    run = only_run(project)
    assert not {p for p in artifacts(project, run.info.run_id) if "secret" in p}
    from mlflow import MlflowClient

    from tests.helpers import store

    client = MlflowClient(store(project))
    (model,) = client.search_logged_models([run.info.experiment_id])
    assert {f.path for f in client.list_logged_model_artifacts(model.model_id)} == {"kept.txt"}
    assert "model m-forged: not a model of this run, not kept" in read_artifact(
        project, run.info.run_id, "run.log"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("+env.variables={A@B%:1}",), "'env.variables.A@B%' cannot name a recorded param"),
        (
            ("env.ca_bundle=/var/run/docker.sock",),
            "/var/run/docker.sock is not a regular file",
        ),
        (("env.ca_bundle=key.pem",), "is not a CA bundle (PEM certificates, no private key)"),
        # Hydra builds nested nodes too: a target inside the model value is checked like the model's own.
        (
            ("+model.extra={_target_:builtins.exec,_args_:[x]}", "command=null"),
            "model.extra._target_ 'builtins.exec' is not allowed (Hydra would build it)",
        ),
        (("dataset._target_=os.system", "command=null"), "dataset._target_ 'os.system' is not allowed"),
        (("train.batch_size=0",), "train.batch_size: 0 must be at least 1."),
        (("evaluate=5",), "evaluate: '5' is not a report node."),
        # A local run maps mounts into its run directory: a mount may not take the owner's files there.
        (
            ("data=[mnist@1:/settled.json]",),
            "data: mount point '/settled.json' is taken in a local run's directory",
        ),
        (("data=[mnist@1:/record/x]",), "data: mount point '/record/x' is taken in a local run's directory"),
        # Mount points are checked as the kernel would read them, and never over the system's own folders.
        (("data=[mnist@1://proc]",), "the mount point '/proc' lies in /proc, a system folder"),
        (("data=[mnist@1:/./etc//cron.d/]",), "the mount point '/etc/cron.d' lies in /etc"),
        (("data=[mnist@1:/opt/env]",), "the mount point '/opt/env' overlaps /opt/env"),
        # Whatever OmegaConf raises while a value is read reaches the user as one line naming the key.
        (
            ("+env.variables={A:${oc.env:RUNNER_TEST_UNSET}}",),
            "env.variables.A: the environment variable RUNNER_TEST_UNSET is not set. Export it, or give a "
            "default: ${oc.env:RUNNER_TEST_UNSET,default}.",
        ),
        # Packages come from the config's own keys, never from options or paths hidden in requirement lines.
        (("env.requirements=['--index-url http://elsewhere/simple']",), "is not a package requirement"),
        (("env.requirements=['-e /etc']",), "env.requirements: '-e /etc' is not a package requirement"),
        (("env.index_url=ftp://x",), "env.index_url: 'ftp://x' is not an http(s) URL"),
        (
            ("env.requirements_file=/etc/passwd",),
            "env.requirements_file: /etc/passwd lies outside the project",
        ),
        (("env.requirements_file=../x.txt",), "env.requirements_file: ../x.txt lies outside the project"),
        (("env.requirements_file=linked.txt",), "env.requirements_file: linked.txt lies outside the project"),
        (("env.requirements_file=reqs.txt",), "reqs.txt:2: '-r /etc/passwd' is not a package requirement"),
        (("resources.memory=1k",), "resources.memory: '1k' is below the least a run can have, 6m"),
        # A secret's value in a recorded value would put it in the record: refused, whatever way it got there.
        (
            ("env.secrets=[RUNNER_TEST_TOKEN]", "+env.variables={A:'${oc.env:RUNNER_TEST_TOKEN}'}"),
            "env.variables.A holds the value of the secret RUNNER_TEST_TOKEN",
        ),
        (
            ("env.secrets=[RUNNER_TEST_TOKEN]", "command='echo ${oc.env:RUNNER_TEST_TOKEN}'"),
            "holds the value of the secret RUNNER_TEST_TOKEN",
        ),
    ],
)
def test_config_values_that_would_reach_a_mount_or_the_record_are_refused(
    project: Path, args: tuple[str, ...], message: str
) -> None:
    (project / "key.pem").write_text("-----BEGIN CERTIFICATE-----\nx\n-----BEGIN PRIVATE KEY-----\ny\n")
    (project / "reqs.txt").write_text("numpy\n-r /etc/passwd\n")
    (project / "linked.txt").symlink_to("/etc/passwd")  # a file of the project by name, a host file in fact
    env = {"RUNNER_TEST_TOKEN": "tok-4f9a2c"}
    proc = run_cli(project, "backend=local", "command=true", *args, env=env)  # the last command= wins
    assert_refused(project, proc, message)


def assert_refused(project: Path, proc: subprocess.CompletedProcess[str], message: str) -> None:
    """One line that says it, exit 2, no run, nothing left behind in the project or the engine."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert all_runs(project) == []
    assert not list((project / ".runner" / "runs").glob("*"))
    status = git(project, "status", "--porcelain", "--untracked-files=all").splitlines()
    assert [line for line in status if line[3:] not in ("key.pem", "reqs.txt", "linked.txt")] == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("resources.cpus=512",), "resources.cpus: 512 is more than this engine's"),
        (("backend.network=no-such-net",), "backend.network: no Docker network 'no-such-net' here"),
    ],
)
def test_what_the_engine_would_refuse_is_refused_before_any_run(
    project: Path, args: tuple[str, ...], message: str
) -> None:
    docker_engine()
    before = containers()
    proc = run_cli(project, "backend=docker", "env.requirements=[]", "command=echo hi", *args)
    assert_refused(project, proc, message)
    assert containers() == before


def containers() -> set[str]:
    out = subprocess.run(["docker", "ps", "-aq"], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_a_container_that_cannot_start_is_removed_and_its_run_ends_failed(
    dproject: Path,
    tmp_path: Path,
) -> None:
    docker_engine()
    src = folder(tmp_path / "src", {"a.txt": "one"})
    run_cli(dproject, "data", "add", "toy", str(src), check=True)
    before = containers()
    # The image has a file there: the engine refuses to put a folder over it when it starts the container.
    proc = run_cli(
        dproject, "backend=docker", "env.requirements=[]", "command=echo hi", "data=[toy@1:/root/.bashrc]"
    )
    assert proc.returncode != 0
    run = only_run(dproject)
    assert run.info.status == "FAILED"
    assert run.data.tags["runner.reason"].startswith("Docker could not start the run: ")
    assert containers() == before


@pytest.mark.parametrize("backend", ["docker", "local"])
def test_a_secret_is_masked_in_the_log_and_absent_from_the_engine_config(project: Path, backend: str) -> None:
    if backend == "docker":
        docker_engine()
    token = "s3cr3t-" + os.urandom(6).hex()
    (project / "leak.sh").write_text(
        'echo "token: $API_TOKEN"\n'
        'printf "cut: %s" "${API_TOKEN%????}"; printf "%s\\n" "${API_TOKEN#${API_TOKEN%????}}"\n'  # in two writes
        "sleep 3\n"
    )
    seen: list[str] = []

    def inspect_while_running() -> None:  # what `docker inspect` shows of the running container
        deadline = time.time() + 60
        while time.time() < deadline and not seen:
            ids = subprocess.run(
                ["docker", "ps", "-q", "--filter", "label=runner.container.kind=run"],
                capture_output=True,
                text=True,
            ).stdout.split()
            if ids:
                seen.append(
                    subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True).stdout
                )
            time.sleep(0.2)

    watcher = threading.Thread(target=inspect_while_running, daemon=True)
    if backend == "docker":
        watcher.start()
    proc = run_cli(
        project, f"backend={backend}", "env.requirements=[]", "env.secrets=[API_TOKEN]", "command=sh leak.sh",
        env={"API_TOKEN": token}, check=True,
    )  # fmt: skip
    run = only_run(project)
    log = read_artifact(project, run.info.run_id, "run.log")
    assert "token: ***" in log and "cut: ***" in log
    assert token not in log and token not in proc.stdout
    assert token not in (project / ".runner" / "runs" / run.info.run_id / "run.log").read_text()
    assert not (project / ".runner" / "runs" / run.info.run_id / "secrets.env").exists()
    if backend == "docker":
        watcher.join()
        assert seen and run.info.run_id in seen[0]
        assert token not in seen[0]


def test_env_setup_cannot_write_the_shared_wheel_cache(project: Path) -> None:
    docker_engine()
    marker = f"planted-{os.urandom(4).hex()}"
    setup = f"env.setup=['mkdir -p /uv-cache && touch /uv-cache/{marker} && echo setup-ran']"
    run_cli(project, "backend=docker", "env.requirements=[]", setup, "command=echo hi", check=True)
    assert "setup-ran" in read_artifact(project, only_run(project).info.run_id, "run.log")
    assert not list((cache_dir() / "uv-docker").rglob(f"{marker}*"))


def test_a_detached_run_leaves_no_temporary_folder(project: Path, tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    run_cli(
        project, "backend=local", "env.requirements=[]", "command=echo hi", "detach=true",
        env={"TMPDIR": str(tmp)}, check=True,
    )  # fmt: skip
    deadline = time.time() + 60
    while only_run(project).info.status == "RUNNING" and time.time() < deadline:
        time.sleep(0.3)
    assert only_run(project).info.status == "FINISHED"
    assert list(tmp.iterdir()) == []


def test_a_container_run_has_no_capability_and_cannot_gain_one(project: Path) -> None:
    docker_engine()
    command = "command=\"grep -E '^(CapEff|CapPrm|NoNewPrivs)' /proc/self/status\""
    run_cli(project, "backend=docker", "env.requirements=[]", command, check=True)
    log = read_artifact(project, only_run(project).info.run_id, "run.log")
    assert "CapEff:\t0000000000000000" in log
    assert "CapPrm:\t0000000000000000" in log
    assert "NoNewPrivs:\t1" in log


def test_a_run_cut_off_from_the_network_reaches_no_one(project: Path) -> None:
    docker_engine()
    (project / "reach.py").write_text(
        "import socket\n"
        "for host in ('host.docker.internal', '1.1.1.1', '127.0.0.1'):\n"
        "    try:\n"
        "        socket.create_connection((host, 80), timeout=2); print('reached', host)\n"
        "    except OSError:\n"
        "        print('cut off from', host)\n"
    )
    run_cli(
        project,
        "backend=docker",
        "env.requirements=[]",
        "backend.network=none",
        "command=python3 reach.py",
        check=True,
    )
    log = read_artifact(project, only_run(project).info.run_id, "run.log")
    assert "reached" not in log
    assert log.count("cut off from") == 3
