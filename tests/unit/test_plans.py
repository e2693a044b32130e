"""Plans are typed, and plan.json is their JSON: a recorded run's plan reads back, and writes back the same."""

from __future__ import annotations

import json
from pathlib import Path

from runner.backends.docker import DockerPlan
from runner.backends.local import LocalPlan
from runner.backends.slurm import SlurmPlan
from runner.runs.rundir import RunDir

CONTAINER = {
    "image": "sha256:img",
    "command": ["python", "-m", "runner.harness.train"],
    "name": "runner-abc",
    "labels": {"runner.container.kind": "run", "runner.run_id": "abc", "runner.keep": "false"},
    "user": "1000:1000",
    "working_dir": "/code",
    "mounts": [{"Target": "/code", "Source": "/r/code", "Type": "bind", "ReadOnly": False}],
    "environment": {"MLFLOW_RUN_ID": "abc", "HOME": "/tmp"},
    "network_mode": "bridge",
    "init": True,
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
    "detach": True,
    "device_requests": [],
    "extra_hosts": {"host.docker.internal": "host-gateway"},
}
DOCKER = {
    **CONTAINER,
    "tracking": ["172.17.0.1", "host.docker.internal", ["host.docker.internal", "172.17.0.1"]],
    "secrets": ["TOKEN"],
    "keep": False,
}
SESSION = {
    **CONTAINER,
    "command": ["jupyter", "lab"],
    "ports": {"8888/tcp": ["127.0.0.1", 8890]},
    "said": "[runner] port 8888 is taken on 127.0.0.1: JupyterLab gets port 8890\n",
    "tracking": ["127.0.0.1", "127.0.0.1", []],
    "secrets": [],
    "keep": True,
}
LOCAL = {
    "argv": ["python", "-m", "runner.harness.train"],
    "cwd": "/r/code",
    "env": {"MLFLOW_RUN_ID": "abc", "RUNNER_ROOT": "/r"},
    "path": "/cache/envs/0123/bin",
    "cpus": "0,1",
    "secrets": [],
}
SLURM = {
    "container": CONTAINER,
    "engine": "podman",
    "archive": "/shared/images/sha256-img.tar",
    "keep": False,
    "secrets": ["TOKEN"],
    "sbatch": ["--partition=debug", "--time=10"],
    "name": "runner-keras_mlp",
}


def test_recorded_plans_read_back_and_write_back_the_same() -> None:
    for kind, data in ((DockerPlan, DOCKER), (DockerPlan, SESSION), (LocalPlan, LOCAL), (SlurmPlan, SLURM)):
        plan = kind.from_json(json.loads(json.dumps(data)))
        assert json.dumps(plan.to_json()) == json.dumps(data)  # the same keys, in the same order
        assert kind.from_json(plan.to_json()) == plan


def test_typed_fields() -> None:
    docker = DockerPlan.from_json(SESSION)
    assert docker.tracking == ("127.0.0.1", "127.0.0.1", ())
    assert docker.container["ports"] == {"8888/tcp": ["127.0.0.1", 8890]}
    assert "said" not in docker.container and "keep" not in docker.container
    assert docker.said is not None and docker.keep is True
    assert DockerPlan.from_json(DOCKER).said is None
    slurm = SlurmPlan.from_json(SLURM)
    assert (slurm.engine, slurm.sbatch, slurm.secrets) == (
        "podman",
        ("--partition=debug", "--time=10"),
        ("TOKEN",),
    )
    assert LocalPlan.from_json(LOCAL).argv == ("python", "-m", "runner.harness.train")


def test_a_run_without_a_plan_reads_none(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path)
    assert LocalPlan.read(run_dir) is None
    run_dir.plan.write_text(json.dumps(LOCAL))
    assert LocalPlan.read(run_dir) == LocalPlan.from_json(LOCAL)
