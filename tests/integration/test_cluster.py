"""The one-node SLURM cluster that scripts/cluster.sh starts (the ground the SLURM backend stands on): jobs run, can
reach the Docker engine, array throttles hold, and SLURM's accounting (sacct) reports how each job ended."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import ended, sbatch

pytestmark = pytest.mark.integration


def test_a_job_runs_and_its_ending_is_accounted(slurm: dict[str, str], tmp_path: Path) -> None:
    ok = sbatch(
        slurm,
        tmp_path,
        "-o",
        "ok.out",
        "--wrap",
        "echo on $SLURMD_NODENAME; docker ps -q >/dev/null && echo engine",
    )
    failed = sbatch(slurm, tmp_path, "--wrap", "exit 3")
    assert ended(slurm, ok) == [(ok, "COMPLETED", "0:0")]
    assert ended(slurm, failed) == [(failed, "FAILED", "3:0")]
    out = (tmp_path / "ok.out").read_text()
    assert "engine" in out  # a job on the node reaches the Docker engine: where the runner's containers start


def test_scancel_ends_a_job_cancelled(slurm: dict[str, str], tmp_path: Path) -> None:
    job = sbatch(slurm, tmp_path, "--wrap", "sleep 300")
    deadline = time.time() + 60
    while time.time() < deadline:
        state = subprocess.run(
            ["squeue", "-h", "-j", job, "-o", "%T"], env=slurm, capture_output=True, text=True
        )
        if state.stdout.strip() == "RUNNING":
            break
        time.sleep(0.2)
    subprocess.run(["scancel", job], env=slurm, check=True)
    [(_, state, _)] = ended(slurm, job)
    assert state.startswith("CANCELLED")


def test_an_array_keeps_to_its_throttle(slurm: dict[str, str], tmp_path: Path) -> None:
    script = (
        'date +%s.%N > "t-$SLURM_ARRAY_TASK_ID.start"; sleep 2; date +%s.%N > "t-$SLURM_ARRAY_TASK_ID.end"'
    )
    job = sbatch(slurm, tmp_path, "--array=0-3%2", "-c", "1", "--wrap", script)
    rows = ended(slurm, job, tasks=4)
    assert sorted(r[1] for r in rows) == ["COMPLETED"] * 4
    spans = [
        (float((tmp_path / f"t-{i}.start").read_text()), float((tmp_path / f"t-{i}.end").read_text()))
        for i in range(4)
    ]
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most <= 2  # never more than the throttle at once


def test_a_job_records_into_the_teams_tracking_server(slurm: dict[str, str], tmp_path: Path) -> None:
    """MLflow's own server on PostgreSQL, as the cluster's runs will record into it: never a SQLite file."""
    import sys

    from mlflow import MlflowClient

    folder = os.environ.get("RUNNER_CLUSTER_DIR", "/tmp/runner-cluster")
    uri = next(
        line.split("=", 1)[1]
        for line in Path(folder, "env").read_text().splitlines()
        if line.startswith("export MLFLOW_TRACKING_URI=")
    )
    marker = f"job-{time.time_ns()}"
    code = (
        "import mlflow; mlflow.set_experiment('cluster-test'); "
        f"r = mlflow.start_run(run_name='{marker}'); mlflow.log_metric('x', 3.0); mlflow.log_text('kept', 'a.txt');"
        " mlflow.end_run()"
    )
    # The job reads alice's account from her owner-only file, as a user's would: never from its environment.
    account = Path(folder, "users", "alice.env")
    job = sbatch(
        {**slurm, "MLFLOW_TRACKING_URI": uri},
        tmp_path,
        "-o",
        "j.out",
        "--wrap",
        f'. "{account}" && {sys.executable} -c "{code}"',
    )
    assert ended(slurm, job) == [(job, "COMPLETED", "0:0")], (tmp_path / "j.out").read_text()
    client = MlflowClient(uri)
    [run] = client.search_runs(
        [client.get_experiment_by_name("cluster-test").experiment_id], f"attributes.run_name = '{marker}'"
    )
    assert run.data.metrics["x"] == 3.0
    assert run.info.status == "FINISHED"
    assert Path(client.download_artifacts(run.info.run_id, "a.txt")).read_text() == "kept"
    # The record is in PostgreSQL's database itself.
    psql = next(Path("/usr/lib/postgresql").glob("*/bin/psql"))
    rows = subprocess.run(
        [str(psql), "-h", "127.0.0.1", "-p", "5433", "-U", "postgres", "mlflow", "-tAc",
         f"select status from runs where run_uuid = '{run.info.run_id}'"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert rows == ["FINISHED"]
