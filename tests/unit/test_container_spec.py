"""The container a run gets, decided before anything starts (no engine needed)."""

from __future__ import annotations

import os
from pathlib import Path

from docker.types import DeviceRequest, Mount

from runner.backends.docker import container_spec, device_requests
from runner.compose.build import build_spec
from runner.compose.load import compose_config
from runner.runs.rundir import RunDir

ROOT = Path(__file__).resolve().parents[2]
ENV = {"MLFLOW_RUN_ID": "abc123", "X": "1"}


def spec_for(*overrides: str, environ: dict[str, str] | None = None):
    cfg = compose_config(ROOT, ["+experiment=keras_mlp", *overrides])
    return build_spec(cfg, chosen="keras_mlp", project_dir="/p", environ=environ or {})


def test_container_spec_in_full() -> None:
    run_dir = RunDir(Path("/runs/a b'c"))
    kw = container_spec(
        spec_for("resources.cpus=1.5", "resources.memory=256m", environ={"PIP_CERT": "/ca.pem"}),
        run_dir,
        "sha256:img",
        ENV,
    )
    assert kw["image"] == "sha256:img"
    assert kw["command"] == ["python", "-m", "runner.harness.train"]
    assert kw["user"] == f"{os.getuid()}:{os.getgid()}"
    assert kw["working_dir"] == "/code"
    assert kw["labels"] == {"runner.container.kind": "run", "runner.run_id": "abc123", "runner.keep": "false"}
    assert kw["mounts"] == [
        Mount("/code", "/runs/a b'c/code", type="bind", read_only=False),
        Mount("/output", "/runs/a b'c/output", type="bind", read_only=False),
        Mount("/opt/runner", "/runs/a b'c/harness", type="bind", read_only=True),
        Mount("/var/spool/runner", "/runs/a b'c/spool", type="bind", read_only=False),
        Mount("/checkpoint", "/runs/a b'c/checkpoint", type="bind", read_only=False),  # kept across attempts
        Mount("/etc/runner/ca.pem", "/ca.pem", type="bind", read_only=True),
    ]
    assert kw["environment"]["SSL_CERT_FILE"] == "/etc/runner/ca.pem"
    assert kw["environment"]["RUNNER_SPOOL"] == "/var/spool/runner"
    assert kw["environment"]["RUNNER_CHECKPOINT_DIR"] == "/checkpoint"
    assert "MLFLOW_TRACKING_URI" not in kw["environment"]  # the owner adds it (and the run's token) at start
    assert kw["environment"]["X"] == "1"
    assert kw["extra_hosts"] == {"host.docker.internal": "host-gateway"}
    assert (kw["nano_cpus"], kw["mem_limit"], kw["memswap_limit"]) == (1_500_000_000, 256 << 20, 256 << 20)
    assert kw["network_mode"] == "bridge" and kw["init"] is True
    assert kw["device_requests"] == []
    assert "privileged" not in kw and not any("docker.sock" in m["Source"] for m in kw["mounts"])


def test_gpu_device_requests() -> None:
    assert device_requests(spec_for("env.gpu=true")) == [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    assert device_requests(spec_for("env.gpu=true", "resources.gpus=2")) == [
        DeviceRequest(count=2, capabilities=[["gpu"]])
    ]
    assert device_requests(spec_for("env.gpu=true", "resources.gpus=[1,3]")) == [
        DeviceRequest(device_ids=["1", "3"], capabilities=[["gpu"]])
    ]
    assert device_requests(spec_for("resources.gpus=2")) == []  # no GPU unless env.gpu


def test_host_network_only_when_asked() -> None:
    kw = container_spec(spec_for("backend.network=host"), RunDir(Path("/r")), "i", ENV)
    assert kw["network_mode"] == "host" and "extra_hosts" not in kw


def test_a_container_that_ended_before_the_machine_started_was_stopped_by_its_shutdown() -> None:
    from runner.backends.docker import ended_before_boot

    boot = 1_796_290_000.0  # 2026-12-03T09:26:40Z
    assert ended_before_boot({"FinishedAt": "2026-12-03T09:20:00.123456789Z"}, boot)
    assert not ended_before_boot({"FinishedAt": "2026-12-03T09:30:00.5Z"}, boot)
    assert not ended_before_boot({"FinishedAt": "0001-01-01T00:00:00Z"}, boot)  # never ran
    assert not ended_before_boot({}, boot)
    import datetime

    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert not ended_before_boot({"FinishedAt": now})  # this machine started before it
