"""backend=slurm against the real one-node cluster (scripts/cluster.sh) and its MLflow server on PostgreSQL.

The lifecycle's conformance cases, as they apply where a job owns the run: the submitting `runner` returns at once
and the record still completes; every ending comes from SLURM or the engine (exit, scancel, `runner stop`, a
time limit, a failed node, an owner killed) and nothing stays RUNNING or on the engine; plus what only a cluster
has: one job array per sweep with its throttle, the env image loaded on a node from the shared cache, Podman as
the node's engine, and SLURM's own refusals before any run exists.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType

from runner.backends.slurm.jobs import TIMEOUT_REASON as TIMEOUT
from tests.helpers import cluster_account, docker_engine, ended, run_cli, run_dir, when_logged
from tests.integration.test_attempts import RESUMABLE

pytestmark = pytest.mark.integration

SERVER = "http://127.0.0.1:5055"  # scripts/cluster.sh's MLflow server
EPOCHS = "import time\nfor i in range(300):\n    print(f'epoch {i}', flush=True)\n    time.sleep(0.5)\n"


@pytest.fixture
def env(slurm: dict[str, str]) -> dict[str, str]:
    """A user's shell: the cluster, its tracking server, and the user's account there (alice's)."""
    return {"SLURM_CONF": slurm["SLURM_CONF"], "MLFLOW_TRACKING_URI": SERVER, **cluster_account("alice")}


@pytest.fixture
def cluster_project(project: Path) -> Path:
    (project / "epochs.py").write_text(EPOCHS)
    return project


def submit(project: Path, env: dict[str, str], *args: str) -> str:
    """`runner ARGS backend=slurm` (a small environment): the run id it prints; it must return at once."""
    started = time.monotonic()
    proc = run_cli(project, "backend=slurm", "env.requirements=[]", *args, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "submitted: SLURM job" in proc.stdout, proc.stdout
    assert time.monotonic() - started < 120
    return proc.stdout.split("[runner] run ")[1].split()[0]


def record(run_id: str) -> object:
    return MlflowClient(SERVER).get_run(run_id)


def settled(project: Path, env: dict[str, str], run_id: str, timeout: float = 240) -> object:
    """The run's record once it has ended; `runner ls` (which reconciles) is asked meanwhile, as a user would."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        run = record(run_id)
        if run.info.status not in ("RUNNING", "SCHEDULED"):
            return run
        run_cli(project, "ls", env=env)
        time.sleep(2)
    raise AssertionError(f"run {run_id} still {record(run_id).info.status} after {timeout} s")


def job_of(project: Path, run_id: str) -> str:
    return json.loads((run_dir(project, run_id) / "job.json").read_text())["job"]


def containers_of(run_id: str, engine: str = "docker") -> list[str]:
    out = subprocess.run(
        [engine, "ps", "-a", "-q", "--filter", f"label=runner.run_id={run_id}"],
        capture_output=True,
        text=True,
    )
    return out.stdout.split()


def artifact(run_id: str, path: str) -> str:
    import mlflow.artifacts

    return Path(
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, tracking_uri=SERVER)
    ).read_text()


def sacct_state(env: dict[str, str], job: str) -> str:
    rows = ended(env, job, timeout=120)
    return rows[0][1].split()[0]


def test_keras_mlp_finishes_on_the_cluster_after_the_runner_has_exited(
    project: Path, env: dict[str, str]
) -> None:
    proc = run_cli(project, "+experiment=keras_mlp", "backend=slurm", "train.epochs=2", env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_id = proc.stdout.split("[runner] run ")[1].split()[0]
    assert not (run_dir(project, run_id) / "ended.json").exists()  # the runner returned; the job goes on
    run = settled(project, env, run_id)
    assert run.info.status == "FINISHED", artifact(run_id, "run.log")
    assert 0 <= run.data.metrics["test_accuracy"] <= 1 and "loss" in run.data.metrics
    tags = run.data.tags
    assert tags["runner.slurm.job"] == job_of(project, run_id)
    assert tags["runner.image.id"].startswith("sha256:") and tags["runner.node"]
    # backend.envs=folder: the node mounts the environment's folder; the archive is the small harness image's.
    assert Path(tags["runner.env.folder"]).is_dir() and tags["runner.image"].startswith("runner-harness:")
    assert Path(tags["runner.image.archive"]).is_file()
    assert sacct_state(env, tags["runner.slurm.job"]) == "COMPLETED"
    assert containers_of(run_id) == []


def test_an_environment_as_an_archive_for_nodes_that_share_no_folder(
    cluster_project: Path, env: dict[str, str]
) -> None:
    (cluster_project / "probe.py").write_text("import six, sys; print('six from', sys.prefix)\n")
    run_id = submit(
        cluster_project, env, "command=python probe.py", "env.requirements=[six]", "backend.envs=archive"
    )
    run = settled(cluster_project, env, run_id)
    assert run.info.status == "FINISHED", artifact(run_id, "run.log")
    assert "six from /opt/env" in artifact(run_id, "run.log")
    tags = run.data.tags
    assert tags["runner.image"].startswith("runner-env:") and "runner.env.folder" not in tags
    assert Path(tags["runner.image.archive"]).name == tags["runner.image.id"].replace(":", "-") + ".tar"


def test_a_node_that_does_not_see_the_environments_folder_says_so(
    cluster_project: Path, env: dict[str, str]
) -> None:
    # The job may start only in 15 s: meanwhile the folder goes (as on a node that does not mount it).
    run_id = submit(
        cluster_project,
        env,
        "command=echo never",
        "env.requirements=[idna]",
        'backend.sbatch_options=["--begin=now+15"]',
    )
    folder = Path(record(run_id).data.tags["runner.env.folder"])
    shutil.rmtree(folder)
    run = settled(cluster_project, env, run_id)
    assert run.info.status == "FAILED"
    assert f"this node does not see the environment's folder {folder}" in run.data.tags["runner.reason"]
    assert "backend.envs=archive" in run.data.tags["runner.reason"]
    assert containers_of(run_id) == []


def test_a_sweep_is_one_job_array_under_one_parent_with_its_throttle(
    cluster_project: Path, env: dict[str, str]
) -> None:
    proc = run_cli(
        cluster_project, "-m", "backend=slurm", "env.requirements=[]", "command=echo member",
        "train.seed=1,2", "train.epochs=1,2", "sweep.parallel=2", env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 member(s) submitted as SLURM job array" in proc.stdout, proc.stdout
    sweep_id = proc.stdout.split("[sweep ")[1].split("]")[0]
    client = MlflowClient(SERVER)
    ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    (parent,) = client.search_runs(
        ids, f"tags.`runner.sweep_id` = '{sweep_id}' and tags.`runner.role` = 'sweep'"
    )
    kids = client.search_runs(ids, f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(kids) == 4
    jobs = {k.data.tags["runner.slurm.job"] for k in kids}
    arrays = {j.split("_")[0] for j in jobs}
    assert len(jobs) == 4 and len(arrays) == 1
    (array,) = arrays
    for kid in kids:
        assert settled(cluster_project, env, kid.info.run_id).info.status == "FINISHED"
    deadline = time.time() + 60  # the last member to end closes the parent
    while client.get_run(parent.info.run_id).info.status == "RUNNING" and time.time() < deadline:
        time.sleep(1)
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
    ended(env, array, tasks=4)  # every task in SLURM's accounting, with its end
    rows = subprocess.run(
        ["sacct", "-j", array, "-X", "-n", "-P", "-o", "JobID,Start,End"], env={**env, "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    spans = [tuple(r.split("|")[1:]) for r in rows]
    assert len(spans) == 4
    most = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
    assert most <= 2  # sweep.parallel=2 is the array's throttle


def test_an_optuna_sweep_on_the_cluster_submits_each_trial_as_a_slot_frees(
    cluster_project: Path, env: dict[str, str]
) -> None:
    """The sweep's driver on the login node asks for a trial as a slot frees and submits it as a job of its own,
    two at a time; each trial is told its member's objective as its job ends."""
    score = 'command="python -c \\"import mlflow; mlflow.log_metric(\'score\', ${train.learning_rate})\\""'
    proc = run_cli(
        cluster_project, "-m", "backend=slurm", "env.requirements=[]", score, "hydra/sweeper=optuna",
        "hydra.sweeper.n_trials=3", "train.learning_rate=interval(0.1,0.9)", "sweep.objective=score",
        "sweep.parallel=2", env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sweep_id = proc.stdout.split("[sweep ")[1].split("]")[0]
    client = MlflowClient(SERVER)
    ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    (parent,) = client.search_runs(
        ids, f"tags.`runner.sweep_id` = '{sweep_id}' and tags.`runner.role` = 'sweep'"
    )
    kids = client.search_runs(ids, f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert parent.info.status == "FINISHED" and parent.data.tags["runner.sweep.trials"] == "3"
    assert len(kids) == 3 and all(k.info.status == "FINISHED" for k in kids)
    jobs = [k.data.tags["runner.slurm.job"] for k in kids]
    assert len(set(jobs)) == 3 and all(sacct_state(env, j) == "COMPLETED" for j in jobs)
    assert all(k.data.metrics["score"] == float(k.data.params["train.learning_rate"]) for k in kids)


def test_scancel_mid_run_ends_it_killed_with_its_log(cluster_project: Path, env: dict[str, str]) -> None:
    run_id = submit(cluster_project, env, "command=python epochs.py")
    when_logged(cluster_project, run_id, "epoch 2")
    job = job_of(cluster_project, run_id)
    subprocess.run(["scancel", job], env={**env, "PATH": "/usr/bin:/bin"}, check=True)
    run = settled(cluster_project, env, run_id, timeout=90)
    assert run.info.status == "KILLED"
    assert run.data.tags["runner.reason"].startswith("cancelled"), run.data.tags["runner.reason"]
    assert "epoch 2" in artifact(run_id, "run.log")
    assert sacct_state(env, job) == "CANCELLED"
    assert containers_of(run_id) == []


def test_runner_stop_ends_a_running_and_a_queued_run_killed(
    cluster_project: Path, env: dict[str, str]
) -> None:
    # Each asks for every CPU of the one node: the second waits in the queue while the first runs.
    running = submit(cluster_project, env, "command=python epochs.py", "resources.cpus=2")
    queued = submit(cluster_project, env, "command=python epochs.py", "resources.cpus=2")
    when_logged(cluster_project, running, "epoch 1")
    for run_id in (queued, running):
        proc = run_cli(cluster_project, "stop", run_id, env=env, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    for run_id in (running, queued):
        run = settled(cluster_project, env, run_id, timeout=90)
        assert (run.info.status, run.data.tags["runner.reason"]) == ("KILLED", "stopped by runner stop")
    assert "epoch 1" in artifact(running, "run.log")
    assert sacct_state(env, job_of(cluster_project, queued)) == "CANCELLED"
    assert "epoch" not in (run_dir(cluster_project, queued) / "run.log").read_text()  # it never started


def test_the_time_limit_ends_a_run_killed_timeout(cluster_project: Path, env: dict[str, str]) -> None:
    run_id = submit(cluster_project, env, "command=python epochs.py", "backend.time=1")  # one minute
    run = settled(cluster_project, env, run_id, timeout=200)
    assert run.info.status == "KILLED"
    assert run.data.tags["runner.reason"].startswith("timeout"), run.data.tags["runner.reason"]
    assert "epoch 1" in artifact(run_id, "run.log")
    assert sacct_state(env, job_of(cluster_project, run_id)) == "TIMEOUT"
    assert containers_of(run_id) == []


@pytest.fixture
def node_restored(slurm: dict[str, str]):
    yield
    env = {**slurm, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    if subprocess.run(["pgrep", "-x", "slurmd"], capture_output=True).returncode != 0:
        subprocess.run(["slurmd"], env=env, check=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        state = subprocess.run(
            ["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True
        ).stdout.strip()
        if state in ("idle", "mix"):
            return
        time.sleep(1)
    raise AssertionError(f"the node did not come back: {state}")


def test_a_failed_node_ends_the_run_failed_with_slurms_reason(
    cluster_project: Path, env: dict[str, str], node_restored: None
) -> None:
    run_id = submit(cluster_project, env, "command=python epochs.py")
    when_logged(cluster_project, run_id, "epoch 1")
    subprocess.run(["pkill", "-9", "-x", "slurmd"], check=True)  # the node stops answering its controller
    run = settled(cluster_project, env, run_id, timeout=150)
    assert run.info.status == "FAILED"
    assert "NODE_FAIL" in run.data.tags["runner.reason"], run.data.tags["runner.reason"]
    assert containers_of(run_id) == []


def test_an_owner_killed_on_the_node_is_settled_from_sacct(
    cluster_project: Path, env: dict[str, str]
) -> None:
    run_id = submit(cluster_project, env, "command=python epochs.py")
    when_logged(cluster_project, run_id, "epoch 1")
    subprocess.run(
        ["pkill", "-9", "-f", f"runner.backends.slurm.node .*{job_listing(cluster_project, run_id)}"]
    )
    run = settled(cluster_project, env, run_id, timeout=90)  # recorded by `runner ls` on this (login) node
    assert run.info.status == "FAILED"
    assert "FAILED" in run.data.tags["runner.reason"], run.data.tags["runner.reason"]
    assert "epoch 1" in artifact(run_id, "run.log")
    assert containers_of(run_id) == []  # the job's shell removed what the owner left


def job_listing(project: Path, run_id: str) -> str:
    return Path(json.loads((run_dir(project, run_id) / "job.json").read_text())["listing"]).name


def test_a_node_without_the_image_loads_it_from_the_shared_cache(
    cluster_project: Path, env: dict[str, str]
) -> None:
    # The job may start only in 15 s: meanwhile the engine loses the env image.
    run_id = submit(
        cluster_project,
        env,
        "command=echo loaded",
        'backend.sbatch_options=["--begin=now+15"]',
        'env.setup=["echo an image of its own, which no other image stands on"]',
    )
    image = record(run_id).data.tags["runner.image.id"]
    docker_engine().images.remove(image, force=True)
    run = settled(cluster_project, env, run_id)
    assert run.info.status == "FINISHED", artifact(run_id, "run.log")
    assert run.data.tags["runner.image.source"] == "shared cache"
    assert docker_engine().images.get(image).id == image  # the same image, loaded: a rebuild has another id


def test_podman_on_the_node_runs_the_same_container(cluster_project: Path, env: dict[str, str]) -> None:
    script = "import os; open('/output/who', 'w').write(str(os.getuid())); print('podman ran')"
    (cluster_project / "who.py").write_text(script)
    run_id = submit(cluster_project, env, "command=python who.py", "backend.engine=podman")
    run = settled(cluster_project, env, run_id)
    assert run.info.status == "FINISHED", artifact(run_id, "run.log")
    import os

    assert artifact(run_id, "output/who") == str(os.getuid())
    assert "podman ran" in artifact(run_id, "run.log")
    assert containers_of(run_id, "podman") == []


@pytest.mark.parametrize(
    "args,said",
    [
        (["backend.partition=nope"], "SLURM refuses the job: invalid partition specified: nope"),
        (["backend.account=ghost"], "Invalid account or account/partition combination"),
        (["env.gpu=true", "resources.gpus=2"], "Invalid generic resource (gres) specification"),
        (["backend.engine=singularity"], "backend.engine: 'singularity' is not one of docker, podman"),
        (
            ['backend.sbatch_options=["--output=/etc/cron.d/x"]'],
            "'--output=/etc/cron.d/x' is not an option the runner",
        ),
        (['backend.sbatch_options=["--wrap=sh evil.sh"]'], "'--wrap=sh evil.sh' is not an option the runner"),
    ],
)
def test_what_slurm_refuses_is_one_line_before_any_run(
    project: Path, env: dict[str, str], args: list[str], said: str
) -> None:
    proc = run_cli(project, "backend=slurm", "env.requirements=[]", "command=echo hi", *args, env=env)
    assert proc.returncode == 2 and said in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (project / ".runner" / "runs").exists() or not any((project / ".runner" / "runs").iterdir())


def test_a_sqlite_store_or_no_sbatch_is_refused_before_submitting(
    project: Path, env: dict[str, str], tmp_path: Path
) -> None:
    local = run_cli(project, "backend=slurm", "command=echo hi", env={"SLURM_CONF": env["SLURM_CONF"]})
    assert (
        local.returncode == 2
        and "backend=slurm records to a tracking server, not to 'sqlite:" in local.stderr
    )
    bare = tmp_path / "bin"  # a PATH with what the runner needs here, and no SLURM
    bare.mkdir()
    import shutil
    import sys

    for tool in ("git", "docker"):
        (bare / tool).symlink_to(shutil.which(tool))
    proc = run_cli(
        project,
        "backend=slurm",
        "command=echo hi",
        env={**env, "PATH": f"{bare}:{Path(sys.executable).parent}"},
    )
    assert proc.returncode == 2 and "no sbatch on PATH" in proc.stderr, proc.stderr
    assert not (project / "mlflow.db").exists()


def test_a_run_longer_than_its_time_limit_goes_on_over_several_jobs_as_one_run(
    project: Path, env: dict[str, str]
) -> None:
    """keras_mlp for about three one-minute time limits: at each limit the job's owner asks the trainer to save a
    checkpoint and stop, and queues the next job after this one; the run ends FINISHED as one MLflow run over
    several jobs (sacct lists each), with one `loss` point per epoch."""
    args = ("+experiment=keras_mlp", "backend=slurm", "train.batch_size=1", "train.epochs=130")
    proc = run_cli(project, *args, "backend.time=1", "resources.max_attempts=6", env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_id = proc.stdout.split("[runner] run ")[1].split()[0]
    run = settled(project, env, run_id, timeout=900)
    log = artifact(run_id, "run.log")
    assert run.info.status == "FINISHED", log
    tags = run.data.tags
    attempts = int(tags["runner.attempt"])
    assert attempts >= 3, tags
    assert all(tags[f"runner.attempt.{n}"] == f"KILLED: {TIMEOUT}" for n in range(1, attempts)), tags
    assert "[runner] resuming from the checkpoint at epoch" in log
    history = MlflowClient(SERVER).get_metric_history(run_id, "loss")
    assert sorted(m.step for m in history) == list(range(130))  # every epoch once
    chain = [
        line.split()[-1] for line in log.splitlines() if line.startswith("[runner] the next attempt is SLURM")
    ]
    jobs = [*chain, tags["runner.slurm.job"]]
    assert len(jobs) == attempts and jobs[-1] != jobs[0], log
    states = [sacct_state(env, job) for job in jobs]
    assert states[:-1] == ["TIMEOUT"] * (attempts - 1), states
    # The last job ran the training to its end; it may still meet its limit while the run's record is closed.
    assert states[-1] in ("COMPLETED", "TIMEOUT"), states
    assert containers_of(run_id) == []


def test_slurms_warning_before_the_time_limit_makes_the_run_go_on_in_its_next_job(
    cluster_project: Path, env: dict[str, str]
) -> None:
    """SLURM's --signal warning (SIGUSR1 to the job's shell, sent here as SLURM sends it: scancel --batch) reaches
    the owner through the job's shell: the run saves its checkpoint and stops, its job ends COMPLETED, and the run
    goes on in the next job, each epoch once."""
    (cluster_project / "train.py").write_text(RESUMABLE)
    run_id = submit(cluster_project, env, "command=python train.py 12 0.5", "resources.max_attempts=2")
    when_logged(cluster_project, run_id, '"step": 3}')
    first = job_of(cluster_project, run_id)
    subprocess.run(["scancel", "--batch", "--signal=USR1", first], env=env, check=True)
    deadline = time.time() + 90  # runner ls shows the attempt and its job meanwhile
    while "attempt 2 of 2, SLURM job" not in run_cli(cluster_project, "ls", env=env).stdout:
        assert time.time() < deadline, run_cli(cluster_project, "ls", env=env).stdout
        time.sleep(0.5)
    run = settled(cluster_project, env, run_id)
    log = artifact(run_id, "run.log")
    assert run.info.status == "FINISHED", log
    assert run.data.tags["runner.attempt.1"] == f"KILLED: {TIMEOUT} is near", run.data.tags
    assert "checkpoint saved: stopping" in log
    assert sorted(m.step for m in MlflowClient(SERVER).get_metric_history(run_id, "loss")) == list(range(12))
    assert run.data.tags["runner.slurm.job"] != first
    assert sacct_state(env, first) == "COMPLETED"
    assert containers_of(run_id) == []


CLUSTER = Path(os.environ.get("RUNNER_CLUSTER_DIR", "/tmp/runner-cluster"))
RECORDS = "import mlflow, time\nmlflow.log_metric('from_the_run', 1.0)\nprint('recorded', flush=True)\n"


def as_user(name: str, method: str, path: str, version: str = "2.0", **params: str) -> Any:
    """The tracking server's answer to `name`'s request, with that user's basic auth."""
    import requests

    account = cluster_account(name)
    auth = (account["MLFLOW_TRACKING_USERNAME"], account["MLFLOW_TRACKING_PASSWORD"])
    url = f"{SERVER}/api/{version}/mlflow/{path}"
    reply = (
        requests.get(url, params=params, auth=auth)
        if method == "GET"
        else requests.post(url, json=params, auth=auth)
    )
    return reply


def holding(password: str, folder: Path) -> list[str]:
    """The files under `folder` whose bytes hold `password`."""
    found = []
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file() and not path.is_symlink() and password.encode() in path.read_bytes():
                found.append(str(path))
    return found


def test_a_run_is_its_users_and_its_password_is_nowhere(
    cluster_project: Path, env: dict[str, str], tmp_path: Path
) -> None:
    """A team server with accounts (MLflow's basic-auth app): alice's run is hers, recorded by her owner and her
    container; bob reads it and may not change it (403); her password is in no script, accounting, record,
    container or log."""
    password = env["MLFLOW_TRACKING_PASSWORD"]
    (cluster_project / "records.py").write_text(RECORDS)
    run_id = submit(cluster_project, env, "command=python records.py", "backend.keep_container=true")
    job = job_of(cluster_project, run_id)
    run = settled(cluster_project, env, run_id)
    assert run.info.status == "FINISHED", artifact(run_id, "run.log")
    assert run.data.metrics["from_the_run"] == 1.0  # the container recorded, as alice
    assert run.data.tags["mlflow.user"] == "alice"
    experiment = run.info.experiment_id
    # MLflow's auth app: alice made the experiment, so she manages it; bob reads her run, and may not change it.
    granted = as_user("alice", "GET", "users/current/permissions", version="3.0").json()["permissions"]
    assert ("experiment", experiment, "MANAGE") in [
        (p["resource_type"], p["resource_pattern"], p["permission"]) for p in granted
    ]
    assert as_user("bob", "GET", "runs/get", run_id=run_id).status_code == 200
    assert as_user("bob", "POST", "runs/set-tag", run_id=run_id, key="by", value="bob").status_code == 403
    assert as_user("bob", "POST", "runs/delete", run_id=run_id).status_code == 403
    assert record(run_id).info.lifecycle_stage == "active" and "by" not in record(run_id).data.tags

    # Nowhere: the job's script and its accounting (the job's environment included), ...
    shown = [
        ["scontrol", "show", "job", "-dd", job],
        ["scontrol", "write", "batch_script", job, "-"],
        ["sacct", "-j", job, "--format=ALL", "-P"],
        ["sacct", "-j", job, "--batch-script"],
        ["sacct", "-j", job, "--env-vars"],
    ]
    for argv in shown:
        out = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True)
        assert password not in out.stdout + out.stderr, argv
    assert (
        "MLFLOW_TRACKING_USERNAME=alice"
        in subprocess.run(shown[-1], env={**os.environ, **env}, capture_output=True, text=True).stdout
    )  # SLURM keeps the job's environment: the user name is in it, the password is not
    # ... the record (params, tags, every artifact: the log, the resolved config) ...
    import mlflow.artifacts

    assert all(password not in v for v in [*run.data.params.values(), *run.data.tags.values()])
    record_dir = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run_id, dst_path=str(tmp_path / "record"), tracking_uri=SERVER
        )
    )
    assert "recorded" in (record_dir / "run.log").read_text()
    assert holding(password, record_dir) == []
    # ... the container (kept, to be looked at) ...
    [container] = containers_of(run_id)
    inspected = subprocess.run(["docker", "inspect", container], capture_output=True, text=True, check=True)
    subprocess.run(["docker", "rm", "-f", container], capture_output=True)
    assert password not in inspected.stdout
    # ... and the logs: the run's folder and its owner's on the node, the project's, the cluster's (MLflow's,
    # SLURM's) and SLURM's state and accounting database.
    assert holding(password, cluster_project / ".runner") == []
    assert [f for f in holding(password, CLUSTER) if not f.startswith(str(CLUSTER / "users"))] == []


def test_an_account_the_server_refuses_is_one_line_before_any_run(project: Path, env: dict[str, str]) -> None:
    wrong = {**env, "MLFLOW_TRACKING_PASSWORD": "not-alices-password"}
    proc = run_cli(project, "backend=slurm", "env.requirements=[]", "command=echo hi", env=wrong)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "the tracking server refused user 'alice'" in proc.stderr
    assert (
        "MLFLOW_TRACKING_PASSWORD" in proc.stderr and "not-alices-password" not in proc.stdout + proc.stderr
    )
    assert not (project / ".runner" / "runs").exists() or not any((project / ".runner" / "runs").iterdir())
