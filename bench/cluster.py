"""The SLURM backend against the Docker backend, on the one-node cluster of scripts/cluster.sh (started here).

    python bench/cluster.py [--quick] [--members 4]

Three figures, both backends recording to the cluster's MLflow server (PostgreSQL), each measured in the same run:
- a sweep of N CPU-bound members, 2 at a time: wall time from the command to the last member's recorded ending;
- the same SLURM sweep against a bare job array of the same containers (`sbatch --array` of `docker run`, to the
  last task's end): what SLURM itself takes apart from the runner;
- the time from the command to a run's first line of output in its log (submit -> first output).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import time
from pathlib import Path

from common import ROOT, Figure, clean_env, make_project, runner, spread

SERVER = "http://127.0.0.1:5055"


def cluster_env() -> dict[str, str]:
    up = subprocess.run([str(ROOT / "scripts" / "cluster.sh"), "up"], capture_output=True, text=True)
    if up.returncode != 0:
        raise RuntimeError(f"scripts/cluster.sh up failed: {up.stderr.strip()[-500:]}")
    folder = os.environ.get("RUNNER_CLUSTER_DIR", "/tmp/runner-cluster")
    # The server has accounts: the first user's, for the runs and for this process's own MLflow calls.
    lines = (Path(folder) / "users" / "alice.env").read_text().splitlines()
    account = dict(line.removeprefix("export ").split("=", 1) for line in lines if line.strip())
    os.environ.update(account)
    return {**clean_env(), **account, "SLURM_CONF": f"{folder}/etc/slurm.conf", "MLFLOW_TRACKING_URI": SERVER}


def call(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[2:])} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return proc.stdout


def ended(run_ids: list[str], timeout: float = 900) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(SERVER)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if all(client.get_run(r).info.status not in ("RUNNING", "SCHEDULED") for r in run_ids):
            return
        time.sleep(0.2)
    raise RuntimeError(f"runs still going after {timeout} s: {run_ids}")


def sweep_time(proj: Path, env: dict[str, str], backend: str, members: int, work: int) -> float:
    seeds = ",".join(str(i) for i in range(members))
    args = (
        f"backend={backend}", "env.requirements=[]", f'command="python -c \\"sum(range({work}))\\""',
        "resources.cpus=1", "sweep.parallel=2", f"train.seed={seeds}",
    )  # fmt: skip
    t0 = time.perf_counter()
    out = call(runner("-m", *args), proj, env)
    if backend == "slurm":  # submitted: the sweep ends when its last member does
        ended(re.findall(r"member \d+: run (\w+)", out))
    return time.perf_counter() - t0


def bare_array(proj: Path, env: dict[str, str], members: int, work: int, run_id: str) -> float:
    """The sweep's containers as a bare SLURM job array, 2 at a time (the runner's sbatch options for
    resources.cpus=1): from sbatch to the controller forgetting the last task (polled as `ended` polls)."""
    from mlflow import MlflowClient

    tags = MlflowClient(SERVER).get_run(run_id).data.tags
    docker = f"docker run --rm --cpus 1 -v {tags['runner.env.folder']}:/opt/env:ro {tags['runner.image']}"
    script = f'#!/bin/sh\n{docker} /opt/env/bin/python -c "sum(range({work}))"\n'
    argv = ["sbatch", "--parsable", "--cpus-per-task=1", f"--array=0-{members - 1}%2", "--output=/dev/null"]
    # SLURM keeps a job's environment in its accounting: never the server's account in it.
    env = {k: v for k, v in env.items() if not k.startswith("MLFLOW_")}
    t0 = time.perf_counter()
    job = subprocess.run(argv, input=script, cwd=proj, env=env, capture_output=True, text=True, check=True)
    job_id = job.stdout.strip().split(";")[0]
    while subprocess.run(
        ["squeue", "-h", "-j", job_id], env=env, capture_output=True, text=True
    ).stdout.strip():
        if time.perf_counter() - t0 > 900:
            raise RuntimeError(f"job array {job_id} still going after 900 s")
        time.sleep(0.2)
    return time.perf_counter() - t0


def first_output(proj: Path, env: dict[str, str], backend: str) -> tuple[float, str]:
    args = (f"backend={backend}", "env.requirements=[]", 'command="python -c \\"print(\'first line\')\\""')
    t0 = time.perf_counter()
    out = call(runner(*args, "detach=true"), proj, env)
    run_id = re.search(r"run (\w{32})", out).group(1)  # type: ignore[union-attr]
    log = proj / ".runner" / "runs" / run_id / "run.log"
    while "first line" not in (log.read_text(errors="replace") if log.is_file() else ""):
        if time.perf_counter() - t0 > 300:
            raise RuntimeError(f"no output from run {run_id} in 300 s")
        time.sleep(0.01)
    took = time.perf_counter() - t0
    ended([run_id])
    return took, run_id


def measure(quick: bool, members: int = 4) -> list[Figure]:
    env = cluster_env()
    members = 2 if quick else members
    work = 20_000_000 if quick else 200_000_000
    proj = make_project()
    for backend in ("docker", "slurm"):  # the environment built and saved to the shared cache first
        _, run_id = first_output(proj, env, backend)
    repeats = 1 if quick else 3
    docker_sweeps, slurm_sweeps, docker_first, slurm_first, bare = [], [], [], [], []
    for _ in range(repeats):  # interleaved: drift on this machine touches both alike
        docker_sweeps.append(sweep_time(proj, env, "docker", members, work))
        slurm_sweeps.append(sweep_time(proj, env, "slurm", members, work))
        bare.append(bare_array(proj, env, members, work, run_id))
        docker_first.append(first_output(proj, env, "docker")[0])
        slurm_first.append(first_output(proj, env, "slurm")[0])
    return [
        Figure(
            f"cluster sweep: {members} members, 2 at a time",
            "the same sweep with backend=docker",
            "backend=slurm: one job array, to the last member's recorded ending",
            docker_sweeps,
            slurm_sweeps,
            goal="<= 1.3",
            met=sorted(slurm_sweeps)[len(slurm_sweeps) // 2]
            <= 1.3 * sorted(docker_sweeps)[len(docker_sweeps) // 2],
            note="one node: SLURM's scheduling and the job's own start against the Docker backend's threads",
        ),
        Figure(
            f"cluster sweep: {members} members, 2 at a time, against SLURM alone",
            "the same containers as a bare job array (`sbatch --array` of `docker run`), to its last task's end",
            "backend=slurm (as above)",
            bare,
            slurm_sweeps,
            note="SLURM's own share (its scheduling, the job's start and end) is in both; the ratio is the runner's",
        ),
        Figure(
            "submit -> first output",
            "backend=docker detach=true, to the run's first line in its log",
            "backend=slurm, to the run's first line in its log",
            docker_first,
            slurm_first,
        ),
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--members", type=int, default=4)
    a = ap.parse_args()
    for f in measure(a.quick, a.members):
        print(f"{f.name}: {spread(f.base)} -> {spread(f.times)}  ratio {f.ratio:.2f}")


if __name__ == "__main__":
    main()
